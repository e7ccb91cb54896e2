//! The change feed: every change to a tenant's secrets (and every rotation of its KEK) is an
//! event with a per-tenant revision, stored in the same atomic write as the change itself.
//!
//! Revisions are allocated under a short per-tenant lock and committed by concurrent writers in
//! any order; readers only see revisions up to the *watermark*, the highest revision below which
//! nothing is still in flight. So a reader that has seen revision N never later finds a revision
//! below N appear: resuming from the last revision seen misses nothing and repeats nothing. A
//! revision whose write failed is a gap, never an event.
//!
//! Storage: events at `t/<tenant>/e/<revision, u64 BE>` (secrets space); the feed's floor (the
//! oldest revision still retained, written by pruning) at `t/<tenant>/feed`. Events carry names,
//! versions and times, never values.
//!
//! One write per change: a put writes the version record, the metadata, the pruned versions'
//! deletions and the event in one atomic batch; a delete, undelete, destroy, metadata change
//! and expiry notice likewise, so the feed is never ahead of or behind the data. A KEK rotation
//! is the one exception: the KEK lives in the key store, so its event follows the key store's
//! write, and a crash in between loses the event (logged; the rotation stands), never invents
//! one.
//!
//! At start-up a tenant's counter continues after the newest stored event, found by binary
//! search over one-entry scans (no reverse iteration), or after the floor if pruning removed
//! every event. Retention: the maintenance round deletes events older than
//! `--feed-retention-secs` and raises the floor in the same write; a watch from before the floor
//! answers OUT_OF_RANGE. Listing returns the revision it read at, which is where a client that
//! had to list again resumes watching.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{Caller, Vault, corrupt, from_json, lock, to_json};
use crate::{
    error::{Error, Result},
    names::{FolderPrefix, SecretPath, TenantId, TenantName},
    policy::{Capability, Decision, decide},
    schema::{event_key, events_prefix, feed_floor_key},
    storage::{Space, WriteBatch},
};

/// Default time events are kept: 7 days.
pub const DEFAULT_FEED_RETENTION_NANOS: i64 = 7 * 86_400 * 1_000_000_000;
/// Default lead time of an `expiring` event: 24 hours before the deadline.
pub const DEFAULT_EXPIRY_LEAD_NANOS: i64 = 86_400 * 1_000_000_000;
/// Events read from storage per call of [`Vault::watch_next`].
pub const WATCH_BATCH: usize = 256;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The first version of a secret (or the first after its metadata was deleted).
    Created,
    /// A new version of an existing secret.
    Updated,
    /// Versions were soft-deleted.
    Deleted,
    /// Soft-deleted versions were restored.
    Undeleted,
    /// Versions were destroyed (by request, by pruning past max_versions, or with the metadata).
    Destroyed,
    /// A deadline (`expires_at` or `rotate_by`) is within the lead time.
    Expiring,
    /// A deadline has passed.
    Expired,
    /// The tenant's KEK has a new version.
    KeyRotated,
    /// A rule on suspicious access fired for a principal of the tenant (the detail says which
    /// and why; the path is empty).
    SecurityAlert,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        EventKind::Created,
        EventKind::Updated,
        EventKind::Deleted,
        EventKind::Undeleted,
        EventKind::Destroyed,
        EventKind::Expiring,
        EventKind::Expired,
        EventKind::KeyRotated,
        EventKind::SecurityAlert,
    ];

    pub fn as_str(self) -> &'static str {
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
        }
    }

    pub fn parse(text: &str) -> Result<EventKind> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                Error::invalid(
                    "events",
                    format!(
                        "unknown event type {text:?}; known: {}",
                        EventKind::ALL.map(EventKind::as_str).join(", ")
                    ),
                )
            })
    }
}

/// One event of a tenant's feed. No values, ever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub revision: u64,
    pub kind: EventKind,
    /// The secret's path; empty for `key_rotated`.
    pub path: String,
    /// The versions concerned (the new one for created/updated).
    #[serde(default)]
    pub versions: Vec<u64>,
    pub time_unix_nanos: i64,
    /// `key_rotated`: the new KEK version.
    #[serde(default)]
    pub key_version: u32,
    /// `expiring`/`expired`: the deadline.
    #[serde(default)]
    pub deadline_unix_nanos: i64,
    /// Why, in a few words: "pruned past max_versions", "expires_at", "rotate_by", ...
    #[serde(default)]
    pub detail: String,
}

impl Event {
    pub(super) fn new(kind: EventKind, path: &str, versions: Vec<u64>, time: i64) -> Event {
        Event {
            revision: 0,
            kind,
            path: path.to_owned(),
            versions,
            time_unix_nanos: time,
            key_version: 0,
            deadline_unix_nanos: 0,
            detail: String::new(),
        }
    }

    pub(super) fn with_detail(mut self, detail: impl Into<String>) -> Event {
        self.detail = detail.into();
        self
    }
}

#[derive(Default, Serialize, Deserialize)]
struct FloorRecord {
    /// The oldest revision that may still be stored; events below it were pruned.
    floor: u64,
}

/// One tenant's feed in memory: the next revision, the revisions being written, and the
/// watermark readers wait on.
pub(super) struct Feed {
    inner: Mutex<FeedInner>,
    committed: watch::Sender<u64>,
}

struct FeedInner {
    next: u64,
    in_flight: BTreeSet<u64>,
}

impl Feed {
    fn finish(&self, revision: u64) {
        let mut inner = lock(&self.inner);
        inner.in_flight.remove(&revision);
        let visible = inner
            .in_flight
            .first()
            .map_or(inner.next - 1, |oldest| oldest - 1);
        drop(inner);
        self.committed.send_if_modified(|current| {
            let advanced = visible > *current;
            if advanced {
                *current = visible;
            }
            advanced
        });
    }
}

/// Every tenant's feed, and a counter that moves whenever any of them does (the webhook
/// dispatcher waits on it).
#[derive(Default)]
pub(super) struct Feeds {
    tenants: Mutex<HashMap<TenantId, Arc<Feed>>>,
    any: watch::Sender<u64>,
}

impl Feeds {
    /// Forgets every tenant's feed state; each is read again from the store when next used.
    pub(super) fn forget_all(&self) {
        lock(&self.tenants).clear();
    }

    /// Wakes whoever waits on every tenant's feed (the webhook dispatcher).
    pub(super) fn wake_all(&self) {
        self.any.send_modify(|count| *count = count.wrapping_add(1));
    }
}

/// A revision allocated to a write in progress: dropping it (committed or not) lets readers
/// past it.
pub(super) struct Revision<'a> {
    feed: Arc<Feed>,
    any: &'a watch::Sender<u64>,
    pub(super) revision: u64,
    /// Feed pruning of the tenant becomes due when the event passes the retention period:
    /// noted when the guard goes, after the write (a round that takes the unit from then on
    /// reads the event).
    prune_due: Option<(&'a super::due::DueIndex, TenantId, i64)>,
}

impl Drop for Revision<'_> {
    fn drop(&mut self) {
        self.feed.finish(self.revision);
        self.any.send_modify(|count| *count = count.wrapping_add(1));
        if let Some((due, tenant, at)) = self.prune_due {
            due.note(super::due::Unit::FeedPruning, tenant, at);
        }
    }
}

/// Where a watch stands: the last revision it has read (delivered or filtered out).
#[derive(Clone, Debug)]
pub struct WatchCursor {
    tenant: TenantId,
    pub tenant_name: TenantName,
    filter: WatchFilter,
    pub revision: u64,
}

impl WatchCursor {
    /// The id of the tenant watched.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant
    }
}

#[derive(Clone, Debug)]
enum WatchFilter {
    Folder(FolderPrefix),
    Secret(SecretPath),
}

impl WatchFilter {
    fn parse(prefix: &str) -> Result<WatchFilter> {
        if prefix.is_empty() || prefix.ends_with('/') {
            Ok(WatchFilter::Folder(FolderPrefix::parse(prefix)?))
        } else {
            SecretPath::parse(prefix)
                .map(WatchFilter::Secret)
                .map_err(|_| Error::invalid("prefix", "neither a folder nor a secret path"))
        }
    }

    fn as_str(&self) -> &str {
        match self {
            WatchFilter::Folder(prefix) => prefix.as_str(),
            WatchFilter::Secret(path) => path.as_str(),
        }
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            WatchFilter::Folder(prefix) => path.starts_with(prefix.as_str()),
            WatchFilter::Secret(secret) => path == secret.as_str(),
        }
    }
}

fn allowed(caller: &Caller, path: &str, capability: Capability) -> bool {
    caller.system
        || !matches!(
            decide(&caller.policies, path, capability),
            Decision::Deny(_)
        )
}

impl Vault {
    /// The tenant's feed, loaded on first use: the next revision follows the newest stored
    /// event, or the floor if pruning removed them all.
    pub(super) fn feed(&self, tenant: TenantId) -> Result<Arc<Feed>> {
        if let Some(feed) = lock(&self.feeds.tenants).get(&tenant) {
            return Ok(Arc::clone(feed));
        }
        let last = self.newest_event(tenant)?;
        let floor = self.feed_floor(tenant)?;
        let next = (last + 1).max(floor).max(1);
        let mut tenants = lock(&self.feeds.tenants);
        let feed = tenants.entry(tenant).or_insert_with(|| {
            Arc::new(Feed {
                inner: Mutex::new(FeedInner {
                    next,
                    in_flight: BTreeSet::new(),
                }),
                committed: watch::Sender::new(next - 1),
            })
        });
        Ok(Arc::clone(feed))
    }

    /// The newest stored revision (0: none), found by binary search over "is there an event at
    /// or after r" probes (one seek each), so no reverse iteration is needed.
    fn newest_event(&self, tenant: TenantId) -> Result<u64> {
        let prefix = events_prefix(tenant);
        let at_or_after = |revision: u64| -> Result<Option<u64>> {
            let page = self
                .data
                .scan(Space::Secrets, &prefix, &event_key(tenant, revision), 1)?;
            page.first()
                .map(|(key, _)| revision_of(key, prefix.len()))
                .transpose()
        };
        let Some(first) = at_or_after(0)? else {
            return Ok(0);
        };
        // Invariant: an event exists at or after `low`; none exists at or after `high`.
        let (mut low, mut high) = (first, u64::MAX);
        if at_or_after(u64::MAX)?.is_some() {
            return Ok(u64::MAX);
        }
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            match at_or_after(middle)? {
                Some(found) => low = found,
                None => high = middle,
            }
        }
        Ok(low)
    }

    fn feed_floor(&self, tenant: TenantId) -> Result<u64> {
        Ok(self
            .data
            .get(Space::Secrets, &feed_floor_key(tenant))?
            .map(|bytes| from_json::<FloorRecord>(&bytes, "a feed floor"))
            .transpose()?
            .unwrap_or_default()
            .floor)
    }

    /// Allocates the next revision of the tenant's feed and adds `event` to `batch` under it.
    /// Keep the returned guard until the batch is written (or abandoned).
    pub(super) fn record_event(
        &self,
        tenant: TenantId,
        batch: &mut WriteBatch,
        mut event: Event,
    ) -> Result<Revision<'_>> {
        let feed = self.feed(tenant)?;
        let revision = {
            let mut inner = lock(&feed.inner);
            let revision = inner.next;
            inner.next += 1;
            inner.in_flight.insert(revision);
            revision
        };
        let retention = self.config.feed.retention_nanos;
        let guard = Revision {
            feed,
            any: &self.feeds.any,
            revision,
            prune_due: (retention > 0).then(|| {
                (
                    &self.maintenance_state.due,
                    tenant,
                    event.time_unix_nanos.saturating_add(retention),
                )
            }),
        };
        event.revision = revision;
        batch.put(
            Space::Secrets,
            event_key(tenant, revision),
            to_json(&event)?,
        );
        Ok(guard)
    }

    /// Adds a `security_alert` event to the feed of `tenant` (webhooks that subscribe to it
    /// get it) if `principal_tenant`, the tenant of the token the alert is about, is that
    /// tenant: nobody can write alerts into another tenant's feed by naming it. `detail` names
    /// the rule and the principal, never a value. `None`: not the principal's tenant.
    pub fn record_security_alert(
        &self,
        tenant: &TenantName,
        principal_tenant: TenantId,
        detail: String,
    ) -> Result<Option<u64>> {
        let id = self.tenant_id(tenant)?;
        if id != principal_tenant {
            return Ok(None);
        }
        let mut event = Event::new(EventKind::SecurityAlert, "", Vec::new(), self.now());
        event.detail = detail;
        self.write_event(id, event).map(Some)
    }

    /// Writes one event on its own (a change outside the data store, like a KEK rotation).
    pub(super) fn write_event(&self, tenant: TenantId, event: Event) -> Result<u64> {
        let mut batch = WriteBatch::new();
        let revision = self.record_event(tenant, &mut batch, event)?;
        self.data.write(batch)?;
        Ok(revision.revision)
    }

    pub(super) fn committed_revision(&self, tenant: TenantId) -> Result<u64> {
        Ok(*self.feed(tenant)?.committed.borrow())
    }

    fn check_retained(&self, tenant: TenantId, revision: u64) -> Result<()> {
        let floor = self.feed_floor(tenant)?;
        if revision + 1 < floor {
            return Err(Error::OutOfRange(format!(
                "revision {revision} is older than the retained feed (it starts at revision \
                 {floor}); list the secrets again and watch from the revision the listing reports"
            )));
        }
        Ok(())
    }

    /// Reads stored events of a tenant after `after` (for the webhook dispatcher): at most
    /// `limit`, up to the watermark; also returns the last event's revision (`after` if none).
    /// A webhook cursor only ever rests on a stored event: a trailing gap's number may be
    /// handed out again after a restart.
    pub(super) fn events_after(
        &self,
        tenant: TenantId,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, u64)> {
        let upto = self.committed_revision(tenant)?;
        if after >= upto {
            return Ok((Vec::new(), after));
        }
        let prefix = events_prefix(tenant);
        let page = self.data.scan(
            Space::Secrets,
            &prefix,
            &event_key(tenant, after + 1),
            limit,
        )?;
        let mut events = Vec::new();
        let mut last = after;
        for (key, value) in page {
            let revision = revision_of(&key, prefix.len())?;
            if revision > upto {
                break;
            }
            last = revision;
            events.push(from_json::<Event>(&value, "a feed event")?);
        }
        Ok((events, last))
    }

    /// Removes events older than the retention period (at most `limit` per call), never one a
    /// webhook has not fanned out yet, and raises the floor past them, in one write (audited as
    /// the vault). Returns how many were removed.
    pub(super) fn prune_feed(&self, tenant: TenantId, now: i64, limit: usize) -> Result<usize> {
        let retention = self.config.feed.retention_nanos;
        if retention <= 0 {
            return Ok(0);
        }
        let cutoff = now.saturating_sub(retention);
        let prefix = events_prefix(tenant);
        // This runs every round for every tenant: one entry decides whether anything is due.
        let oldest = self.data.scan(Space::Secrets, &prefix, &prefix, 1)?;
        match oldest.first() {
            Some((_, value))
                if from_json::<Event>(value, "a feed event")?.time_unix_nanos < cutoff => {}
            _ => return Ok(0),
        }
        let upto = self
            .committed_revision(tenant)?
            .min(self.webhook_floor(tenant)?);
        // The deletions and the new floor go in one write: no more than the store takes.
        let limit = limit.min(self.data.batch_limits().max_ops.saturating_sub(1).max(1));
        let page = self.data.scan(Space::Secrets, &prefix, &prefix, limit)?;
        let mut batch = WriteBatch::new();
        let mut newest_removed = None;
        for (key, value) in &page {
            let revision = revision_of(key, prefix.len())?;
            let event: Event = from_json(value, "a feed event")?;
            if event.time_unix_nanos >= cutoff || revision > upto {
                break;
            }
            batch.delete(Space::Secrets, key.clone());
            newest_removed = Some(revision);
        }
        let Some(newest) = newest_removed else {
            return Ok(0);
        };
        let removed = batch.ops.len();
        self.audit_vault(
            tenant,
            format!(
                "pruned {removed} change-feed events up to revision {newest} (older than the retention period)"
            ),
        )?;
        batch.put(
            Space::Secrets,
            feed_floor_key(tenant),
            to_json(&FloorRecord { floor: newest + 1 })?,
        );
        self.data.write(batch)?;
        Ok(removed)
    }

    /// The time of the tenant's oldest feed event, if it has any.
    pub(super) fn oldest_event_time(&self, tenant: TenantId) -> Result<Option<i64>> {
        let prefix = events_prefix(tenant);
        match self.data.scan(Space::Secrets, &prefix, &prefix, 1)?.first() {
            Some((_, value)) => Ok(Some(
                from_json::<Event>(value, "a feed event")?.time_unix_nanos,
            )),
            None => Ok(None),
        }
    }

    /// Forgets a tenant's feed (its data is gone: shredded).
    pub(super) fn drop_feed(&self, tenant: TenantId) {
        lock(&self.feeds.tenants).remove(&tenant);
    }
}

/// Each tenant's change feed: subscriptions and watches, as `vault.changes()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Changes<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Changes<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// Each tenant's change feed: subscriptions and watches.
    pub fn changes(&self) -> Changes<'_> {
        Changes { vault: self }
    }
}

impl Changes<'_> {
    /// A receiver that changes whenever the tenant's watermark moves.
    pub fn subscribe_feed(&self, cursor: &WatchCursor) -> Result<watch::Receiver<u64>> {
        Ok(self.feed(cursor.tenant)?.committed.subscribe())
    }

    /// A receiver that changes whenever any tenant's feed moves.
    pub fn subscribe_all_feeds(&self) -> watch::Receiver<u64> {
        self.feeds.any.subscribe()
    }

    /// Opens a watch on `prefix` (a folder, or one secret's path): events after `from_revision`
    /// (the last one the caller saw), or after the current revision if `from_now`. The caller
    /// needs list on a folder, read on a secret; each event is then filtered by the caller's
    /// policies (read or list on its path).
    /// A revision older than the retained feed answers OUT_OF_RANGE.
    pub fn watch_open(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        prefix: &str,
        from_revision: u64,
        from_now: bool,
    ) -> Result<WatchCursor> {
        let _keyring = self.keyring()?;
        let filter = WatchFilter::parse(prefix)?;
        // Watching a folder is like listing it; watching one secret is like reading it.
        let needs = match filter {
            WatchFilter::Folder(_) => Capability::List,
            WatchFilter::Secret(_) => Capability::Read,
        };
        let id = self
            .authorize(caller, tenant, filter.as_str(), needs)?
            .tenant();
        let current = self.committed_revision(id)?;
        let revision = if from_now { current } else { from_revision };
        if revision > current {
            return Err(Error::invalid(
                "from_revision",
                format!("{revision} is ahead of the tenant's current revision {current}"),
            ));
        }
        let cursor = WatchCursor {
            tenant: id,
            tenant_name: tenant.clone(),
            filter,
            revision,
        };
        self.check_retained(cursor.tenant, cursor.revision)?;
        Ok(cursor)
    }

    /// The next events for a watch (at most [`WATCH_BATCH`] read), up to the watermark, that
    /// the caller may see; the cursor moves past everything read. Empty: caught up.
    pub fn watch_next(&self, caller: &Caller, cursor: &mut WatchCursor) -> Result<Vec<Event>> {
        // The token may have lost access to the tenant since the watch opened; its policies are
        // the current ones.
        self.token_tenant(caller, &cursor.tenant_name)?;
        let from = cursor.revision;
        self.check_retained(cursor.tenant, from)?;
        let key_events = caller.system
            || (cursor.filter.as_str().is_empty()
                && matches!(
                    decide(&caller.policies, "", Capability::Admin),
                    Decision::Allow
                ));
        let upto = self.committed_revision(cursor.tenant)?;
        let mut out = Vec::new();
        if cursor.revision >= upto {
            return Ok(out);
        }
        let prefix = events_prefix(cursor.tenant);
        let page = self.data.scan(
            Space::Secrets,
            &prefix,
            &event_key(cursor.tenant, cursor.revision + 1),
            WATCH_BATCH,
        )?;
        // A short page, or one that reaches past the watermark, has read everything up to the
        // watermark: the revisions missing from it are gaps of failed writes.
        let mut reached_end = page.len() < WATCH_BATCH;
        let mut last = cursor.revision;
        for (key, value) in page {
            let revision = revision_of(&key, prefix.len())?;
            if revision > upto {
                reached_end = true;
                break;
            }
            last = revision;
            let event: Event = from_json(&value, "a feed event")?;
            let visible = if matches!(event.kind, EventKind::KeyRotated | EventKind::SecurityAlert)
            {
                key_events
            } else {
                cursor.filter.matches(&event.path)
                    && (allowed(caller, &event.path, Capability::Read)
                        || allowed(caller, &event.path, Capability::List))
            };
            if visible {
                out.push(event);
            }
        }
        // Pruning may have removed events between the check above and the scan.
        self.check_retained(cursor.tenant, from)?;
        cursor.revision = if reached_end { upto } else { last };
        Ok(out)
    }
}

fn revision_of(key: &[u8], prefix_len: usize) -> Result<u64> {
    key.get(prefix_len..)
        .and_then(|suffix| suffix.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| corrupt("a feed event key"))
}
