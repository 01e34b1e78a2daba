//! The preference store: one SQLite file (`RUN/prefs.sqlite`) holding annotators, prompts,
//! responses, comparison items and votes, and every query on them; import and export of
//! preference datasets (`exchange`) and inter-annotator agreement (`agreement`). Kept apart from
//! the HTTP server so that the CLI, the server and the tests all reach it the same way.
//!
//! Uses: `data` (conversations, preference pairs), `base`. Exposes: [`Store`] and its records.
//!
//! Durability: WAL journal with `synchronous=FULL`, so a vote is on disk when its INSERT
//! commits, and the page moves on only after that; a killed server loses nothing it answered.
//! Votes are final: `UNIQUE(item, annotator)` makes the same vote again a no-op answered OK, and
//! a *different* vote for an item already judged is refused (409 on the page), so agreement
//! figures and exported pairs never change behind an annotator's back.
//!
//! The annotator of a vote comes only from their token (hashed; see `annotators`), and an
//! annotator votes only on items the page served them (`served`): not on imported items, not
//! on items fetched by id. Dataset judgements (HH-RLHF, hhh_alignment) belong to annotators in
//! their own namespace (`dataset:NAME`, without a token), so an import naming `alice` never
//! files votes as the person alice, and nobody can log in as a dataset. Exports carry that
//! provenance in the annotator's name and can keep to either kind ([`Source`]).

pub mod agreement;
mod annotators;
mod choice;
mod exchange;

pub use annotators::{Annotator, AnnotatorInfo};
pub use choice::Choice;
pub use exchange::{Exported, Imported, Source};

use crate::agreement::Agreement;
use data::chat::{Conversation, Role};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the store; each names the file at fault and ends with what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("preference store {path}: {source}\nHINT: {hint}")]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
        hint: &'static str,
    },

    #[error("preference store {path}: {msg}\nHINT: {hint}")]
    Schema {
        path: PathBuf,
        msg: String,
        hint: String,
    },

    /// Bad input and file access, as every layer reports them.
    #[error(transparent)]
    Base(#[from] base::Error),
}

/// The schema this build writes. Bump it with a migration in [`Store::open`].
/// 2: the `served` table; dataset annotators renamed into the `dataset:` namespace.
pub const SCHEMA_VERSION: i64 = 2;

/// The namespace of dataset annotators' names.
pub const DATASET_PREFIX: &str = "dataset:";

const SCHEMA: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE annotators (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- hex SHA-256 of the login token; NULL for a dataset's judgements (nobody logs in as it)
    token_sha256 TEXT UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    -- data::chat::Conversation as JSON, ending with the user's turn
    conversation TEXT NOT NULL,
    source TEXT NOT NULL,
    content_sha256 TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE responses (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    text TEXT NOT NULL,
    -- the model stage and checkpoint that sampled it (\"sft:step-8\"), or the imported file
    origin TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX responses_by_prompt ON responses(prompt_id);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts(id),
    -- 1: shown on the annotation page (model samples); 0: imported, already judged
    queued INTEGER NOT NULL,
    -- imported items: hash of the prompt and the responses, so a second import adds nothing
    import_sha256 TEXT UNIQUE,
    created_at INTEGER NOT NULL
);
CREATE TABLE item_responses (
    item_id INTEGER NOT NULL REFERENCES items(id),
    position INTEGER NOT NULL,
    response_id INTEGER NOT NULL REFERENCES responses(id),
    PRIMARY KEY (item_id, position)
);
CREATE TABLE votes (
    id INTEGER PRIMARY KEY,
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    -- the preferred response's position (\"0\", \"1\", ...), \"tie\" or \"both_harmful\"
    choice TEXT NOT NULL CHECK (choice IN ('tie', 'both_harmful')
        OR (choice GLOB '[0-9]*' AND choice NOT GLOB '*[^0-9]*')),
    created_at INTEGER NOT NULL,
    UNIQUE (item_id, annotator_id)
);
CREATE INDEX votes_by_annotator ON votes(annotator_id);
";

/// Version 2's table: which queued item the page showed to whom (what a vote may be for).
const SERVED: &str = "
CREATE TABLE served (
    item_id INTEGER NOT NULL REFERENCES items(id),
    annotator_id INTEGER NOT NULL REFERENCES annotators(id),
    served_at INTEGER NOT NULL,
    PRIMARY KEY (item_id, annotator_id)
);
";

/// A prompt and the responses to compare, in display order.
#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: i64,
    pub prompt: Conversation,
    pub responses: Vec<String>,
}

/// One annotator's way through the queued items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub voted: usize,
    pub remaining: usize,
    pub total: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteOutcome {
    /// A new vote, committed.
    Recorded,
    /// The same vote was already stored (a double submission); nothing changed.
    Unchanged,
}

#[derive(Debug, thiserror::Error)]
pub enum VoteError {
    #[error("no item {0}")]
    UnknownItem(i64),
    #[error("item {0} was not shown to you: vote on the items the page serves")]
    NotServed(i64),
    #[error("item {item} has {responses} responses; choice {choice} is not one of them")]
    BadChoice {
        item: i64,
        responses: usize,
        choice: usize,
    },
    #[error("you already voted {} on item {item}; votes are final", .previous.label())]
    Conflict { item: i64, previous: Choice },
    #[error(transparent)]
    Store(#[from] Error),
}

/// Progress and agreement, as `frugal prefs stats` prints and `GET /api/stats` serves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stats {
    /// Items on the annotation page (model samples).
    pub items: usize,
    pub items_voted: usize,
    /// Items judged by two annotators or more.
    pub items_double: usize,
    pub votes: usize,
    pub imported_items: usize,
    pub imported_votes: usize,
    pub annotators: Vec<AnnotatorInfo>,
    /// Over every item with two judgements or more, imported ones included.
    pub agreement: Agreement,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A prompt must be a valid conversation that ends with the user's turn.
pub fn check_prompt(conv: &Conversation) -> std::result::Result<(), String> {
    conv.validate()?;
    if conv.messages.last().map(|m| m.role) != Some(Role::User) {
        return Err("a prompt must end with a user message".into());
    }
    Ok(())
}

impl Store {
    /// Opens the store at `path`, creating it (and its directory) when missing. Refuses a file
    /// written by a newer schema or one that is not a preference store.
    pub fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|source| Error::from(base::Error::io(dir, source)))?;
        }
        let db = |source| Error::Db {
            path: path.into(),
            source,
            hint: "is it a SQLite file written by `frugal annotate` or `frugal prefs`?",
        };
        let conn = Connection::open(path).map_err(db)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Schema {
                path: path.into(),
                msg: format!("cannot use the WAL journal (got {mode:?})"),
                hint: "put the store on a local file system".into(),
            });
        }
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; PRAGMA busy_timeout=10000;",
        )
        .map_err(db)?;
        let mut store = Store {
            conn,
            path: path.into(),
        };
        store.migrate()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> Error + 'static {
        let path = self.path.clone();
        move |source| Error::Db {
            path: path.clone(),
            source,
            hint: "the store may be damaged or locked by another program; check the file",
        }
    }

    /// Creates the schema in a new file; checks the version of an existing one.
    fn migrate(&mut self) -> Result<()> {
        let db = self.db();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db)?;
        let tables: i64 = tx
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(&db)?;
        let has_version: bool = tx
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map_err(&db)?
            == 1;
        if tables == 0 {
            tx.execute_batch(SCHEMA).map_err(&db)?;
            tx.execute_batch(SERVED).map_err(&db)?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES (?1)",
                [SCHEMA_VERSION],
            )
            .map_err(&db)?;
        } else if !has_version {
            return Err(Error::Schema {
                path: self.path.clone(),
                msg: "is a SQLite file but not a preference store (no schema_version table)".into(),
                hint: "pass --db a new file or one written by frugal".into(),
            });
        } else {
            let v: i64 = tx
                .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
                .map_err(&db)?;
            if v > SCHEMA_VERSION {
                return Err(Error::Schema {
                    path: self.path.clone(),
                    msg: format!(
                        "was written by a newer frugal (schema version {v}; this build reads up to {SCHEMA_VERSION})"
                    ),
                    hint: "upgrade frugal to open it; nothing was changed".into(),
                });
            }
            if v < 2 {
                to_version_2(&tx).map_err(&db)?;
            }
        }
        tx.commit().map_err(&db)
    }

    // ---- prompts, responses, items

    /// Stores a prompt unless the same conversation is there already; returns its id and
    /// whether it is new.
    pub fn add_prompt(&mut self, conv: &Conversation, source: &str) -> Result<(i64, bool)> {
        let db = self.db();
        let tx = self.conn.transaction().map_err(&db)?;
        let r = insert_prompt(&tx, conv, source).map_err(&db)?;
        tx.commit().map_err(&db)?;
        Ok(r)
    }

    /// Prompts no response has been stored for yet, oldest first.
    pub fn prompts_without_responses(&self) -> Result<Vec<(i64, Conversation)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT p.id, p.conversation FROM prompts p WHERE NOT EXISTS
                 (SELECT 1 FROM responses r WHERE r.prompt_id = p.id) ORDER BY p.id",
            )
            .map_err(self.db())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(self.db())?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(self.db())?;
            out.push((id, self.conversation(id, &json)?));
        }
        Ok(out)
    }

    fn conversation(&self, prompt: i64, json: &str) -> Result<Conversation> {
        serde_json::from_str(json).map_err(|e| Error::Schema {
            path: self.path.clone(),
            msg: format!("prompt {prompt} does not hold a conversation: {e}"),
            hint: "the row was edited by hand; fix or delete it".into(),
        })
    }

    /// Stores sampled responses to a prompt and one queued item comparing them, atomically.
    pub fn add_sampled(&mut self, prompt: i64, responses: &[(String, String)]) -> Result<i64> {
        assert!(
            responses.len() >= 2,
            "an item compares two responses or more"
        );
        let db = self.db();
        let tx = self.conn.transaction().map_err(&db)?;
        let item = insert_item(&tx, prompt, responses, true, None).map_err(&db)?;
        tx.commit().map_err(&db)?;
        Ok(item)
    }

    pub fn item(&self, id: i64) -> Result<Option<Item>> {
        let row = self
            .conn
            .query_row(
                "SELECT p.id, p.conversation FROM items i JOIN prompts p ON p.id = i.prompt_id
                 WHERE i.id = ?1",
                [id],
                |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(self.db())?;
        let Some((prompt_id, json)) = row else {
            return Ok(None);
        };
        Ok(Some(Item {
            id,
            prompt: self.conversation(prompt_id, &json)?,
            responses: self.item_texts(id)?,
        }))
    }

    fn item_texts(&self, item: i64) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT r.text FROM item_responses ir JOIN responses r ON r.id = ir.response_id
                 WHERE ir.item_id = ?1 ORDER BY ir.position",
            )
            .map_err(self.db())?;
        let rows = st.query_map([item], |r| r.get(0)).map_err(self.db())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.db())
    }

    /// The next queued item for an annotator: one they have not judged, preferring items
    /// exactly one other annotator has judged (so that some items get two labels and agreement
    /// can be measured), then unjudged ones, then the rest; oldest first within each.
    pub fn next_item(&self, annotator: i64) -> Result<Option<Item>> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT i.id FROM items i
                 LEFT JOIN (SELECT item_id, COUNT(*) AS n, SUM(annotator_id = ?1) AS mine
                            FROM votes GROUP BY item_id) v ON v.item_id = i.id
                 WHERE i.queued = 1 AND COALESCE(v.mine, 0) = 0
                 ORDER BY CASE COALESCE(v.n, 0) WHEN 1 THEN 0 WHEN 0 THEN 1 ELSE 2 END, i.id
                 LIMIT 1",
                [annotator],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.db())?;
        let Some(id) = id else { return Ok(None) };
        self.mark_served(id, annotator)?;
        self.item(id)
    }

    /// Records that the page showed `item` to `annotator`: what makes their vote on it valid.
    /// `next_item` calls it; a tool that presents items its own way calls it when it does.
    pub fn mark_served(&self, item: i64, annotator: i64) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO served (item_id, annotator_id, served_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(item_id, annotator_id) DO NOTHING",
                params![item, annotator, now_ms()],
            )
            .map_err(self.db())?;
        Ok(())
    }

    pub fn progress(&self, annotator: i64) -> Result<Progress> {
        let (total, voted): (i64, i64) = self
            .conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM items WHERE queued = 1),
                        (SELECT COUNT(*) FROM votes v JOIN items i ON i.id = v.item_id
                         WHERE i.queued = 1 AND v.annotator_id = ?1)",
                [annotator],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(self.db())?;
        Ok(Progress {
            voted: voted as usize,
            remaining: (total - voted) as usize,
            total: total as usize,
        })
    }

    // ---- votes

    /// Records an annotator's vote, committed to disk before it returns. The same vote again
    /// is `Unchanged`; a different one is a `Conflict` (votes are final).
    pub fn vote(
        &mut self,
        annotator: i64,
        item: i64,
        choice: Choice,
    ) -> std::result::Result<VoteOutcome, VoteError> {
        let db = self.db();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(&db)?;
        let (exists, n): (bool, i64) = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM items WHERE id = ?1),
                        (SELECT COUNT(*) FROM item_responses WHERE item_id = ?1)",
                [item],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(&db)?;
        if !exists {
            return Err(VoteError::UnknownItem(item));
        }
        if let Choice::Response(c) = choice {
            if c >= n as usize {
                return Err(VoteError::BadChoice {
                    item,
                    responses: n as usize,
                    choice: c,
                });
            }
        }
        let served: bool = tx
            .query_row(
                "SELECT EXISTS(SELECT 1 FROM served s JOIN items i ON i.id = s.item_id
                               WHERE s.item_id = ?1 AND s.annotator_id = ?2 AND i.queued = 1)",
                [item, annotator],
                |r| r.get(0),
            )
            .map_err(&db)?;
        if !served {
            return Err(VoteError::NotServed(item));
        }
        let outcome = insert_vote(&tx, item, annotator, choice).map_err(&db)?;
        match outcome {
            Ok(o) => {
                tx.commit().map_err(&db)?;
                Ok(o)
            }
            Err(previous) => Err(VoteError::Conflict { item, previous }),
        }
    }

    /// Every vote: (item, annotator name, choice), by item.
    pub fn votes(&self) -> Result<Vec<(i64, String, Choice)>> {
        let mut st = self
            .conn
            .prepare(
                "SELECT v.item_id, a.name, v.choice FROM votes v
                 JOIN annotators a ON a.id = v.annotator_id ORDER BY v.item_id, a.name",
            )
            .map_err(self.db())?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .map_err(self.db())?;
        let mut out = Vec::new();
        for row in rows {
            let (item, name, label) = row.map_err(self.db())?;
            let choice = Choice::from_label(&label).ok_or_else(|| Error::Schema {
                path: self.path.clone(),
                msg: format!("a vote on item {item} holds the unknown choice {label:?}"),
                hint: "the row was edited by hand; fix or delete it".into(),
            })?;
            out.push((item, name, choice));
        }
        Ok(out)
    }

    pub fn stats(&self) -> Result<Stats> {
        let count = |sql: &str| -> Result<usize> {
            self.conn
                .query_row(sql, [], |r| r.get::<_, i64>(0))
                .map(|n| n as usize)
                .map_err(self.db())
        };
        let votes = self.votes()?;
        Ok(Stats {
            items: count("SELECT COUNT(*) FROM items WHERE queued = 1")?,
            items_voted: count(
                "SELECT COUNT(DISTINCT v.item_id) FROM votes v JOIN items i ON i.id = v.item_id WHERE i.queued = 1",
            )?,
            items_double: count(
                "SELECT COUNT(*) FROM (SELECT v.item_id FROM votes v JOIN items i ON i.id = v.item_id
                 WHERE i.queued = 1 GROUP BY v.item_id HAVING COUNT(*) >= 2)",
            )?,
            votes: count(
                "SELECT COUNT(*) FROM votes v JOIN items i ON i.id = v.item_id WHERE i.queued = 1",
            )?,
            imported_items: count("SELECT COUNT(*) FROM items WHERE queued = 0")?,
            imported_votes: count(
                "SELECT COUNT(*) FROM votes v JOIN items i ON i.id = v.item_id WHERE i.queued = 0",
            )?,
            annotators: self.annotators()?,
            agreement: agreement::measure(&votes),
        })
    }
}

fn insert_prompt(
    tx: &rusqlite::Transaction,
    conv: &Conversation,
    source: &str,
) -> rusqlite::Result<(i64, bool)> {
    let json = serde_json::to_string(conv).expect("a conversation serialises");
    let hash = sha256_hex(json.as_bytes());
    let added = tx.execute(
        "INSERT INTO prompts (conversation, source, content_sha256, created_at)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT(content_sha256) DO NOTHING",
        params![json, source, hash, now_ms()],
    )?;
    let id = tx.query_row(
        "SELECT id FROM prompts WHERE content_sha256 = ?1",
        [&hash],
        |r| r.get(0),
    )?;
    Ok((id, added == 1))
}

fn insert_item(
    tx: &rusqlite::Transaction,
    prompt: i64,
    responses: &[(String, String)],
    queued: bool,
    import_key: Option<&str>,
) -> rusqlite::Result<i64> {
    let now = now_ms();
    tx.execute(
        "INSERT INTO items (prompt_id, queued, import_sha256, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![prompt, queued, import_key, now],
    )?;
    let item = tx.last_insert_rowid();
    for (pos, (text, origin)) in responses.iter().enumerate() {
        tx.execute(
            "INSERT INTO responses (prompt_id, text, origin, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![prompt, text, origin, now],
        )?;
        let response = tx.last_insert_rowid();
        tx.execute(
            "INSERT INTO item_responses (item_id, position, response_id) VALUES (?1, ?2, ?3)",
            params![item, pos as i64, response],
        )?;
    }
    Ok(item)
}

/// Inserts a vote unless one exists: Ok(Recorded), Ok(Unchanged) for the same choice, or
/// Err(previous choice) for a different one.
fn insert_vote(
    tx: &rusqlite::Transaction,
    item: i64,
    annotator: i64,
    choice: Choice,
) -> rusqlite::Result<std::result::Result<VoteOutcome, Choice>> {
    let added = tx.execute(
        "INSERT INTO votes (item_id, annotator_id, choice, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(item_id, annotator_id) DO NOTHING",
        params![item, annotator, choice.label(), now_ms()],
    )?;
    if added == 1 {
        return Ok(Ok(VoteOutcome::Recorded));
    }
    let label: String = tx.query_row(
        "SELECT choice FROM votes WHERE item_id = ?1 AND annotator_id = ?2",
        [item, annotator],
        |r| r.get(0),
    )?;
    Ok(match Choice::from_label(&label) {
        Some(previous) if previous == choice => Ok(VoteOutcome::Unchanged),
        Some(previous) => Err(previous),
        None => Err(choice), // unreadable row: treat as a conflict, change nothing
    })
}

/// Schema 1 → 2: the `served` table, filled with the items each annotator has voted on
/// (what the page must have shown them); dataset annotators renamed into `dataset:`; and
/// votes that version 1 filed under a person on an imported item (a `prefs import` naming
/// them, or a vote on an item the page never shows) moved to that name's dataset annotator,
/// so that they count as dataset judgements, not as the person's. Nothing is deleted.
fn to_version_2(tx: &rusqlite::Transaction) -> rusqlite::Result<()> {
    tx.execute_batch(SERVED)?;
    let now = now_ms();
    tx.execute(
        "INSERT INTO served (item_id, annotator_id, served_at)
         SELECT v.item_id, v.annotator_id, ?1 FROM votes v JOIN items i ON i.id = v.item_id
         WHERE i.queued = 1",
        [now],
    )?;
    tx.execute(
        "UPDATE OR IGNORE annotators SET name = ?1 || name
         WHERE token_sha256 IS NULL AND substr(name, 1, length(?1)) <> ?1",
        [DATASET_PREFIX],
    )?;
    tx.execute(
        "INSERT INTO annotators (name, token_sha256, created_at)
         SELECT DISTINCT ?1 || a.name, NULL, ?2 FROM votes v
         JOIN annotators a ON a.id = v.annotator_id JOIN items i ON i.id = v.item_id
         WHERE i.queued = 0 AND a.token_sha256 IS NOT NULL
         ON CONFLICT(name) DO NOTHING",
        params![DATASET_PREFIX, now],
    )?;
    tx.execute(
        "UPDATE OR IGNORE votes SET annotator_id =
            (SELECT d.id FROM annotators d JOIN annotators a ON d.name = ?1 || a.name
             WHERE a.id = votes.annotator_id)
         WHERE item_id IN (SELECT id FROM items WHERE queued = 0)
           AND annotator_id IN (SELECT id FROM annotators WHERE token_sha256 IS NOT NULL)",
        [DATASET_PREFIX],
    )?;
    tx.execute("UPDATE schema_version SET version = 2", [])?;
    Ok(())
}

#[cfg(test)]
mod tests;
