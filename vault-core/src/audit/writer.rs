//! The audit writer: one thread owns the current segment. Callers submit entries; the thread
//! takes everything queued, appends it in one write, fdatasyncs once (group commit), and only
//! then completes each caller's submission with its sequence number.
//!
//! Invariants:
//! - A submission completes `Ok` only once its record is durable.
//! - After a failed write the segment is cut back to its last whole record before anything else
//!   is written, so a failure never leaves a partial record in the middle of the chain; the
//!   next batch retries (the log recovers without a restart).
//! - `seq` and the chain head advance only on success.
//! - A failed write fails its callers (the server answers UNAVAILABLE), and the writer retries
//!   on its own after 1 s (no spinning on a broken disk). The outcome records of the calls that
//!   failed are kept (up to 100,000) and written first once the log works again, marked
//!   `UNAVAILABLE` ("written late"), so every call still ends with exactly one outcome.
//! - Readers (the syslog sink) read only up to [`AuditLog::durable`].
//! - A torn tail is cut in three durable steps (a marker file, the cut, the repair record), so a
//!   crash in between still leaves the repair recorded at the next start.
//! - A caller waits at most [`APPEND_TIMEOUT`] for its record; a hung disk fails calls, it does
//!   not hang them.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use ring::signature::Ed25519KeyPair;

use super::{
    record::{Entry, GENESIS, Kind, Record, line_hash},
    segments::{segment_name, sync_dir},
    verify::{self, Break, SegmentInfo},
};
use crate::time::{parse_rfc3339, rfc3339};

/// Written before a torn tail is cut, removed once the repair is recorded.
const REPAIR_MARKER: &str = "repair-pending.txt";
/// After a failed write, the writer waits this long before retrying on its own.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Outcome records kept for a late write while the log is failing; beyond this they are lost
/// (and the calls are reconciled as crashed at the next start).
const MAX_RETRY: usize = 100_000;

/// Longest a caller waits for its record before the call fails: a hung disk must not hang calls.
pub const APPEND_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BATCH: usize = 4096;

/// The wall clock, replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

#[derive(Clone)]
pub struct AuditConfig {
    pub dir: PathBuf,
    pub node_id: String,
    /// A segment is closed once it reaches this size.
    pub segment_bytes: u64,
    /// A checkpoint is written after this many unsigned records...
    pub checkpoint_records: u64,
    /// ...or once the oldest unsigned record is this old, whichever comes first.
    pub checkpoint_interval: Duration,
    /// Segments whose newest record is older than this are pruned (with a signed record).
    pub retention: Option<Duration>,
    /// Fault injection for tests: while this file exists, every write fails.
    pub fault_file: Option<PathBuf>,
    /// The head the vault's own state last recorded; start-up checks the log still holds it.
    pub expected_head: Option<Head>,
    pub clock: Clock,
    /// Told of every batch the writer makes durable and of every failed write (metrics).
    pub observer: Option<Arc<dyn AuditObserver>>,
}

/// What the writer reports as it works, on its own thread: it must not block.
pub trait AuditObserver: Send + Sync {
    /// A batch of `records` records was written and synced; the write and its fdatasync took
    /// `sync`.
    fn batch_written(&self, records: usize, sync: Duration);
    /// A write (or its sync) failed: the calls waiting on it fail.
    fn write_failed(&self);
}

impl AuditConfig {
    pub fn new(dir: PathBuf, node_id: String) -> Self {
        AuditConfig {
            dir,
            node_id,
            segment_bytes: 64 * 1024 * 1024,
            checkpoint_records: 1000,
            checkpoint_interval: Duration::from_secs(1),
            retention: None,
            fault_file: None,
            expected_head: None,
            clock: Arc::new(crate::time::now_unix_nanos),
            observer: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be written; the detail is for the server log.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
    /// The log refused to open (corruption before the tail).
    #[error("audit log is corrupt: {0}")]
    Corrupt(Break),
    #[error("audit log I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Called on the writer thread with the record's sequence number, once it is durable.
pub type Completion = Box<dyn FnOnce(Result<u64, AuditError>) + Send>;

enum Command {
    Append(Box<Entry>, Completion),
    Signer(Option<Arc<Ed25519KeyPair>>),
    /// Runs retention now (tests; the writer also runs it every minute).
    Prune(Completion),
    /// Signs a checkpoint now (graceful stop).
    Checkpoint(Completion),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Before,
    Partial,
}

/// The chain head: the last durable record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub hash: String,
}

/// How far the log is durable: readers (the sink) never read past it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Durable {
    pub segment: u64,
    pub len: u64,
}

struct Shared {
    head: Mutex<Head>,
    durable: Mutex<Durable>,
    /// Bumped after every durable write; sinks wait on it.
    changed: Condvar,
    /// Commands sent to the writer and not yet taken up by it.
    queued: AtomicU64,
}

pub struct AuditLog {
    sender: Mutex<mpsc::Sender<Command>>,
    shared: Arc<Shared>,
    dir: PathBuf,
    /// What start-up found and did, for the server log.
    pub recovery: Recovery,
}

#[derive(Clone, Debug, Default)]
pub struct Recovery {
    pub records: u64,
    pub repaired_bytes: u64,
    pub crashed_intents: usize,
    /// Set when the log no longer holds the head the vault's state recorded.
    pub tail_problem: Option<String>,
}

impl AuditLog {
    /// Opens (creating if needed) the log in `config.dir`: walks the chain, cuts a torn tail
    /// (and records the repair), records a "crashed" outcome for every intent that has none,
    /// and refuses to open if the chain is broken anywhere before the tail.
    pub fn open(config: AuditConfig) -> Result<AuditLog, AuditError> {
        fs::create_dir_all(&config.dir)?;
        let mut expected_found = None;
        let report = verify::scan(&config.dir, None, |record, line| {
            if config
                .expected_head
                .as_ref()
                .is_some_and(|head| head.seq == record.seq)
            {
                expected_found = Some(line_hash(line));
            }
        })?;
        if let Some(broken) = report.broken {
            return Err(AuditError::Corrupt(broken));
        }
        let mut segments = report.segments.clone();
        // Start-up records are written before anyone else can submit.
        let mut startup = Vec::new();

        // A torn tail is cut in three durable steps (marker, cut, record), so a crash at any
        // point still leaves the repair recorded at the next start.
        let marker = config.dir.join(REPAIR_MARKER);
        let mut repaired_bytes = 0;
        if let Some((path, offset, length)) = &report.torn_tail {
            let note = format!(
                "repaired a torn tail: removed a partial record of {length} bytes at byte {offset} of {}",
                path.display()
            );
            fs::write(&marker, note.as_bytes())?;
            fs::File::open(&marker)?.sync_all()?;
            sync_dir(&config.dir)?;
            let file = OpenOptions::new().write(true).open(path)?;
            file.set_len(*offset)?;
            file.sync_all()?;
            repaired_bytes = *length;
            if let Some(last) = segments.last_mut() {
                last.len = *offset;
            }
        }
        if let Ok(note) = fs::read_to_string(&marker) {
            startup.push(system_entry(note));
        }

        // A prune that stopped part-way (crash, or a failed delete) is finished now.
        if let Some(through) = report.prunes.iter().map(|(through, _)| *through).max() {
            let closed = segments.len().saturating_sub(1);
            let done: Vec<SegmentInfo> = segments[..closed]
                .iter()
                .take_while(|s| s.last_seq.is_none_or(|last| last <= through))
                .cloned()
                .collect();
            for segment in &done {
                remove_if_present(&segment.path)?;
            }
            if !done.is_empty() {
                sync_dir(&config.dir)?;
                segments.drain(..done.len());
            }
        }

        let tail_problem = config.expected_head.as_ref().and_then(|expected| match &expected_found {
            Some(hash) if *hash == expected.hash => None,
            Some(_) => Some(format!(
                "record {} differs from the one the vault's state recorded: the log was rewritten",
                expected.seq
            )),
            // Retention removed it, with a signed record saying so.
            None if report.first_seq.is_some_and(|first| expected.seq < first) => None,
            None => Some(format!(
                "the log ends at record {} but the vault's state recorded record {}: records were removed from the tail",
                report.head_seq, expected.seq
            )),
        });
        if let Some(problem) = &tail_problem {
            tracing::error!(problem = %problem, "audit log tail check failed");
            let mut entry = system_entry(problem.clone());
            entry.outcome = "error".into();
            startup.push(entry);
        }
        for intent in &report.open_intents {
            startup.push(Entry {
                kind: Some(Kind::Outcome),
                request_id: intent.request_id.clone(),
                method: intent.method.clone(),
                tenant: intent.tenant.clone(),
                path: intent.path.clone(),
                principal: intent.principal.clone(),
                source: intent.source.clone(),
                transport: intent.transport.clone(),
                outcome: "crashed".into(),
                code: "UNKNOWN".into(),
                detail: format!(
                    "intent record {} has no outcome: the server stopped during the call",
                    intent.seq
                ),
                answered_anyway: false,
            });
        }

        let head = Head {
            seq: report.head_seq,
            hash: report.head_hash.clone(),
        };
        let (number, len) = segments.last().map_or((1, 0), |s| (s.number, s.len));
        let shared = Arc::new(Shared {
            head: Mutex::new(head.clone()),
            durable: Mutex::new(Durable {
                segment: number,
                len,
            }),
            changed: Condvar::new(),
            queued: AtomicU64::new(0),
        });
        let (sender, receiver) = mpsc::channel();
        let mut writer = Writer {
            config: config.clone(),
            file: None,
            segment: number,
            segment_len: len,
            seq: head.seq,
            head: head.hash,
            unsigned: report.unsigned_tail,
            oldest_unsigned: (report.unsigned_tail > 0).then(Instant::now),
            signer: None,
            segments,
            shared: Arc::clone(&shared),
            last_prune_check: Instant::now(),
            retry: Vec::new(),
            retry_after: None,
        };
        if !startup.is_empty() {
            writer.write_batch(startup.into_iter().map(Pending::plain).collect())?;
        }
        remove_if_present(&marker)?;
        let recovery = Recovery {
            records: report.records,
            repaired_bytes,
            crashed_intents: report.open_intents.len(),
            tail_problem,
        };
        thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(receiver))?;
        Ok(AuditLog {
            sender: Mutex::new(sender),
            shared,
            dir: config.dir,
            recovery,
        })
    }

    /// How far the log is durable.
    pub fn durable(&self) -> Durable {
        *self
            .shared
            .durable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    fn send(&self, command: Command) -> Result<(), Command> {
        let sender = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        sender.send(command).map_err(|mpsc::SendError(command)| {
            self.shared.queued.fetch_sub(1, Ordering::Relaxed);
            command
        })
    }

    /// Records (and other commands) waiting for the writer: the depth of its queue.
    pub fn queued(&self) -> u64 {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Queues an entry; `done` runs once it is durable (or failed).
    pub fn submit(&self, entry: Entry, done: Completion) {
        if let Err(Command::Append(_, done)) = self.send(Command::Append(Box::new(entry), done)) {
            done(Err(AuditError::Unavailable(
                "the audit writer has stopped".into(),
            )));
        }
    }

    /// Appends an entry and waits until it is durable (at most [`APPEND_TIMEOUT`]).
    pub fn append(&self, entry: Entry) -> Result<u64, AuditError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        self.submit(entry, Box::new(move |result| drop(sender.send(result))));
        receiver.recv_timeout(APPEND_TIMEOUT).unwrap_or_else(|_| {
            Err(AuditError::Unavailable(
                "timed out waiting for the audit log".into(),
            ))
        })
    }

    /// Gives the writer the checkpoint signing key (on unseal) or takes it away (on seal).
    pub fn set_signer(&self, signer: Option<Arc<Ed25519KeyPair>>) {
        let _ = self.send(Command::Signer(signer));
    }

    /// Signs a checkpoint over every record written since the last one, now, and waits until
    /// it is durable (a graceful stop calls this, so the log of a server stopped right after
    /// its last call verifies offline). Fails if the vault is sealed (no signing key) and there
    /// are unsigned records.
    pub fn checkpoint_now(&self) -> Result<(), AuditError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        if self
            .send(Command::Checkpoint(Box::new(move |result| {
                drop(sender.send(result))
            })))
            .is_err()
        {
            return Err(AuditError::Unavailable(
                "the audit writer has stopped".into(),
            ));
        }
        receiver
            .recv_timeout(APPEND_TIMEOUT)
            .unwrap_or_else(|_| {
                Err(AuditError::Unavailable(
                    "timed out waiting for the audit log".into(),
                ))
            })
            .map(|_| ())
    }

    /// Runs retention now and waits for it.
    pub fn prune_now(&self) -> Result<u64, AuditError> {
        let (sender, receiver) = mpsc::sync_channel(1);
        if self
            .send(Command::Prune(Box::new(move |result| {
                drop(sender.send(result))
            })))
            .is_err()
        {
            return Err(AuditError::Unavailable(
                "the audit writer has stopped".into(),
            ));
        }
        receiver.recv_timeout(APPEND_TIMEOUT).unwrap_or_else(|_| {
            Err(AuditError::Unavailable(
                "timed out waiting for the audit log".into(),
            ))
        })
    }

    /// The last durable record.
    pub fn head(&self) -> Head {
        self.shared
            .head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until the head moves past `seq` or `timeout` passes; returns the head.
    pub fn wait_past(&self, seq: u64, timeout: Duration) -> Head {
        let guard = self.shared.head.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .shared
            .changed
            .wait_timeout_while(guard, timeout, |head| head.seq <= seq)
            .unwrap_or_else(|p| p.into_inner());
        guard.clone()
    }
}

fn remove_if_present(path: &std::path::Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

pub fn system_entry(detail: String) -> Entry {
    Entry {
        kind: Some(Kind::System),
        principal: "vault".into(),
        outcome: "ok".into(),
        detail,
        ..Entry::default()
    }
}

/// A record to write: what the caller gave, whether to sign it, and for a prune record the chain
/// position the removed segments ended at.
struct Pending {
    entry: Entry,
    sign: bool,
    pruned: Option<(u64, String)>,
}

impl Pending {
    fn plain(entry: Entry) -> Self {
        Pending {
            entry,
            sign: false,
            pruned: None,
        }
    }
}

struct Writer {
    config: AuditConfig,
    file: Option<File>,
    segment: u64,
    /// Length of the current segment up to its last whole, durable record.
    segment_len: u64,
    seq: u64,
    head: String,
    unsigned: u64,
    oldest_unsigned: Option<Instant>,
    signer: Option<Arc<Ed25519KeyPair>>,
    segments: Vec<SegmentInfo>,
    shared: Arc<Shared>,
    last_prune_check: Instant,
    /// Outcome records whose write failed, written first once the log works again.
    retry: Vec<Entry>,
    /// No write is attempted on the writer's own initiative before this.
    retry_after: Option<Instant>,
}

impl Writer {
    fn run(mut self, receiver: mpsc::Receiver<Command>) {
        loop {
            let wait = self.checkpoint_wait().unwrap_or(Duration::from_secs(1));
            let first = match receiver.recv_timeout(wait) {
                Ok(command) => Some(command),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            };
            let mut appends: Vec<(Entry, Completion)> = Vec::new();
            let mut commands: Vec<Command> = first.into_iter().collect();
            while appends.len() + commands.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(command) => commands.push(command),
                    Err(_) => break,
                }
            }
            self.shared
                .queued
                .fetch_sub(commands.len() as u64, Ordering::Relaxed);
            let mut prunes = Vec::new();
            for command in commands {
                match command {
                    Command::Append(entry, done) => appends.push((*entry, done)),
                    Command::Signer(signer) => {
                        // Records queued before the key changed are written first.
                        self.flush(std::mem::take(&mut appends));
                        self.signer = signer;
                    }
                    Command::Prune(done) => prunes.push(done),
                    Command::Checkpoint(done) => {
                        self.flush(std::mem::take(&mut appends));
                        done(self.checkpoint_on_request());
                    }
                }
            }
            self.flush(appends);
            if self.checkpoint_wait() == Some(Duration::ZERO) {
                self.checkpoint();
            }
            let prune_due = self.last_prune_check.elapsed() >= Duration::from_secs(60);
            if !prunes.is_empty() || prune_due {
                self.last_prune_check = Instant::now();
                let result = self.prune();
                if let Err(e) = &result {
                    tracing::error!(error = %e, "audit retention failed");
                }
                let mut result = Some(result);
                for done in prunes {
                    done(
                        result
                            .take()
                            .unwrap_or(Ok(0))
                            .map_err(|e| AuditError::Unavailable(e.to_string())),
                    );
                }
            }
        }
    }

    /// How long until the writer has work of its own (zero: now): a due checkpoint, or
    /// outcome records to retry. `None` when there is none. After a failed write it waits
    /// [`RETRY_DELAY`] rather than spinning on a failing disk.
    fn checkpoint_wait(&self) -> Option<Duration> {
        let backoff = self
            .retry_after
            .map(|at| at.saturating_duration_since(Instant::now()));
        if !self.retry.is_empty() {
            return Some(backoff.unwrap_or(Duration::ZERO));
        }
        if self.signer.is_none() || self.unsigned == 0 {
            return None;
        }
        let due = if self.unsigned >= self.config.checkpoint_records {
            Duration::ZERO
        } else {
            let age = self
                .oldest_unsigned
                .map_or(Duration::ZERO, |at| at.elapsed());
            self.config.checkpoint_interval.saturating_sub(age)
        };
        Some(due.max(backoff.unwrap_or(Duration::ZERO)))
    }

    /// Writes the queued entries (after any outcome records waiting for a retry) and completes
    /// each caller. When the write fails, the callers get an error, and every outcome record is
    /// kept to be written later, marked as answered UNAVAILABLE, so that each call still ends
    /// up with exactly one outcome.
    fn flush(&mut self, appends: Vec<(Entry, Completion)>) {
        let retry_due =
            !self.retry.is_empty() && self.retry_after.is_none_or(|at| Instant::now() >= at);
        if appends.is_empty() && !retry_due {
            return;
        }
        let retried = std::mem::take(&mut self.retry);
        let (entries, completions): (Vec<Entry>, Vec<Completion>) = appends.into_iter().unzip();
        let pending = retried
            .iter()
            .chain(&entries)
            .cloned()
            .map(Pending::plain)
            .collect();
        match self.write_batch(pending) {
            Ok(seqs) => {
                for (done, seq) in completions
                    .into_iter()
                    .zip(seqs.into_iter().skip(retried.len()))
                {
                    done(Ok(seq));
                }
            }
            Err(e) => {
                if self.retry_after.is_none() {
                    tracing::error!(error = %e, "audit write failed; calls fail until it succeeds again");
                }
                self.retry_after = Some(Instant::now() + RETRY_DELAY);
                self.retry = retried;
                for entry in entries
                    .into_iter()
                    .filter(|entry| entry.kind == Some(Kind::Outcome))
                {
                    if self.retry.len() >= MAX_RETRY {
                        break;
                    }
                    if entry.answered_anyway {
                        self.retry.push(Entry {
                            detail: format!(
                                "written late: the audit log failed when the call ended; the \
                                 answer went out, as the call's intent record allowed{}{}",
                                if entry.detail.is_empty() { "" } else { "; " },
                                entry.detail
                            ),
                            ..entry
                        });
                        continue;
                    }
                    self.retry.push(Entry {
                        outcome: "error".into(),
                        detail: format!(
                            "written late: the audit log failed when the call ended ({} {}), so the caller was answered UNAVAILABLE",
                            entry.outcome, entry.code
                        ),
                        code: "UNAVAILABLE".into(),
                        ..entry
                    });
                }
                for done in completions {
                    done(Err(AuditError::Unavailable(e.to_string())));
                }
            }
        }
    }

    fn checkpoint_on_request(&mut self) -> Result<u64, AuditError> {
        if self.unsigned == 0 {
            return Ok(self.seq);
        }
        if self.signer.is_none() {
            return Err(AuditError::Unavailable(
                "the vault is sealed: no checkpoint can be signed".into(),
            ));
        }
        self.checkpoint();
        if self.unsigned == 0 {
            Ok(self.seq)
        } else {
            Err(AuditError::Unavailable(
                "the checkpoint was not written".into(),
            ))
        }
    }

    fn checkpoint(&mut self) {
        let entry = Entry {
            kind: Some(Kind::Checkpoint),
            principal: "vault".into(),
            ..Entry::default()
        };
        if let Err(e) = self.write_batch(vec![Pending {
            entry,
            sign: true,
            pruned: None,
        }]) {
            if self.retry_after.is_none() {
                tracing::error!(error = %e, "audit checkpoint failed");
            }
            self.retry_after = Some(Instant::now() + RETRY_DELAY);
        }
    }

    /// The injected fault, if the fault file exists: by default every write fails before it
    /// starts; if the file says `partial`, half of the batch reaches the segment first (a
    /// torn write).
    fn fault(&self) -> Option<Fault> {
        let path = self.config.fault_file.as_ref()?;
        let contents = fs::read_to_string(path).ok()?;
        Some(if contents.trim() == "partial" {
            Fault::Partial
        } else {
            Fault::Before
        })
    }

    /// The current segment: reopened and cut back to its last whole record after a failed
    /// write, and rolled over once full. State changes only after each step has succeeded.
    fn current_file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            self.file = Some(self.open_segment(self.segment, self.segment_len)?);
        }
        if self.segment_len >= self.config.segment_bytes {
            if let Some(file) = &self.file {
                file.sync_all()?;
            }
            let next = self.segment + 1;
            let file = self.open_segment(next, 0)?;
            self.file = Some(file);
            self.segment = next;
            self.segment_len = 0;
            self.publish_durable();
        }
        if self
            .segments
            .last()
            .is_none_or(|s| s.number != self.segment)
        {
            self.segments.push(SegmentInfo {
                number: self.segment,
                path: self.config.dir.join(segment_name(self.segment)),
                len: self.segment_len,
                first_seq: None,
                last_seq: None,
                last_time: None,
                last_hash: None,
            });
        }
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("audit segment not open"))
    }

    /// Opens segment `number` for appending, cut back to `len` bytes (its last whole, durable
    /// record), with its directory entry made durable.
    fn open_segment(&self, number: u64, len: u64) -> io::Result<File> {
        let path = self.config.dir.join(segment_name(number));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if file.metadata()?.len() != len {
            file.set_len(len)?;
            file.sync_data()?;
        }
        sync_dir(&self.config.dir)?;
        Ok(file)
    }

    fn publish_durable(&self) {
        let mut durable = self
            .shared
            .durable
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *durable = Durable {
            segment: self.segment,
            len: self.segment_len,
        };
    }

    /// Appends records in one write and one fdatasync; returns their sequence numbers.
    fn write_batch(&mut self, entries: Vec<Pending>) -> io::Result<Vec<u64>> {
        let signer = self.signer.clone();
        let mut buffer = Vec::new();
        let mut seq = self.seq;
        let mut head = self.head.clone();
        let mut seqs = Vec::with_capacity(entries.len());
        let mut last_time = String::new();
        let mut signed_at = None;
        for Pending {
            entry,
            sign,
            pruned,
        } in entries
        {
            seq += 1;
            let time = rfc3339((self.config.clock)());
            let mut record = Record {
                seq,
                time: time.clone(),
                kind: entry.kind.unwrap_or(Kind::Outcome),
                node: self.config.node_id.clone(),
                request_id: entry.request_id,
                method: entry.method,
                tenant: entry.tenant,
                path: entry.path,
                principal: entry.principal,
                source: entry.source,
                transport: entry.transport,
                outcome: entry.outcome,
                code: entry.code,
                detail: entry.detail,
                pruned_through: pruned.as_ref().map(|(through, _)| *through),
                pruned_head: pruned.map(|(_, pruned_head)| pruned_head),
                signature: None,
                prev: head.clone(),
            };
            if sign {
                match &signer {
                    Some(key) => record.sign(key),
                    None => return Err(io::Error::other("no signing key for a signed record")),
                }
                signed_at = Some(seq);
            }
            let line = record.to_line();
            head = line_hash(&line);
            buffer.extend_from_slice(&line);
            buffer.push(b'\n');
            seqs.push(seq);
            last_time = time;
        }
        let started = Instant::now();
        let written = self.write_durably(&buffer);
        if let Some(observer) = &self.config.observer {
            match &written {
                Ok(()) => observer.batch_written(seqs.len(), started.elapsed()),
                Err(_) => observer.write_failed(),
            }
        }
        written?;
        self.commit(
            seq,
            head,
            buffer.len() as u64,
            last_time,
            signed_at,
            seqs.len() as u64,
        );
        Ok(seqs)
    }

    fn write_durably(&mut self, buffer: &[u8]) -> io::Result<()> {
        let fault = self.fault();
        if fault == Some(Fault::Before) {
            return Err(io::Error::other("injected audit write failure"));
        }
        // The failure-injection tests' I/O fault (feature `failpoints`): see `crate::injected`.
        if cfg!(feature = "failpoints")
            && buffer.windows(7).any(|w| w == b"faulty/")
            && crate::injected("audit-write-error")
        {
            return Err(io::Error::other(
                "injected I/O error (failpoint audit-write-error)",
            ));
        }
        let result = self.current_file().and_then(|file| {
            if fault == Some(Fault::Partial) {
                file.write_all(&buffer[..buffer.len() / 2])?;
                return Err(io::Error::other("injected torn audit write"));
            }
            file.write_all(buffer)?;
            file.sync_data()
        });
        if result.is_err() {
            // Reopened (and cut back to the last whole record) before the next write.
            self.file = None;
        }
        result
    }

    fn commit(
        &mut self,
        seq: u64,
        head: String,
        bytes: u64,
        last_time: String,
        signed_at: Option<u64>,
        count: u64,
    ) {
        self.seq = seq;
        self.head = head.clone();
        self.segment_len += bytes;
        match signed_at {
            Some(signed) => {
                self.unsigned = seq - signed;
                self.oldest_unsigned = None;
            }
            None => {
                self.unsigned += count;
                self.oldest_unsigned.get_or_insert_with(Instant::now);
            }
        }
        if let Some(info) = self.segments.last_mut() {
            info.len = self.segment_len;
            info.first_seq.get_or_insert(seq + 1 - count);
            info.last_seq = Some(seq);
            info.last_time = Some(last_time);
            info.last_hash = Some(head.clone());
        }
        if self.retry_after.take().is_some() {
            tracing::info!("audit log writable again");
        }
        self.publish_durable();
        let mut shared_head = self.shared.head.lock().unwrap_or_else(|p| p.into_inner());
        *shared_head = Head { seq, hash: head };
        self.shared.changed.notify_all();
    }

    /// Removes the oldest closed segments whose newest record is older than the retention,
    /// after writing a signed record that names where the remaining chain starts. Returns how
    /// many segments were removed.
    fn prune(&mut self) -> io::Result<u64> {
        let (Some(retention), Some(_)) = (self.config.retention, &self.signer) else {
            return Ok(0);
        };
        let cutoff =
            (self.config.clock)() - i64::try_from(retention.as_nanos()).unwrap_or(i64::MAX);
        let closed = self.segments.len().saturating_sub(1);
        let expired = self.segments[..closed]
            .iter()
            .take_while(|s| {
                s.last_time
                    .as_deref()
                    .and_then(parse_rfc3339)
                    .is_some_and(|t| t < cutoff)
            })
            .count();
        // The newest expired segment with records names the chain position.
        let Some(newest) = self.segments[..expired]
            .iter()
            .rev()
            .find(|s| s.last_seq.is_some())
        else {
            return Ok(0);
        };
        let (through, pruned_head) = (
            newest.last_seq.unwrap_or(0),
            newest.last_hash.clone().unwrap_or_else(|| GENESIS.into()),
        );
        let removed: Vec<std::path::PathBuf> = self.segments[..expired]
            .iter()
            .map(|s| s.path.clone())
            .collect();
        let detail = format!(
            "retention removed {} segment(s) through record {through}",
            removed.len()
        );
        let mut entry = system_entry(detail);
        entry.kind = Some(Kind::Prune);
        self.write_batch(vec![Pending {
            entry,
            sign: true,
            pruned: Some((through, pruned_head)),
        }])?;
        // Oldest first, each dropped from the index as it goes: a failure part-way leaves a log
        // that starts inside the pruned range, which the prune record accounts for (and the
        // next start-up finishes).
        for path in &removed {
            remove_if_present(path)?;
            self.segments.remove(0);
        }
        sync_dir(&self.config.dir)?;
        Ok(removed.len() as u64)
    }
}
