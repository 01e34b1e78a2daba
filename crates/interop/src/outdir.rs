//! An export directory that appears whole or not at all: files are written into a hidden
//! sibling, which is renamed into place at the end. An existing directory with files in it is
//! never touched, so an export cannot overwrite a user's work.

use base::{Error, Result};
use std::path::{Path, PathBuf};

pub struct OutDir {
    dest: PathBuf,
    partial: PathBuf,
}

impl OutDir {
    /// Starts writing `dest`, which must not exist or be empty.
    pub fn create(dest: &Path) -> Result<Self> {
        if let Ok(mut entries) = std::fs::read_dir(dest) {
            if entries.next().is_some() {
                return Err(Error::input(
                    dest.display().to_string(),
                    "already exists and is not empty",
                    "name a new --out directory, or remove this one first",
                ));
            }
        } else if dest.exists() {
            return Err(Error::input(
                dest.display().to_string(),
                "exists and is not a directory",
                "name a new --out directory",
            ));
        }
        let name = dest
            .file_name()
            .ok_or_else(|| {
                Error::input(
                    dest.display().to_string(),
                    "has no directory name",
                    "name the --out directory, such as exports/speedrun-hf",
                )
            })?
            .to_string_lossy();
        let partial = dest.with_file_name(format!(".{name}.partial"));
        if partial.exists() {
            // A previous export that was killed: it was never visible, so it is ours to remove.
            std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        }
        std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
        Ok(OutDir {
            dest: dest.to_path_buf(),
            partial,
        })
    }

    /// Where to write the file `name` until `finish`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.partial.join(name)
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let p = self.path(name);
        std::fs::write(&p, bytes).map_err(|e| Error::io(&p, e))
    }

    pub fn write_json(&self, name: &str, v: &serde_json::Value) -> Result<()> {
        let mut text = serde_json::to_string_pretty(v).expect("JSON values serialise");
        text.push('\n');
        self.write(name, text.as_bytes())
    }

    /// Moves the finished directory into place.
    pub fn finish(self) -> Result<PathBuf> {
        if self.dest.exists() {
            std::fs::remove_dir(&self.dest).map_err(|e| Error::io(&self.dest, e))?;
        }
        std::fs::rename(&self.partial, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        Ok(self.dest)
    }
}
