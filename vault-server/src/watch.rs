//! Watch service: the change feed as a server stream.
//!
//! Opening a watch is one audited call (its outcome record says where the stream starts); the
//! stream then reads events from storage at the client's pace, so a slow client costs a bounded
//! buffer, never unbounded memory: a client that leaves the buffer full for longer than the send
//! timeout is dropped with RESOURCE_EXHAUSTED and the revision to resume from. The token is
//! checked again before every batch, so a revoked or expired token, or a sealed vault, ends the
//! stream.
//!
//! The buffer is [`WATCH_BUFFER`] events and the send timeout `--watch-send-timeout-ms`. Server
//! shutdown ends watches with UNAVAILABLE and the same resume hint. A stream holds no place
//! under the server-wide call limit once open; its storage reads run on the blocking pool under
//! a bound of their own (64 at once, 4 per tenant).

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use futures_util::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    limits::{CountedPlaces, Place},
    names::{TenantId, TenantName},
    time::rfc3339,
    token::Token,
    vault::{Event, EventKind},
};
use vault_proto::v1::{self, WatchRequest, watch_server::Watch};

use crate::{
    call::{Call, bearer_token, presented_token},
    serve::{Handlers, Reply},
    status::to_status,
};

/// Events buffered per watch between the reader and the connection.
pub const WATCH_BUFFER: usize = 256;

/// What the watch service keeps (in [`crate::Shared`]): the send timeout, the signal that the
/// server is stopping, and the watches open.
pub(crate) struct Watches {
    send_timeout: Duration,
    stop: watch::Receiver<bool>,
    open: Arc<OpenWatches>,
}

impl Watches {
    pub(crate) fn new(
        send_timeout: Duration,
        stop: watch::Receiver<bool>,
        limits: WatchLimits,
    ) -> Self {
        Watches {
            send_timeout,
            stop,
            open: Arc::new(OpenWatches {
                limits,
                per_token: CountedPlaces::default(),
                per_tenant: CountedPlaces::default(),
                reads: WatchReads::new(),
            }),
        }
    }
}

/// Reads of the feed by watches, bounded: an idle watch holds no thread, and busy ones hold at
/// most [`WatchReads::MAX`] blocking threads in all and [`WatchReads::PER_TENANT`] for one
/// tenant (a read waits its turn asynchronously), so one tenant writing in a loop under a
/// thousand watches cannot take the blocking pool from the others.
struct WatchReads {
    all: Arc<tokio::sync::Semaphore>,
    per_tenant: Mutex<HashMap<TenantId, std::sync::Weak<tokio::sync::Semaphore>>>,
}

impl WatchReads {
    const MAX: usize = 64;
    const PER_TENANT: usize = 4;

    fn new() -> Self {
        WatchReads {
            all: Arc::new(tokio::sync::Semaphore::new(Self::MAX)),
            per_tenant: Mutex::default(),
        }
    }

    fn tenant(&self, tenant: TenantId) -> Arc<tokio::sync::Semaphore> {
        let mut map = self
            .per_tenant
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(existing) = map.get(&tenant).and_then(std::sync::Weak::upgrade) {
            return existing;
        }
        if map.len() >= 1024 {
            map.retain(|_, held| held.strong_count() > 0);
        }
        let semaphore = Arc::new(tokio::sync::Semaphore::new(Self::PER_TENANT));
        map.insert(tenant, Arc::downgrade(&semaphore));
        semaphore
    }
}

/// Watches one token, and one tenant, may have open at once.
#[derive(Clone, Copy, Debug)]
pub struct WatchLimits {
    pub per_token: usize,
    pub per_tenant: usize,
}

/// The watches open, per token accessor and per tenant.
struct OpenWatches {
    limits: WatchLimits,
    per_token: CountedPlaces<String>,
    per_tenant: CountedPlaces<TenantId>,
    reads: WatchReads,
}

/// One open watch's places under [`WatchLimits`]; given back when the watch ends.
struct WatchSlot {
    tenant: TenantId,
    _places: (Place<String>, Place<TenantId>),
}

impl OpenWatches {
    fn take(&self, accessor: &str, tenant: TenantId) -> Result<WatchSlot, Error> {
        let token_place = self
            .per_token
            .take(accessor.to_owned(), self.limits.per_token)
            .ok_or_else(|| {
                crate::metrics::metrics().refused("watches-per-token");
                Error::ResourceExhausted(format!(
                    "token {accessor} has {} watches open, the most one token may have",
                    self.limits.per_token
                ))
            })?;
        let tenant_place = self
            .per_tenant
            .take(tenant, self.limits.per_tenant)
            .ok_or_else(|| {
                crate::metrics::metrics().refused("watches-per-tenant");
                Error::ResourceExhausted(format!(
                    "the tenant has {} watches open, the most one tenant may have",
                    self.limits.per_tenant
                ))
            })?;
        Ok(WatchSlot {
            tenant,
            _places: (token_place, tenant_place),
        })
    }
}

/// Why the reader gave up on a watch: the status code and the reason, to which the stream
/// adds the revision to resume from.
/// Why the server ended a watch: the code, the reason (`x-vault-reason`) and the message.
pub type Dropped = Arc<Mutex<Option<(tonic::Code, &'static str, String)>>>;

/// The stream handed to tonic: the buffered events, or (once the reader gives up on the
/// client) the status that says why, naming the last revision the client was actually given.
pub struct WatchStream {
    events: mpsc::Receiver<v1::WatchEvent>,
    dropped: Dropped,
    /// The last revision this stream yielded (where the client resumes).
    yielded: u64,
    finished: bool,
}

impl WatchStream {
    pub fn new(events: mpsc::Receiver<v1::WatchEvent>, dropped: Dropped, start: u64) -> Self {
        WatchStream {
            events,
            dropped,
            yielded: start,
            finished: false,
        }
    }
}

impl Stream for WatchStream {
    type Item = Result<v1::WatchEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        // A dropped consumer gets the reason at once, not after the buffer it failed to read.
        let dropped = self
            .dropped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some((code, why, message)) = dropped {
            self.finished = true;
            let message = format!("{message}; resume from revision {}", self.yielded);
            return Poll::Ready(Some(Err(crate::status::status(code, why, message))));
        }
        match self.events.poll_recv(cx) {
            Poll::Ready(Some(event)) => {
                self.yielded = event.revision;
                Poll::Ready(Some(Ok(event)))
            }
            other => other.map(|end| end.map(Ok)),
        }
    }
}

fn event_type(kind: EventKind) -> v1::EventType {
    match kind {
        EventKind::Created => v1::EventType::Created,
        EventKind::Updated => v1::EventType::Updated,
        EventKind::Deleted => v1::EventType::Deleted,
        EventKind::Undeleted => v1::EventType::Undeleted,
        EventKind::Destroyed => v1::EventType::Destroyed,
        EventKind::Expiring => v1::EventType::Expiring,
        EventKind::Expired => v1::EventType::Expired,
        EventKind::KeyRotated => v1::EventType::KeyRotated,
        EventKind::SecurityAlert => v1::EventType::SecurityAlert,
    }
}

pub fn event_message(event: Event) -> v1::WatchEvent {
    v1::WatchEvent {
        revision: event.revision,
        r#type: event_type(event.kind) as i32,
        path: event.path,
        versions: event.versions,
        time: rfc3339(event.time_unix_nanos),
        key_version: event.key_version,
        deadline: if event.deadline_unix_nanos > 0 {
            rfc3339(event.deadline_unix_nanos)
        } else {
            String::new()
        },
        detail: event.detail,
    }
}

#[tonic::async_trait]
impl Watch for Handlers {
    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<WatchRequest>) -> Reply<Self::WatchStream> {
        let watches = &self.shared.watches;
        let call = Call::of(&request);
        let presented = presented_token(&request);
        let token = bearer_token(&request).ok().map(Arc::new);
        let WatchRequest {
            tenant,
            prefix,
            from_revision,
            from_now,
        } = request.into_inner();
        call.target(&tenant, &prefix);
        let vault = Arc::clone(&self.shared.vault);
        let open = Arc::clone(&watches.open);
        let (cursor, slot) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, presented)?;
                let tenant = TenantName::parse(&tenant)?;
                let cursor = vault.changes().watch_open(
                    &caller,
                    &tenant,
                    &prefix,
                    from_revision,
                    from_now,
                )?;
                let slot = open.take(caller.accessor(), cursor.tenant_id())?;
                call.note(format!("watch from revision {}", cursor.revision));
                Ok((cursor, slot))
            })
            .await?;
        // The stream outlives the call: it must not hold a place under the concurrency limit.
        // (While it waits for events it holds no thread either: it sleeps on the feed.)
        call.end_slot();
        let token = token.ok_or_else(|| to_status(vault_core::Error::Unauthenticated))?;
        let (sender, receiver) = mpsc::channel(WATCH_BUFFER);
        let dropped: Dropped = Arc::new(Mutex::new(None));
        let start = cursor.revision;
        tokio::spawn(pump(Pump {
            vault: Arc::clone(&self.shared.vault),
            token,
            source: call.source_ip(),
            cursor,
            sender,
            dropped: Arc::clone(&dropped),
            send_timeout: watches.send_timeout,
            stop: watches.stop.clone(),
            reads: Arc::clone(&watches.open),
            tenant_reads: watches.open.reads.tenant(slot.tenant),
            _slot: slot,
        }));
        let mut response = Response::new(WatchStream::new(receiver, dropped, start));
        // Where the stream starts, so a client that watched "from now" can resume exactly.
        response.metadata_mut().insert(
            "x-vault-revision",
            tonic::metadata::MetadataValue::from(start),
        );
        Ok(response)
    }
}

struct Pump {
    vault: Arc<vault_core::Vault>,
    token: Arc<Token>,
    source: Option<std::net::IpAddr>,
    cursor: vault_core::vault::WatchCursor,
    sender: mpsc::Sender<v1::WatchEvent>,
    dropped: Dropped,
    send_timeout: Duration,
    stop: watch::Receiver<bool>,
    reads: Arc<OpenWatches>,
    tenant_reads: Arc<tokio::sync::Semaphore>,
    _slot: WatchSlot,
}

impl Pump {
    fn drop_with(&self, status: Status) {
        *self
            .dropped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some((
            status.code(),
            vault_proto::reason::of(&status)
                .and_then(|why| vault_proto::reason::ALL.iter().find(|known| **known == why))
                .copied()
                .unwrap_or(vault_proto::reason::INTERNAL),
            status.message().to_owned(),
        ));
    }
}

/// Reads the feed for one watch and feeds the stream until the client leaves, falls behind,
/// loses access, or the server stops.
async fn pump(mut pump: Pump) {
    let mut wake = match pump.vault.changes().subscribe_feed(&pump.cursor) {
        Ok(wake) => wake,
        Err(error) => return pump.drop_with(to_status(error)),
    };
    loop {
        wake.borrow_and_update();
        let vault = Arc::clone(&pump.vault);
        let token = Arc::clone(&pump.token);
        let source = pump.source;
        let mut cursor = pump.cursor.clone();
        // Wait (without a thread) for a turn to read: the tenant's, then the server's.
        let (Ok(tenant_turn), Ok(turn)) = (
            Arc::clone(&pump.tenant_reads).acquire_owned().await,
            Arc::clone(&pump.reads.reads.all).acquire_owned().await,
        ) else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || {
            let _turns = (tenant_turn, turn);
            let caller = vault.authenticate_from(&token, source)?;
            let events = vault.changes().watch_next(&caller, &mut cursor)?;
            Ok::<_, vault_core::Error>((events, cursor))
        })
        .await;
        let events = match read {
            Ok(Ok((events, cursor))) => {
                pump.cursor = cursor;
                events
            }
            Ok(Err(error)) => return pump.drop_with(to_status(error)),
            Err(_) => {
                return pump.drop_with(crate::status::internal());
            }
        };
        if events.is_empty() {
            // A page whose events were all filtered out: read on while the watermark is ahead.
            if pump.cursor.revision < *wake.borrow() {
                continue;
            }
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return },
                () = pump.sender.closed() => return,
                _ = pump.stop.changed() => {
                    return pump.drop_with(crate::status::status(
                        tonic::Code::Unavailable,
                        vault_proto::reason::SHUTTING_DOWN,
                        "the server is shutting down",
                    ));
                }
            }
            continue;
        }
        for event in events {
            match tokio::time::timeout(pump.send_timeout, pump.sender.send(event_message(event)))
                .await
            {
                Ok(Ok(())) => {}
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!("watch consumer too slow; dropped");
                    crate::metrics::metrics().refused("watch-send-timeout");
                    return pump.drop_with(crate::status::status(
                        tonic::Code::ResourceExhausted,
                        vault_proto::reason::LIMIT_REACHED,
                        format!(
                            "watch consumer too slow: its buffer of {WATCH_BUFFER} events stayed \
                         full for {} ms",
                            pump.send_timeout.as_millis()
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A consumer that stops reading is dropped once its buffer stays full; the status names
    /// the last revision it was given, not one still in the buffer, and memory stays bounded
    /// by the buffer.
    #[tokio::test]
    async fn a_stalled_consumer_is_dropped_with_the_revision_it_last_received() {
        let (sender, receiver) = mpsc::channel(2);
        let dropped: Dropped = Arc::new(Mutex::new(None));
        let mut stream = WatchStream::new(receiver, Arc::clone(&dropped), 10);
        let event = |revision| v1::WatchEvent {
            revision,
            ..Default::default()
        };
        sender.send(event(11)).await.expect("send");
        let first = stream.next().await.expect("item").expect("event");
        assert_eq!(first.revision, 11);
        // The client stalls: two more fit, the third does not.
        sender.send(event(12)).await.expect("send");
        sender.send(event(13)).await.expect("send");
        let full = tokio::time::timeout(Duration::from_millis(20), sender.send(event(14))).await;
        assert!(full.is_err(), "the buffer is bounded");
        *dropped.lock().expect("lock") = Some((
            tonic::Code::ResourceExhausted,
            vault_proto::reason::LIMIT_REACHED,
            "too slow".to_owned(),
        ));
        let status = stream.next().await.expect("item").expect_err("dropped");
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "too slow; resume from revision 11");
        assert_eq!(
            vault_proto::reason::of(&status),
            Some(vault_proto::reason::LIMIT_REACHED)
        );
        assert!(stream.next().await.is_none(), "then the stream ends");
    }
}
