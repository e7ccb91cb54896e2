//! The Prometheus endpoint (`--metrics-listen ADDR`): `GET /metrics` in Prometheus's text
//! format (0.0.4), made by the Prometheus project's own client crate (`prometheus-client`).
//!
//! Two kinds of figures:
//!
//! - **Counted as they happen**, in the one process-wide [`Metrics`] ([`metrics()`]): calls by
//!   method, code and transport, their latency by method, calls in flight, refusals by limit
//!   (`call.rs`, `transport.rs`, `watch.rs`, `login.rs`), the audit writer's batches, fsync
//!   latency and failed writes (vault-core's `AuditObserver`), background task runs and failures.
//! - **Read at each scrape** ([`Scrape`]): the seal state, whether the node is active, the audit
//!   queue's depth, key uses remaining, the webhook backlog, the stores' sizes and compactions,
//!   and what [`crate::harden`] set (read back from the kernel).
//!
//! Label sets are bounded: `method` is a row of `rpcs::RPCS` (or a health or reflection name,
//! else `other`: a client cannot mint labels with made-up paths), `code` one of gRPC's 17, and
//! `limit` and `task` fixed names. Tenant names appear only with `--metrics-tenant-labels`;
//! without it, key and webhook figures are totals and minima over all tenants.
//!
//! The endpoint is unauthenticated, as Prometheus expects: plaintext only on loopback, else TLS
//! with the server's certificate (and client certificates when `--tls-client-ca` is given).
//! Connections are bounded per source like the API's; one scrape is made at a time, and a
//! scrape within a second of the last gets the same text.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::{
    encoding::prometheus_text,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};
use tonic::Code;
use vault_core::{
    Vault, audit::writer::AuditLog, audit::writer::AuditObserver, storage::StorageStats,
    vault::Task,
};

use crate::{ClusterHandle, call::code_name, harden::Hardening, rpcs::RPCS, transport};

/// Labels of a family: fixed names with bounded values.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// Histogram buckets for call latency: 100 µs to ~26 s.
#[derive(Clone)]
struct LatencyBuckets;

impl MetricConstructor<Histogram> for LatencyBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(exponential_buckets(0.0001, 2.0, 19))
    }
}

/// What the server counts as it runs (see the module documentation).
pub struct Metrics {
    calls: Family<Labels<3>, Counter>,
    latency: Family<Labels<1>, Histogram, LatencyBuckets>,
    in_flight: Gauge,
    refusals: Family<Labels<1>, Counter>,
    /// No-wait attempts of reads: `served` on the async worker, `fell_back` to the pool.
    inline_attempts: [Counter; 2],
    audit_batch_records: Histogram,
    audit_sync_seconds: Histogram,
    audit_write_failures: Counter,
    task_runs: Family<Labels<1>, Counter>,
    task_failures: Family<Labels<1>, Counter>,
    http_scrapes: Counter,
    backups: Family<Labels<1>, Counter>,
    backup_last_success: Gauge,
    security_alerts: Family<Labels<1>, Counter>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| Metrics {
    calls: Family::default(),
    latency: Family::new_with_constructor(LatencyBuckets),
    in_flight: Gauge::default(),
    refusals: Family::default(),
    inline_attempts: [Counter::default(), Counter::default()],
    audit_batch_records: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
    audit_sync_seconds: Histogram::new(exponential_buckets(0.00005, 2.0, 18)),
    audit_write_failures: Counter::default(),
    task_runs: Family::default(),
    task_failures: Family::default(),
    http_scrapes: Counter::default(),
    backups: Family::default(),
    backup_last_success: Gauge::default(),
    security_alerts: Family::default(),
});

/// The process's one set of counters.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// `Service/Method` of every RPC, by its gRPC path.
static METHODS: LazyLock<HashMap<String, &'static str>> = LazyLock::new(|| {
    RPCS.iter()
        .map(|rpc| (format!("/vault.v1.{}", rpc.method), rpc.method))
        .collect()
});

/// The `method` label of a gRPC path: bounded whatever the client sent.
fn method_label(path: &str) -> &'static str {
    if let Some(method) = METHODS.get(path) {
        return method;
    }
    match path {
        "/grpc.health.v1.Health/Check" => "Health/Check",
        "/grpc.health.v1.Health/Watch" => "Health/Watch",
        _ if path.starts_with("/grpc.reflection.") => "Reflection",
        _ => "other",
    }
}

/// A call in flight: counted in `vault_calls_in_flight` until dropped.
pub struct InFlight(());

impl Drop for InFlight {
    fn drop(&mut self) {
        METRICS.in_flight.dec();
    }
}

impl Metrics {
    /// A call began; it is in flight until the guard is dropped.
    pub fn call_started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(())
    }

    /// A call ended with `code` after `elapsed`.
    pub fn call_ended(&self, path: &str, transport: &'static str, code: Code, elapsed: Duration) {
        let method = method_label(path);
        let transport = if transport.is_empty() {
            "grpc"
        } else {
            transport
        };
        self.calls
            .get_or_create(&[
                ("method", method),
                ("code", code_name(code)),
                ("transport", transport),
            ])
            .inc();
        self.latency
            .get_or_create(&[("method", method)])
            .observe(elapsed.as_secs_f64());
    }

    /// A limit refused something (a call, a connection, a watch, a login).
    pub fn refused(&self, limit: &'static str) {
        self.refusals.get_or_create(&[("limit", limit)]).inc();
    }

    /// A read's no-wait attempt: answered where it arrived, or run again on the pool.
    pub fn inline_attempt(&self, served: bool) {
        self.inline_attempts[usize::from(!served)].inc();
    }

    /// A rule on suspicious access fired (alerts.rs).
    pub fn security_alert(&self, rule: &'static str) {
        self.security_alerts.get_or_create(&[("rule", rule)]).inc();
    }

    /// One run of a background task, and how many of its units failed.
    pub fn task_ran(&self, task: Task, failed: u64) {
        let name = task_label(task);
        self.task_runs.get_or_create(&[("task", name)]).inc();
        // Created at 0 with the first run, so that rate() and increase() see the first failure.
        self.task_failures
            .get_or_create(&[("task", name)])
            .inc_by(failed);
    }

    /// A backup ended (streamed to a caller or scheduled).
    pub fn backup_done(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.backups.get_or_create(&[("result", result)]).inc();
        if ok {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            self.backup_last_success.set(now);
        }
    }

    /// The counted metrics, registered into a scrape's registry.
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "vault_calls",
            "Calls answered, by method, gRPC code and transport (grpc or http)",
            self.calls.clone(),
        );
        registry.register(
            "vault_call_duration_seconds",
            "Time from a call's headers to its answer, outcome record included, by method",
            self.latency.clone(),
        );
        registry.register(
            "vault_calls_in_flight",
            "Calls being served now",
            self.in_flight.clone(),
        );
        registry.register(
            "vault_refusals",
            "Calls, connections, watches and logins refused by a limit, by limit",
            self.refusals.clone(),
        );
        let inline: Family<Labels<1>, Counter> = Family::default();
        for (outcome, counter) in ["served", "fell_back"].iter().zip(&self.inline_attempts) {
            inline
                .get_or_create(&[("outcome", outcome)])
                .inc_by(counter.get());
        }
        registry.register(
            "vault_inline_reads",
            "Reads first tried on the async worker without waiting: served there, or fell back \
             to the blocking pool (a disk read, a held lock, a round trip)",
            inline,
        );
        registry.register(
            "vault_audit_batch_records",
            "Records per audit batch (one write and one fdatasync each)",
            self.audit_batch_records.clone(),
        );
        registry.register(
            "vault_audit_sync_seconds",
            "Time to write and fdatasync one audit batch",
            self.audit_sync_seconds.clone(),
        );
        registry.register(
            "vault_audit_write_failures",
            "Audit writes that failed (the calls waiting on them failed UNAVAILABLE)",
            self.audit_write_failures.clone(),
        );
        registry.register(
            "vault_task_runs",
            "Runs of each background task",
            self.task_runs.clone(),
        );
        registry.register(
            "vault_task_failures",
            "Failed units (the task, or the task for one tenant) of each background task",
            self.task_failures.clone(),
        );
        // Both results exist from the start, so rate() and increase() see the first one.
        for result in ["ok", "failed"] {
            let _ = self.backups.get_or_create(&[("result", result)]);
        }
        registry.register(
            "vault_backups",
            "Backups taken, by result (ok or failed)",
            self.backups.clone(),
        );
        registry.register(
            "vault_backup_last_success_timestamp_seconds",
            "When the last backup succeeded (Unix time; 0: none since start)",
            self.backup_last_success.clone(),
        );
        // Every rule exists from the start, so rate() and increase() see the first alert.
        for rule in ["denials", "bulk_reads", "new_network"] {
            let _ = self.security_alerts.get_or_create(&[("rule", rule)]);
        }
        registry.register(
            "vault_security_alerts",
            "Alerts on suspicious access raised, by rule (denials, bulk_reads, new_network)",
            self.security_alerts.clone(),
        );
        registry.register(
            "vault_metrics_scrapes",
            "Scrapes of this endpoint",
            self.http_scrapes.clone(),
        );
    }
}

fn task_label(task: Task) -> &'static str {
    match task {
        Task::KeySweep => "key_sweep",
        Task::Rewrap => "rewrap",
        Task::Shredding => "shredding",
        Task::KeySchedule => "named_key_schedule",
        Task::Expiry => "expiry",
        Task::FeedPruning => "feed_pruning",
        Task::Purge => "purge",
    }
}

/// Feeds the audit writer's batches and failures into [`Metrics`].
pub struct AuditMetrics;

impl AuditObserver for AuditMetrics {
    fn batch_written(&self, records: usize, sync: Duration) {
        METRICS.audit_batch_records.observe(records as f64);
        METRICS.audit_sync_seconds.observe(sync.as_secs_f64());
    }

    fn write_failed(&self) {
        METRICS.audit_write_failures.inc();
    }
}

/// What a scrape reads from the vault and the process.
pub struct Scrape {
    pub vault: Arc<Vault>,
    pub audit: Option<Arc<AuditLog>>,
    pub cluster: ClusterHandle,
    /// `--metrics-tenant-labels`: per-tenant series for keys and webhooks.
    pub tenant_labels: bool,
}

/// A gauge with one value.
fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let gauge: Gauge = Gauge::default();
    gauge.set(value);
    registry.register(name, help, gauge);
}

fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Scrape {
    /// Renders every metric as Prometheus text. Blocking (it reads the stores).
    fn render(&self) -> Result<String, String> {
        let mut registry = Registry::default();
        METRICS.register(&mut registry);
        let status = self.vault.seal().status();
        gauge(
            &mut registry,
            "vault_initialized",
            "1 once the vault has been initialised",
            i64::from(status.initialized),
        );
        gauge(
            &mut registry,
            "vault_sealed",
            "1 while the vault is sealed (or not initialised)",
            i64::from(status.sealed || !status.initialized),
        );
        gauge(
            &mut registry,
            "vault_active",
            "1 on the node that serves writes (always on a single node), 0 on a standby",
            i64::from(crate::is_active(&self.cluster)),
        );
        if let Some(audit) = &self.audit {
            gauge(
                &mut registry,
                "vault_audit_queue_depth",
                "Audit records waiting for the writer",
                clamp(audit.queued()),
            );
            gauge(
                &mut registry,
                "vault_audit_head_sequence",
                "Sequence number of the last durable audit record",
                clamp(audit.head().seq),
            );
        }
        self.keys(&mut registry, status.initialized && !status.sealed);
        let (data, keys) = self.vault.storage_stats();
        stores(&mut registry, &[("data", data), ("keys", keys)]);
        let hardening = Hardening::read();
        gauge(
            &mut registry,
            "vault_process_dumpable",
            "0 when the process is not dumpable (PR_GET_DUMPABLE): no core dump, no ptrace by peers",
            i64::from(!hardening.not_dumpable),
        );
        gauge(
            &mut registry,
            "vault_process_core_limit_zero",
            "1 when the hard core-file limit is 0",
            i64::from(hardening.no_core_files),
        );
        gauge(
            &mut registry,
            "vault_process_locked_bytes",
            "Memory locked against swapping (VmLck; --mlock)",
            clamp(hardening.locked_bytes),
        );
        let info: Family<Labels<1>, Gauge> = Family::default();
        info.get_or_create(&[("version", env!("CARGO_PKG_VERSION"))])
            .set(1);
        registry.register("vault_build_info", "The server's version", info);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).map_err(|e| e.to_string())?;
        Ok(text)
    }

    /// Key uses remaining, key versions by state, tenants and the webhook backlog (unsealed
    /// only: the counts live with the unsealed keys).
    fn keys(&self, registry: &mut Registry, unsealed: bool) {
        if !unsealed {
            return;
        }
        let report = match self.vault.keks().usage_report() {
            Ok(report) => report,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: key usage not read");
                gauge(
                    registry,
                    "vault_metrics_read_failures",
                    "Parts of this scrape that could not be read (see the server log)",
                    1,
                );
                return;
            }
        };
        gauge(
            registry,
            "vault_key_budget",
            "Encryptions a key version may serve before it rotates (--key-budget)",
            clamp(report.budget),
        );
        gauge(
            registry,
            "vault_root_key_uses_remaining",
            "Encryptions the root key may still serve",
            clamp(report.root.remaining),
        );
        gauge(
            registry,
            "vault_tenants",
            "Tenants",
            report.tenants.len() as i64,
        );
        gauge(
            registry,
            "vault_metrics_tenant_failures",
            "Tenants whose key records could not be read for this scrape",
            clamp(report.failed),
        );
        let versions: Family<Labels<1>, Gauge> = Family::default();
        let minimum: Family<Labels<1>, Gauge> = Family::default();
        let per_version: Family<[(&'static str, String); 3], Gauge> = Family::default();
        let pending: Family<[(&'static str, String); 1], Gauge> = Family::default();
        let dead: Family<[(&'static str, String); 1], Gauge> = Family::default();
        let (mut pending_total, mut dead_total) = (0u64, 0u64);
        let mut fewest: HashMap<&'static str, i64> = HashMap::new();
        for tenant in &report.tenants {
            for version in &tenant.keys.versions {
                versions.get_or_create(&[("state", version.state)]).inc();
                let remaining = clamp(version.remaining);
                let least = fewest.entry(version.state).or_insert(remaining);
                *least = (*least).min(remaining);
                if self.tenant_labels {
                    per_version
                        .get_or_create(&[
                            ("tenant", tenant.keys.tenant.as_str().to_owned()),
                            ("version", version.version.to_string()),
                            ("state", version.state.to_owned()),
                        ])
                        .set(remaining);
                }
            }
            pending_total = pending_total.saturating_add(tenant.webhooks_pending);
            dead_total = dead_total.saturating_add(tenant.webhooks_dead);
            if self.tenant_labels {
                let name = tenant.keys.tenant.as_str().to_owned();
                pending
                    .get_or_create(&[("tenant", name.clone())])
                    .set(clamp(tenant.webhooks_pending));
                dead.get_or_create(&[("tenant", name)])
                    .set(clamp(tenant.webhooks_dead));
            }
        }
        for (state, least) in fewest {
            minimum.get_or_create(&[("state", state)]).set(least);
        }
        registry.register(
            "vault_kek_versions",
            "Tenants' key-encryption key versions, by state (current, live, scheduled, retiring)",
            versions,
        );
        registry.register(
            "vault_kek_uses_remaining_min",
            "The fewest encryptions left to any tenant's KEK version in each state",
            minimum,
        );
        if self.tenant_labels {
            registry.register(
                "vault_kek_uses_remaining",
                "Encryptions left to each tenant's KEK version (--metrics-tenant-labels)",
                per_version,
            );
            registry.register(
                "vault_webhook_deliveries_pending_by_tenant",
                "Webhook deliveries waiting to be posted, per tenant",
                pending,
            );
            registry.register(
                "vault_webhook_deliveries_dead_by_tenant",
                "Webhook deliveries in the dead-letter lists, per tenant",
                dead,
            );
        }
        gauge(
            registry,
            "vault_webhook_deliveries_pending",
            "Webhook deliveries waiting to be posted",
            clamp(pending_total),
        );
        gauge(
            registry,
            "vault_webhook_deliveries_dead",
            "Webhook deliveries in the dead-letter lists",
            clamp(dead_total),
        );
    }
}

/// The stores' own figures, labelled by store.
fn stores(registry: &mut Registry, stats: &[(&'static str, StorageStats)]) {
    type Pick = fn(&StorageStats) -> Option<u64>;
    let figures: [(&str, &str, Pick); 5] = [
        (
            "vault_store_table_bytes",
            "Bytes of the store's table files (RocksDB SST files)",
            |s| s.table_bytes,
        ),
        (
            "vault_store_memtable_bytes",
            "Bytes in the store's memory tables, not yet flushed",
            |s| s.memtable_bytes,
        ),
        (
            "vault_store_pending_compaction_bytes",
            "Bytes the store's compactions still have to rewrite (estimate)",
            |s| s.pending_compaction_bytes,
        ),
        (
            "vault_store_running_compactions",
            "Compactions running in the store now",
            |s| s.running_compactions,
        ),
        ("vault_store_keys", "Keys in the store (estimate)", |s| {
            s.keys
        }),
    ];
    for (name, help, pick) in figures {
        let family: Family<Labels<1>, Gauge> = Family::default();
        let mut any = false;
        for (store, figures) in stats {
            if let Some(value) = pick(figures) {
                family.get_or_create(&[("store", store)]).set(clamp(value));
                any = true;
            }
        }
        if any {
            registry.register(name, help, family);
        }
    }
}

/// The rendered text of the last scrape, reused for a second.
struct Rendered {
    at: Instant,
    text: Bytes,
}

/// The endpoint's state: the scrape source and the last text.
pub struct Endpoint {
    scrape: Arc<Scrape>,
    last: tokio::sync::Mutex<Option<Rendered>>,
}

impl Endpoint {
    pub fn new(scrape: Scrape) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            scrape: Arc::new(scrape),
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// The metrics text: one render at a time, a second's reuse.
    async fn text(&self) -> Result<Bytes, String> {
        let mut last = self.last.lock().await;
        if let Some(rendered) = last.as_ref()
            && rendered.at.elapsed() < Duration::from_secs(1)
        {
            return Ok(rendered.text.clone());
        }
        let scrape = Arc::clone(&self.scrape);
        let text = tokio::task::spawn_blocking(move || scrape.render())
            .await
            .map_err(|e| format!("the scrape failed: {e}"))??;
        METRICS.http_scrapes.inc();
        let text = Bytes::from(text);
        *last = Some(Rendered {
            at: Instant::now(),
            text: text.clone(),
        });
        Ok(text)
    }

    async fn answer(
        self: &Arc<Self>,
        request: &Request<hyper::body::Incoming>,
    ) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(content_type),
            );
            response
        };
        if request.uri().path() != "/metrics" {
            return reply(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                Bytes::from(format!(
                    "no such path: {} (metrics are at /metrics)\n",
                    request.uri().path()
                )),
            );
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain; charset=utf-8",
                Bytes::from_static(b"/metrics takes GET or HEAD\n"),
            );
            response.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return response;
        }
        // The render runs in its own task, which holds the one-at-a-time lock until it ends:
        // a client that goes away cannot start a second render beside it.
        let endpoint = Arc::clone(self);
        let text = match tokio::spawn(async move { endpoint.text().await }).await {
            Ok(text) => text,
            Err(e) => Err(format!("the scrape task failed: {e}")),
        };
        match text {
            Ok(text) => reply(StatusCode::OK, prometheus_text::CONTENT_TYPE, text),
            Err(e) => {
                tracing::warn!(error = %e, "metrics scrape failed");
                reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"the scrape failed; see the server log\n"),
                )
            }
        }
    }
}

/// Serves `/metrics` on the connections `incoming` accepts, over TLS when `tls` is given,
/// until `stop` turns true.
pub async fn serve(
    incoming: impl futures_util::Stream<Item = std::io::Result<transport::GuardedStream>>,
    tls: Option<Arc<rustls::ServerConfig>>,
    header_timeout: Duration,
    endpoint: Arc<Endpoint>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    futures_util::pin_mut!(incoming);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = futures_util::StreamExt::next(&mut incoming) => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        let Some(accepted) = accepted else { break };
        while connections.try_join_next().is_some() {}
        let Ok(stream) = accepted else { continue };
        let (endpoint, tls) = (Arc::clone(&endpoint), tls.clone());
        let peer = tonic::transport::server::Connected::connect_info(&stream);
        connections.spawn(async move {
            match tls {
                None => connection(TokioIo::new(stream), peer, endpoint, header_timeout).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            connection(TokioIo::new(stream), peer, endpoint, header_timeout).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "metrics: TLS handshake failed"),
                        Err(_) => tracing::debug!("metrics: TLS handshake timed out"),
                    }
                }
            }
        });
    }
    connections.abort_all();
}

async fn connection<I>(
    io: I,
    peer: transport::PeerInfo,
    endpoint: Arc<Endpoint>,
    header_timeout: Duration,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
        let endpoint = Arc::clone(&endpoint);
        // The connection is busy (not idle, not cut at the header timeout) while it answers.
        let busy = peer.activity();
        async move {
            let response = endpoint.answer(&request).await;
            drop(busy);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    if let Err(e) = builder.serve_connection(io, service).await {
        tracing::debug!(error = %e, "metrics connection ended");
    }
}

/// The address metrics are served on, checked like the API's: plaintext on loopback only.
pub fn check_listen(address: SocketAddr, tls: bool) -> Result<(), String> {
    if !tls && !address.ip().is_loopback() {
        return Err(format!(
            "refusing --metrics-listen {address} without TLS: plaintext metrics are allowed on \
             loopback addresses only (give --tls-cert and --tls-key)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_labels_are_rows_of_the_rpc_table_or_a_fixed_name() {
        for rpc in RPCS {
            assert_eq!(
                method_label(&format!("/vault.v1.{}", rpc.method)),
                rpc.method
            );
        }
        assert_eq!(method_label("/grpc.health.v1.Health/Check"), "Health/Check");
        assert_eq!(
            method_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "Reflection"
        );
        for made_up in [
            "/vault.v1.Secrets/Nope",
            "/x/y",
            "",
            "/vault.v1.Secrets/Get/",
        ] {
            assert_eq!(method_label(made_up), "other", "{made_up}");
        }
    }
}
