//! Segment files: `audit-00000001.jsonl`, `audit-00000002.jsonl`, ... in the audit directory.
//! The chain runs through them in number order.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

const PREFIX: &str = "audit-";
const SUFFIX: &str = ".jsonl";

pub fn segment_name(number: u64) -> String {
    format!("{PREFIX}{number:08}{SUFFIX}")
}

pub fn segment_number(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix(PREFIX)?
        .strip_suffix(SUFFIX)?
        .parse()
        .ok()
}

/// The segments in `dir`, in chain order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(number) = segment_number(&path) {
            segments.push((number, path));
        }
    }
    segments.sort();
    Ok(segments)
}

/// Makes a new directory entry (segment created, renamed or removed) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
