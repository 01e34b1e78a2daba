//! Files as every stage touches them: written atomically (a temporary file renamed into place,
//! so a killed process never leaves half a file), listed reproducibly, read as checked UTF-8.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` through `path.tmp` and a rename: readers see the old file or the
/// new one, never a torn one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    // The bytes reach the disk before the rename makes them the file, and the rename reaches
    // it before we return: a crash leaves the old file or the new one, never an empty one.
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Regular files under `paths` (directories are walked, hidden entries skipped), sorted so that
/// runs are reproducible.
pub fn list_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let (mut out, mut seen) = (Vec::new(), std::collections::HashSet::new());
    for p in paths {
        walk(p, &mut out, &mut seen)?;
    }
    out.sort();
    if out.is_empty() {
        return Err(Error::input(
            "inputs",
            format!("no files under {paths:?}"),
            "pass text files or directories holding them",
        ));
    }
    Ok(out)
}

/// Files under `p`, each directory entered once by its real path: a symlink back up the tree
/// would otherwise be walked forever.
fn walk(
    p: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut std::collections::HashSet<PathBuf>,
) -> Result<()> {
    let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
    if meta.is_file() {
        out.push(p.to_path_buf());
    } else if meta.is_dir() {
        let real = std::fs::canonicalize(p).map_err(|e| Error::io(p, e))?;
        if !seen.insert(real) {
            return Ok(());
        }
        for entry in std::fs::read_dir(p).map_err(|e| Error::io(p, e))? {
            let entry = entry.map_err(|e| Error::io(p, e))?;
            if !entry.file_name().to_string_lossy().starts_with('.') {
                walk(&entry.path(), out, seen)?;
            }
        }
    }
    Ok(())
}

/// Reads a UTF-8 text file; invalid UTF-8 is an error naming the byte offset.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        Error::input(
            path.display().to_string(),
            format!("invalid UTF-8 at byte {at}"),
            "convert the file to UTF-8 or clean it with `frugal data prepare`",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_loop_is_walked_once() {
        let dir = std::env::temp_dir().join(format!("frugal-walk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/t.txt"), "x").unwrap();
        std::os::unix::fs::symlink(&dir, dir.join("a/up")).unwrap();
        let files = list_files(std::slice::from_ref(&dir)).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(files, vec![dir.join("a/t.txt")]);
    }
}
