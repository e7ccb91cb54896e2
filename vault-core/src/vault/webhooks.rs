//! Webhooks: per-tenant subscriptions to the change feed, delivered at least once, signed, and
//! never carrying values.
//!
//! A subscription (`t/<tenant>/w/<id>`, indexed at `wh/<tenant>/<id>` in the config space)
//! keeps a cursor into its tenant's feed. The fan-out moves matching events past the cursor
//! into pending deliveries (`t/<tenant>/wp/<id>/<revision>`, queued in the tenant's own queue at
//! `wt/<tenant>/<due, u64 BE><id>/<revision>`), cursor and deliveries in one write, so an event
//! is never skipped or queued twice (the single `wq/` queue of earlier versions is moved into
//! the per-tenant queues at start-up). The server's dispatcher takes due deliveries, posts them
//! and reports the result: success removes the delivery; failure schedules the next attempt
//! with exponential backoff, and after the last attempt the delivery moves to the dead-letter
//! list (`t/<tenant>/wd/<id>/<revision>`), from which an operator can replay it. A crash after
//! a post and before its result only repeats the post: at least once.
//!
//! The signing secret is sealed under the root key; the signature
//! (`x-vault-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`) is computed
//! inside the vault, so the secret never leaves it after creation.

use std::net::{IpAddr, SocketAddr};

use base64::{Engine, engine::general_purpose::STANDARD, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::hmac;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::{
    Caller, Held, OwnedLock, Vault, corrupt,
    feed::{Event, EventKind},
    from_json, to_json,
};
use crate::{
    cidr::Cidr,
    crypto::{self, Context, Header, KeyKind, Purpose},
    error::{Error, Result},
    names::{TenantId, TenantName},
    policy::{Capability, check_glob, glob_matches},
    schema::{
        OLD_WEBHOOK_QUEUE_PREFIX, WEBHOOK_INDEX_PREFIX, webhook_dead_key, webhook_dead_prefix,
        webhook_index_after, webhook_index_key, webhook_key, webhook_pending_key,
        webhook_pending_prefix, webhook_prefix, webhook_queue_key, webhook_queue_prefix,
    },
    secret::SecretBytes,
    storage::{Space, WriteBatch},
    time::rfc3339,
};

/// Most webhooks per tenant.
pub const MAX_WEBHOOKS: usize = 100;
/// Longest webhook URL.
pub const MAX_URL_LEN: usize = 2048;
/// Signing secrets given by the caller are 16 to 256 bytes.
pub const MIN_SECRET_LEN: usize = 16;
pub const MAX_SECRET_LEN: usize = 256;
/// Events fanned out per subscription per round.
const FANOUT_BATCH: usize = 256;
/// Pending deliveries one webhook may have; its fan-out pauses (its cursor waits, and the
/// tenant's feed keeps the events) until some are delivered or dead.
pub const MAX_PENDING_PER_WEBHOOK: u64 = 10_000;
/// Dead-letter deliveries kept per webhook; past this the oldest is dropped (audited).
pub const MAX_DEAD_PER_WEBHOOK: u64 = 10_000;
/// Pending and dead deliveries shown by a status call.
const STATUS_LIMIT: usize = 100;
/// The signature header.
pub const SIGNATURE_HEADER: &str = "x-vault-signature";

/// Where webhooks may deliver, and how hard the vault tries.
#[derive(Clone, Debug)]
pub struct WebhookPolicy {
    /// Networks that are allowed although they are loopback, private or link-local.
    pub allow: Vec<Cidr>,
    /// Attempts before a delivery moves to the dead-letter list.
    pub max_attempts: u32,
    /// Delay after the first failure; it doubles with each further one.
    pub backoff_base_nanos: i64,
    pub backoff_max_nanos: i64,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        WebhookPolicy {
            allow: Vec::new(),
            max_attempts: 10,
            backoff_base_nanos: 1_000_000_000,
            backoff_max_nanos: 3_600 * 1_000_000_000,
        }
    }
}

/// Why an address may not receive webhooks, if it may not: every range of the IANA IPv4 and
/// IPv6 special-purpose address registries that is not globally reachable (loopback, private,
/// link-local, shared, benchmarking, documentation, protocol assignments, multicast, reserved)
/// is refused unless `allow` names it. Addresses that embed an IPv4 address (IPv4-mapped,
/// NAT64, 6to4) are judged by that address.
pub fn address_refusal(address: IpAddr, allow: &[Cidr]) -> Option<&'static str> {
    if allow.iter().any(|cidr| cidr.contains(address)) {
        return None;
    }
    match address {
        IpAddr::V4(v4) => v4_refusal(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return address_refusal(IpAddr::V4(v4), allow);
            }
            let segments = v6.segments();
            let embedded = |high: u16, low: u16| {
                std::net::Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
            };
            let first = segments[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 (RFC 6052): judge the IPv4 address inside.
                v4_refusal(embedded(segments[6], segments[7]))
                    .map(|_| "NAT64 of a refused IPv4 address")
            } else if segments[..3] == [0x64, 0xff9b, 1] {
                Some("local-use NAT64")
            } else if first == 0x2002 {
                // 6to4 (RFC 3056): the IPv4 address follows the prefix.
                v4_refusal(embedded(segments[1], segments[2]))
                    .map(|_| "6to4 of a refused IPv4 address")
            } else if segments[..4] == [0x100, 0, 0, 0] {
                Some("discard-only")
            } else if first == 0x2001 && segments[1] < 0x200 {
                // 2001::/23, IETF protocol assignments (Teredo, benchmarking, ORCHID...).
                Some("IETF protocol assignment")
            } else if first == 0x2001 && segments[1] == 0xdb8 {
                Some("documentation")
            } else if first == 0x3fff && segments[1] < 0x1000 {
                // 3fff::/20, documentation (RFC 9637).
                Some("documentation")
            } else if first == 0x5f00 {
                Some("segment routing (SRv6 SIDs)")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xffc0 == 0xfec0 {
                Some("site-local")
            } else if v6.is_multicast() {
                Some("multicast")
            } else {
                None
            }
        }
    }
}

/// [`address_refusal`] for IPv4 (the IANA IPv4 special-purpose address registry).
fn v4_refusal(v4: std::net::Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    if v4.is_loopback() {
        Some("loopback")
    } else if v4.is_private() {
        Some("private")
    } else if v4.is_link_local() {
        Some("link-local")
    } else if a == 0 {
        Some("unspecified (this network)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (carrier-grade NAT)")
    } else if a == 192 && b == 0 && c == 0 {
        Some("IETF protocol assignment")
    } else if (a, b, c) == (192, 0, 2) || (a, b, c) == (198, 51, 100) || (a, b, c) == (203, 0, 113)
    {
        Some("documentation")
    } else if a == 198 && (b == 18 || b == 19) {
        Some("benchmarking")
    } else if (a, b, c) == (192, 31, 196) || (a, b, c) == (192, 175, 48) {
        Some("AS112 service")
    } else if (a, b, c) == (192, 52, 193) {
        Some("automatic multicast tunneling")
    } else if (a, b, c) == (192, 88, 99) {
        Some("6to4 relay anycast")
    } else if v4.is_multicast() || a >= 240 {
        Some("multicast or reserved")
    } else {
        None
    }
}

/// A webhook URL, parsed: http or https, a host, a port, and the path with its query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    pub https: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(text: &str) -> Result<WebhookUrl> {
        let invalid = |reason: &str| Error::invalid("url", reason.to_owned());
        if text.len() > MAX_URL_LEN {
            return Err(invalid(&format!("longer than {MAX_URL_LEN} bytes")));
        }
        if text.chars().any(|c| c.is_ascii_control() || c == ' ') {
            return Err(invalid("contains spaces or control characters"));
        }
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(invalid("must start with http:// or https://"));
        };
        if rest.contains('#') {
            return Err(invalid("must not have a fragment"));
        }
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.contains('@') {
            return Err(invalid("must not carry credentials"));
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| invalid("unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(invalid("has no host"));
        }
        let port = match port {
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| invalid("the port is not a number from 1 to 65535"))?,
            None if https => 443,
            None => 80,
        };
        let path = if path.is_empty() {
            "/".to_owned()
        } else if path.starts_with('?') {
            format!("/{path}")
        } else {
            path.to_owned()
        };
        Ok(WebhookUrl {
            https,
            host: host.to_ascii_lowercase(),
            port,
            path,
        })
    }

    /// The host as it goes in a `Host` header (IPv6 in brackets).
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// What a caller is told when the host of a webhook does not resolve, resolves to an address
/// webhooks may not reach, or does not answer the lookup in time: one message for all of
/// them, so that creating webhooks cannot be used to read internal DNS answers.
pub fn unreachable_host(host: &str) -> Error {
    Error::invalid(
        "url",
        format!(
            "host {host} does not resolve to an address webhooks may reach (public addresses \
             only, unless the server allows a network with --webhook-allow-network)"
        ),
    )
}

/// Refuses a host unless it resolved to at least one address and every address may receive
/// webhooks. The refused address and why go to the server log, never to the caller.
pub fn check_addresses(host: &str, addresses: &[SocketAddr], allow: &[Cidr]) -> Result<()> {
    if addresses.is_empty() {
        tracing::info!(%host, "webhook host resolves to no address");
        return Err(unreachable_host(host));
    }
    for address in addresses {
        if let Some(reason) = address_refusal(address.ip(), allow) {
            tracing::info!(%host, address = %address.ip(), reason, "webhook host refused");
            return Err(unreachable_host(host));
        }
    }
    Ok(())
}

/// What a caller asks for when creating a webhook.
pub struct WebhookSpec {
    pub url: String,
    /// A policy-style glob of the paths to deliver (empty: every path).
    pub paths: String,
    /// The event types to deliver (empty: all).
    pub events: Vec<EventKind>,
    /// The signing secret; `None`: the vault generates one and returns it once.
    pub secret: Option<SecretBytes>,
}

/// A webhook as shown to callers (no secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookInfo {
    pub id: String,
    pub url: String,
    pub paths: String,
    pub events: Vec<EventKind>,
    pub created_unix_nanos: i64,
    /// The last feed revision fanned out.
    pub cursor: u64,
    pub delivered: u64,
    pub last_delivered_revision: u64,
    pub last_error: String,
    /// The accessor of the token that created the webhook (a webhook is tenant
    /// configuration and outlives it; this says whose it was).
    pub creator: String,
    /// Deliveries waiting to be posted, and in the dead-letter list.
    pub pending: u64,
    pub dead: u64,
}

/// A pending or dead delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub revision: u64,
    pub kind: EventKind,
    pub path: String,
    pub attempts: u32,
    pub next_attempt_unix_nanos: i64,
    pub last_error: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookStatus {
    pub webhook: WebhookInfo,
    pub pending: Vec<DeliveryState>,
    pub pending_total: u64,
    pub dead: Vec<DeliveryState>,
    pub dead_total: u64,
}

/// One post to make, signed. The body holds names and versions only.
pub struct Delivery {
    pub tenant: TenantId,
    pub webhook: String,
    pub revision: u64,
    pub url: String,
    pub body: Vec<u8>,
    /// The value of the [`SIGNATURE_HEADER`] header.
    pub signature: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// `<webhook id>-<revision>`: the same on every attempt, for receivers to drop repeats.
    pub delivery_id: String,
    pub event_type: &'static str,
    /// The receiving host (the dispatcher bounds posts per host).
    pub host: String,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("delivery_id", &self.delivery_id)
            .field("url", &self.url)
            .field("attempt", &self.attempt)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct WebhookRecord {
    id: String,
    url: String,
    paths: String,
    events: Vec<EventKind>,
    /// The signing secret sealed under the root key (base64).
    secret_sealed: String,
    created_unix_nanos: i64,
    cursor: u64,
    #[serde(default)]
    delivered: u64,
    #[serde(default)]
    last_delivered_revision: u64,
    #[serde(default)]
    last_error: String,
    #[serde(default)]
    creator: String,
    /// Pending and dead deliveries, kept in the same writes that add and remove them.
    #[serde(default)]
    pending: u64,
    #[serde(default)]
    dead: u64,
}

#[derive(Serialize, Deserialize)]
struct DeliveryRecord {
    event: Event,
    attempts: u32,
    next_attempt_unix_nanos: i64,
    #[serde(default)]
    last_error: String,
}

impl DeliveryRecord {
    fn state(&self) -> DeliveryState {
        DeliveryState {
            revision: self.event.revision,
            kind: self.event.kind,
            path: self.event.path.clone(),
            attempts: self.attempts,
            next_attempt_unix_nanos: self.next_attempt_unix_nanos,
            last_error: self.last_error.clone(),
        }
    }
}

fn webhook_context(tenant: TenantId, id: &str) -> (String, Option<TenantId>) {
    (format!("webhook/{id}"), Some(tenant))
}

fn parse_webhook_id(id: &str) -> Result<&str> {
    if id.len() == 16
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        Ok(id)
    } else {
        Err(Error::invalid(
            "id",
            "a webhook id is 16 lower-case hex digits",
        ))
    }
}

/// The signature header value for `body` at `timestamp` (unix seconds).
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut context = hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    format!("t={timestamp},v1={}", hex::encode(context.sign().as_ref()))
}

/// Checks a signature header against `body` (constant-time comparison of the MAC) and that its
/// timestamp is within `tolerance_seconds` of `now_seconds`. For receivers and tests.
pub fn verify_signature(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_seconds: i64,
    tolerance_seconds: i64,
) -> std::result::Result<(), &'static str> {
    let mut timestamp = None;
    let mut mac = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => mac = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(mac)) = (timestamp, mac) else {
        return Err("malformed signature header");
    };
    if (now_seconds - timestamp).abs() > tolerance_seconds {
        return Err("timestamp outside the tolerance");
    }
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut message = timestamp.to_string().into_bytes();
    message.push(b'.');
    message.extend_from_slice(body);
    hmac::verify(&key, &message, &mac).map_err(|_| "signature does not match")
}

/// The key to `Vault::webhook_changes`: only this module makes one, so only this module takes
/// the lock that serializes changes to deliveries.
pub(super) struct WebhookChanges(());

/// The webhooks' own state: the lock over deliveries, which only this module can take.
#[derive(Default)]
pub(super) struct WebhookState {
    changes: OwnedLock<WebhookChanges>,
}

impl Vault {
    /// Takes `webhook_changes` (fan-out, results, replay, deletion).
    fn hold_webhook_changes(&self) -> Held<'_, WebhookChanges> {
        self.webhook_state.changes.hold(WebhookChanges(()))
    }

    fn webhook_admin(&self, caller: &Caller, tenant: &TenantName) -> Result<TenantId> {
        self.keyring()?;
        self.authorize(caller, tenant, "", Capability::Admin)
            .map(|granted| granted.tenant())
    }

    fn webhook_record(&self, tenant: TenantId, id: &str) -> Result<WebhookRecord> {
        self.data
            .get(Space::Secrets, &webhook_key(tenant, id))?
            .map(|bytes| from_json::<WebhookRecord>(&bytes, "a webhook"))
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("webhook {id}")))
    }

    /// Validation shared by [`Vault::webhook_admit`] and [`Vault::webhook_create`].
    fn webhook_checked(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        spec: &WebhookSpec,
    ) -> Result<(TenantId, WebhookUrl)> {
        let url = WebhookUrl::parse(&spec.url)?;
        if !spec.paths.is_empty() {
            check_glob(&spec.paths).map_err(|reason| Error::invalid("paths", reason.to_owned()))?;
        }
        if let Some(secret) = &spec.secret
            && !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
        {
            return Err(Error::invalid(
                "secret",
                format!("must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} bytes"),
            ));
        }
        let id = self.webhook_admin(caller, tenant)?;
        self.webhook_quota(tenant, id)?;
        Ok((id, url))
    }

    fn webhook_quota(&self, tenant: &TenantName, id: TenantId) -> Result<()> {
        let existing = self.data.scan(
            Space::Secrets,
            &webhook_prefix(id),
            &webhook_prefix(id),
            MAX_WEBHOOKS + 1,
        )?;
        if existing.len() >= MAX_WEBHOOKS {
            return Err(Error::ResourceExhausted(format!(
                "tenant {tenant} has {MAX_WEBHOOKS} webhooks, the most it may have"
            )));
        }
        Ok(())
    }

    fn deliveries(&self, prefix: &[u8]) -> Result<(Vec<DeliveryState>, u64)> {
        let mut shown = Vec::new();
        let mut total = 0u64;
        let mut start = prefix.to_vec();
        loop {
            let page = self.data.scan(Space::Secrets, prefix, &start, 1024)?;
            let Some((last, _)) = page.last() else {
                break;
            };
            start = last.clone();
            start.push(0);
            total += page.len() as u64;
            for (_, bytes) in page {
                if shown.len() < STATUS_LIMIT {
                    shown.push(from_json::<DeliveryRecord>(&bytes, "a webhook delivery")?.state());
                }
            }
        }
        Ok((shown, total))
    }

    fn fan_out_one(&self, rest: &[u8], key: &[u8]) -> Result<usize> {
        let mut queued = 0;
        let rest = std::str::from_utf8(rest).map_err(|_| corrupt("a webhook index key"))?;
        let (tenant_hex, webhook) = rest
            .split_once('/')
            .ok_or_else(|| corrupt("a webhook index key"))?;
        let tenant =
            TenantId::parse_hex(tenant_hex).ok_or_else(|| corrupt("a webhook index key"))?;
        if self.tenant_state(tenant)?.is_none() {
            // Deleted (waiting for shredding or a restore).
            return Ok(0);
        }
        let Some(bytes) = self
            .data
            .get(Space::Secrets, &webhook_key(tenant, webhook))?
        else {
            // Deleted meanwhile: the index entry is all that is left.
            let mut batch = WriteBatch::new();
            batch.delete(Space::Config, key.to_vec());
            self.data.write(batch)?;
            return Ok(0);
        };
        let mut record: WebhookRecord = from_json(&bytes, "a webhook")?;
        if record.pending >= MAX_PENDING_PER_WEBHOOK {
            // Paused until the receiver catches up (or its deliveries go dead): the cursor
            // waits, and the feed keeps the events after it.
            return Ok(0);
        }
        let (events, last) = self.events_after(tenant, record.cursor, FANOUT_BATCH)?;
        if last == record.cursor {
            return Ok(0);
        }
        let now = self.now();
        let mut batch = WriteBatch::new();
        for event in events {
            let wanted = (record.events.is_empty() || record.events.contains(&event.kind))
                && (record.paths.is_empty() || glob_matches(&record.paths, &event.path));
            if !wanted {
                continue;
            }
            let revision = event.revision;
            let delivery = DeliveryRecord {
                event,
                attempts: 0,
                next_attempt_unix_nanos: now,
                last_error: String::new(),
            };
            batch
                .put(
                    Space::Secrets,
                    webhook_pending_key(tenant, webhook, revision),
                    to_json(&delivery)?,
                )
                .put(
                    Space::Config,
                    webhook_queue_key(now, tenant, webhook, revision),
                    Vec::new(),
                );
            queued += 1;
        }
        record.cursor = last;
        record.pending = record.pending.saturating_add(queued as u64);
        batch.put(
            Space::Secrets,
            webhook_key(tenant, webhook),
            to_json(&record)?,
        );
        self.data.write(batch)?;
        // The floor may have moved past events that feed pruning held back for this webhook.
        if self.config.feed.retention_nanos > 0 {
            self.note_due(super::due::Unit::FeedPruning, tenant, now);
        }
        Ok(queued)
    }

    /// Tenants with at least one webhook, in id order (one seek per tenant).
    fn webhook_tenants(&self) -> Result<Vec<TenantId>> {
        let prefix = WEBHOOK_INDEX_PREFIX;
        let mut tenants = Vec::new();
        let mut start = prefix.to_vec();
        while let Some((key, _)) = self.data.scan(Space::Config, prefix, &start, 1)?.pop() {
            let rest = std::str::from_utf8(&key[prefix.len()..])
                .map_err(|_| corrupt("a webhook index key"))?;
            let (hex, _) = rest
                .split_once('/')
                .ok_or_else(|| corrupt("a webhook index key"))?;
            let tenant = TenantId::parse_hex(hex).ok_or_else(|| corrupt("a webhook index key"))?;
            tenants.push(tenant);
            start = webhook_index_after(tenant);
        }
        Ok(tenants)
    }

    /// The pending delivery and webhook a queue entry stands for, or `None` (and the entry
    /// removed) if it is stale: delivered, replayed, rescheduled or deleted meanwhile.
    fn queued_delivery(
        &self,
        key: &[u8],
        tenant: TenantId,
        parsed: &QueueEntry,
    ) -> Result<Option<(DeliveryRecord, WebhookRecord)>> {
        let pending_key = webhook_pending_key(tenant, &parsed.webhook, parsed.revision);
        let record = self
            .data
            .get(Space::Secrets, &pending_key)?
            .map(|bytes| from_json::<DeliveryRecord>(&bytes, "a webhook delivery"))
            .transpose()?;
        let webhook = self
            .data
            .get(Space::Secrets, &webhook_key(tenant, &parsed.webhook))?
            .map(|bytes| from_json::<WebhookRecord>(&bytes, "a webhook"))
            .transpose()?;
        match (record, webhook) {
            (Some(record), Some(webhook))
                if webhook_queue_key(
                    record.next_attempt_unix_nanos,
                    tenant,
                    &parsed.webhook,
                    parsed.revision,
                ) == key =>
            {
                Ok(Some((record, webhook)))
            }
            _ => {
                let mut batch = WriteBatch::new();
                batch.delete(Space::Config, key.to_vec());
                self.data.write(batch)?;
                Ok(None)
            }
        }
    }

    /// Moves queue entries of the single queue that came before per-tenant queues into them
    /// (once, at start-up; nothing if there are none).
    pub(super) fn migrate_webhook_queue(data: &crate::stores::DataStore) -> Result<()> {
        loop {
            let page = data.scan(
                Space::Config,
                OLD_WEBHOOK_QUEUE_PREFIX,
                OLD_WEBHOOK_QUEUE_PREFIX,
                1024,
            )?;
            if page.is_empty() {
                return Ok(());
            }
            let mut batch = WriteBatch::new();
            for (key, _) in page {
                let bad = || corrupt("a webhook queue key");
                let rest = &key[OLD_WEBHOOK_QUEUE_PREFIX.len()..];
                let due = rest.get(..8).ok_or_else(bad)?;
                let tail = rest.get(8..).ok_or_else(bad)?;
                let revision_at = tail.len().checked_sub(8).ok_or_else(bad)?;
                let names = std::str::from_utf8(&tail[..revision_at]).map_err(|_| bad())?;
                let (tenant, webhook) = names
                    .strip_suffix('/')
                    .and_then(|names| names.split_once('/'))
                    .ok_or_else(bad)?;
                let tenant = TenantId::parse_hex(tenant).ok_or_else(bad)?;
                let mut new_key = webhook_queue_prefix(tenant);
                new_key.extend_from_slice(due);
                new_key.extend_from_slice(webhook.as_bytes());
                new_key.push(b'/');
                new_key.extend_from_slice(&tail[revision_at..]);
                batch.put(Space::Config, new_key, Vec::new());
                batch.delete(Space::Config, key);
            }
            data.write(batch)?;
        }
    }

    fn signed_delivery(
        &self,
        keyring: &super::Keyring,
        tenant: TenantId,
        webhook: &WebhookRecord,
        record: &DeliveryRecord,
        now: i64,
    ) -> Result<Delivery> {
        let event = &record.event;
        let tenant_name = self
            .tenant_state(tenant)?
            .map_or_else(|| tenant.to_hex(), |state| state.name.to_string());
        let delivery_id = format!("{}-{}", webhook.id, event.revision);
        let mut body = serde_json::json!({
            "id": delivery_id,
            "webhook": webhook.id,
            "tenant": tenant_name,
            "revision": event.revision,
            "type": event.kind.as_str(),
            "path": event.path,
            "versions": event.versions,
            "time": rfc3339(event.time_unix_nanos),
            "attempt": record.attempts + 1,
        });
        if event.kind == EventKind::KeyRotated {
            body["key_version"] = event.key_version.into();
        }
        if event.deadline_unix_nanos > 0 {
            body["deadline"] = rfc3339(event.deadline_unix_nanos).into();
        }
        if !event.detail.is_empty() {
            body["detail"] = event.detail.clone().into();
        }
        let body = serde_json::to_vec(&body).map_err(|_| corrupt("a webhook body"))?;
        let sealed = STANDARD
            .decode(&webhook.secret_sealed)
            .map_err(|_| corrupt("a webhook secret"))?;
        let what = || format!("the signing secret of webhook {}", webhook.id);
        let root = Header::parse(&sealed)
            .ok()
            .filter(|header| header.key.kind == KeyKind::Root)
            .and_then(|header| keyring.root_key(header.key.version))
            .ok_or_else(|| Error::Integrity(what()))?;
        let (context_path, context_tenant) = webhook_context(tenant, &webhook.id);
        let secret = crypto::open(
            root,
            &Context {
                purpose: Purpose::WebhookSecret,
                tenant: context_tenant,
                path: &context_path,
                version: 1,
            },
            &sealed,
            &what,
        )?;
        let signature = sign(&secret, now.div_euclid(1_000_000_000), &body);
        drop(secret);
        Ok(Delivery {
            tenant,
            webhook: webhook.id.clone(),
            revision: event.revision,
            url: webhook.url.clone(),
            body,
            signature,
            attempt: record.attempts + 1,
            delivery_id,
            event_type: event.kind.as_str(),
            host: String::new(),
        })
    }

    /// The lowest feed cursor of the tenant's webhooks (`u64::MAX` without webhooks): events
    /// after it are still to be fanned out, so retention keeps them.
    pub(super) fn webhook_floor(&self, tenant: TenantId) -> Result<u64> {
        let prefix = webhook_prefix(tenant);
        let mut floor = u64::MAX;
        for (_, bytes) in self
            .data
            .scan(Space::Secrets, &prefix, &prefix, usize::MAX)?
        {
            floor = floor.min(from_json::<WebhookRecord>(&bytes, "a webhook")?.cursor);
        }
        Ok(floor)
    }
}

/// Webhooks: subscriptions, fan-out, deliveries, as `vault.webhooks()` hands them out. The view derefs to the vault for the
/// helpers the operations share with the other subsystems.
pub struct Webhooks<'a> {
    vault: &'a Vault,
}

impl std::ops::Deref for Webhooks<'_> {
    type Target = Vault;

    fn deref(&self) -> &Vault {
        self.vault
    }
}

impl Vault {
    /// Webhooks: subscriptions, fan-out, deliveries.
    pub fn webhooks(&self) -> Webhooks<'_> {
        Webhooks { vault: self }
    }
}

impl Webhooks<'_> {
    /// The checks of a new webhook that need no network: the URL, paths and secret, `admin`
    /// on the tenant, the tenant's webhook quota and its rate of root-key actions. Returns the
    /// parsed URL, whose host the caller then resolves (asynchronously, with a timeout) before
    /// [`Vault::webhook_create`]: so slow DNS can neither hold a blocking thread nor be reached
    /// without passing the quota and rate checks first.
    pub fn webhook_admit(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        spec: &WebhookSpec,
    ) -> Result<WebhookUrl> {
        let url = self.webhook_checked(caller, tenant, spec)?.1;
        let id = self
            .authorize(caller, tenant, "", Capability::Admin)?
            .tenant();
        if !caller.system {
            // The signing secret is sealed under the root key.
            self.admit_root_key_use(id)?;
        }
        Ok(url)
    }

    /// Subscribes `spec.url` to the tenant's feed from now on, once its host resolved to
    /// `addresses` (see [`Vault::webhook_admit`]), every one of which must be allowed. Returns
    /// the webhook and, if the vault generated it, the signing secret (shown this once).
    pub fn webhook_create(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        spec: WebhookSpec,
        addresses: &[SocketAddr],
    ) -> Result<(WebhookInfo, Option<SecretBytes>)> {
        let keyring = self.keyring()?;
        let (id, url) = self.webhook_checked(caller, tenant, &spec)?;
        check_addresses(&url.host, addresses, &self.config.webhooks.allow)?;
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).map_err(|_| Error::Rng)?;
        let webhook_id = hex::encode(raw);
        let (generated, secret) = match spec.secret {
            Some(secret) => (None, secret),
            None => {
                let mut bytes = Zeroizing::new([0u8; 32]);
                getrandom::fill(bytes.as_mut()).map_err(|_| Error::Rng)?;
                let text = URL_SAFE_NO_PAD.encode(bytes.as_ref());
                (
                    Some(SecretBytes::new(text.clone().into_bytes())),
                    SecretBytes::new(text.into_bytes()),
                )
            }
        };
        let (context_path, context_tenant) = webhook_context(id, &webhook_id);
        let sealed = self.seal_under_root(
            &keyring,
            &Context {
                purpose: Purpose::WebhookSecret,
                tenant: context_tenant,
                path: &context_path,
                version: 1,
            },
            secret.expose_secret(),
        )?;
        drop(secret);
        let _changes = self.hold_webhook_changes();
        // Again under the lock: two creations may have passed the first check together.
        self.webhook_quota(tenant, id)?;
        let record = WebhookRecord {
            id: webhook_id.clone(),
            url: spec.url,
            paths: spec.paths,
            events: spec.events,
            secret_sealed: STANDARD.encode(sealed),
            created_unix_nanos: self.now(),
            cursor: self.committed_revision(id)?,
            delivered: 0,
            last_delivered_revision: 0,
            last_error: String::new(),
            creator: caller.accessor.clone(),
            pending: 0,
            dead: 0,
        };
        let mut batch = WriteBatch::new();
        batch
            .put(
                Space::Secrets,
                webhook_key(id, &webhook_id),
                to_json(&record)?,
            )
            .put(
                Space::Config,
                webhook_index_key(id, &webhook_id),
                Vec::new(),
            );
        self.data.write(batch)?;
        Ok((info(&record), generated))
    }

    pub fn webhook_list(&self, caller: &Caller, tenant: &TenantName) -> Result<Vec<WebhookInfo>> {
        let id = self.webhook_admin(caller, tenant)?;
        let prefix = webhook_prefix(id);
        self.data
            .scan(Space::Secrets, &prefix, &prefix, MAX_WEBHOOKS)?
            .iter()
            .map(|(_, bytes)| from_json::<WebhookRecord>(bytes, "a webhook").map(|r| info(&r)))
            .collect()
    }

    /// Deliveries waiting and dead-lettered over all of a tenant's webhooks (metrics).
    pub(super) fn webhook_backlog(&self, id: TenantId) -> Result<(u64, u64)> {
        let prefix = webhook_prefix(id);
        let mut backlog = (0u64, 0u64);
        for (_, bytes) in self
            .data
            .scan(Space::Secrets, &prefix, &prefix, MAX_WEBHOOKS)?
        {
            let record = from_json::<WebhookRecord>(&bytes, "a webhook")?;
            backlog.0 = backlog.0.saturating_add(record.pending);
            backlog.1 = backlog.1.saturating_add(record.dead);
        }
        Ok(backlog)
    }

    /// The webhook with its pending and dead-letter deliveries (the oldest
    /// [`STATUS_LIMIT`] of each, and their totals).
    pub fn webhook_status(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        webhook: &str,
    ) -> Result<WebhookStatus> {
        let webhook = parse_webhook_id(webhook)?;
        let id = self.webhook_admin(caller, tenant)?;
        let record = self.webhook_record(id, webhook)?;
        let (pending, pending_total) = self.deliveries(&webhook_pending_prefix(id, webhook))?;
        let (dead, dead_total) = self.deliveries(&webhook_dead_prefix(id, webhook))?;
        Ok(WebhookStatus {
            webhook: info(&record),
            pending,
            pending_total,
            dead,
            dead_total,
        })
    }

    /// Removes the webhook with its pending and dead deliveries.
    pub fn webhook_delete(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        webhook: &str,
    ) -> Result<()> {
        let webhook = parse_webhook_id(webhook)?;
        let id = self.webhook_admin(caller, tenant)?;
        let _changes = self.hold_webhook_changes();
        self.webhook_record(id, webhook)?;
        for prefix in [
            webhook_pending_prefix(id, webhook),
            webhook_dead_prefix(id, webhook),
        ] {
            loop {
                let page = self.data.scan(Space::Secrets, &prefix, &prefix, 1024)?;
                if page.is_empty() {
                    break;
                }
                let mut batch = WriteBatch::new();
                for (key, bytes) in page {
                    if let Ok(record) = from_json::<DeliveryRecord>(&bytes, "a webhook delivery") {
                        batch.delete(
                            Space::Config,
                            webhook_queue_key(
                                record.next_attempt_unix_nanos,
                                id,
                                webhook,
                                record.event.revision,
                            ),
                        );
                    }
                    batch.delete(Space::Secrets, key);
                }
                self.data.write(batch)?;
            }
        }
        let mut batch = WriteBatch::new();
        batch
            .delete(Space::Secrets, webhook_key(id, webhook))
            .delete(Space::Config, webhook_index_key(id, webhook));
        self.data.write(batch)?;
        Ok(())
    }

    /// Moves dead-letter deliveries back to pending, due now, with their attempts reset: the
    /// one at `revision`, or all of them if `revision` is 0. Returns how many.
    pub fn webhook_replay(
        &self,
        caller: &Caller,
        tenant: &TenantName,
        webhook: &str,
        revision: u64,
    ) -> Result<u64> {
        let webhook = parse_webhook_id(webhook)?;
        let id = self.webhook_admin(caller, tenant)?;
        let _changes = self.hold_webhook_changes();
        self.webhook_record(id, webhook)?;
        let prefix = webhook_dead_prefix(id, webhook);
        let now = self.now();
        let mut replayed = 0;
        loop {
            let page = if revision > 0 {
                let key = webhook_dead_key(id, webhook, revision);
                match self.data.get(Space::Secrets, &key)? {
                    Some(bytes) => vec![(key, bytes)],
                    None if replayed == 0 => {
                        return Err(Error::NotFound(format!(
                            "dead-letter delivery of revision {revision} for webhook {webhook}"
                        )));
                    }
                    None => Vec::new(),
                }
            } else {
                self.data.scan(Space::Secrets, &prefix, &prefix, 1024)?
            };
            if page.is_empty() {
                break;
            }
            let mut batch = WriteBatch::new();
            let mut hook = self.webhook_record(id, webhook)?;
            let moved = page.len() as u64;
            hook.dead = hook.dead.saturating_sub(moved);
            hook.pending = hook.pending.saturating_add(moved);
            batch.put(Space::Secrets, webhook_key(id, webhook), to_json(&hook)?);
            for (key, bytes) in page {
                let mut record: DeliveryRecord = from_json(&bytes, "a webhook delivery")?;
                record.attempts = 0;
                record.next_attempt_unix_nanos = now;
                let rev = record.event.revision;
                batch
                    .delete(Space::Secrets, key)
                    .put(
                        Space::Secrets,
                        webhook_pending_key(id, webhook, rev),
                        to_json(&record)?,
                    )
                    .put(
                        Space::Config,
                        webhook_queue_key(now, id, webhook, rev),
                        Vec::new(),
                    );
                replayed += 1;
            }
            self.data.write(batch)?;
            if revision > 0 {
                break;
            }
        }
        if replayed > 0 {
            // Wake the dispatcher.
            self.feeds.wake_all();
        }
        Ok(replayed)
    }

    /// Moves matching events past each subscription's cursor into pending deliveries. Returns
    /// how many deliveries it queued.
    pub fn webhook_fanout(&self) -> Result<usize> {
        if self.keyring().is_err() {
            return Ok(0);
        }
        let _changes = self.hold_webhook_changes();
        let prefix = WEBHOOK_INDEX_PREFIX;
        let mut queued = 0;
        for (key, _) in self.data.scan(Space::Config, prefix, prefix, usize::MAX)? {
            // One broken subscription must not hold up the others.
            match self.fan_out_one(&key[prefix.len()..], &key) {
                Ok(count) => queued += count,
                Err(e) => tracing::warn!(error = %e, "webhook fan-out skipped a subscription"),
            }
        }
        Ok(queued)
    }

    /// Due deliveries, signed now, taken from every tenant's queue in turn within `limits`
    /// given what is already being posted (`busy`); and when the next one falls due. A deleted
    /// tenant's deliveries are not posted (shredding removes them, a restore resumes them).
    pub fn webhook_due(
        &self,
        busy: &DispatchState,
        limits: &DispatchLimits,
    ) -> Result<(Vec<Delivery>, Option<i64>)> {
        let Ok(keyring) = self.keyring() else {
            return Ok((Vec::new(), None));
        };
        let mut tenants = self.webhook_tenants()?;
        if !tenants.is_empty() {
            let turn = busy.turn % tenants.len();
            tenants.rotate_left(turn);
        }
        let _changes = self.hold_webhook_changes();
        let now = self.now();
        let mut total = busy.in_flight.len();
        let mut hosts = busy.per_host.clone();
        let mut out = Vec::new();
        let mut next_due: Option<i64> = None;
        let mut earlier = |due: i64| next_due = Some(next_due.map_or(due, |d| d.min(due)));
        for tenant in tenants {
            if total >= limits.total {
                break;
            }
            if self.tenant_state(tenant)?.is_none() {
                continue;
            }
            let mut free = limits
                .per_tenant
                .saturating_sub(busy.per_tenant.get(&tenant).copied().unwrap_or(0));
            if free == 0 {
                continue;
            }
            let prefix = webhook_queue_prefix(tenant);
            let mut start = prefix.clone();
            // Bounded: a tenant whose due deliveries all wait for a busy host is looked at
            // this far and no further in one pass.
            let mut looked = 0;
            'queue: while free > 0 && total < limits.total && looked < 4 * limits.per_tenant {
                let page = self.data.scan(Space::Config, &prefix, &start, 64)?;
                let Some((last, _)) = page.last() else {
                    break;
                };
                start = last.clone();
                start.push(0);
                for (key, _) in page {
                    looked += 1;
                    let parsed = parse_queue_key(&key, tenant)?;
                    if parsed.due > now {
                        earlier(parsed.due);
                        break 'queue;
                    }
                    if free == 0 || total >= limits.total {
                        earlier(parsed.due);
                        break 'queue;
                    }
                    if busy
                        .in_flight
                        .contains(&(tenant, parsed.webhook.clone(), parsed.revision))
                    {
                        continue;
                    }
                    let Some((record, webhook)) = self.queued_delivery(&key, tenant, &parsed)?
                    else {
                        continue;
                    };
                    // A receiver is a host and port.
                    let host = WebhookUrl::parse(&webhook.url)
                        .map(|url| url.host_header())
                        .unwrap_or_default();
                    let at_host = hosts.entry(host.clone()).or_insert(0);
                    if *at_host >= limits.per_host {
                        // Left for a later pass: the receiver has its share of posts.
                        earlier(parsed.due);
                        continue;
                    }
                    match self.signed_delivery(&keyring, tenant, &webhook, &record, now) {
                        Ok(mut delivery) => {
                            delivery.host = host;
                            *at_host += 1;
                            free -= 1;
                            total += 1;
                            out.push(delivery);
                        }
                        // Logged, and tried again next round; the other deliveries go on.
                        Err(e) => {
                            tracing::warn!(error = %e, webhook = %webhook.id, "webhook delivery not signed")
                        }
                    }
                }
            }
        }
        Ok((out, next_due))
    }

    /// Records how a post went: success removes the delivery; failure schedules a retry with
    /// backoff, or after the last attempt moves it to the dead-letter list (audited).
    pub fn webhook_result(
        &self,
        delivery: &Delivery,
        outcome: std::result::Result<(), String>,
    ) -> Result<()> {
        let _changes = self.hold_webhook_changes();
        let tenant = delivery.tenant;
        let webhook = delivery.webhook.as_str();
        let pending_key = webhook_pending_key(tenant, webhook, delivery.revision);
        let Some(bytes) = self.data.get(Space::Secrets, &pending_key)? else {
            return Ok(());
        };
        let Some(webhook_bytes) = self
            .data
            .get(Space::Secrets, &webhook_key(tenant, webhook))?
        else {
            return Ok(());
        };
        let mut record: DeliveryRecord = from_json(&bytes, "a webhook delivery")?;
        let mut hook: WebhookRecord = from_json(&webhook_bytes, "a webhook")?;
        let now = self.now();
        let mut batch = WriteBatch::new();
        batch.delete(
            Space::Config,
            webhook_queue_key(
                record.next_attempt_unix_nanos,
                tenant,
                webhook,
                delivery.revision,
            ),
        );
        match outcome {
            Ok(()) => {
                batch.delete(Space::Secrets, pending_key);
                hook.pending = hook.pending.saturating_sub(1);
                hook.delivered += 1;
                hook.last_delivered_revision = hook.last_delivered_revision.max(delivery.revision);
            }
            Err(error) => {
                record.attempts += 1;
                record.last_error = error.clone();
                hook.last_error = format!("revision {}: {error}", delivery.revision);
                let policy = &self.config.webhooks;
                if record.attempts >= policy.max_attempts.max(1) {
                    self.audit_vault(
                        tenant,
                        format!(
                            "webhook {webhook}: delivery of revision {} moved to the dead-letter \
                             list after {} attempts ({error})",
                            delivery.revision, record.attempts
                        ),
                    )?;
                    batch.delete(Space::Secrets, pending_key).put(
                        Space::Secrets,
                        webhook_dead_key(tenant, webhook, delivery.revision),
                        to_json(&record)?,
                    );
                    hook.pending = hook.pending.saturating_sub(1);
                    hook.dead = hook.dead.saturating_add(1);
                    if hook.dead > MAX_DEAD_PER_WEBHOOK {
                        // Bounded: the oldest dead letter makes room (audited).
                        let prefix = webhook_dead_prefix(tenant, webhook);
                        if let Some((oldest, bytes)) =
                            self.data.scan(Space::Secrets, &prefix, &prefix, 1)?.pop()
                        {
                            let dropped: DeliveryRecord = from_json(&bytes, "a webhook delivery")?;
                            self.audit_vault(
                                tenant,
                                format!(
                                    "webhook {webhook}: dead-letter delivery of revision {} \
                                     dropped, over the limit of {MAX_DEAD_PER_WEBHOOK}",
                                    dropped.event.revision
                                ),
                            )?;
                            batch.delete(Space::Secrets, oldest);
                            hook.dead -= 1;
                        }
                    }
                } else {
                    let shift = (record.attempts - 1).min(40);
                    let delay = policy
                        .backoff_base_nanos
                        .saturating_mul(1i64 << shift)
                        .min(policy.backoff_max_nanos.max(policy.backoff_base_nanos));
                    record.next_attempt_unix_nanos = now.saturating_add(delay);
                    batch
                        .put(Space::Secrets, pending_key, to_json(&record)?)
                        .put(
                            Space::Config,
                            webhook_queue_key(
                                record.next_attempt_unix_nanos,
                                tenant,
                                webhook,
                                delivery.revision,
                            ),
                            Vec::new(),
                        );
                }
            }
        }
        batch.put(
            Space::Secrets,
            webhook_key(tenant, webhook),
            to_json(&hook)?,
        );
        self.data.write(batch)?;
        Ok(())
    }

    /// The addresses webhooks may reach despite being special-purpose.
    pub fn webhook_allowlist(&self) -> &[Cidr] {
        &self.config.webhooks.allow
    }
}

struct QueueEntry {
    due: i64,
    webhook: String,
    revision: u64,
}

/// What the dispatcher is posting right now, for [`Vault::webhook_due`].
#[derive(Clone, Debug, Default)]
pub struct DispatchState {
    /// (tenant, webhook, revision) of every post in flight.
    pub in_flight: std::collections::HashSet<(TenantId, String, u64)>,
    pub per_tenant: std::collections::HashMap<TenantId, usize>,
    pub per_host: std::collections::HashMap<String, usize>,
    /// Which tenant's queue is looked at first (round robin across passes).
    pub turn: usize,
}

/// How many webhook posts may be in flight: in all, per tenant and per receiving host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DispatchLimits {
    pub total: usize,
    pub per_tenant: usize,
    pub per_host: usize,
}

impl Default for DispatchLimits {
    fn default() -> Self {
        DispatchLimits {
            total: 256,
            per_tenant: 8,
            per_host: 8,
        }
    }
}

fn parse_queue_key(key: &[u8], tenant: TenantId) -> Result<QueueEntry> {
    let bad = || corrupt("a webhook queue key");
    let rest = key
        .get(webhook_queue_prefix(tenant).len()..)
        .ok_or_else(bad)?;
    let due = rest
        .get(..8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_be_bytes)
        .ok_or_else(bad)?;
    let tail = rest.get(8..).ok_or_else(bad)?;
    let revision_at = tail.len().checked_sub(8).ok_or_else(bad)?;
    let revision = tail[revision_at..]
        .try_into()
        .map(u64::from_be_bytes)
        .map_err(|_| bad())?;
    let webhook = std::str::from_utf8(&tail[..revision_at])
        .ok()
        .and_then(|names| names.strip_suffix('/'))
        .ok_or_else(bad)?;
    Ok(QueueEntry {
        due: i64::try_from(due).map_err(|_| bad())?,
        webhook: webhook.to_owned(),
        revision,
    })
}

fn info(record: &WebhookRecord) -> WebhookInfo {
    WebhookInfo {
        id: record.id.clone(),
        url: record.url.clone(),
        paths: record.paths.clone(),
        events: record.events.clone(),
        created_unix_nanos: record.created_unix_nanos,
        cursor: record.cursor,
        delivered: record.delivered,
        last_delivered_revision: record.last_delivered_revision,
        last_error: record.last_error.clone(),
        creator: record.creator.clone(),
        pending: record.pending,
        dead: record.dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_addresses_are_refused_unless_allowed() {
        let refused = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            // The rest of the IANA special-purpose registries.
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.254",
            "198.51.100.7",
            "203.0.113.9",
            "192.88.99.1",
            "64:ff9b:1::1",
            "fec0::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "2002:7f00:1::",
            "3fff::1",
            "5f00::1",
            "ff02::1",
        ];
        for text in refused {
            let address: IpAddr = text.parse().expect("address");
            assert!(
                address_refusal(address, &[]).is_some(),
                "{text} was allowed"
            );
        }
        for text in [
            "93.184.216.34",
            "2606:4700::1111",
            "1.1.1.1",
            "2002:5db8:d822::",
            "198.20.0.1",
            "3fff:1000::1",
        ] {
            let address: IpAddr = text.parse().expect("address");
            assert_eq!(address_refusal(address, &[]), None, "{text} was refused");
        }
        let allow = [Cidr::parse("127.0.0.0/8").expect("cidr")];
        assert_eq!(
            address_refusal("127.0.0.1".parse().expect("ip"), &allow),
            None
        );
        assert!(address_refusal("10.0.0.1".parse().expect("ip"), &allow).is_some());
    }

    #[test]
    fn urls_parse_and_bad_ones_name_the_field() {
        let url = WebhookUrl::parse("https://hooks.example.com/in?x=1").expect("url");
        assert_eq!(
            (url.https, url.host.as_str(), url.port, url.path.as_str()),
            (true, "hooks.example.com", 443, "/in?x=1")
        );
        let url = WebhookUrl::parse("http://[::1]:8080").expect("url");
        assert_eq!(
            (url.host.as_str(), url.port, url.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(url.host_header(), "[::1]:8080");
        for bad in [
            "ftp://x",
            "http://user:pw@host/",
            "http://host:0/",
            "http://host:99999/",
            "http:///path",
            "http://host/#frag",
            "http://ho st/",
        ] {
            let error = WebhookUrl::parse(bad).expect_err(bad).to_string();
            assert!(error.starts_with("invalid url:"), "{bad}: {error}");
        }
    }

    #[test]
    fn signatures_verify_and_reject_changes() {
        let header = sign(b"0123456789abcdef", 1_700_000_000, b"{\"a\":1}");
        assert!(
            verify_signature(
                b"0123456789abcdef",
                &header,
                b"{\"a\":1}",
                1_700_000_010,
                300
            )
            .is_ok()
        );
        assert!(
            verify_signature(
                b"0123456789abcdef",
                &header,
                b"{\"a\":2}",
                1_700_000_010,
                300
            )
            .is_err()
        );
        assert!(
            verify_signature(
                b"another secret!!",
                &header,
                b"{\"a\":1}",
                1_700_000_010,
                300
            )
            .is_err()
        );
        assert!(
            verify_signature(
                b"0123456789abcdef",
                &header,
                b"{\"a\":1}",
                1_700_001_000,
                300
            )
            .is_err()
        );
    }
}
