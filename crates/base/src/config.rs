//! The one way configs are read: TOML text, `--set section.key=value` overrides applied to its
//! table, then deserialised (unknown keys refused by each struct's `deny_unknown_fields`) with
//! errors that name the file and line.

use crate::error::{Error, Result};
use std::path::Path;

/// A config file's type: what `load` and `parse` check after reading it. The error names the
/// offending field (`train.lr`) and what is wrong with it.
pub trait Validate {
    fn validate(&self) -> std::result::Result<(), (&'static str, String)>;
}

/// Reads, overrides, deserialises and validates the config at `path`: the one way every
/// stage's config is loaded.
pub fn load<T: serde::de::DeserializeOwned + Validate>(
    path: &Path,
    overrides: &[String],
) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text, &path.display().to_string(), overrides)
}

/// `load` of config text from `origin` (a path or a preset's name, for messages).
pub fn parse<T: serde::de::DeserializeOwned + Validate>(
    text: &str,
    origin: &str,
    overrides: &[String],
) -> Result<T> {
    let cfg: T = parse_toml(text, origin, overrides)?;
    cfg.validate().map_err(|(field, msg)| {
        Error::config(origin, format!("{field}: {msg}"), "adjust that field")
    })?;
    Ok(cfg)
}

/// Reads the TOML file at `path` and parses it with [`parse_toml`].
pub fn load_toml<T: serde::de::DeserializeOwned>(path: &Path, overrides: &[String]) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_toml(&text, &path.display().to_string(), overrides)
}

/// Deserialises TOML `text` (from `origin`, for messages) after applying `--set` overrides.
/// Errors name the line when the parser knows it, and unknown or mistyped keys.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
    overrides: &[String],
) -> Result<T> {
    // "file.toml, line 7" when the parser knows where the problem is.
    let at = |e: &toml::de::Error| match e.span() {
        Some(span) => {
            let line = 1 + text[..span.start.min(text.len())].matches('\n').count();
            format!("{origin}, line {line}")
        }
        None => origin.to_string(),
    };
    let mut value: toml::Table = toml::from_str(text)
        .map_err(|e| Error::config(at(&e), e.message(), "fix the TOML syntax at that line"))?;
    for o in overrides {
        apply_override(&mut value, o).map_err(|msg| {
            Error::config(origin, msg, "write overrides as --set section.key=value")
        })?;
    }
    // Without overrides, deserialise the text itself so that errors carry a line number.
    let parsed = if overrides.is_empty() {
        toml::from_str(text)
    } else {
        toml::Value::Table(value).try_into()
    };
    parsed.map_err(|e: toml::de::Error| {
        let hint = "check the key's spelling and type against the shipped configs in configs/";
        Error::config(at(&e), e.message(), hint)
    })
}

fn apply_override(root: &mut toml::Table, spec: &str) -> std::result::Result<(), String> {
    let (key, raw) = spec
        .split_once('=')
        .ok_or_else(|| format!("override {spec:?} has no '='"))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    // A TOML literal (`3e-4`, `"muon"`, `[1, 2]`), or else the bare word as a string (`muon`).
    let value = toml::from_str::<toml::Table>(&format!("v = {}", raw.trim()))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.trim().to_string()));
    let (last, parents) = path.split_last().ok_or("empty override key")?;
    let mut table = root;
    for p in parents {
        table = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("override {key}: {p} is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}
