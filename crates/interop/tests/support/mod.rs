//! What the interop tests share: the repository and its fixtures, scratch directories, and the
//! Python readers (transformers' tokenizer, the gguf package) the live checks run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The files the real readers wrote (scripts/interop-fixtures.sh regenerates them).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// An empty scratch directory named for the test and the process.
pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("frugal-interop-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A Python that imports `modules` ($FRUGAL_PYTHON, or the repository's .venv, which
/// scripts/test.sh fills); None, said loudly, with FRUGAL_SKIP_PEER_TESTS=1. `what` names the
/// check a skip leaves out.
pub fn python(modules: &str, what: &str) -> Option<PathBuf> {
    if std::env::var("FRUGAL_SKIP_PEER_TESTS").as_deref() == Ok("1") {
        eprintln!("NOTICE: FRUGAL_SKIP_PEER_TESTS=1 — {what} NOT checked");
        return None;
    }
    let py = std::env::var_os("FRUGAL_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} cannot import {modules}.\nHINT: run scripts/test.sh (it installs them into .venv), \
         set FRUGAL_PYTHON, or set FRUGAL_SKIP_PEER_TESTS=1 to skip this check knowingly",
        py.display()
    );
    Some(py)
}

/// Runs bench/interop/`script` with `args`; its standard output, or a failure showing both.
pub fn run_script(py: &Path, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .arg(repo().join("bench/interop").join(script))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    stdout.into_owned()
}
