//! The syslog sink: follows the durable log and sends each record as an RFC 5424 message over a
//! Unix datagram socket (e.g. `/dev/log`, or a collector's socket).
//!
//! Invariant: the sink reads the segment files, never the request path, so a slow, full or
//! absent receiver cannot block or slow a call. Its position (segment, offset) is persisted in
//! `sink-syslog.cursor` in the audit directory; after a restart or an outage it resumes from
//! there, so it catches up with everything it missed.

use std::{
    fs,
    io::{self, Write},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use super::{segments::list_segments, writer::AuditLog};

const CURSOR_FILE: &str = "sink-syslog.cursor";
/// PRI for facility 13 (log audit), severity 6 (informational).
const PRI: u32 = 13 * 8 + 6;
const MAX_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Cursor {
    segment: u64,
    offset: u64,
}

/// Starts the sink thread. It runs for the life of the process.
pub fn spawn_syslog_sink(log: Arc<AuditLog>, socket: PathBuf, host: String) -> io::Result<()> {
    let sink = UnixDatagram::unbound()?;
    sink.set_nonblocking(true)?;
    thread::Builder::new()
        .name("audit-sink-syslog".into())
        .spawn(move || {
            let mut follower = Follower {
                log,
                socket,
                host,
                sink,
                cursor: Cursor::default(),
                unsaved: 0,
                saved_at: Instant::now(),
            };
            follower.cursor = follower.load_cursor();
            follower.run();
        })?;
    Ok(())
}

struct Follower {
    log: Arc<AuditLog>,
    socket: PathBuf,
    host: String,
    sink: UnixDatagram,
    cursor: Cursor,
    unsaved: u64,
    saved_at: Instant,
}

impl Follower {
    fn cursor_path(&self) -> PathBuf {
        self.log.dir().join(CURSOR_FILE)
    }

    fn load_cursor(&self) -> Cursor {
        fs::read(self.cursor_path())
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn save_cursor(&mut self) {
        let path = self.cursor_path();
        let temporary = path.with_extension("tmp");
        let result = serde_json::to_vec(&self.cursor)
            .map_err(io::Error::other)
            .and_then(|bytes| {
                let mut file = fs::File::create(&temporary)?;
                file.write_all(&bytes)?;
                file.sync_data()?;
                fs::rename(&temporary, &path)
            });
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot save the syslog sink's cursor");
        }
        self.unsaved = 0;
        self.saved_at = Instant::now();
    }

    fn run(&mut self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.send_available() {
                Ok(true) => backoff = Duration::from_millis(50),
                Ok(false) => {
                    if self.unsaved > 0 {
                        self.save_cursor();
                    }
                    let head = self.log.head();
                    self.log.wait_past(head.seq, Duration::from_secs(1));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "syslog sink: receiver unavailable, retrying");
                    if self.unsaved > 0 {
                        self.save_cursor();
                    }
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Sends every whole record after the cursor. `Ok(false)` when there was nothing to send.
    fn send_available(&mut self) -> io::Result<bool> {
        let segments = list_segments(self.log.dir())?;
        // Segments removed by retention before the sink reached them are skipped.
        if let Some((first, _)) = segments.first()
            && self.cursor.segment < *first
        {
            self.cursor = Cursor {
                segment: *first,
                offset: 0,
            };
        }
        let Some((_, path)) = segments
            .iter()
            .find(|(number, _)| *number == self.cursor.segment)
        else {
            return Ok(false);
        };
        // Only what is durable: a record the writer later cuts back must never be sent.
        let durable = self.log.durable();
        if self.cursor.segment > durable.segment {
            return Ok(false);
        }
        let mut data = read_from(path, self.cursor.offset)?;
        if self.cursor.segment == durable.segment {
            data.truncate(durable.len.saturating_sub(self.cursor.offset) as usize);
        }
        let mut sent_any = false;
        let mut consumed = 0usize;
        while let Some(newline) = data[consumed..].iter().position(|b| *b == b'\n') {
            let line = &data[consumed..consumed + newline];
            self.send_line(line)?;
            consumed += newline + 1;
            self.cursor.offset += newline as u64 + 1;
            self.unsaved += 1;
            sent_any = true;
            if self.unsaved >= 256 || self.saved_at.elapsed() >= Duration::from_secs(1) {
                self.save_cursor();
            }
        }
        // The segment is finished once a later one exists and everything whole was sent.
        let next = self.cursor.segment + 1;
        if consumed == data.len()
            && self.cursor.segment < durable.segment
            && segments.iter().any(|(number, _)| *number == next)
        {
            self.cursor = Cursor {
                segment: next,
                offset: 0,
            };
            self.save_cursor();
            return Ok(true);
        }
        Ok(sent_any)
    }

    fn send_line(&self, line: &[u8]) -> io::Result<()> {
        let time = serde_json::from_slice::<serde_json::Value>(line)
            .ok()
            .and_then(|value| {
                value
                    .get("time")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "-".into());
        let mut message = format!("<{PRI}>1 {time} {} vault - audit - ", self.host).into_bytes();
        message.extend_from_slice(line);
        self.sink.send_to(&message, &self.socket).map(|_| ())
    }
}

fn read_from(path: &Path, offset: u64) -> io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = fs::File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}
