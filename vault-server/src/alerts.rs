//! Alerts on suspicious access: rules over sliding one-minute windows per principal, fed by
//! every call's outcome record.
//!
//! Rules (each off unless set, in the config file or as flags):
//! - `denials`: more than `--alert-denials-per-minute` denied calls by one principal (a token's
//!   accessor, or the source address of calls without a valid token) within a minute;
//! - `bulk_reads`: reads of more than `--alert-distinct-reads-per-minute` distinct secrets by
//!   one token within a minute;
//! - `new_network`: with `--alert-new-network`, a token's first call from a network (IPv4 /24,
//!   IPv6 /64) it has not called from before (its first call sets what it knows).
//!
//! An alert is an audit record of kind `alert`, a count in `vault_security_alerts_total{rule}`,
//! a `security_alert` event in the feed of the tenant concerned (for webhooks), and an entry
//! in the recent list `vault-cli alerts list` shows. A rule fires at most once a minute per
//! principal. Every piece of state is bounded: principals tracked (past the bound an arbitrary
//! one is forgotten, in constant time), entries per principal, networks per token, recent
//! alerts, and feed writes in flight. Callers without a valid token count as their network
//! (/24, /64). A feed event goes only to the tenant of the token concerned. The state is per
//! node and in memory: a restart forgets what tokens' networks were.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use vault_core::{
    Vault,
    audit::{
        record::{Entry, Kind},
        writer::AuditLog,
    },
    names::TenantName,
    time::now_unix_nanos,
};

/// The sliding window of every rule.
const WINDOW: Duration = Duration::from_secs(60);
/// Tokens, and networks of callers without a valid token, tracked (each apart: strangers
/// cannot push tokens out); past it an arbitrary one is forgotten.
const MAX_PRINCIPALS: usize = 10_000;
/// Tokens whose distinct reads are counted at once (each holds up to the limit and one hash).
const MAX_READERS: usize = 1_000;
/// The largest `--alert-distinct-reads-per-minute` (what bounds a reader's entries).
pub const MAX_DISTINCT_READS: u32 = 1_000;
/// Networks remembered per token.
const MAX_NETWORKS: usize = 16;
/// Alerts kept for `vault-cli alerts list`.
const MAX_RECENT: usize = 1000;
/// Feed events being written at once; an alert past it gets no feed event (its audit
/// record and metric stay).
const MAX_FEED_WRITES: usize = 4;

/// The rules in force (0 / false: off).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlertRules {
    pub denials_per_minute: u32,
    pub distinct_reads_per_minute: u32,
    pub new_network: bool,
}

impl AlertRules {
    fn any(&self) -> bool {
        self.denials_per_minute > 0 || self.distinct_reads_per_minute > 0 || self.new_network
    }
}

/// One alert, as `vault-cli alerts list` shows it.
#[derive(Clone, Debug)]
pub struct Alert {
    pub time_unix_nanos: i64,
    pub rule: &'static str,
    pub principal: String,
    pub tenant: String,
    pub source: String,
    pub detail: String,
}

/// Per-principal entries with the time each principal was last seen.
struct Tracker<T> {
    entries: HashMap<String, (Instant, T)>,
    max: usize,
}

impl<T: Default> Tracker<T> {
    fn new(max: usize) -> Self {
        Tracker {
            entries: HashMap::new(),
            max,
        }
    }

    /// The principal's entry, made if new. When full, one entry is forgotten to make room
    /// (an arbitrary one: constant time, where finding the least recently seen would scan all
    /// of them under the lock every call takes).
    fn entry(&mut self, principal: &str, now: Instant) -> &mut T {
        if !self.entries.contains_key(principal)
            && self.entries.len() >= self.max
            && let Some(victim) = self.entries.keys().next().cloned()
        {
            self.entries.remove(&victim);
        }
        let slot = self
            .entries
            .entry(principal.to_owned())
            .or_insert_with(|| (now, T::default()));
        slot.0 = now;
        &mut slot.1
    }
}

#[derive(Default)]
struct Seen {
    /// When each denial happened (at most the limit and one).
    denials: VecDeque<Instant>,
    /// Networks the token called from.
    networks: Vec<String>,
    /// When each rule last fired for the principal.
    fired: HashMap<&'static str, Instant>,
}

struct State {
    /// Tokens (by accessor).
    tokens: Tracker<Seen>,
    /// Callers without a valid token (by network).
    strangers: Tracker<Seen>,
    /// Each token's distinct secrets read in the window (hashes of tenant and path), with when
    /// each was last read: at most the limit and one.
    readers: Tracker<HashMap<u64, Instant>>,
    recent: VecDeque<Alert>,
}

/// The alert engine of the server.
pub struct Alerts {
    rules: AlertRules,
    state: Mutex<State>,
    vault: Arc<Vault>,
    audit: Option<Arc<AuditLog>>,
    feed_writes: Arc<tokio::sync::Semaphore>,
}

static ALERTS: OnceLock<Alerts> = OnceLock::new();

/// Starts the engine (once, at start); without any rule it still keeps the recent list empty.
pub fn install(rules: AlertRules, vault: Arc<Vault>, audit: Option<Arc<AuditLog>>) {
    let _ = ALERTS.set(Alerts {
        rules,
        state: Mutex::new(State {
            tokens: Tracker::new(MAX_PRINCIPALS),
            strangers: Tracker::new(MAX_PRINCIPALS),
            readers: Tracker::new(MAX_READERS),
            recent: VecDeque::new(),
        }),
        vault,
        audit,
        feed_writes: Arc::new(tokio::sync::Semaphore::new(MAX_FEED_WRITES)),
    });
}

/// The engine, once installed with at least one rule.
pub fn alerts() -> Option<&'static Alerts> {
    ALERTS.get().filter(|alerts| alerts.rules.any())
}

/// What one call's outcome tells the rules.
pub struct Observed<'a> {
    pub method: &'a str,
    pub tenant: &'a str,
    pub path: &'a str,
    /// The token's accessor; empty without a valid token.
    pub principal: &'a str,
    /// The tenant of the token (none for system tokens or without one).
    pub caller_tenant: Option<vault_core::names::TenantId>,
    pub source_ip: Option<IpAddr>,
    pub source: &'a str,
    pub ok: bool,
    pub denied: bool,
}

/// The network of an address: IPv4 /24, IPv6 /64.
fn network_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.0/24")
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// What identifies a secret among a token's reads (a hash, not the path: 8 bytes each).
fn secret_hash(tenant: &str, path: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (tenant, path).hash(&mut hasher);
    hasher.finish()
}

fn prune_times(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|t| now.duration_since(*t) >= WINDOW)
    {
        times.pop_front();
    }
}

impl Alerts {
    /// Counts one call's outcome; raises what fires.
    pub fn observe(&self, call: &Observed<'_>) {
        if !self.rules.any() {
            return;
        }
        let now = Instant::now();
        let mut fired = Vec::new();
        {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let authenticated = !call.principal.is_empty();
            let counts_denial = self.rules.denials_per_minute > 0 && call.denied;
            let counts_read = self.rules.distinct_reads_per_minute > 0
                && call.ok
                && authenticated
                && call.method == "/vault.v1.Secrets/Get";
            let counts_network =
                self.rules.new_network && authenticated && call.source_ip.is_some();
            if !(counts_denial || counts_read || counts_network) {
                return;
            }
            // Without a valid token, the caller is its network: a caller cannot make itself
            // a fresh principal per address of a /64.
            let principal = if authenticated {
                call.principal.to_owned()
            } else {
                match call.source_ip {
                    Some(ip) => format!("network {}", network_of(ip)),
                    None => return,
                }
            };
            let State {
                tokens,
                strangers,
                readers,
                recent,
            } = &mut *state;
            let seen = if authenticated {
                tokens.entry(&principal, now)
            } else {
                strangers.entry(&principal, now)
            };
            let mut fire = |seen: &mut Seen, rule: &'static str, detail: String| {
                let recently = seen
                    .fired
                    .get(rule)
                    .is_some_and(|at| now.duration_since(*at) < WINDOW);
                if !recently {
                    seen.fired.insert(rule, now);
                    fired.push((rule, detail));
                }
            };
            let limit = self.rules.denials_per_minute;
            if counts_denial {
                prune_times(&mut seen.denials, now);
                seen.denials.push_back(now);
                while seen.denials.len() > limit as usize + 1 {
                    seen.denials.pop_front();
                }
                if seen.denials.len() > limit as usize {
                    fire(
                        seen,
                        "denials",
                        format!(
                            "more than {limit} denied calls within a minute by {principal} \
                             (the last: {} on {:?})",
                            call.method, call.path
                        ),
                    );
                }
            }
            let limit = self.rules.distinct_reads_per_minute;
            if counts_read {
                let reads = readers.entry(&principal, now);
                reads.insert(secret_hash(call.tenant, call.path), now);
                if reads.len() > limit as usize {
                    // Over the limit: forget what left the window (a scan only then).
                    reads.retain(|_, at| now.duration_since(*at) < WINDOW);
                }
                if reads.len() > limit as usize {
                    // Counted from zero again: the map never holds more than the limit and one.
                    reads.clear();
                    fire(
                        seen,
                        "bulk_reads",
                        format!(
                            "reads of more than {limit} distinct secrets within a minute by \
                             {principal}"
                        ),
                    );
                }
            }
            if counts_network && let Some(ip) = call.source_ip {
                let network = network_of(ip);
                if !seen.networks.contains(&network) {
                    let known = !seen.networks.is_empty();
                    if seen.networks.len() >= MAX_NETWORKS {
                        seen.networks.remove(0);
                    }
                    seen.networks.push(network.clone());
                    if known {
                        fire(
                            seen,
                            "new_network",
                            format!("{principal} called from {network} ({ip}) for the first time"),
                        );
                    }
                }
            }
            for (rule, detail) in &fired {
                let alert = Alert {
                    time_unix_nanos: now_unix_nanos(),
                    rule,
                    principal: principal.clone(),
                    tenant: call.tenant.to_owned(),
                    source: call.source.to_owned(),
                    detail: detail.clone(),
                };
                if recent.len() >= MAX_RECENT {
                    recent.pop_front();
                }
                recent.push_back(alert);
            }
        }
        for (rule, detail) in fired {
            self.raise(rule, call, detail);
        }
    }

    /// The audit record, the metric and the feed event of one alert.
    fn raise(&self, rule: &'static str, call: &Observed<'_>, detail: String) {
        tracing::warn!(rule, principal = call.principal, source = call.source, %detail, "security alert");
        crate::metrics::metrics().security_alert(rule);
        if let Some(audit) = &self.audit {
            let entry = Entry {
                kind: Some(Kind::Alert),
                method: format!("alert/{rule}"),
                tenant: call.tenant.to_owned(),
                path: call.path.to_owned(),
                principal: call.principal.to_owned(),
                source: call.source.to_owned(),
                outcome: "alert".into(),
                detail: detail.clone(),
                ..Entry::default()
            };
            audit.submit(
                entry,
                Box::new(|result| {
                    if let Err(error) = result {
                        tracing::error!(%error, "an alert's audit record was not written");
                    }
                }),
            );
        }
        // Only into the feed of the principal's own tenant: a caller cannot write alerts into
        // another tenant's feed by naming it.
        let Some(owner) = call.caller_tenant else {
            return;
        };
        let Ok(tenant) = TenantName::parse(call.tenant) else {
            return;
        };
        let Ok(permit) = Arc::clone(&self.feed_writes).try_acquire_owned() else {
            tracing::warn!(
                rule,
                "too many alert feed events in flight; this one has none"
            );
            return;
        };
        let vault = Arc::clone(&self.vault);
        let detail = format!("{rule}: {detail}");
        tokio::task::spawn_blocking(move || {
            // A tenant that does not exist (a probe naming one) has no feed.
            if let Err(error) = vault.record_security_alert(&tenant, owner, detail) {
                tracing::debug!(%error, tenant = %tenant, "no feed event for the alert");
            }
            drop(permit);
        });
    }

    /// The most recent alerts, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Alert> {
        let state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.recent.iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_are_slash_24_and_slash_64() {
        assert_eq!(network_of("10.1.2.3".parse().expect("ip")), "10.1.2.0/24");
        assert_eq!(
            network_of("2001:db8:1:2:3::4".parse().expect("ip")),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn a_full_tracker_stays_at_its_bound() {
        let mut tracker: Tracker<u32> = Tracker::new(MAX_PRINCIPALS);
        let start = Instant::now();
        for i in 0..MAX_PRINCIPALS + 10 {
            *tracker.entry(&format!("p{i}"), start) = 1;
        }
        assert_eq!(tracker.entries.len(), MAX_PRINCIPALS);
        assert!(
            tracker
                .entries
                .contains_key(&format!("p{}", MAX_PRINCIPALS + 9))
        );
    }
}
