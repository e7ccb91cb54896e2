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
//! Forwarding: a standby that knows the active node relays every call but the few it answers
//! itself ([`LOCAL_METHODS`]: its own seal state and membership) to the active node, and the
//! answer back; the client may use any node's address. The standby appends the caller's
//! address to `x-forwarded-for`, which the active node believes only from a trusted proxy
//! (`--trusted-proxy` should list the nodes' addresses).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint};
use vault_core::{
    Vault,
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
}

/// The calls a standby answers itself: its own seal state, unsealing it, and membership.
pub const LOCAL_METHODS: &[&str] = &[
    "/vault.v1.System/Status",
    "/vault.v1.System/Unseal",
    "/vault.v1.System/Seal",
    "/vault.v1.System/VerifyShare",
    "/vault.v1.System/ClusterMembers",
];

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

pub struct Cluster {
    config: ClusterConfig,
    vault: Arc<Vault>,
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
        Arc::new(Cluster {
            config,
            vault,
            domains: tokio::sync::Mutex::new(domains),
            view: watch::Sender::new(View {
                role: Role::Standby,
                leader: None,
                revision: 0,
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

    /// Where a call should go: `None` to serve it here, or the channel to the active node.
    pub fn forward_target(&self, method: &str) -> Option<Channel> {
        if LOCAL_METHODS.contains(&method) || !method.starts_with("/vault.v1.") {
            return None;
        }
        let view = self.view.borrow().clone();
        if view.role == Role::Active {
            return None;
        }
        let leader = view.leader?;
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
        let tick =
            (self.config.lease_ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut hold_back_until: Option<Instant> = None;
        let mut last_renewed = Instant::now();
        let mut keepers: Vec<
            Option<(etcd_client::LeaseKeeper, etcd_client::LeaseKeepAliveStream)>,
        > = Vec::new();
        let mut last_keepalive = Instant::now() - self.config.lease_ttl;
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
                let campaign = !sealed && !held_back && (index == 0 || first_held);
                let mut txn = Txn::new().when(vec![Compare::create_revision(
                    leader_key.clone(),
                    CompareOp::Equal,
                    0,
                )]);
                if campaign {
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
                            if campaign {
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
                                            serde_json::from_slice::<Leader>(kv.value()).ok(),
                                        )
                                    }),
                                    _ => None,
                                });
                            match holder {
                                Some((created, Some(holder))) => {
                                    let mine = holder.id == self.config.node_id
                                        && domain.held == Some(created);
                                    if !mine {
                                        domain.held = None;
                                    }
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
            // The fences: the term's create revision while active, one that never holds
            // otherwise (a node still sealed writes nothing but init, which needs no leader).
            for domain in domains.iter() {
                let fence = match (active, domain.held, sealed) {
                    (true, Some(created), _) => Some(created),
                    (_, _, true) => None,
                    _ => Some(NEVER),
                };
                for store in &domain.stores {
                    store.set_fence(fence.map(|created| Fence {
                        key: key(&self.config, "leader").into_bytes(),
                        create_revision: created,
                    }));
                }
            }
            drop(domains);
            let role = if active { Role::Active } else { Role::Standby };
            let was = self.view.borrow().role;
            if role == Role::Active && was != Role::Active {
                tracing::info!(node = %self.config.node_id, "this node is now the active node");
                let vault = Arc::clone(&self.vault);
                let _ = tokio::task::spawn_blocking(move || vault.drop_caches()).await;
            } else if role != Role::Active && was == Role::Active {
                tracing::warn!(node = %self.config.node_id, "this node is no longer the active node");
            }
            self.view.send_replace(View {
                role,
                leader,
                revision,
            });
            self.heartbeat(role, sealed).await;
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
    fn target(&self, method: &str) -> Option<Channel> {
        self.forward_target(method)
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
