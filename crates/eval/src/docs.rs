//! Rows of benchmark files as JSON values, whatever the file format, and typed access to their
//! fields with messages that name the file, the row and the field.

use crate::Skipped;
use base::{Error, Result};
use data::columnar::read_arrow_rows;
use data::jsonl::for_each_line;
use serde_json::Value;
use std::path::Path;

/// The rows of an Arrow IPC stream (`.arrow`), a JSON-lines file (`.jsonl`, `.jsonl.gz`) or a
/// JSON file holding an array of rows or an object with an `examples` array (BIG-bench).
pub fn read(path: &Path) -> Result<Vec<Value>> {
    let name = path.to_string_lossy();
    if name.ends_with(".arrow") {
        return read_arrow_rows(path);
    }
    if name.ends_with(".json") {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| {
            Error::input(
                path.display().to_string(),
                format!("not JSON: {e}"),
                "re-fetch the file",
            )
        })?;
        return match v {
            Value::Array(rows) => Ok(rows),
            Value::Object(mut o) => match o.remove("examples") {
                Some(Value::Array(rows)) => Ok(rows),
                _ => Err(Error::input(
                    path.display().to_string(),
                    "has no \"examples\" array",
                    "pass a BIG-bench task.json or a JSON array of rows",
                )),
            },
            _ => Err(Error::input(
                path.display().to_string(),
                "is neither an array of rows nor an object with \"examples\"",
                "pass a BIG-bench task.json or a JSON array of rows",
            )),
        };
    }
    let mut rows = Vec::new();
    for_each_line(path, |line, text| {
        if text.trim().is_empty() {
            return Ok(());
        }
        let v = serde_json::from_str(text).map_err(|e| {
            Error::input(
                format!("{}, line {line}", path.display()),
                format!("not JSON: {e}"),
                "fix or remove the line",
            )
        })?;
        rows.push(v);
        Ok(())
    })?;
    Ok(rows)
}

/// One row, for typed field access. Errors are plain messages that already name the row.
pub struct Row<'a> {
    pub v: &'a Value,
    pub index: usize,
}

type Field<T> = std::result::Result<T, String>;

impl Row<'_> {
    fn get(&self, field: &str) -> Field<&Value> {
        match self.v.get(field) {
            Some(Value::Null) | None => Err(format!("row {}: no field {field:?}", self.index)),
            Some(v) => Ok(v),
        }
    }

    pub fn str(&self, field: &str) -> Field<&str> {
        self.get(field)?
            .as_str()
            .ok_or_else(|| format!("row {}: field {field:?} is not a string", self.index))
    }

    pub fn int(&self, field: &str) -> Field<i64> {
        let v = self.get(field)?;
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .ok_or_else(|| format!("row {}: field {field:?} is not an integer", self.index))
    }

    pub fn bool(&self, field: &str) -> Field<bool> {
        self.get(field)?
            .as_bool()
            .ok_or_else(|| format!("row {}: field {field:?} is not a boolean", self.index))
    }

    /// A list of strings; `field` may be a path into structs: "choices.text".
    pub fn strs(&self, field: &str) -> Field<Vec<String>> {
        let mut v = self.v;
        for part in field.split('.') {
            v = match v.get(part) {
                Some(Value::Null) | None => {
                    return Err(format!("row {}: no field {field:?}", self.index))
                }
                Some(x) => x,
            };
        }
        let bad = || {
            format!(
                "row {}: field {field:?} is not a list of strings",
                self.index
            )
        };
        v.as_array()
            .ok_or_else(bad)?
            .iter()
            .map(|x| x.as_str().map(str::to_string).ok_or_else(bad))
            .collect()
    }
}

/// Checks that a label indexes the choices.
pub fn gold(index: usize, label: i64, choices: usize) -> Field<usize> {
    if label < 0 || label as usize >= choices {
        return Err(format!(
            "row {index}: label {label} but only {choices} choices"
        ));
    }
    Ok(label as usize)
}

/// Parses every row with `f`; rows it rejects are skipped and counted, with the file named.
pub fn parse<T>(path: &Path, rows: &[Value], f: impl Fn(&Row) -> Field<T>) -> (Vec<T>, Skipped) {
    let mut skipped = Skipped::default();
    let mut out = Vec::with_capacity(rows.len());
    for (index, v) in rows.iter().enumerate() {
        match f(&Row { v, index }) {
            Ok(x) => out.push(x),
            Err(e) => skipped.add(format!("{}: {e}", path.display())),
        }
    }
    (out, skipped)
}
