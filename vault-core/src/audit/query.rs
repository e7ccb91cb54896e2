//! Reading the log back for query and export: records in sequence order, filtered.

use std::{fs, io, path::Path};

use super::{record::Record, segments::list_segments};
use crate::time::parse_rfc3339;

/// Which records a query wants. Empty strings match everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub tenant: String,
    pub principal: String,
    pub path_prefix: String,
    pub method: String,
    pub outcome: String,
    /// Nanoseconds since the epoch, inclusive.
    pub since: Option<i64>,
    /// Nanoseconds since the epoch, exclusive.
    pub until: Option<i64>,
}

impl Filter {
    pub fn matches(&self, record: &Record) -> bool {
        let time = || parse_rfc3339(&record.time).unwrap_or(0);
        (self.tenant.is_empty() || record.tenant == self.tenant)
            && (self.principal.is_empty() || record.principal == self.principal)
            && (self.path_prefix.is_empty() || record.path.starts_with(&self.path_prefix))
            && (self.method.is_empty()
                || record.method == self.method
                || record.method.ends_with(&format!("/{}", self.method)))
            && (self.outcome.is_empty() || record.outcome == self.outcome)
            && self.since.is_none_or(|since| time() >= since)
            && self.until.is_none_or(|until| time() < until)
    }
}

/// Visits records with `seq >= from_seq` in order until `visit` returns false. Returns the
/// sequence number after the last record visited (where a next page starts), or `None` at the
/// end of the log.
pub fn read(
    dir: &Path,
    from_seq: u64,
    mut visit: impl FnMut(Record) -> bool,
) -> io::Result<Option<u64>> {
    let segments = list_segments(dir)?;
    // Start at the last segment whose first record is at or before from_seq.
    let mut start = 0;
    for (index, (_, path)) in segments.iter().enumerate() {
        match first_seq(path)? {
            Some(first) if first <= from_seq => start = index,
            Some(_) => break,
            None => {}
        }
    }
    for (_, path) in &segments[start..] {
        let data = fs::read(path)?;
        for line in data.split(|b| *b == b'\n') {
            let Ok(record) = serde_json::from_slice::<Record>(line) else {
                continue;
            };
            if record.seq < from_seq {
                continue;
            }
            let seq = record.seq;
            if !visit(record) {
                return Ok(Some(seq + 1));
            }
        }
    }
    Ok(None)
}

fn first_seq(path: &Path) -> io::Result<Option<u64>> {
    use std::io::{BufRead, BufReader};
    let mut line = Vec::new();
    BufReader::new(fs::File::open(path)?).read_until(b'\n', &mut line)?;
    Ok(
        serde_json::from_slice::<Record>(line.strip_suffix(b"\n").unwrap_or(&line))
            .ok()
            .map(|r| r.seq),
    )
}
