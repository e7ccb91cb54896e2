//! The etcd backend (feature `etcd`): one store under one key prefix of an etcd cluster.
//!
//! Layout: `<prefix><space>/<key>`, e.g. `vault/data/secrets/<tenant id>/...`; the data store
//! and the key store use different prefixes (`vault/data/`, `vault/keys/`) and may use
//! different clusters. A batch is one etcd transaction, so it is atomic and, when etcd answers,
//! durable on a quorum of members. etcd refuses a transaction that touches one key twice, so
//! a batch is first reduced to the last change of each key (which leaves the same state). A
//! batch larger than etcd's limits ([`EtcdLimits`]: 128 operations and 1.5 MiB per request by
//! default) is refused with an error that names the limit; nothing is split, because every
//! batch the vault writes is one that must be atomic.
//!
//! Fencing: with [`EtcdStorage::set_fence`], every write compares the fence key's create
//! revision (the leadership key of the node that holds it) in the same transaction, so a
//! node that lost its leadership cannot commit anything afterwards, however late its write
//! arrives; such a write fails with [`FENCED`] in its message and changes nothing.
//!
//! Reads are linearizable (etcd's default): a `get` or `scan` answered by any member reflects
//! every write acknowledged before it started. A scan is read in pages at the revision of its
//! first page, so it sees one state however large its values (the client takes 4 MiB per
//! answer).
//!
//! The client is asynchronous; the trait is not. The backend owns a small runtime of its own
//! and every call waits for its answer on the calling thread, for at most the request timeout,
//! so a call never hangs past its deadline when etcd has lost its quorum.
//!
//! Compaction (used after crypto-shredding) compacts etcd's history up to the current revision
//! and defragments every member, so a deleted value is in no member's files afterwards.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Mutex, mpsc},
    time::Duration,
};

use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp,
};

use crate::{BatchLimits, Entry, Op, Space, Storage, StorageError, WriteBatch, prefix_end};

/// In the message of a write refused because the fence moved (leadership was lost).
pub const FENCED: &str = "fenced: this node is no longer the active node";

pub use crate::NO_SPACE;

/// etcd's own limits, which a batch must stay within (etcd's `--max-txn-ops` and
/// `--max-request-bytes`).
#[derive(Clone, Copy, Debug)]
pub struct EtcdLimits {
    pub max_txn_ops: usize,
    pub max_request_bytes: usize,
}

impl Default for EtcdLimits {
    fn default() -> Self {
        EtcdLimits {
            max_txn_ops: 128,
            max_request_bytes: 1536 * 1024,
        }
    }
}

/// Where a store lives in etcd, and how long a request may take.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    /// Every key of the store starts with this (e.g. `vault/data/`); must not be empty.
    pub prefix: String,
    /// The longest one request may take, connection included.
    pub timeout: Duration,
    pub limits: EtcdLimits,
    /// The etcd user the vault signs in as (`etcd --auth-token`, users and roles); `None`:
    /// none (the cluster must then be reachable by the vault nodes only).
    pub user: Option<std::sync::Arc<EtcdUser>>,
    /// TLS to the members (`https://` endpoints): the CA to trust, and the vault's client
    /// certificate for members that require one.
    pub tls: Option<std::sync::Arc<EtcdTls>>,
}

/// The CA that signed the members' certificates and the vault's client certificate and key
/// (PEM). The key is wiped on drop and never printed.
pub struct EtcdTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)>,
}

impl EtcdTls {
    pub fn new(
        ca_pem: Vec<u8>,
        identity: Option<(Vec<u8>, zeroize::Zeroizing<Vec<u8>>)>,
    ) -> EtcdTls {
        EtcdTls { ca_pem, identity }
    }
}

/// Says whether a client certificate is set, nothing else.
impl std::fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

/// An etcd user and password. The password is wiped on drop and never printed.
pub struct EtcdUser {
    name: String,
    password: zeroize::Zeroizing<String>,
}

impl EtcdUser {
    pub fn new(name: impl Into<String>, password: zeroize::Zeroizing<String>) -> EtcdUser {
        EtcdUser {
            name: name.into(),
            password,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Names the user only.
impl std::fmt::Debug for EtcdUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl EtcdOptions {
    pub fn new(endpoints: Vec<String>, prefix: impl Into<String>) -> EtcdOptions {
        EtcdOptions {
            endpoints,
            prefix: prefix.into(),
            timeout: Duration::from_secs(5),
            limits: EtcdLimits::default(),
            user: None,
            tls: None,
        }
    }

    /// How the client connects: timeouts, keep-alive, and the user it signs in as. (etcd's
    /// client keeps its own copy of the password while it runs.)
    fn connect_options(&self) -> ConnectOptions {
        let options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            .with_keep_alive(Duration::from_secs(5), self.timeout)
            // etcd's auth tokens expire (and a member's restart forgets simple ones): the
            // client signs in again instead of failing every request.
            .with_auto_token_refresh(true);
        let options = match &self.user {
            Some(user) => options.with_user(user.name.clone(), user.password.as_str()),
            None => options,
        };
        match &self.tls {
            Some(tls) => {
                let mut config = etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
                if let Some((cert, key)) = &tls.identity {
                    config = config.identity(etcd_client::Identity::from_pem(cert, key.as_slice()));
                }
                options.with_tls(config)
            }
            None => options,
        }
    }
}

/// The key and create revision a write must find unchanged to commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

/// Entries asked for in one page of a scan (fewer when their values are large).
const SCAN_PAGE: usize = 256;

/// Whether a follower read was refused because the member has not applied its revision yet or
/// has compacted it away.
fn not_at_revision(error: &etcd_client::Error) -> bool {
    let text = error.to_string();
    text.contains("future revision") || text.contains("has been compacted")
}

/// Whether an answer was refused for passing the client's message size limit.
fn too_large(error: &etcd_client::Error) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    text.contains("too large") || text.contains("larger than max")
}

/// Room a request needs beyond its keys and values (headers, framing, the fence compare).
const REQUEST_OVERHEAD: usize = 4096;

pub struct EtcdStorage {
    runtime: Option<tokio::runtime::Runtime>,
    client: Client,
    prefix: Vec<u8>,
    options: EtcdOptions,
    fence: Mutex<Option<Fence>>,
    /// Follower reads (a standby's): every read is served at `read_revision` by whichever
    /// member the client asks, without a round through etcd's leader (see
    /// [`EtcdStorage::set_follower_reads`]).
    follower_reads: std::sync::atomic::AtomicBool,
    read_revision: std::sync::atomic::AtomicI64,
}

impl std::fmt::Debug for EtcdStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStorage")
            .field("endpoints", &self.options.endpoints)
            .field("prefix", &self.options.prefix)
            .finish()
    }
}

fn etcd_error(what: &str, error: etcd_client::Error) -> StorageError {
    let text = error.to_string();
    if text.contains("database space exceeded") {
        StorageError(format!(
            "{NO_SPACE} (its space alarm is raised: compact, defragment and disarm it, or raise \
             --quota-backend-bytes): {what}"
        ))
    } else {
        StorageError(format!("etcd {what}: {text}"))
    }
}

impl EtcdStorage {
    /// Connects to the cluster. Fails if no endpoint answers within the timeout.
    pub fn connect(options: EtcdOptions) -> Result<EtcdStorage, StorageError> {
        if options.endpoints.is_empty() {
            return Err(StorageError("etcd: no endpoints given".into()));
        }
        if options.prefix.is_empty() {
            return Err(StorageError(
                "etcd: the key prefix must not be empty".into(),
            ));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(|e| StorageError(format!("etcd: cannot start the client runtime: {e}")))?;
        let connect = options.connect_options();
        let endpoints = options.endpoints.clone();
        let client = match wait(&runtime, options.timeout, async move {
            Client::connect(endpoints, Some(connect)).await
        }) {
            Ok(client) => client,
            Err(error) => {
                // Dropping a runtime blocks, which an async caller forbids; this does not.
                runtime.shutdown_background();
                return Err(error.within("connect"));
            }
        };
        let storage = EtcdStorage {
            runtime: Some(runtime),
            client,
            prefix: options.prefix.clone().into_bytes(),
            options,
            fence: Mutex::new(None),
            follower_reads: std::sync::atomic::AtomicBool::new(false),
            read_revision: std::sync::atomic::AtomicI64::new(0),
        };
        // One read, so that an unreachable cluster fails here rather than on first use.
        storage.get(Space::Config, b"")?;
        Ok(storage)
    }

    /// Reads at a revision the caller knows to be current enough, instead of linearizably: on a
    /// node that writes nothing but follows every change through a watch (a standby), whose
    /// reads are served only once the watch has applied a revision past the read's start
    /// (read-index), a read at that revision is as current as a linearizable one, and any
    /// member answers it from its own store. A member that has not applied the revision yet,
    /// or has compacted it away, makes the read fall back to a linearizable one. Turned off
    /// before a node may write (a node that writes must see its own writes).
    pub fn set_follower_reads(&self, on: bool) {
        self.follower_reads
            .store(on, std::sync::atomic::Ordering::Release);
    }

    /// The revision follower reads are served at (it only grows).
    pub fn set_read_revision(&self, revision: i64) {
        self.read_revision
            .fetch_max(revision, std::sync::atomic::Ordering::AcqRel);
    }

    fn read_at(&self) -> Option<i64> {
        if !self
            .follower_reads
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return None;
        }
        let revision = self
            .read_revision
            .load(std::sync::atomic::Ordering::Acquire);
        (revision > 0).then_some(revision)
    }

    /// From now on every write commits only while `fence` is unchanged (`None`: no fence).
    pub fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    /// The client, for what the vault does with etcd beyond storage (leadership, watches).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The store's key prefix in etcd.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// The etcd key of `key` in `space`.
    pub fn etcd_key(&self, space: Space, key: &[u8]) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.prefix.len() + 9 + key.len());
        full.extend_from_slice(&self.prefix);
        full.extend_from_slice(space.name().as_bytes());
        full.push(b'/');
        full.extend_from_slice(key);
        full
    }

    /// The space and key of one of this store's etcd keys (the inverse of
    /// [`EtcdStorage::etcd_key`]); `None` for a key outside the store.
    pub fn local_key<'a>(&self, etcd_key: &'a [u8]) -> Option<(Space, &'a [u8])> {
        let rest = etcd_key.strip_prefix(self.prefix.as_slice())?;
        Space::ALL.into_iter().find_map(|space| {
            rest.strip_prefix(space.name().as_bytes())
                .and_then(|r| r.strip_prefix(b"/"))
                .map(|key| (space, key))
        })
    }

    fn run<T: Send + 'static>(
        &self,
        what: &str,
        future: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T, StorageError> {
        // Every request is a round trip: never from a no-wait attempt.
        crate::nowait::refuse()?;
        let Some(runtime) = &self.runtime else {
            return Err(StorageError("etcd: the client is shut down".into()));
        };
        wait(runtime, self.options.timeout, future).map_err(|e| e.within(what))
    }

    /// The batch reduced to the last change of each key, in the order of those last changes.
    fn last_changes(batch: WriteBatch) -> Vec<Op> {
        let mut last: HashMap<(Space, Vec<u8>), usize> = HashMap::new();
        for (index, op) in batch.ops.iter().enumerate() {
            let (space, key) = match op {
                Op::Put { space, key, .. } | Op::Delete { space, key } => (*space, key.clone()),
            };
            last.insert((space, key), index);
        }
        let mut kept: Vec<usize> = last.into_values().collect();
        kept.sort_unstable();
        let mut ops: Vec<Option<Op>> = batch.ops.into_iter().map(Some).collect();
        kept.into_iter().filter_map(|i| ops[i].take()).collect()
    }
}

/// Whether a failed request may succeed if sent again: a member that is down or unreachable
/// (the client's channel may pick it again), or an election in progress.
pub fn transient(error: &etcd_client::Error) -> bool {
    let text = error.to_string().to_ascii_lowercase();
    [
        "unavailable",
        "transport",
        "connect error",
        "leader changed",
        "no leader",
    ]
    .iter()
    .any(|mark| text.contains(mark))
}

/// Sends a request again (every 25 ms) while it fails transiently; the caller's deadline
/// bounds the retries. Every request the stores send is safe to repeat: a batch leaves the
/// same state however often it is applied, and its fence compare is the same each time.
pub async fn retry_transient<T, F, Fut>(mut attempt: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    loop {
        match attempt().await {
            Err(error) if transient(&error) => {
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            done => return done,
        }
    }
}

/// Why waiting for etcd failed.
enum Waited {
    TimedOut(Duration),
    Failed(etcd_client::Error),
    Gone,
}

impl Waited {
    fn within(self, what: &str) -> StorageError {
        match self {
            Waited::TimedOut(after) => StorageError(format!(
                "etcd {what}: no answer within {} ms (is a quorum of members up?){}",
                after.as_millis(),
                if what.starts_with("write") {
                    "; the write's outcome is unknown: it may have been applied"
                } else {
                    ""
                }
            )),
            Waited::Failed(error) => etcd_error(what, error),
            Waited::Gone => StorageError(format!("etcd {what}: the client runtime stopped")),
        }
    }
}

/// Runs `future` on the backend's runtime and waits for it on this thread, for at most
/// `timeout`.
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    timeout: Duration,
    future: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T, Waited> {
    let (send, receive) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let answer = tokio::time::timeout(timeout, future).await;
        // The caller may have given up; nobody listens then.
        let _ = send.send(answer);
    });
    // A little more than the future's own timeout, so that its answer normally arrives first.
    match receive.recv_timeout(timeout + Duration::from_millis(250)) {
        Ok(Ok(Ok(value))) => Ok(value),
        Ok(Ok(Err(error))) => Err(Waited::Failed(error)),
        Ok(Err(_)) | Err(mpsc::RecvTimeoutError::Timeout) => Err(Waited::TimedOut(timeout)),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(Waited::Gone),
    }
}

impl Drop for EtcdStorage {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which an async context forbids; this does not.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl EtcdStorage {
    /// Writes `batch` in one transaction that commits only while `fence` holds and, with
    /// `absent`, while that key does not exist; `Ok(false)` when `absent` exists (nothing
    /// written).
    fn write_fenced(
        &self,
        batch: WriteBatch,
        fence: Option<Fence>,
        absent: Option<(Space, &[u8])>,
    ) -> Result<bool, StorageError> {
        if batch.is_empty() {
            return Ok(true);
        }
        if !batch.fits(self.batch_limits()) {
            let limits = self.batch_limits();
            return Err(StorageError(format!(
                "etcd: a write of {} changes and {} bytes is more than etcd takes in one \
                 transaction ({} operations, --max-txn-ops; {} bytes of keys and values within \
                 --max-request-bytes); it was not applied",
                batch.ops.len(),
                batch.bytes(),
                limits.max_ops,
                limits.max_bytes
            )));
        }
        let ops = EtcdStorage::last_changes(batch);
        let limits = self.options.limits;
        if ops.len() > limits.max_txn_ops {
            return Err(StorageError(format!(
                "etcd: a write of {} changes is more than etcd's {} operations per transaction \
                 (--max-txn-ops); it was not applied",
                ops.len(),
                limits.max_txn_ops
            )));
        }
        let bytes: usize = ops
            .iter()
            .map(|op| match op {
                Op::Put { key, value, .. } => self.prefix.len() + 9 + key.len() + value.len(),
                Op::Delete { key, .. } => self.prefix.len() + 9 + key.len(),
            })
            .sum();
        if bytes + REQUEST_OVERHEAD > limits.max_request_bytes {
            return Err(StorageError(format!(
                "etcd: a write of {bytes} bytes is more than etcd's request limit of {} bytes \
                 (--max-request-bytes); it was not applied",
                limits.max_request_bytes
            )));
        }
        let txn_ops: Vec<TxnOp> = ops
            .into_iter()
            .map(|op| match op {
                Op::Put { space, key, value } => {
                    TxnOp::put(self.etcd_key(space, &key), value, None)
                }
                Op::Delete { space, key } => TxnOp::delete(self.etcd_key(space, &key), None),
            })
            .collect();
        let mut compares = Vec::new();
        if let Some(fence) = &fence {
            compares.push(Compare::create_revision(
                fence.key.clone(),
                CompareOp::Equal,
                fence.create_revision,
            ));
        }
        if let Some((space, key)) = absent {
            compares.push(Compare::create_revision(
                self.etcd_key(space, key),
                CompareOp::Equal,
                0,
            ));
        }
        let txn = Txn::new().when(compares).and_then(txn_ops);
        let kv = self.client.kv_client();
        let response = self.run("write", async move {
            retry_transient(|| {
                let (mut kv, txn) = (kv.clone(), txn.clone());
                async move { kv.txn(txn).await }
            })
            .await
        })?;
        if !response.succeeded() {
            if let Some((space, key)) = absent
                && self.get(space, key)?.is_some()
            {
                return Ok(false);
            }
            return Err(StorageError(format!(
                "{FENCED} (its leadership key changed); the write was not applied"
            )));
        }
        Ok(true)
    }
}

impl Storage for EtcdStorage {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let full = self.etcd_key(space, key);
        let kv = self.client.kv_client();
        let at = self.read_at();
        let response = self.run("get", async move {
            if let Some(revision) = at {
                let options = GetOptions::new()
                    .with_serializable()
                    .with_revision(revision);
                match kv.clone().get(full.clone(), Some(options)).await {
                    Err(error) if not_at_revision(&error) || transient(&error) => {}
                    done => return done,
                }
            }
            retry_transient(|| {
                let (mut kv, full) = (kv.clone(), full.clone());
                async move { kv.get(full, None).await }
            })
            .await
        })?;
        Ok(response.kvs().first().map(|found| found.value().to_vec()))
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Entry>, StorageError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = self.etcd_key(space, if start < prefix { prefix } else { start });
        let whole = self.etcd_key(space, prefix);
        let end = prefix_end(&whole).ok_or_else(|| StorageError("etcd: no end key".into()))?;
        let strip = self.etcd_key(space, b"").len();
        let kv = self.client.kv_client();
        let at = self.read_at();
        // Pages at the revision of the first, so the whole scan reads one state; a page whose
        // answer passes the client's message limit (large values) is asked again halved.
        let found = self.run("scan", async move {
            let mut found: Vec<Entry> = Vec::new();
            let first = from.clone();
            let mut from = from;
            // A follower read (see `set_follower_reads`) until a member cannot serve it.
            let mut serializable = at.is_some();
            let mut revision = at.unwrap_or(0);
            let mut page = limit.min(SCAN_PAGE);
            loop {
                let want = (limit - found.len()).min(page);
                let mut options = GetOptions::new()
                    .with_range(end.clone())
                    .with_limit(i64::try_from(want).unwrap_or(i64::MAX));
                if revision > 0 {
                    options = options.with_revision(revision);
                }
                let answer = if serializable {
                    let options = options.clone().with_serializable();
                    match kv.clone().get(from.clone(), Some(options)).await {
                        Err(error) if not_at_revision(&error) || transient(&error) => {
                            // Again from the start, linearizably.
                            serializable = false;
                            revision = 0;
                            found.clear();
                            from.clone_from(&first);
                            continue;
                        }
                        other => other,
                    }
                } else {
                    retry_transient(|| {
                        let (mut kv, from, options) = (kv.clone(), from.clone(), options.clone());
                        async move { kv.get(from, Some(options)).await }
                    })
                    .await
                };
                let response = match answer {
                    Ok(response) => response,
                    Err(error) if page > 1 && too_large(&error) => {
                        page = (page / 2).max(1);
                        continue;
                    }
                    Err(error) => return Err(error),
                };
                if revision == 0 {
                    revision = response.header().map_or(0, |h| h.revision());
                }
                for kv in response.kvs() {
                    found.push((kv.key().to_vec(), kv.value().to_vec()));
                }
                match found.last() {
                    Some((last, _)) if response.more() && found.len() < limit => {
                        from = last.clone();
                        from.push(0);
                    }
                    _ => return Ok(found),
                }
            }
        })?;
        found
            .into_iter()
            .map(|(key, value)| match key.get(strip..) {
                Some(key) => Ok((key.to_vec(), value)),
                None => Err(StorageError(
                    "etcd scan: a key outside the range asked".into(),
                )),
            })
            .collect()
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StorageError> {
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.write_fenced(batch, fence, None).map(drop)
    }

    fn write_if_absent(
        &self,
        batch: WriteBatch,
        space: Space,
        key: &[u8],
    ) -> Result<bool, StorageError> {
        let fence = self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.write_fenced(batch, fence, Some((space, key)))
    }

    fn write_own(&self, batch: WriteBatch) -> Result<(), StorageError> {
        self.write_fenced(batch, None, None).map(drop)
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }

    /// etcd's operations per transaction, and its request size less what framing, the fence
    /// and each key's prefix take.
    fn batch_limits(&self) -> BatchLimits {
        let limits = self.options.limits;
        let per_op = self.prefix.len() + 9 + 16;
        BatchLimits {
            max_ops: limits.max_txn_ops,
            max_bytes: limits
                .max_request_bytes
                .saturating_sub(REQUEST_OVERHEAD + limits.max_txn_ops * per_op),
        }
    }

    /// Compacts etcd's history up to now and defragments every member, so that what was
    /// deleted is in no member's files.
    fn compact(&self) -> Result<(), StorageError> {
        let mut kv = self.client.kv_client();
        let probe = self.etcd_key(Space::Config, b"");
        let revision = self
            .run("compact", async move { kv.get(probe, None).await })?
            .header()
            .map(|h| h.revision())
            .ok_or_else(|| StorageError("etcd compact: no revision in the answer".into()))?;
        let mut kv = self.client.kv_client();
        let compacted = self.run("compact", async move {
            kv.compact(revision, Some(CompactionOptions::new().with_physical()))
                .await
        });
        if let Err(error) = compacted
            && !error.0.contains("required revision has been compacted")
        {
            return Err(error);
        }
        // Defragmentation is per member: connect to each one alone, every member the cluster
        // lists (not only the endpoints this node was given).
        // The configured endpoints too, should a member advertise a URL this node cannot
        // reach; a member reached twice is defragmented twice, which is harmless.
        let mut cluster = self.client.cluster_client();
        let mut endpoints = self.options.endpoints.clone();
        // Should the list fail, the configured endpoints are defragmented all the same.
        if let Ok(listed) = self.run("member list", async move { cluster.member_list().await }) {
            for member in listed.members() {
                if let Some(url) = member.client_urls().first()
                    && !endpoints.contains(url)
                {
                    endpoints.push(url.clone());
                }
            }
        }
        for endpoint in &endpoints {
            let endpoint = endpoint.clone();
            let options = self.options.connect_options();
            self.run("defragment", async move {
                let mut member = Client::connect([endpoint], Some(options)).await?;
                member.defragment().await.map(drop)
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_keeps_the_last_change_of_each_key_in_order() {
        let mut batch = WriteBatch::new();
        batch
            .put(Space::Config, b"a", b"1")
            .put(Space::Config, b"b", b"1")
            .delete(Space::Config, b"a")
            .put(Space::Secrets, b"a", b"2")
            .put(Space::Config, b"b", b"3");
        assert_eq!(
            EtcdStorage::last_changes(batch),
            vec![
                Op::Delete {
                    space: Space::Config,
                    key: b"a".to_vec()
                },
                Op::Put {
                    space: Space::Secrets,
                    key: b"a".to_vec(),
                    value: b"2".to_vec()
                },
                Op::Put {
                    space: Space::Config,
                    key: b"b".to_vec(),
                    value: b"3".to_vec()
                },
            ]
        );
    }
}
