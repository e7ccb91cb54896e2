//! Walking the chain: used at start-up (recovery, intent reconciliation) and by the offline
//! `vault-cli audit verify`. Both run the same checks, so what start-up accepts, verify accepts.
//!
//! Checks, in order: every line parses; sequence numbers increase by one across segments;
//! every `prev` is the SHA-256 of the line before; with a pinned key, every checkpoint and
//! prune record's signature verifies; a log that does not start at sequence 1 is explained by
//! a signed prune record naming exactly where it starts.

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::{self, BufRead},
    path::{Path, PathBuf},
};

use super::{
    record::{GENESIS, Kind, Record, line_hash},
    segments::list_segments,
};

/// Where the chain first breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    pub file: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at byte {}: {}",
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// What one segment holds, for the writer's index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub number: u64,
    pub path: PathBuf,
    /// Bytes of whole records.
    pub len: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub last_time: Option<String>,
    pub last_hash: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub records: u64,
    pub bytes: u64,
    pub checkpoints_verified: u64,
    /// Records after the last verified signature (all of them when no key is pinned).
    pub unsigned_tail: u64,
    pub first_seq: Option<u64>,
    pub head_seq: u64,
    pub head_hash: String,
    /// A partial last record: (file, offset where it starts, its length).
    pub torn_tail: Option<(PathBuf, u64, u64)>,
    pub broken: Option<Break>,
    /// Intent records with no outcome record, in log order.
    pub open_intents: Vec<Record>,
    /// Prune records seen: (last record removed, its hash).
    pub prunes: Vec<(u64, String)>,
    pub segments: Vec<SegmentInfo>,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.broken.is_none()
    }
}

/// Walks every segment in `dir`. With `public_key`, signatures are checked; without one (at
/// start-up, while sealed) only the chain is. `visit` sees every whole record in order.
pub fn scan(
    dir: &Path,
    public_key: Option<&[u8; 32]>,
    mut visit: impl FnMut(&Record, &[u8]),
) -> io::Result<Report> {
    let mut report = Report {
        head_hash: GENESIS.to_owned(),
        ..Report::default()
    };
    let segments = list_segments(dir)?;
    let last_index = segments.len().saturating_sub(1);
    let mut expected_seq: Option<u64> = None;
    let mut last_signed_seq = 0u64;
    let mut first_prev: Option<(PathBuf, String)> = None;
    let mut prunes: Vec<(u64, String)> = Vec::new();
    // Intents without an outcome so far, in log order, and where each is: memory for the open
    // ones only, not for every intent the log ever held.
    let mut intents: BTreeMap<u64, Record> = BTreeMap::new();
    let mut intent_seqs: HashMap<String, u64> = HashMap::new();
    // One line at a time: the walk holds one record, not a segment.
    let mut line_buffer: Vec<u8> = Vec::with_capacity(4096);

    'segments: for (index, (number, path)) in segments.iter().enumerate() {
        let mut reader = io::BufReader::with_capacity(1 << 20, fs::File::open(path)?);
        let mut info = SegmentInfo {
            number: *number,
            path: path.clone(),
            len: 0,
            first_seq: None,
            last_seq: None,
            last_time: None,
            last_hash: None,
        };
        let mut offset = 0usize;
        let broken = |offset: usize, reason: String| Break {
            file: path.clone(),
            offset: offset as u64,
            reason,
        };
        loop {
            line_buffer.clear();
            let read = reader.read_until(b'\n', &mut line_buffer)?;
            if read == 0 {
                break;
            }
            if line_buffer.last() != Some(&b'\n') {
                if index == last_index {
                    report.torn_tail = Some((path.clone(), offset as u64, read as u64));
                } else {
                    report.broken = Some(broken(
                        offset,
                        "a partial record in a segment that is not the last".into(),
                    ));
                }
                report.segments.push(info);
                break 'segments;
            };
            let newline = offset + read - 1;
            let line = &line_buffer[..read - 1];
            let record: Record = match serde_json::from_slice(line) {
                Ok(record) => record,
                Err(e) => {
                    report.broken = Some(broken(offset, format!("not a valid record ({e})")));
                    report.segments.push(info);
                    break 'segments;
                }
            };
            match expected_seq {
                None if record.seq == 1 && record.prev != GENESIS => {
                    report.broken = Some(broken(
                        offset,
                        "the first record does not start the chain".into(),
                    ));
                }
                None if record.seq == 0 => {
                    report.broken = Some(broken(offset, "sequence numbers start at 1".into()))
                }
                None => {
                    report.first_seq = Some(record.seq);
                    if record.seq != 1 {
                        first_prev = Some((path.clone(), record.prev.clone()));
                    }
                }
                Some(expected) if record.seq != expected => {
                    report.broken = Some(broken(
                        offset,
                        format!("sequence {} where {expected} was expected", record.seq),
                    ));
                }
                Some(_) if record.prev != report.head_hash => {
                    report.broken = Some(broken(
                        offset,
                        format!(
                            "record {} does not chain to record {}",
                            record.seq,
                            record.seq - 1
                        ),
                    ));
                }
                Some(_) => {}
            }
            if report.broken.is_none() && record.is_signed_kind() {
                match public_key {
                    Some(key) if !record.signature_valid(key) => {
                        report.broken = Some(broken(
                            offset,
                            format!("signature of record {} does not verify", record.seq),
                        ));
                    }
                    Some(_) => {
                        report.checkpoints_verified += 1;
                        last_signed_seq = record.seq;
                    }
                    None => {}
                }
                if let (Kind::Prune, Some(through), Some(head)) =
                    (record.kind, record.pruned_through, &record.pruned_head)
                {
                    prunes.push((through, head.clone()));
                }
            }
            if report.broken.is_some() {
                report.segments.push(info);
                break 'segments;
            }
            match record.kind {
                Kind::Intent if !record.request_id.is_empty() => {
                    if let Some(earlier) = intent_seqs.insert(record.request_id.clone(), record.seq)
                    {
                        intents.remove(&earlier);
                    }
                    intents.insert(record.seq, record.clone());
                }
                Kind::Outcome if !record.request_id.is_empty() => {
                    if let Some(seq) = intent_seqs.remove(&record.request_id) {
                        intents.remove(&seq);
                    }
                }
                _ => {}
            }
            let hash = line_hash(line);
            info.first_seq.get_or_insert(record.seq);
            info.last_seq = Some(record.seq);
            info.last_time = Some(record.time.clone());
            info.last_hash = Some(hash.clone());
            info.len = (newline + 1) as u64;
            report.records += 1;
            report.bytes += line.len() as u64 + 1;
            report.head_seq = record.seq;
            report.head_hash = hash;
            expected_seq = Some(record.seq + 1);
            visit(&record, line);
            offset = newline + 1;
        }
        report.segments.push(info);
    }

    if report.broken.is_none()
        && let (Some(first), Some((file, prev))) = (report.first_seq, &first_prev)
    {
        // Either the log starts right after a prune, or a prune stopped part-way and the
        // segment it ended at is still here, ending with the record the prune names.
        let explained = prunes.iter().any(|(through, head)| {
            (*through + 1 == first && head == prev)
                || (*through >= first
                    && report.segments.iter().any(|s| {
                        s.last_seq == Some(*through) && s.last_hash.as_ref() == Some(head)
                    }))
        });
        if !explained {
            report.broken = Some(Break {
                file: file.clone(),
                offset: 0,
                reason: format!(
                    "the log starts at record {first}, and no signed pruning record accounts for the records before it"
                ),
            });
        }
    }
    report.unsigned_tail = report
        .head_seq
        .saturating_sub(last_signed_seq.max(report.first_seq.unwrap_or(1).saturating_sub(1)));
    if report.records == 0 {
        report.unsigned_tail = 0;
    }
    report.prunes = prunes;
    report.open_intents = intents.into_values().collect();
    Ok(report)
}
