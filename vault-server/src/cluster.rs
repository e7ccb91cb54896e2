//! Several nodes on one etcd cluster (`--storage etcd`): membership, leadership with fencing,
//! and forwarding to the active node.
//!
//! Membership: each node keeps `<prefix>cluster/members/<node id>` (its address, role, seal
//! state and last heartbeat) under a lease of its own, renewed every third of the lease TTL; a
//! node that stops renewing drops out when the lease expires.
//!
//! Leadership: an unsealed node campaigns by creating `<prefix>cluster/leader` under its lease,
//! in a transaction that succeeds only if the key does not exist. The key's create revision is
//! the node's term. From then on every write the node makes to the stores compares that
//! create revision in the same etcd transaction (the stores' fence), so a node that lost
//! leadership (paused, partitioned, slow: its lease expired and another node created the key)
//! commits nothing afterwards, whatever it believes. A standby's stores carry a fence that
//! never holds, so it commits nothing at all; only its own audit head is written unfenced.
//! When the key store lives on a cluster of its own, the active node also holds
//! `<prefix>cluster/leader` there (under a lease of that cluster) and fences key-store writes
//! on it; it counts as active only when it holds both.
//!
//! A node that becomes active forgets its caches (tenants, KEK versions, named keys, feed
//! positions) and reads them again, since another node may have changed them. Background work
//! (maintenance, webhook delivery) runs only on the active node. `StepDown` deletes the leader
//! key and holds the node back from campaigning for a few heartbeats, so another node takes it.
//!
//! Caches and standby reads: every node watches the vault's prefix in etcd and applies what
//! other nodes change to its caches (`Vault::follow_change`, vault-core's follow.rs); when
//! etcd has compacted past the watch's revision (it cancels the watch), the node drops its
//! caches and watches again from the current revision. A standby serves the reads of
//! [`STANDBY_READS`] itself, linearizably (read-index): it writes its own ping key
//! (`<prefix>cluster/ping/<node id>`, one write for every read waiting at that moment), whose
//! revision is past every write acknowledged before the read arrived, and waits until its watch
//! has delivered that ping (etcd sends a watch's events in revision order, so every change
//! before it was applied); then it reads, and the store's reads are themselves linearizable.
//! etcd's progress notices are not used: before 3.4.25 and 3.5.8 (Debian ships 3.4.23) a
//! requested notice can report a revision whose events are still queued (etcd issue 15220).
//! A read it cannot serve so within [`READ_INDEX_WAIT`], or while its watch is down, is relayed.
//!
//! Forwarding: a standby that knows the active node relays every other call but the few it
//! answers itself ([`LOCAL_METHODS`]: its own seal state and membership) to the active node,
//! and the answer back; the client may use any node's address. The standby appends the caller's
//! address to `x-forwarded-for`, which the active node believes only from a trusted proxy
//! (`--trusted-proxy` should list the nodes' addresses).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::call::Route;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot, watch};
use tonic::transport::{Channel, Endpoint};
use vault_core::{
    Vault,
    schema::Store,
    storage::{
        EtcdStorage,
        etcd::{Fence, retry_transient},
    },
};

/// What a node is in its cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Active,
    Standby,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

/// How a node takes part in a cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    pub node_id: String,
    /// Where other nodes and clients reach this node (`host:port`).
    pub advertise: String,
    pub lease_ttl: Duration,
    /// The prefix of the vault's keys in etcd (`--etcd-prefix`).
    pub prefix: String,
}

/// A node's membership record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub role: String,
    pub sealed: bool,
    pub heartbeat_unix_nanos: i64,
}

/// Who holds the leader key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leader {
    pub id: String,
    pub address: String,
}

/// What the node knows of its cluster right now.
#[derive(Clone, Debug)]
pub struct View {
    pub role: Role,
    pub leader: Option<Leader>,
    pub revision: i64,
    /// Nodes with a live membership record, as of the last heartbeat (what `Status` reports,
    /// so that an unauthenticated caller costs etcd nothing).
    pub members: usize,
}

/// The calls a standby answers itself: its own seal state, unsealing it, and membership.
pub const LOCAL_METHODS: &[&str] = &[
    "/vault.v1.System/Status",
    "/vault.v1.System/Unseal",
    "/vault.v1.System/Seal",
    "/vault.v1.System/VerifyShare",
    "/vault.v1.System/ClusterMembers",
    // Each node's own alerts.
    "/vault.v1.System/ListAlerts",
];

/// The reads a standby serves itself once its caches have caught up (see the module
/// documentation); a call that carries an MFA code is forwarded (checking it writes).
pub const STANDBY_READS: &[&str] = &[
    "/vault.v1.Secrets/Get",
    "/vault.v1.Secrets/List",
    "/vault.v1.Secrets/ReadMetadata",
    "/vault.v1.Kms/Decrypt",
    "/vault.v1.Kms/BatchDecrypt",
    "/vault.v1.Kms/Verify",
    "/vault.v1.Kms/VerifyHmac",
    "/vault.v1.Kms/ReadKey",
    "/vault.v1.Kms/ListKeys",
    "/vault.v1.Tenants/GetTenant",
    "/vault.v1.Tenants/ListTenants",
    "/vault.v1.Policies/ReadPolicy",
    "/vault.v1.Policies/ListPolicies",
    "/vault.v1.Tokens/LookupToken",
];

/// Revisions of etcd's history the active node keeps when it compacts, and how often it does.
const HISTORY_KEPT: i64 = 100_000;
const HISTORY_EVERY: Duration = Duration::from_secs(300);

/// The longest a standby waits for its caches to catch up before it forwards a read instead.
pub const READ_INDEX_WAIT: Duration = Duration::from_secs(1);

/// A fence no create revision matches (etcd revisions start at 1): a standby commits nothing.
const NEVER: i64 = -1;

/// One etcd cluster the node must hold the leader key in, with the stores it fences.
struct Domain {
    client: Client,
    stores: Vec<Arc<EtcdStorage>>,
    /// The lease and the create revision of this node's leader key, while it holds it.
    lease: Option<i64>,
    held: Option<i64>,
}

/// How far this node has applied one etcd cluster's changes to its caches.
struct Follower {
    client: Client,
    /// The vault's stores in this cluster.
    stores: Vec<(Store, Arc<EtcdStorage>)>,
    /// Every change up to this revision is applied.
    applied: watch::Sender<i64>,
    /// Whether the watch runs (reads are relayed at once while it does not).
    healthy: std::sync::atomic::AtomicBool,
    /// Reads waiting for a read-index, answered by one ping.
    waiting: Mutex<Vec<oneshot::Sender<Option<i64>>>>,
    wake: Notify,
}

pub struct Cluster {
    config: ClusterConfig,
    vault: Arc<Vault>,
    followers: Vec<Arc<Follower>>,
    /// The data store's cluster first; the key store's, when it is another cluster.
    domains: tokio::sync::Mutex<Vec<Domain>>,
    view: watch::Sender<View>,
    step_down: Notify,
    /// The channel to the active node, kept while it stays the same node.
    channel: Mutex<Option<(Leader, Channel)>>,
}

fn key(config: &ClusterConfig, rest: &str) -> String {
    format!("{}cluster/{rest}", config.prefix)
}

fn now_nanos() -> i64 {
    vault_core::time::now_unix_nanos()
}

impl Cluster {
    /// A node of the cluster whose stores are `data` and `keys` (the same etcd cluster when
    /// `keys_elsewhere` is false).
    pub fn new(
        config: ClusterConfig,
        vault: Arc<Vault>,
        data: Arc<EtcdStorage>,
        keys: Arc<EtcdStorage>,
        keys_elsewhere: bool,
    ) -> Arc<Cluster> {
        let follower = |client: &Client, stores: Vec<(Store, Arc<EtcdStorage>)>| {
            Arc::new(Follower {
                client: client.clone(),
                stores,
                applied: watch::Sender::new(0),
                healthy: std::sync::atomic::AtomicBool::new(false),
                waiting: Mutex::new(Vec::new()),
                wake: Notify::new(),
            })
        };
        let followers = if keys_elsewhere {
            vec![
                follower(data.client(), vec![(Store::Data, Arc::clone(&data))]),
                follower(keys.client(), vec![(Store::Keys, Arc::clone(&keys))]),
            ]
        } else {
            vec![follower(
                data.client(),
                vec![
                    (Store::Data, Arc::clone(&data)),
                    (Store::Keys, Arc::clone(&keys)),
                ],
            )]
        };
        let mut domains = vec![Domain {
            client: data.client().clone(),
            stores: vec![Arc::clone(&data)],
            lease: None,
            held: None,
        }];
        if keys_elsewhere {
            domains.push(Domain {
                client: keys.client().clone(),
                stores: vec![Arc::clone(&keys)],
                lease: None,
                held: None,
            });
        } else {
            domains[0].stores.push(Arc::clone(&keys));
        }
        // Until the first round says otherwise, this node is a standby: limits are not its own.
        vault.set_limits_elsewhere(true);
        Arc::new(Cluster {
            config,
            vault,
            followers,
            domains: tokio::sync::Mutex::new(domains),
            view: watch::Sender::new(View {
                role: Role::Standby,
                leader: None,
                revision: 0,
                members: 0,
            }),
            step_down: Notify::new(),
            channel: Mutex::new(None),
        })
    }

    pub fn view(&self) -> View {
        self.view.borrow().clone()
    }

    /// A receiver that sees every change of role or leader.
    pub fn subscribe(&self) -> watch::Receiver<View> {
        self.view.subscribe()
    }

    pub fn is_active(&self) -> bool {
        self.view.borrow().role == Role::Active
    }

    /// Asks the node to give up leadership (if it holds it) at its next heartbeat.
    pub fn step_down(&self) {
        self.step_down.notify_one();
    }

    /// Where a call is served: here, or relayed to the active node.
    pub async fn route(&self, method: &str, mfa: bool) -> Route {
        if LOCAL_METHODS.contains(&method) || !method.starts_with("/vault.v1.") {
            return Route::Here;
        }
        let view = self.view.borrow().clone();
        if view.role == Role::Active {
            return Route::Here;
        }
        let channel = self.channel_to(view.leader);
        let read = STANDBY_READS.contains(&method);
        // `follows` after the wait: a root rotation applied meanwhile counts.
        // `follows` before the wait too: a sealed node (or one whose keys are behind) pings
        // nothing.
        let serve_read = read
            && !mfa
            && self.vault.follows()
            && self.caught_up(READ_INDEX_WAIT).await
            && self.vault.follows();
        match (serve_read, channel) {
            (true, Some(channel)) => Route::HereOrRelay(channel),
            (false, Some(channel)) => Route::Relay(channel),
            (true, None) => Route::Here,
            // A sealed node answers for itself: it is sealed.
            (false, None) if self.vault.seal().status().sealed => Route::Here,
            // No active node known, and this node's caches are not known to be current (a
            // sealed node answers for itself: it is sealed).
            (false, None) if read => Route::Refuse(
                "no active node is known and this standby cannot serve the read now; retry",
            ),
            // Init on a new cluster (no node is active before one is unsealed).
            (false, None) if method == "/vault.v1.System/Init" => Route::Here,
            // Nothing else that writes starts on a standby, not even to fail fenced: a change
            // begun here (a key-use reservation read at a standby's revision) must not
            // straddle the moment this node's fence opens.
            (false, None) => Route::Refuse("no active node is known yet; retry"),
        }
    }

    /// The channel to the active node `leader` (kept while it stays the same node).
    fn channel_to(&self, leader: Option<Leader>) -> Option<Channel> {
        let leader = leader?;
        if leader.id == self.config.node_id {
            return None;
        }
        let mut channel = self.channel.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((known, open)) = channel.as_ref()
            && *known == leader
        {
            return Some(open.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{}", leader.address))
            .ok()?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let open = endpoint.connect_lazy();
        *channel = Some((leader, open.clone()));
        Some(open)
    }

    /// Waits until this node has applied every change etcd committed before the call
    /// (read-index, in each cluster the stores live in); false if that takes longer than
    /// `within` (the watch is down or behind).
    pub async fn caught_up(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        for follower in &self.followers {
            if !follower.healthy.load(std::sync::atomic::Ordering::Acquire) {
                return false;
            }
            let (answer, revision) = oneshot::channel();
            follower
                .waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(answer);
            follower.wake.notify_one();
            let Ok(Ok(Some(revision))) = tokio::time::timeout_at(deadline, revision).await else {
                return false;
            };
            let mut applied = follower.applied.subscribe();
            while *applied.borrow_and_update() < revision {
                if !matches!(
                    tokio::time::timeout_at(deadline, applied.changed()).await,
                    Ok(Ok(()))
                ) {
                    return false;
                }
            }
        }
        true
    }

    /// Answers the reads waiting for a read-index, all those waiting at once with one ping
    /// (those that arrive meanwhile wait for the next): the revision of this node's own ping
    /// key, written now, which its watch delivers after every change before it.
    async fn fetch_revisions(self: Arc<Self>, follower: Arc<Follower>) {
        let ping_key = key(&self.config, &format!("ping/{}", self.config.node_id));
        loop {
            follower.wake.notified().await;
            let waiting =
                std::mem::take(&mut *follower.waiting.lock().unwrap_or_else(|p| p.into_inner()));
            if waiting.is_empty() {
                continue;
            }
            let revision = ping(&follower.client, &ping_key, READ_INDEX_WAIT).await;
            for answer in waiting {
                let _ = answer.send(revision);
            }
        }
    }

    /// Applies the changes of one etcd cluster to the caches, for as long as the process runs.
    async fn follow(self: Arc<Self>, follower: Arc<Follower>) {
        let leader_key = key(&self.config, "leader");
        let tick =
            (self.config.lease_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        // Where the watch goes on from; `None`: reload (the caches are dropped and the watch
        // starts at the current revision).
        let mut resume: Option<i64> = None;
        // The revision etcd compacted to, while the reload it forced is not done.
        let mut compacted: Option<i64> = None;
        loop {
            let start = match resume {
                Some(revision) => revision,
                None => {
                    let Some(loaded) =
                        current_revision(&follower.client, &leader_key, self.config.lease_ttl)
                            .await
                    else {
                        tokio::time::sleep(tick).await;
                        continue;
                    };
                    // Everything cached is read again at or after `loaded`.
                    for (_, storage) in &follower.stores {
                        storage.set_read_revision(loaded);
                    }
                    let vault = Arc::clone(&self.vault);
                    let reloaded = tokio::task::spawn_blocking(move || vault.reload_followed())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()));
                    if let Err(e) = reloaded {
                        tracing::warn!(error = %e, "cannot reload this node's caches; retrying");
                        tokio::time::sleep(tick).await;
                        continue;
                    }
                    follower.applied.send_if_modified(|applied| {
                        let moved = loaded > *applied;
                        *applied = (*applied).max(loaded);
                        moved
                    });
                    loaded
                }
            };
            resume = Some(start);
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(start + 1);
            let mut client = follower.client.clone();
            let mut stream = match client
                .watch(self.config.prefix.clone(), Some(options))
                .await
            {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd: cannot watch the vault's keys; retrying");
                    tokio::time::sleep(tick).await;
                    continue;
                }
            };
            loop {
                let response = match stream.message().await {
                    Ok(Some(response)) => response,
                    Ok(None) | Err(_) => break,
                };
                if response.canceled() {
                    if response.compact_revision() > 0 {
                        compacted = Some(response.compact_revision());
                        resume = None;
                    }
                    break;
                }
                if response.created() {
                    follower
                        .healthy
                        .store(true, std::sync::atomic::Ordering::Release);
                    if let Some(revision) = compacted.take() {
                        tracing::warn!(
                            compacted = revision,
                            watching_from = start + 1,
                            "etcd compacted past this node's watch; its caches were reloaded"
                        );
                    }
                }
                let events = response.events();
                if events.is_empty() {
                    // The creation's answer, or a progress notice: neither moves what
                    // is applied (see the module documentation).
                    continue;
                }
                let mut last = 0;
                let mut changed = Vec::new();
                for event in events {
                    let Some(kv) = event.kv() else { continue };
                    last = last.max(kv.mod_revision());
                    for (store, storage) in &follower.stores {
                        if let Some((space, local)) = storage.local_key(kv.key()) {
                            changed.push((*store, space, local.to_vec()));
                        }
                    }
                }
                // Follower reads from now on see the batch (the caches' reloads below
                // among them); read-indexes wait for `applied`, published after.
                for (_, storage) in &follower.stores {
                    storage.set_read_revision(last);
                }
                // Applied on the active node too (its own changes: cheap, and no gap
                // when it becomes a standby).
                if !changed.is_empty() {
                    let vault = Arc::clone(&self.vault);
                    let followed = tokio::task::spawn_blocking(move || {
                        changed.into_iter().try_for_each(|(store, space, key)| {
                            vault.follow_change(store, space, &key)
                        })
                    })
                    .await;
                    if !matches!(followed, Ok(Ok(()))) {
                        tracing::warn!(
                            "a change could not be applied to this node's caches; reloading them"
                        );
                        resume = None;
                        break;
                    }
                }
                follower.applied.send_if_modified(|applied| {
                    let moved = last > *applied;
                    *applied = (*applied).max(last);
                    moved
                });
                resume = Some(resume.unwrap_or(0).max(last));
            }
            follower
                .healthy
                .store(false, std::sync::atomic::Ordering::Release);
            for (_, storage) in &follower.stores {
                storage.set_follower_reads(false);
            }
            // Another node's writes no longer reach the caches: token records and policies are
            // read from the store until the watch is back.
            self.vault.set_hot_records_trusted(false);
            tokio::time::sleep(tick).await;
        }
    }

    /// Every node with a live membership record.
    pub async fn members(&self) -> Result<Vec<Member>, String> {
        let mut client = self.domains.lock().await[0].client.clone();
        let prefix = key(&self.config, "members/");
        let response = client
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("etcd: {e}"))?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<Member>(kv.value()).ok())
            .collect())
    }

    /// Heartbeats, campaigns and watches the leader key until the process ends.
    pub async fn run(self: Arc<Self>) {
        for follower in &self.followers {
            tokio::spawn(Arc::clone(&self).follow(Arc::clone(follower)));
            tokio::spawn(Arc::clone(&self).fetch_revisions(Arc::clone(follower)));
        }
        let tick =
            (self.config.lease_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut hold_back_until: Option<Instant> = None;
        let mut last_renewed = Instant::now();
        let mut keepers: Vec<
            Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
        > = Vec::new();
        let mut last_keepalive = Instant::now() - self.config.lease_ttl;
        let mut last_compacted = Instant::now();
        loop {
            let stepping_down = tokio::select! {
                () = tokio::time::sleep(tick) => false,
                () = self.step_down.notified() => true,
            };
            if stepping_down {
                self.resign().await;
                hold_back_until =
                    Some(Instant::now() + self.config.lease_ttl.min(Duration::from_secs(3)));
            }
            let mut domains = self.domains.lock().await;
            keepers.resize_with(domains.len(), || None);
            // Leases: granted when missing, renewed every third of the TTL.
            let ttl_secs = i64::try_from(self.config.lease_ttl.as_secs().max(2)).unwrap_or(10);
            let mut renewed = true;
            for (domain, keeper) in domains.iter_mut().zip(keepers.iter_mut()) {
                if domain.lease.is_none() {
                    let client = domain.client.clone();
                    let granted = bounded(self.config.lease_ttl / 3, || {
                        let mut client = client.clone();
                        async move { client.lease_grant(ttl_secs, None).await }
                    })
                    .await;
                    match granted {
                        Ok(granted) => {
                            domain.lease = Some(granted.id());
                            *keeper = domain.client.lease_keep_alive(granted.id()).await.ok();
                            last_renewed = Instant::now();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "etcd: cannot grant the node's lease");
                            renewed = false;
                        }
                    }
                }
            }
            if last_keepalive.elapsed() >= self.config.lease_ttl / 3 {
                last_keepalive = Instant::now();
                for (domain, keeper) in domains.iter_mut().zip(keepers.iter_mut()) {
                    let mut alive = renew(keeper, tick).await;
                    if !alive && let Some(lease) = domain.lease {
                        // The stream may have gone with a member that is down: open another
                        // (the channel picks a live member) for the same lease.
                        *keeper = domain.client.lease_keep_alive(lease).await.ok();
                        alive = renew(keeper, tick).await;
                    }
                    if !alive {
                        // The lease is gone (expired), or etcd cannot be reached now: renewal
                        // is tried again next time, and what the lease held counts as lost
                        // once a whole TTL passes without one.
                        renewed = false;
                        if keeper.is_none() {
                            domain.lease = None;
                            domain.held = None;
                        }
                    }
                }
                if renewed {
                    last_renewed = Instant::now();
                }
            }
            if last_renewed.elapsed() >= self.config.lease_ttl {
                for domain in domains.iter_mut() {
                    domain.held = None;
                }
            }
            let sealed = self.vault.seal().status().sealed;
            if sealed && domains.iter().any(|d| d.held.is_some()) {
                // Sealed while active: give the leader key up at once, or no other node could
                // take over while this one keeps its lease alive.
                drop(domains);
                self.resign().await;
                domains = self.domains.lock().await;
            }
            let held_back = hold_back_until.is_some_and(|until| Instant::now() < until);
            let mut leader = None;
            let mut revision = 0;
            // Only the data cluster's leader campaigns in the key cluster.
            let mut first_held = false;
            for (index, domain) in domains.iter_mut().enumerate() {
                let Some(lease) = domain.lease else { continue };
                let leader_key = key(&self.config, "leader");
                let me = Leader {
                    id: self.config.node_id.clone(),
                    address: self.config.advertise.clone(),
                };
                // A node whose keys are behind (another node rotated the root key) does not
                // take over: it could not open what was sealed since.
                let campaign =
                    !sealed && !held_back && self.vault.follows() && (index == 0 || first_held);
                // A node that holds the key sends no put: a transaction that carries one is
                // refused while etcd's space alarm is raised, even when its compare fails,
                // and the node would lose its leadership for want of space.
                let put = campaign && domain.held.is_none();
                let mut txn = Txn::new().when(vec![Compare::create_revision(
                    leader_key.clone(),
                    CompareOp::Equal,
                    0,
                )]);
                if put {
                    let value = serde_json::to_vec(&me).unwrap_or_default();
                    txn = txn.and_then(vec![TxnOp::put(
                        leader_key.clone(),
                        value,
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                }
                txn = txn.or_else(vec![TxnOp::get(leader_key.clone(), None)]);
                let client = domain.client.clone();
                let answer = bounded(self.config.lease_ttl / 3, || {
                    let (mut client, txn) = (client.clone(), txn.clone());
                    async move { client.txn(txn).await }
                })
                .await;
                match answer {
                    Ok(answer) => {
                        revision = revision.max(answer.header().map_or(0, |h| h.revision()));
                        if answer.succeeded() {
                            if put {
                                let created = answer.header().map_or(NEVER, |h| h.revision());
                                domain.held = Some(created);
                                if index == 0 {
                                    leader = Some(me.clone());
                                }
                            } else {
                                domain.held = None;
                            }
                        } else {
                            let holder =
                                answer.op_responses().into_iter().find_map(|op| match op {
                                    TxnOpResponse::Get(get) => get.kvs().first().map(|kv| {
                                        (
                                            kv.create_revision(),
                                            kv.lease(),
                                            serde_json::from_slice::<Leader>(kv.value()).ok(),
                                        )
                                    }),
                                    _ => None,
                                });
                            match holder {
                                Some((created, key_lease, Some(holder))) => {
                                    // Ours: the term this node holds, or (after a check that
                                    // failed and let go of it) a key under this node's own
                                    // live lease, which no other node can hold meanwhile.
                                    let mine = holder.id == self.config.node_id
                                        && (domain.held == Some(created)
                                            || (campaign && Some(key_lease) == domain.lease));
                                    domain.held = mine.then_some(created);
                                    if index == 0 {
                                        leader = Some(holder);
                                    }
                                }
                                _ => domain.held = None,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "etcd: leadership check failed");
                        domain.held = None;
                    }
                }
                if index == 0 {
                    first_held = domain.held.is_some();
                }
            }
            let active = !sealed && domains.iter().all(|d| d.held.is_some());
            let watching = self
                .followers
                .iter()
                .all(|f| f.healthy.load(std::sync::atomic::Ordering::Acquire));
            let was = self.view.borrow().role;
            if active && was != Role::Active {
                // Before the fence lets this node write: reads become linearizable, then what
                // it cached as a standby is read again, so no write of its term starts from a
                // cache older than the last term.
                for domain in domains.iter() {
                    for store in &domain.stores {
                        store.set_follower_reads(false);
                    }
                }
                let vault = Arc::clone(&self.vault);
                let _ = tokio::task::spawn_blocking(move || vault.drop_caches()).await;
            }
            // The fences: the term's create revision while active, one that never holds
            // otherwise (a node still sealed writes nothing but init, which needs no leader).
            for domain in domains.iter() {
                let fence = match (active, domain.held, sealed) {
                    (true, Some(created), _) => Some(created),
                    (_, _, true) => None,
                    _ => Some(NEVER),
                };
                for store in &domain.stores {
                    // A node that may write reads linearizably (it must see its own writes);
                    // before the fence opens.
                    // Only while the watch runs: a read at a revision it no longer moves would
                    // grow stale.
                    // Nor while sealed: init's checks must see the current state.
                    store.set_follower_reads(!active && watching && !sealed);
                    store.set_fence(fence.map(|created| Fence {
                        key: key(&self.config, "leader").into_bytes(),
                        create_revision: created,
                    }));
                }
            }
            // etcd keeps every revision until compacted, and heartbeats and standbys' pings
            // make revisions all the time: the active node compacts the history older than
            // HISTORY_KEPT revisions every HISTORY_EVERY (a watch that far behind is cancelled
            // and its node reloads).
            if active && last_compacted.elapsed() >= HISTORY_EVERY {
                last_compacted = Instant::now();
                for domain in domains.iter() {
                    let mut client = domain.client.clone();
                    let within = self.config.lease_ttl / 3;
                    let compaction = async {
                        let current =
                            current_revision(&client, &key(&self.config, "leader"), within).await;
                        if let Some(current) = current
                            && current > HISTORY_KEPT
                            && let Err(e) = client.compact(current - HISTORY_KEPT, None).await
                            && !e.to_string().contains("compacted")
                        {
                            tracing::warn!(error = %e, "etcd: cannot compact the history");
                        }
                    };
                    // Bounded: the heartbeat waits for it.
                    let _ = tokio::time::timeout(within, compaction).await;
                }
            }
            drop(domains);
            let role = if active { Role::Active } else { Role::Standby };
            // A standby relays the calls of rate-limited tenants: the active node keeps limits.
            self.vault.set_limits_elsewhere(!active);
            if role == Role::Active && was != Role::Active {
                tracing::info!(node = %self.config.node_id, "this node is now the active node");
            } else if role != Role::Active && was == Role::Active {
                tracing::warn!(node = %self.config.node_id, "this node is no longer the active node");
                // What it cached is read again as a standby; not waited for here, so that a
                // long change holding the caches' locks does not hold up the heartbeat.
                let vault = Arc::clone(&self.vault);
                drop(tokio::task::spawn_blocking(move || vault.drop_caches()));
            }
            let members = self.view.borrow().members;
            self.view.send_replace(View {
                role,
                leader,
                revision,
                members,
            });
            self.heartbeat(role, sealed).await;
            if let Ok(listed) =
                tokio::time::timeout(self.config.lease_ttl / 3, self.members()).await
                && let Ok(listed) = listed
            {
                self.view.send_modify(|view| view.members = listed.len());
            }
            // Hot records are served from memory only while every watch runs. Set, then
            // checked again: a watch that went down meanwhile (its loop clears the flag after
            // marking itself unhealthy) is never overridden by this tick's earlier reading.
            if watching {
                self.vault.set_hot_records_trusted(true);
                if !self
                    .followers
                    .iter()
                    .all(|f| f.healthy.load(std::sync::atomic::Ordering::SeqCst))
                {
                    self.vault.set_hot_records_trusted(false);
                }
            } else {
                self.vault.set_hot_records_trusted(false);
            }
        }
    }

    /// Writes this node's membership record under its lease.
    async fn heartbeat(&self, role: Role, sealed: bool) {
        let mut domains = self.domains.lock().await;
        let Some(domain) = domains.first_mut() else {
            return;
        };
        let Some(lease) = domain.lease else { return };
        let record = Member {
            id: self.config.node_id.clone(),
            address: self.config.advertise.clone(),
            role: role.as_str().to_owned(),
            sealed,
            heartbeat_unix_nanos: now_nanos(),
        };
        let Ok(value) = serde_json::to_vec(&record) else {
            return;
        };
        let member_key = key(&self.config, &format!("members/{}", self.config.node_id));
        let client = domain.client.clone();
        let put = bounded(self.config.lease_ttl / 3, || {
            let (mut client, key, value) = (client.clone(), member_key.clone(), value.clone());
            async move {
                client
                    .put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await
            }
        })
        .await;
        if let Err(e) = put {
            tracing::warn!(error = %e, "etcd: cannot write this node's membership record");
        }
    }

    /// Deletes the leader key in every cluster where this node holds it (only if it is still
    /// this node's term), and stops writing at once.
    async fn resign(&self) {
        let mut domains = self.domains.lock().await;
        for domain in domains.iter_mut() {
            let Some(created) = domain.held.take() else {
                continue;
            };
            for store in &domain.stores {
                store.set_fence(Some(Fence {
                    key: key(&self.config, "leader").into_bytes(),
                    create_revision: NEVER,
                }));
            }
            let leader_key = key(&self.config, "leader");
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    leader_key.clone(),
                    CompareOp::Equal,
                    created,
                )])
                .and_then(vec![TxnOp::delete(leader_key, None)]);
            if let Err(e) = domain.client.txn(txn).await {
                tracing::warn!(error = %e, "etcd: cannot delete the leader key on step-down");
            }
        }
        drop(domains);
        self.view.send_modify(|view| {
            view.role = Role::Standby;
            view.leader = None;
        });
        tracing::info!(node = %self.config.node_id, "stepped down");
    }
}

impl crate::call::Forwarder for Cluster {
    fn route<'a>(
        &'a self,
        method: &'a str,
        mfa: bool,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Route> + Send + 'a>> {
        Box::pin(Cluster::route(self, method, mfa))
    }
}

/// Writes this node's ping key and returns the revision of that write (past every write
/// acknowledged before it), within `within`; `None` if etcd does not answer in time.
async fn ping(client: &Client, ping_key: &str, within: Duration) -> Option<i64> {
    let answer = bounded(within, || {
        let mut client = client.clone();
        let key = ping_key.to_owned();
        async move { client.put(key, Vec::new(), None).await }
    })
    .await;
    revision_of(
        answer.map(|a| a.header().cloned()),
        "write this node's ping key",
    )
}

/// etcd's current revision, by a linearizable request (a read of the leader key), within
/// `within`; `None` if etcd does not answer in time.
async fn current_revision(client: &Client, leader_key: &str, within: Duration) -> Option<i64> {
    let answer = bounded(within, || {
        let mut client = client.clone();
        let key = leader_key.to_owned();
        async move {
            client
                .get(key, Some(GetOptions::new().with_keys_only()))
                .await
        }
    })
    .await;
    revision_of(
        answer.map(|a| a.header().cloned()),
        "read the current revision",
    )
}

/// The revision of an answer's header; a failure is logged (at debug: the caller relays or
/// retries) as `what` could not be done.
fn revision_of(
    header: Result<Option<etcd_client::ResponseHeader>, etcd_client::Error>,
    what: &str,
) -> Option<i64> {
    match header {
        Ok(header) => header.map(|h| h.revision()),
        Err(e) => {
            tracing::debug!(error = %e, "etcd: cannot {what}");
            None
        }
    }
}

/// Sends one keep-alive on the lease's stream; whether etcd answered that the lease lives.
async fn renew(
    keeper: &mut Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
    tick: Duration,
) -> bool {
    let Some((sender, answers)) = keeper else {
        return false;
    };
    if sender.keep_alive().await.is_err() {
        *keeper = None;
        return false;
    }
    match tokio::time::timeout(tick * 4, answers.message()).await {
        Ok(Ok(Some(answer))) if answer.ttl() > 0 => true,
        Ok(Ok(Some(_))) => {
            // TTL 0: the lease expired; a new one is granted.
            *keeper = None;
            false
        }
        _ => {
            *keeper = None;
            false
        }
    }
}

/// An etcd request, sent again while it fails transiently, for at most `within`.
async fn bounded<T, F, Fut>(within: Duration, attempt: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    tokio::time::timeout(within, retry_transient(attempt))
        .await
        .unwrap_or_else(|_| Err(etcd_client::Error::InvalidArgs("no answer in time".into())))
}
