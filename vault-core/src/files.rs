//! Files the vault and its CLI write for one user only.

use std::{
    fs,
    io::{self, Write},
    path::Path,
};

/// Writes a file readable only by its owner (mode 0600), atomically: the contents go to a fresh
/// temporary file beside it (a new random name, created exclusively, so never one left behind
/// or planted, which could carry other permissions or be a link), are synced, and the file is
/// renamed over `path`; then the directory is synced so the rename survives a crash. Readers see
/// the old file or the new one, never a part. If writing fails, the temporary file is removed
/// and `path` is untouched; if only the final directory sync fails, `path` already holds the new
/// contents but the error is returned, because the rename may not survive a crash. Temporary
/// files that an earlier crash left beside `path` are removed first.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a file path", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // At most 200 bytes of the name, so the temporary name stays within NAME_MAX (255).
    let name = name.to_string_lossy();
    let mut stem = String::new();
    for c in name.chars() {
        if stem.len() + c.len_utf8() > 200 {
            break;
        }
        stem.push(c);
    }
    let prefix = format!(".{stem}.");
    remove_leftovers(dir, &prefix);
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|e| io::Error::other(e.to_string()))?;
    let temporary = dir.join(format!("{prefix}{}.tmp", hex::encode(suffix)));
    let written = (|| {
        let mut file = create_private(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&temporary, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written?;
    sync_parent(path)
}

/// Syncs the directory holding `path`, so that a rename into it survives a crash.
pub fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::File::open(dir)?.sync_all()
}

/// Creates `path`, which must not exist, readable only by its owner (mode 0600).
pub fn create_private(path: &Path) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// Removes `<prefix><16 hex digits>.tmp` files: what a crash between create and rename left.
fn remove_leftovers(dir: &Path, prefix: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_suffix(".tmp"))
        else {
            continue;
        };
        if rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_with_mode_0600_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.tmp");
        write_private(&path, b"one").expect("first write");
        write_private(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&path).expect("metadata").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.tmp")]);
    }

    #[test]
    fn leftovers_of_a_crash_are_removed_and_long_names_fit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let leftover = dir.path().join(".out.0123456789abcdef.tmp");
        fs::write(&leftover, b"secret").expect("leftover");
        let unrelated = dir.path().join(".out.notours.tmp");
        fs::write(&unrelated, b"x").expect("unrelated");
        write_private(&dir.path().join("out"), b"new").expect("write");
        assert!(!leftover.exists());
        assert!(unrelated.exists());
        let long = dir.path().join("n".repeat(250));
        write_private(&long, b"long").expect("a 250-byte name");
        assert_eq!(fs::read(&long).expect("read"), b"long");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out");
        write_private(&path, b"old").expect("write");
        // Renaming a file over a non-empty directory fails.
        let blocked = dir.path().join("blocked");
        fs::create_dir(&blocked).expect("mkdir");
        fs::write(blocked.join("inside"), b"x").expect("write inside");
        assert!(write_private(&blocked, b"new").is_err());
        assert_eq!(fs::read(&path).expect("read"), b"old");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                std::ffi::OsString::from("blocked"),
                std::ffi::OsString::from("out")
            ]
        );
    }
}
