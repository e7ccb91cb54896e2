//! `vault-cli bench`: N concurrent clients, each on its own connection, doing put, get, a mix,
//! or paged listing against a running server for a fixed time (or number of requests). Prints
//! throughput and latency percentiles (for `list`, per page).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;
use tonic::transport::Channel;
use vault_proto::v1::{self, secrets_client::SecretsClient, tenants_client::TenantsClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx, token},
};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Stop after this many requests in all (instead of --duration).
    #[arg(long)]
    pub requests: Option<u64>,
    /// put, get, mix (put one in --put-every, get the rest), list (walk the --keys secrets
    /// page by page, over and over; one request is one page), or encrypt / decrypt with the
    /// named key "bench" (--value-size bytes of plaintext, --batch items per call).
    /// `load` only writes the --keys secrets (spread over --tenants) and reports the rate.
    #[arg(long, value_parser = ["put", "get", "mix", "list", "encrypt", "decrypt", "load"], default_value = "mix")]
    pub op: String,
    /// For encrypt and decrypt: items per call (1: Encrypt/Decrypt; more: BatchEncrypt/
    /// BatchDecrypt).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Entries per page for --op list.
    #[arg(long, default_value_t = 100)]
    pub page_size: u32,
    /// In a mix, one request in this many is a put.
    #[arg(long, default_value_t = 10)]
    pub put_every: u64,
    /// Bytes of the secret value.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,
    /// Distinct secret paths to spread requests over.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// The --keys secrets exist already (from an earlier run on the same tenant): do not
    /// write them first.
    #[arg(long)]
    pub skip_load: bool,
    /// Tenant to use (created if missing).
    #[arg(long, default_value = "bench")]
    pub tenant: String,
    /// Spread the secrets over this many tenants, named TENANT-0, TENANT-1, ... (created if
    /// missing): secret k lives in tenant k mod N.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub tenants: u64,
    /// The server is `vault-bench-null` (the gRPC stack alone, the baseline of scripts/bench):
    /// no tenant is created and nothing is loaded; --op put or get only.
    #[arg(long)]
    pub null: bool,
}

/// The tenant secret `key` lives in.
fn tenant_of(base: &str, tenants: u64, key: u64) -> String {
    if tenants <= 1 {
        base.to_owned()
    } else {
        format!("{base}-{}", key % tenants)
    }
}

#[derive(serde::Serialize)]
struct Loaded {
    secrets: u64,
    tenants: u64,
    seconds: f64,
    puts_per_second: f64,
}

impl crate::output::Show for Loaded {
    fn text(&self) -> String {
        format!(
            "loaded {} secrets into {} tenants in {:.1} s: {:.0} puts/s\n",
            self.secrets, self.tenants, self.seconds, self.puts_per_second
        )
    }
}

#[derive(Default)]
struct ClientResult {
    latencies_micros: Vec<u32>,
    puts: u64,
    gets: u64,
    /// Items encrypted or decrypted (encrypt and decrypt only).
    items: u64,
    errors: u64,
    first_error: Option<String>,
}

impl ClientResult {
    /// Counts a failed request; the first failure is kept for the report.
    fn failed(&mut self, status: &tonic::Status) {
        self.errors += 1;
        self.first_error
            .get_or_insert_with(|| format!("{:?}: {}", status.code(), status.message()));
    }
}

/// How long a client runs: until the deadline from --duration, or for its share of --requests.
#[derive(Clone, Copy)]
struct Budget {
    deadline: Instant,
    requests: Option<u64>,
    /// Requests sent so far.
    sent: u64,
}

impl Budget {
    fn new(args: &BenchArgs) -> Self {
        Budget {
            deadline: Instant::now() + Duration::from_secs_f64(args.duration.max(0.0)),
            requests: args
                .requests
                .map(|total| total.div_ceil(args.clients as u64)),
            sent: 0,
        }
    }

    /// Whether the client sends another request (counted in `sent` when it does).
    fn another(&mut self) -> bool {
        let spent = self
            .requests
            .map_or(Instant::now() >= self.deadline, |max| self.sent >= max);
        if !spent {
            self.sent += 1;
        }
        !spent
    }
}

/// Waits for the clients and adds up what they did.
async fn total(tasks: Vec<tokio::task::JoinHandle<ClientResult>>) -> CliResult<ClientResult> {
    let mut total = ClientResult::default();
    for task in tasks {
        let result = task
            .await
            .map_err(|e| CliError::new(format!("bench client failed: {e}")))?;
        total.latencies_micros.extend(result.latencies_micros);
        total.puts += result.puts;
        total.gets += result.gets;
        total.items += result.items;
        total.errors += result.errors;
        total.first_error = total.first_error.or(result.first_error);
    }
    Ok(total)
}

pub async fn run(ctx: &Ctx, args: BenchArgs, format: Format) -> CliResult<()> {
    // The clients' tasks each hold the context (the MFA code goes with every request).
    let shared = Arc::new(ctx.clone());
    if args.clients == 0 || args.keys == 0 || args.put_every == 0 {
        return Err(CliError::new(
            "--clients, --keys and --put-every must be at least 1",
        ));
    }
    if args.tenants > 1 && (args.op == "encrypt" || args.op == "decrypt") {
        return Err(CliError::new(
            "--tenants applies to secrets, not to --op encrypt or decrypt",
        ));
    }
    if args.null && args.op != "put" && args.op != "get" {
        return Err(CliError::new(
            "--null: vault-bench-null serves only --op put and --op get",
        ));
    }
    let token = token()?;
    let channel = ctx.connect().await?;
    let mut tenants = TenantsClient::new(channel.clone());
    let tenants_to_create = if args.null { 0 } else { args.tenants };
    for index in 0..tenants_to_create {
        if let Err(status) = tenants
            .create_tenant(ctx.authed(
                v1::CreateTenantRequest {
                    name: tenant_of(&args.tenant, args.tenants, index),
                    settings: None,
                },
                &token,
            )?)
            .await
            && !already_exists(&status)
        {
            return Err(ctx.status_error(status));
        }
    }
    if args.op == "encrypt" || args.op == "decrypt" {
        return kms_bench(ctx, &args, &token, format).await;
    }
    // Every path exists before a get (or a listing) can ask for it: written by all clients
    // at once, each its share of the keys.
    let value = vec![b'x'; args.value_size];
    let mut loaders = Vec::with_capacity(args.clients);
    let loading_clients = if args.skip_load || args.null {
        0
    } else {
        args.clients as u64
    };
    for client_index in 0..loading_clients {
        let mut secrets = SecretsClient::new(ctx.connect().await?);
        let token = Zeroizing::new(token.as_str().to_owned());
        let (tenant, value, keys, clients, spread) = (
            args.tenant.clone(),
            value.clone(),
            args.keys,
            args.clients as u64,
            args.tenants,
        );
        let ctx = Arc::clone(&shared);
        loaders.push(tokio::spawn(async move {
            let mut key = client_index;
            while key < keys {
                let request = ctx
                    .authed(
                        put_request(&tenant_of(&tenant, spread, key), key, &value),
                        &token,
                    )
                    .map_err(|e| tonic::Status::invalid_argument(e.message))?;
                secrets.put(request).await?;
                key += clients;
            }
            Ok::<(), tonic::Status>(())
        }));
    }
    let load_started = Instant::now();
    for loader in loaders {
        loader
            .await
            .map_err(|e| CliError::new(format!("bench client failed: {e}")))?
            .map_err(|s| ctx.status_error(s))?;
    }
    if args.op == "load" {
        let seconds = load_started.elapsed().as_secs_f64();
        let loaded = Loaded {
            secrets: args.keys,
            tenants: args.tenants,
            seconds,
            puts_per_second: args.keys as f64 / seconds.max(1e-9),
        };
        return crate::output::show(&loaded, format);
    }

    let budget = Budget::new(&args);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for client_index in 0..args.clients {
        let channel = ctx.connect().await?;
        let token = Zeroizing::new(token.as_str().to_owned());
        let op = args.op.clone();
        let tenant = args.tenant.clone();
        let value = value.clone();
        let (keys, put_every, page_size, spread) =
            (args.keys, args.put_every, args.page_size, args.tenants);
        let task_ctx = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            if op == "list" {
                let tenant = tenant_of(&tenant, spread, 0);
                return walk_pages(task_ctx, channel, token, &tenant, page_size, budget).await;
            }
            drive(
                task_ctx,
                channel,
                token,
                &op,
                (&tenant, spread),
                &value,
                keys,
                put_every,
                client_index as u64,
                budget,
            )
            .await
        }));
    }
    let mut total = total(tasks).await?;
    let elapsed = started.elapsed().as_secs_f64();
    report(&args, &mut total, elapsed, format);
    Ok(())
}

fn put_request(tenant: &str, key: u64, value: &[u8]) -> v1::PutRequest {
    let mut request = v1::PutRequest {
        tenant: tenant.to_owned(),
        path: format!("bench/k{key:08}"),
        ..Default::default()
    };
    request.data.insert("value".to_owned(), value.to_vec());
    request
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    ctx: Arc<Ctx>,
    channel: Channel,
    token: Zeroizing<String>,
    op: &str,
    (base, spread): (&str, u64),
    value: &[u8],
    keys: u64,
    put_every: u64,
    seed: u64,
    mut budget: Budget,
) -> ClientResult {
    let mut client = SecretsClient::new(channel);
    let mut result = ClientResult::default();
    let mut counter: u64 = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    while budget.another() {
        counter = counter
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let key = (counter >> 33) % keys;
        let tenant = &tenant_of(base, spread, key);
        let is_put = match op {
            "put" => true,
            "get" => false,
            _ => budget.sent.is_multiple_of(put_every),
        };
        let begun = Instant::now();
        let outcome = if is_put {
            match ctx.authed(put_request(tenant, key, value), &token) {
                Ok(request) => client.put(request).await.map(|_| ()),
                Err(e) => Err(tonic::Status::invalid_argument(e.message)),
            }
        } else {
            let request = v1::GetRequest {
                tenant: tenant.to_owned(),
                path: format!("bench/k{key:08}"),
                version: 0,
            };
            match ctx.authed(request, &token) {
                Ok(request) => client.get(request).await.map(|_| ()),
                Err(e) => Err(tonic::Status::invalid_argument(e.message)),
            }
        };
        let micros = u32::try_from(begun.elapsed().as_micros()).unwrap_or(u32::MAX);
        match outcome {
            Ok(()) => {
                result.latencies_micros.push(micros);
                if is_put {
                    result.puts += 1
                } else {
                    result.gets += 1
                }
            }
            Err(status) => result.failed(&status),
        }
    }
    result
}

/// Lists `bench/` page by page, starting over at the end, timing each page.
async fn walk_pages(
    ctx: Arc<Ctx>,
    channel: Channel,
    token: Zeroizing<String>,
    tenant: &str,
    page_size: u32,
    mut budget: Budget,
) -> ClientResult {
    let mut client = SecretsClient::new(channel);
    let mut result = ClientResult::default();
    let mut page_token = String::new();
    while budget.another() {
        let request = v1::ListRequest {
            tenant: tenant.to_owned(),
            prefix: "bench/".to_owned(),
            page_size,
            page_token: std::mem::take(&mut page_token),
            recursive: false,
        };
        let begun = Instant::now();
        let outcome = match ctx.authed(request, &token) {
            Ok(request) => client.list(request).await,
            Err(e) => Err(tonic::Status::invalid_argument(e.message)),
        };
        let micros = u32::try_from(begun.elapsed().as_micros()).unwrap_or(u32::MAX);
        match outcome {
            Ok(page) => {
                result.latencies_micros.push(micros);
                result.gets += 1;
                page_token = page.into_inner().next_page_token;
            }
            Err(status) => result.failed(&status),
        }
    }
    result
}

fn percentile(sorted: &[u32], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * fraction).ceil() as usize;
    f64::from(sorted[rank.clamp(1, sorted.len()) - 1]) / 1000.0
}

fn report(args: &BenchArgs, total: &mut ClientResult, elapsed: f64, format: Format) {
    total.latencies_micros.sort_unstable();
    let done = total.puts + total.gets;
    let throughput = if elapsed > 0.0 {
        done as f64 / elapsed
    } else {
        0.0
    };
    let (p50, p99, p999) = (
        percentile(&total.latencies_micros, 0.50),
        percentile(&total.latencies_micros, 0.99),
        percentile(&total.latencies_micros, 0.999),
    );
    let max = total
        .latencies_micros
        .last()
        .map_or(0.0, |m| f64::from(*m) / 1000.0);
    let put_ratio = if done > 0 {
        total.puts as f64 / done as f64
    } else {
        0.0
    };
    let error_ratio = if done + total.errors > 0 {
        total.errors as f64 / (done + total.errors) as f64
    } else {
        0.0
    };
    match format {
        Format::Json => println!(
            "{}",
            json!({
                "op": args.op, "clients": args.clients, "value_size": args.value_size, "seconds": elapsed,
                "requests": done, "puts": total.puts, "gets": total.gets, "errors": total.errors,
                "batch": args.batch, "items": total.items,
                "items_per_second": if elapsed > 0.0 { total.items as f64 / elapsed } else { 0.0 },
                "put_ratio": put_ratio, "error_ratio": error_ratio, "throughput_per_second": throughput,
                "latency_ms": { "p50": p50, "p99": p99, "p999": p999, "max": max },
                "first_error": total.first_error,
            })
        ),
        Format::Text => {
            println!(
                "op={} clients={} value_size={}B seconds={elapsed:.1} requests={done} (puts {} / gets {}, put ratio {put_ratio:.2}) errors={} (ratio {error_ratio:.4})",
                args.op, args.clients, args.value_size, total.puts, total.gets, total.errors
            );
            println!("throughput: {throughput:.0} requests/s");
            if total.items > 0 && elapsed > 0.0 {
                println!(
                    "items: {} ({:.0} items/s, {} per call)",
                    total.items,
                    total.items as f64 / elapsed,
                    args.batch
                );
            }
            println!("latency ms: p50 {p50:.3}  p99 {p99:.3}  p999 {p999:.3}  max {max:.3}");
            if let Some(error) = &total.first_error {
                println!("first error: {error}");
            }
        }
    }
}

/// Encrypt or decrypt with the named key "bench" (created if missing): each client sends
/// Encrypt/Decrypt (batch 1) or BatchEncrypt/BatchDecrypt calls of `--batch` items of
/// `--value-size` bytes. Decrypt clients encrypt their batch once first and decrypt it over and
/// over.
async fn kms_bench(
    ctx: &Ctx,
    args: &BenchArgs,
    token: &Zeroizing<String>,
    format: Format,
) -> CliResult<()> {
    use vault_proto::v1::kms_client::KmsClient;
    let shared = Arc::new(ctx.clone());
    if args.batch == 0 {
        return Err(CliError::new("--batch must be at least 1"));
    }
    let mut kms = KmsClient::new(ctx.connect().await?);
    if let Err(status) = kms
        .create_key(ctx.authed(
            v1::CreateKeyRequest {
                tenant: args.tenant.clone(),
                name: "bench".into(),
                ..Default::default()
            },
            token,
        )?)
        .await
        && !already_exists(&status)
    {
        return Err(ctx.status_error(status));
    }
    let budget = Budget::new(args);
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        clients.push(KmsClient::new(ctx.connect().await?));
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.clients);
    for mut client in clients {
        let token = Zeroizing::new(token.as_str().to_owned());
        let (tenant, decrypt, batch, size) = (
            args.tenant.clone(),
            args.op == "decrypt",
            args.batch,
            args.value_size,
        );
        let ctx = Arc::clone(&shared);
        tasks.push(tokio::spawn(async move {
            let mut result = ClientResult::default();
            let items = || {
                (0..batch)
                    .map(|_| v1::EncryptItem {
                        plaintext: vec![b'x'; size],
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
            };
            let encrypt_request = |token: &Zeroizing<String>| {
                ctx.authed(
                    v1::BatchEncryptRequest {
                        tenant: tenant.clone(),
                        key: "bench".into(),
                        items: items(),
                        key_version: 0,
                    },
                    token,
                )
            };
            let ciphertexts: Vec<String> = if decrypt {
                match encrypt_request(&token) {
                    Ok(request) => match client.batch_encrypt(request).await {
                        Ok(response) => response
                            .into_inner()
                            .results
                            .into_iter()
                            .map(|r| r.ciphertext)
                            .collect(),
                        Err(status) => {
                            result.errors += 1;
                            result.first_error =
                                Some(format!("{:?}: {}", status.code(), status.message()));
                            return result;
                        }
                    },
                    Err(e) => {
                        result.first_error = Some(e.message);
                        return result;
                    }
                }
            } else {
                Vec::new()
            };
            let mut budget = budget;
            while budget.another() {
                let begun = Instant::now();
                let outcome = match (decrypt, batch) {
                    (false, 1) => match ctx.authed(
                        v1::EncryptRequest {
                            tenant: tenant.clone(),
                            key: "bench".into(),
                            plaintext: vec![b'x'; size],
                            ..Default::default()
                        },
                        &token,
                    ) {
                        Ok(request) => client.encrypt(request).await.map(drop),
                        Err(e) => Err(tonic::Status::invalid_argument(e.message)),
                    },
                    (false, _) => match encrypt_request(&token) {
                        Ok(request) => client.batch_encrypt(request).await.map(drop),
                        Err(e) => Err(tonic::Status::invalid_argument(e.message)),
                    },
                    (true, 1) => match ctx.authed(
                        v1::DecryptRequest {
                            tenant: tenant.clone(),
                            key: "bench".into(),
                            ciphertext: ciphertexts.first().cloned().unwrap_or_default(),
                            ..Default::default()
                        },
                        &token,
                    ) {
                        Ok(request) => client.decrypt(request).await.map(drop),
                        Err(e) => Err(tonic::Status::invalid_argument(e.message)),
                    },
                    (true, _) => match ctx.authed(
                        v1::BatchDecryptRequest {
                            tenant: tenant.clone(),
                            key: "bench".into(),
                            items: ciphertexts
                                .iter()
                                .map(|c| v1::DecryptItem {
                                    ciphertext: c.clone(),
                                    ..Default::default()
                                })
                                .collect(),
                        },
                        &token,
                    ) {
                        Ok(request) => client.batch_decrypt(request).await.and_then(|r| {
                            match r.into_inner().results.iter().find(|r| !r.error.is_empty()) {
                                Some(failed) => Err(tonic::Status::internal(failed.error.clone())),
                                None => Ok(()),
                            }
                        }),
                        Err(e) => Err(tonic::Status::invalid_argument(e.message)),
                    },
                };
                let micros = u32::try_from(begun.elapsed().as_micros()).unwrap_or(u32::MAX);
                match outcome {
                    Ok(()) => {
                        result.latencies_micros.push(micros);
                        result.gets += 1;
                        result.items += batch as u64;
                    }
                    Err(status) => result.failed(&status),
                }
            }
            result
        }));
    }
    let mut total = total(tasks).await?;
    let elapsed = started.elapsed().as_secs_f64();
    report(args, &mut total, elapsed, format);
    Ok(())
}

/// True when the status says the object exists already (the set-up creates what is missing).
fn already_exists(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::AlreadyExists
}
