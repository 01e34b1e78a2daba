//! Annotators and their tokens: 128 random bits from /dev/urandom shown once, stored only as
//! their SHA-256; a login looks the hash up (a timing difference there reveals bits of a hash,
//! not of a token, so no constant-time comparison is needed).

use super::{now_ms, sha256_hex, Store};
use crate::{Error, Result};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use std::io::Read as _;
use std::path::Path;

/// A logged-in annotator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotator {
    pub id: i64,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AnnotatorInfo {
    pub name: String,
    pub votes: usize,
    /// False for a dataset's judgements (imported, no token).
    pub has_token: bool,
}

/// A new login token: 128 bits from the kernel's generator, as 32 hex digits.
fn new_token() -> Result<String> {
    let path = Path::new("/dev/urandom");
    let mut bytes = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|source| Error::from(base::Error::io(path, source)))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Names are shown on the page and in exports: printable, trimmed, 1–64 characters.
pub(super) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(Error::from(base::Error::input(
            format!("annotator name {name:?}"),
            "is empty, longer than 64 characters, padded or holds control characters",
            "pick a short printable name, e.g. alice",
        )))
    }
}

impl Store {
    /// Adds an annotator and returns their login token (stored only as a hash).
    pub fn add_annotator(&mut self, name: &str) -> Result<String> {
        check_name(name)?;
        if name.starts_with(crate::DATASET_PREFIX) {
            return Err(Error::from(base::Error::input(
                format!("annotator name {name:?}"),
                format!(
                    "starts with {:?}, the namespace of imported datasets",
                    crate::DATASET_PREFIX
                ),
                "pick a name without that prefix, e.g. alice",
            )));
        }
        let token = new_token()?;
        let added = self
            .conn
            .execute(
                "INSERT INTO annotators (name, token_sha256, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, sha256_hex(token.as_bytes()), now_ms()],
            )
            .map_err(self.db())?;
        if added == 0 {
            return Err(Error::from(base::Error::input(
                format!("annotator {name:?}"),
                "already exists",
                "pick another name, or pass --rotate to give them a new token",
            )));
        }
        Ok(token)
    }

    /// Gives an existing annotator a new token; the old one stops working.
    pub fn rotate_token(&mut self, name: &str) -> Result<String> {
        let token = new_token()?;
        let n = self
            .conn
            .execute(
                "UPDATE annotators SET token_sha256 = ?2 WHERE name = ?1",
                params![name, sha256_hex(token.as_bytes())],
            )
            .map_err(self.db())?;
        if n == 0 {
            return Err(Error::from(base::Error::input(
                format!("annotator {name:?}"),
                "does not exist",
                "add them with `frugal prefs annotator add NAME`",
            )));
        }
        Ok(token)
    }

    /// The annotator a token belongs to, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<Annotator>> {
        if token.is_empty() || token.len() > 256 {
            return Ok(None);
        }
        self.conn
            .query_row(
                "SELECT id, name FROM annotators WHERE token_sha256 = ?1",
                [sha256_hex(token.as_bytes())],
                |r| {
                    Ok(Annotator {
                        id: r.get(0)?,
                        name: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(self.db())
    }

    /// Every annotator with their vote count, by name.
    pub fn annotators(&self) -> Result<Vec<AnnotatorInfo>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT a.name, COUNT(v.id), a.token_sha256 IS NOT NULL FROM annotators a
                 LEFT JOIN votes v ON v.annotator_id = a.id GROUP BY a.id ORDER BY a.name",
            )
            .map_err(self.db())?;
        let rows = st
            .query_map([], |r| {
                Ok(AnnotatorInfo {
                    name: r.get(0)?,
                    votes: r.get::<_, i64>(1)? as usize,
                    has_token: r.get(2)?,
                })
            })
            .map_err(self.db())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.db())
    }
}
