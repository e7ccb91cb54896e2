//! Watching for changes: the server's change feed as a stream of [`Event`]s that survives
//! disconnects, server restarts and token replacement by resuming from the last revision seen.

use std::{sync::Arc, time::Duration};

use tonic::codec::Streaming;
use vault_proto::v1::{self, watch_client::WatchClient};

use crate::{Client, Error, Inner, Result};

/// Where a watch starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// With the next change.
    Now,
    /// After this revision (the last one the application saw, or a listing's revision).
    After(u64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
    Undeleted,
    Destroyed,
    Expiring,
    Expired,
    KeyRotated,
    /// A rule on suspicious access fired for one of the tenant's principals.
    SecurityAlert,
    /// A kind this library does not know yet.
    Other(i32),
}

impl EventKind {
    /// The name the API and the webhooks use: `created`, `key_rotated`, ...
    pub fn as_str(&self) -> &'static str {
        match self {
            EventKind::Created => "created",
            EventKind::Updated => "updated",
            EventKind::Deleted => "deleted",
            EventKind::Undeleted => "undeleted",
            EventKind::Destroyed => "destroyed",
            EventKind::Expiring => "expiring",
            EventKind::Expired => "expired",
            EventKind::KeyRotated => "key_rotated",
            EventKind::SecurityAlert => "security_alert",
            EventKind::Other(_) => "unknown",
        }
    }
}

/// One change. Names, versions and times only: never a value.
#[derive(Clone, Debug)]
pub struct Event {
    /// The tenant's revision of the change; increases monotonically.
    pub revision: u64,
    pub kind: EventKind,
    /// The secret's path; empty for [`EventKind::KeyRotated`].
    pub path: String,
    pub versions: Vec<u64>,
    pub time: String,
    /// KeyRotated: the tenant's new key-encryption-key version.
    pub key_version: u32,
    /// Expiring and Expired: the deadline.
    pub deadline: String,
    pub detail: String,
}

impl From<v1::WatchEvent> for Event {
    fn from(event: v1::WatchEvent) -> Self {
        let kind = match v1::EventType::try_from(event.r#type) {
            Ok(v1::EventType::Created) => EventKind::Created,
            Ok(v1::EventType::Updated) => EventKind::Updated,
            Ok(v1::EventType::Deleted) => EventKind::Deleted,
            Ok(v1::EventType::Undeleted) => EventKind::Undeleted,
            Ok(v1::EventType::Destroyed) => EventKind::Destroyed,
            Ok(v1::EventType::Expiring) => EventKind::Expiring,
            Ok(v1::EventType::Expired) => EventKind::Expired,
            Ok(v1::EventType::KeyRotated) => EventKind::KeyRotated,
            Ok(v1::EventType::SecurityAlert) => EventKind::SecurityAlert,
            _ => EventKind::Other(event.r#type),
        };
        Event {
            revision: event.revision,
            kind,
            path: event.path,
            versions: event.versions,
            time: event.time,
            key_version: event.key_version,
            deadline: event.deadline,
            detail: event.detail,
        }
    }
}

/// The longest pause between attempts to re-open a watch.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A watch on a folder (`""` or ending in `/`) or one secret. [`Watch::next`] re-opens the
/// stream by itself after a disconnect, a server restart, a slow-consumer drop or a token
/// replacement, from the last revision it returned, so nothing is missed or repeated.
pub struct Watch {
    inner: Arc<Inner>,
    tenant: String,
    prefix: String,
    /// The last revision returned (or where the stream started).
    revision: u64,
    stream: Option<Streaming<v1::WatchEvent>>,
    /// Where to open next, when set by [`Watch::restart`].
    restart: Option<Start>,
    /// The token generation the stream was opened with.
    opened_with: u64,
    failures: u32,
}

impl Client {
    /// Opens a watch. When this returns, the starting point is fixed: every later change under
    /// `prefix` that the token may see will be returned by [`Watch::next`].
    pub async fn watch(&self, tenant: &str, prefix: &str, start: Start) -> Result<Watch> {
        let mut watch = Watch {
            inner: Arc::clone(&self.inner),
            tenant: tenant.to_owned(),
            prefix: prefix.to_owned(),
            revision: 0,
            stream: None,
            restart: None,
            opened_with: 0,
            failures: 0,
        };
        watch.open(start).await?;
        Ok(watch)
    }
}

impl Watch {
    /// The last revision returned, or where the watch started: resume from it with
    /// [`Start::After`].
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Opens the stream again at `start`; after [`Error::OutOfRange`], restart from
    /// [`Start::Now`] and then read the secrets again. If the open fails, [`Watch::next`] tries
    /// again from `start`.
    pub async fn restart(&mut self, start: Start) -> Result<()> {
        self.stream = None;
        self.restart = Some(start);
        self.open(start).await?;
        self.restart = None;
        Ok(())
    }

    async fn open(&mut self, start: Start) -> Result<()> {
        let (from_revision, from_now) = match start {
            Start::Now => (0, true),
            Start::After(revision) => (revision, false),
        };
        // No call timeout: the stream lives as long as the watch. The generation is noted
        // before the attempt, so a refusal of the current token is not taken for a stale one.
        self.opened_with = self.inner.session.generation();
        let request = self
            .inner
            .session
            .authorize(tonic::Request::new(v1::WatchRequest {
                tenant: self.tenant.clone(),
                prefix: self.prefix.clone(),
                from_revision,
                from_now,
            }))?;
        let response = WatchClient::new(self.inner.channel.clone())
            .watch(request)
            .await?;
        // The server says where the stream starts, so a watch from now resumes exactly too.
        let started = response
            .metadata()
            .get("x-vault-revision")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse().ok());
        self.revision = match (start, started) {
            (_, Some(revision)) => revision,
            (Start::After(revision), None) => revision,
            (Start::Now, None) => {
                return Err(Error::Server {
                    code: tonic::Code::Internal,
                    message: "the server did not say where the watch starts".to_owned(),
                });
            }
        };
        self.stream = Some(response.into_inner());
        Ok(())
    }

    /// The next change. Waits as long as it takes; retries what may succeed later (the server
    /// restarting or sealed, a dropped slow consumer) with backoff, and returns every other
    /// error: [`Error::OutOfRange`] means the revision left the retained feed (read again and
    /// watch from now), [`Error::Denied`] and [`Error::Unauthenticated`] that access ended.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            let Some(stream) = self.stream.as_mut() else {
                let start = self.restart.unwrap_or(Start::After(self.revision));
                match self.open(start).await {
                    Ok(()) => self.restart = None,
                    Err(error) => self.retry_or(error).await?,
                }
                continue;
            };
            match stream.message().await {
                Ok(Some(event)) => {
                    self.failures = 0;
                    self.revision = event.revision;
                    return Ok(Event::from(event));
                }
                // The server ended the stream (a restart): open it again.
                Ok(None) => self.stream = None,
                Err(status) => {
                    self.stream = None;
                    self.retry_or(Error::from(status)).await?;
                }
            }
        }
    }

    /// Waits before the next attempt if `error` may pass; returns it otherwise.
    async fn retry_or(&mut self, error: Error) -> Result<()> {
        let replaced = self.inner.session.generation() != self.opened_with;
        match error {
            // Opened with a token that has since been replaced: open again with the new one.
            Error::Unauthenticated { .. } | Error::Denied { .. } if replaced => Ok(()),
            error if error.is_retryable() => {
                let pause = Duration::from_millis(100)
                    .saturating_mul(1 << self.failures.min(6))
                    .min(MAX_BACKOFF);
                self.failures += 1;
                tokio::time::sleep(pause).await;
                Ok(())
            }
            error => Err(error),
        }
    }
}
