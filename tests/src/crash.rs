//! The crash loop (`scripts/crash-test`, and a short run in the suite): the real server on one
//! data directory, concurrent writers through gRPC (puts, patches, deletes, refused
//! check-and-set puts, tenant KEK rotations, named-key encryptions, token creations), SIGKILL
//! at a random moment, a restart and an unseal, and a check of everything against a model of
//! what the server acknowledged:
//!
//! - every acknowledged put or patch reads back with its version and value, every acknowledged
//!   delete reads as gone, and a secret is at most one version past its acknowledged one (the
//!   write in flight at the kill, which must then be exactly that write);
//! - no refused write (a check-and-set put with a stale version) is visible;
//! - every acknowledged call has an `ok` outcome record in the audit log, and `vault-cli audit
//!   verify` passes on the whole log;
//! - named-key and KEK use counts are at least the uses acknowledged, an acknowledged
//!   ciphertext still decrypts to its plaintext, an acknowledged rotation's version is there,
//!   and every acknowledged token is still known (and then revoked, so that a long run stays
//!   under the 10,000 live children a token may have).
//!
//! Writers own disjoint secrets, so each secret's history is sequential and the model exact.
//! The randomness is a seeded SplitMix64: the seed (printed) replays the same choices; the
//! kill's timing against the server's own scheduling is what varies.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::{BufRead, Seek},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use vault_proto::v1::{
    self, kms_client::KmsClient, secrets_client::SecretsClient, system_client::SystemClient,
    tokens_client::TokensClient,
};

use crate::{TestServer, init, unseal};

const TENANT: &str = "crash";
const KEY: &str = "crash-key";
/// KEK versions are never retired by count (`--key-max-live-versions 0`): a retired version
/// leaves the key status with its use count, and the check sums every version's.
const SERVER_FLAGS: &[&str] = &["--key-max-live-versions", "0"];
/// Secrets per writer.
const KEYS_PER_WRITER: u64 = 6;

/// What a run does.
#[derive(Clone, Copy, Debug)]
pub struct Config {
    pub cycles: usize,
    pub seed: u64,
    pub writers: usize,
    /// The kill comes between these many milliseconds after the writers start.
    pub kill_after_ms: (u64, u64),
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub cycles: usize,
    /// Acknowledged calls, by kind.
    pub acknowledged: BTreeMap<&'static str, u64>,
    /// Calls in flight at a kill (their outcome is either, and was checked to be one of them).
    pub in_flight: u64,
    /// Refused check-and-set puts (never visible).
    pub refused: u64,
    pub audit_records_checked: u64,
    pub violations: Vec<String>,
}

impl Report {
    pub fn acknowledged_total(&self) -> u64 {
        self.acknowledged.values().sum()
    }

    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .acknowledged
            .iter()
            .map(|(kind, count)| format!("{kind} {count}"))
            .collect();
        format!(
            "cycles {}, acknowledged calls {} ({}), in flight at a kill {}, refused writes {}, \
             outcome records matched {}, violations {}",
            self.cycles,
            self.acknowledged_total(),
            kinds.join(", "),
            self.in_flight,
            self.refused,
            self.audit_records_checked,
            self.violations.len()
        )
    }
}

/// The seeded generator of operations and timings.
pub use vault_fuzz::SplitMix as Rng;

/// One secret as the model expects it (test values, nothing secret).
#[derive(Clone, Debug, Default)]
struct Expected {
    /// The acknowledged current version (0: none yet).
    version: u64,
    /// Its acknowledged data (field -> value).
    data: BTreeMap<String, String>,
    /// Versions whose delete was acknowledged.
    deleted: HashSet<u64>,
    /// A write answered by nothing (the kill came first): what it would have made.
    in_flight: Option<Pending>,
}

#[derive(Clone, Debug)]
enum Pending {
    /// A put or patch: the data the next version would hold.
    Write(BTreeMap<String, String>),
    /// A delete of this version.
    Delete(u64),
}

/// Everything acknowledged so far, across cycles.
#[derive(Default)]
struct Model {
    secrets: HashMap<String, Expected>,
    /// Values of refused check-and-set puts: must never be read.
    refused: Vec<(String, String)>,
    /// Request ids of acknowledged calls whose outcome record is not yet seen.
    unmatched: HashSet<String>,
    encryptions: u64,
    /// A few acknowledged ciphertexts and their plaintexts.
    ciphertexts: Vec<(String, Vec<u8>)>,
    /// KEK wraps acknowledged (one per put or patch).
    wraps: u64,
    /// The highest tenant KEK version an acknowledged rotation returned.
    kek_version: u32,
    tokens: Vec<String>,
}

/// What a writer did in one cycle, merged into the model after the kill.
#[derive(Default)]
struct Journal {
    secrets: HashMap<String, Expected>,
    refused: Vec<(String, String)>,
    request_ids: Vec<String>,
    acknowledged: BTreeMap<&'static str, u64>,
    refused_count: u64,
    encryptions: u64,
    ciphertexts: Vec<(String, Vec<u8>)>,
    wraps: u64,
    kek_version: u32,
    tokens: Vec<String>,
    violations: Vec<String>,
}

fn authorized<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.set_timeout(Duration::from_secs(10));
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token"),
    );
    request
}

fn request_id(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    metadata
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

fn bytes_map(data: &BTreeMap<String, String>) -> HashMap<String, Vec<u8>> {
    data.iter()
        .map(|(k, v)| (k.clone(), v.as_bytes().to_vec()))
        .collect()
}

fn string_map(data: &HashMap<String, Vec<u8>>) -> BTreeMap<String, String> {
    data.iter()
        .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

/// One writer's cycle: calls until `stop`, each acknowledged one noted in the journal. A call
/// that fails without the server's own answer (the kill) leaves its write in flight.
async fn write(
    endpoint: String,
    token: String,
    writer: usize,
    mut rng: Rng,
    mut secrets: HashMap<String, Expected>,
    stop: Arc<AtomicBool>,
    cycle: usize,
) -> Journal {
    let mut journal = Journal::default();
    let Ok(channel) = Channel::from_shared(endpoint)
        .expect("endpoint")
        .connect()
        .await
    else {
        journal.secrets = secrets;
        return journal;
    };
    let mut kv = SecretsClient::new(channel.clone());
    let mut kms = KmsClient::new(channel.clone());
    let mut system = SystemClient::new(channel.clone());
    let mut tokens = TokensClient::new(channel);
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        n += 1;
        let path = format!("w{writer}/s{}", rng.below(KEYS_PER_WRITER));
        let unique = format!("c{cycle}-w{writer}-n{n}");
        let secret = secrets.entry(path.clone()).or_default();
        let roll = rng.below(100);
        // A call without the server's answer: a transport failure (the kill), or a timeout.
        // Every answer of the server's own carries a reason.
        let lost = |status: &tonic::Status| status.metadata().get("x-vault-reason").is_none();
        match roll {
            0..=44 => {
                let mut data = BTreeMap::new();
                data.insert("v".to_owned(), unique.clone());
                let message = v1::PutRequest {
                    tenant: TENANT.into(),
                    path: path.clone(),
                    data: bytes_map(&data),
                    cas: Some(secret.version),
                };
                secret.in_flight = Some(Pending::Write(data.clone()));
                match kv.put(authorized(message, &token)).await {
                    Ok(answer) => {
                        let id = request_id(answer.metadata());
                        let version = answer.into_inner().version;
                        if version != secret.version + 1 {
                            journal.violations.push(format!(
                                "put {path}: acknowledged version {version} after {}",
                                secret.version
                            ));
                        }
                        secret.version = version;
                        secret.data = data;
                        secret.in_flight = None;
                        journal.wraps += 1;
                        acknowledge(&mut journal, "put", id);
                    }
                    Err(status) if lost(&status) => break,
                    Err(status) => {
                        secret.in_flight = None;
                        journal
                            .violations
                            .push(format!("put {path} refused: {status:?}"));
                    }
                }
            }
            45..=54 => {
                // A stale check-and-set: refused, and never visible.
                let mut data = BTreeMap::new();
                data.insert("v".to_owned(), format!("refused-{unique}"));
                let message = v1::PutRequest {
                    tenant: TENANT.into(),
                    path: path.clone(),
                    data: bytes_map(&data),
                    cas: Some(secret.version + 7),
                };
                match kv.put(authorized(message, &token)).await {
                    Ok(_) => journal.violations.push(format!(
                        "put {path} with a stale check-and-set was acknowledged"
                    )),
                    Err(status) if lost(&status) => {
                        journal.refused.push((path, format!("refused-{unique}")));
                        break;
                    }
                    Err(status) => {
                        if status.code() != Code::FailedPrecondition {
                            journal.violations.push(format!(
                                "a stale check-and-set put on {path} answered {status:?}"
                            ));
                        }
                        journal.refused_count += 1;
                        journal.refused.push((path, format!("refused-{unique}")));
                    }
                }
            }
            55..=64 if secret.version > 0 && !secret.deleted.contains(&secret.version) => {
                let mut data = secret.data.clone();
                data.insert("p".to_owned(), unique.clone());
                let message = v1::PatchRequest {
                    tenant: TENANT.into(),
                    path: path.clone(),
                    data: [("p".to_owned(), unique.as_bytes().to_vec())].into(),
                    remove: Vec::new(),
                    cas: Some(secret.version),
                };
                secret.in_flight = Some(Pending::Write(data.clone()));
                match kv.patch(authorized(message, &token)).await {
                    Ok(answer) => {
                        let id = request_id(answer.metadata());
                        let version = answer.into_inner().version;
                        if version != secret.version + 1 {
                            journal.violations.push(format!(
                                "patch {path}: acknowledged version {version} after {}",
                                secret.version
                            ));
                        }
                        secret.version = version;
                        secret.data = data;
                        secret.in_flight = None;
                        journal.wraps += 1;
                        acknowledge(&mut journal, "patch", id);
                    }
                    Err(status) if lost(&status) => break,
                    Err(status) => {
                        secret.in_flight = None;
                        journal
                            .violations
                            .push(format!("patch {path} refused: {status:?}"));
                    }
                }
            }
            65..=69 if secret.version > 0 && !secret.deleted.contains(&secret.version) => {
                let version = secret.version;
                let message = v1::DeleteRequest {
                    tenant: TENANT.into(),
                    path: path.clone(),
                    versions: vec![version],
                };
                secret.in_flight = Some(Pending::Delete(version));
                match kv.delete(authorized(message, &token)).await {
                    Ok(answer) => {
                        secret.deleted.insert(version);
                        secret.in_flight = None;
                        acknowledge(&mut journal, "delete", request_id(answer.metadata()));
                    }
                    Err(status) if lost(&status) => break,
                    Err(status) => {
                        secret.in_flight = None;
                        journal
                            .violations
                            .push(format!("delete {path} v{version} refused: {status:?}"));
                    }
                }
            }
            70..=86 => {
                let plaintext = unique.clone().into_bytes();
                let message = v1::EncryptRequest {
                    tenant: TENANT.into(),
                    key: KEY.into(),
                    plaintext: plaintext.clone(),
                    ..Default::default()
                };
                match kms.encrypt(authorized(message, &token)).await {
                    Ok(answer) => {
                        let id = request_id(answer.metadata());
                        journal.encryptions += 1;
                        if journal.ciphertexts.len() < 4 {
                            journal
                                .ciphertexts
                                .push((answer.into_inner().ciphertext, plaintext));
                        }
                        acknowledge(&mut journal, "encrypt", id);
                    }
                    Err(status) if lost(&status) => break,
                    Err(status) => journal
                        .violations
                        .push(format!("encrypt refused: {status:?}")),
                }
            }
            87..=89 if writer == 0 => {
                let message = v1::RotateRequest {
                    tenant: TENANT.into(),
                    all: false,
                };
                match system.rotate(authorized(message, &token)).await {
                    Ok(answer) => {
                        let id = request_id(answer.metadata());
                        journal.kek_version =
                            journal.kek_version.max(answer.into_inner().key_version);
                        acknowledge(&mut journal, "rotate", id);
                    }
                    Err(status) if lost(&status) => break,
                    Err(status) => journal
                        .violations
                        .push(format!("rotation refused: {status:?}")),
                }
            }
            90..=99 => {
                let message = v1::CreateTokenRequest {
                    tenant: String::new(),
                    system: true,
                    display_name: unique.clone(),
                    ttl_seconds: 3600,
                    ..Default::default()
                };
                match tokens.create_token(authorized(message, &token)).await {
                    Ok(answer) => {
                        let id = request_id(answer.metadata());
                        if let Some(info) = answer.into_inner().info {
                            journal.tokens.push(info.accessor);
                        }
                        acknowledge(&mut journal, "token", id);
                    }
                    Err(status) if lost(&status) => break,
                    Err(status) => journal
                        .violations
                        .push(format!("token creation refused: {status:?}")),
                }
            }
            _ => {}
        }
    }
    journal.secrets = secrets;
    journal
}

fn acknowledge(journal: &mut Journal, kind: &'static str, id: Option<String>) {
    *journal.acknowledged.entry(kind).or_default() += 1;
    match id {
        Some(id) => journal.request_ids.push(id),
        None => journal
            .violations
            .push(format!("an acknowledged {kind} without x-request-id")),
    }
}

/// Reads audit segments from where the last read stopped; the request ids of `ok` outcome
/// records.
#[derive(Default)]
struct AuditTail {
    offsets: HashMap<PathBuf, u64>,
}

impl AuditTail {
    fn outcomes(&mut self, dir: &Path) -> Vec<String> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("audit dir")
            .map_while(Result::ok)
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
            .collect();
        files.sort();
        let mut ids = Vec::new();
        for file in files {
            let offset = self.offsets.get(&file).copied().unwrap_or(0);
            let mut reader = std::io::BufReader::new(std::fs::File::open(&file).expect("segment"));
            reader.seek(std::io::SeekFrom::Start(offset)).expect("seek");
            let mut read = offset;
            let mut line = String::new();
            loop {
                line.clear();
                let n = reader.read_line(&mut line).expect("read segment");
                // Only whole lines: a torn tail is the server's to cut at its next start.
                if n == 0 || !line.ends_with('\n') {
                    break;
                }
                read += n as u64;
                let Ok(record) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if record["kind"] == "outcome"
                    && record["outcome"] == "ok"
                    && let Some(id) = record["request_id"].as_str()
                {
                    ids.push(id.to_owned());
                }
            }
            self.offsets.insert(file, read);
        }
        ids
    }
}

/// Runs the loop in `dir` (which it fills); the report says what it found.
pub fn run(config: Config, dir: &Path, log: &mut dyn FnMut(&str)) -> Report {
    let data_dir = dir.join("data");
    let public_key = dir.join("audit.pub");
    let mut rng = Rng::new(config.seed);
    let mut report = Report::default();
    let mut model = Model::default();
    let mut tail = AuditTail::default();

    let server = TestServer::start(&data_dir, SERVER_FLAGS);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", TENANT]).ok();
    // `audit verify` needs a signed checkpoint to authenticate anything: the first is signed
    // within --audit-checkpoint-ms of the unseal.
    crate::eventually("a first signed checkpoint", || {
        crate::audit_records(&server.audit_dir())
            .iter()
            .any(|record| record["kind"] == "checkpoint")
    });
    server
        .cli(
            Some(&root),
            &[
                "audit",
                "public-key",
                "--out",
                public_key.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let mut server = Some(server);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let channel = Channel::from_shared(server.as_ref().expect("running").endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        KmsClient::new(channel)
            .create_key(authorized(
                v1::CreateKeyRequest {
                    tenant: TENANT.into(),
                    name: KEY.into(),
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect("create the named key");
    });

    for cycle in 1..=config.cycles {
        let running = server.take().expect("a running server");
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..config.writers)
            .map(|w| {
                let mine: HashMap<String, Expected> = model
                    .secrets
                    .iter()
                    .filter(|(path, _)| path.starts_with(&format!("w{w}/")))
                    .map(|(path, secret)| (path.clone(), secret.clone()))
                    .collect();
                runtime.spawn(write(
                    running.endpoint(),
                    root.clone(),
                    w,
                    Rng::new(rng.next_u64()),
                    mine,
                    Arc::clone(&stop),
                    cycle,
                ))
            })
            .collect();
        let (low, high) = config.kill_after_ms;
        std::thread::sleep(Duration::from_millis(low + rng.below(high - low + 1)));
        // The kill must be what stops the server: one that died by itself (a panic, an
        // abort) would look the same to the writers.
        let mut running = running;
        if running.exited() {
            report.violations.push(format!(
                "cycle {cycle}: the server exited by itself before the kill: {}",
                running.stderr().join("\n")
            ));
        }
        let server_log = running.stderr();
        running.kill();
        stop.store(true, Ordering::Release);
        if let Some(line) = server_log.iter().find(|line| line.contains("panicked")) {
            report
                .violations
                .push(format!("cycle {cycle}: the server panicked: {line}"));
        }
        let journals: Vec<Journal> = handles
            .into_iter()
            .map(|handle| runtime.block_on(handle).expect("writer"))
            .collect();
        for journal in journals {
            for (kind, count) in journal.acknowledged {
                *report.acknowledged.entry(kind).or_default() += count;
            }
            report.refused += journal.refused_count;
            report.violations.extend(
                journal
                    .violations
                    .into_iter()
                    .map(|v| format!("cycle {cycle}: {v}")),
            );
            model.secrets.extend(journal.secrets);
            model.refused.extend(journal.refused);
            model.unmatched.extend(journal.request_ids);
            model.encryptions += journal.encryptions;
            model.ciphertexts.extend(journal.ciphertexts);
            model.wraps += journal.wraps;
            model.kek_version = model.kek_version.max(journal.kek_version);
            model.tokens.extend(journal.tokens);
        }

        let restarted = TestServer::start(&data_dir, SERVER_FLAGS);
        unseal(&restarted, &[&shares[0]]);
        let before = report.violations.len();
        check(&runtime, &restarted, &root, &mut model, &mut report, cycle);
        let audit = restarted.audit_dir();
        for id in tail.outcomes(&audit) {
            if model.unmatched.remove(&id) {
                report.audit_records_checked += 1;
            }
        }
        for id in model.unmatched.drain() {
            report.violations.push(format!(
                "cycle {cycle}: acknowledged call {id} has no ok outcome record"
            ));
        }
        let verify = restarted.cli(
            None,
            &[
                "audit",
                "verify",
                "--dir",
                audit.to_str().expect("utf-8"),
                "--public-key",
                public_key.to_str().expect("utf-8"),
            ],
        );
        if verify.code != 0 {
            report.violations.push(format!(
                "cycle {cycle}: audit verify failed: {}{}",
                verify.stdout, verify.stderr
            ));
        }
        report.cycles = cycle;
        log(&format!(
            "cycle {cycle}: {} acknowledged so far, {} violations{}",
            report.acknowledged_total(),
            report.violations.len(),
            if report.violations.len() > before {
                format!(" (new: {})", report.violations[before..].join("; "))
            } else {
                String::new()
            }
        ));
        server = Some(restarted);
    }
    if let Some(server) = server {
        server.kill();
    }
    report
}

/// After a restart: the stores against the model (see the module documentation). A write in
/// flight at the kill is resolved to what the server holds, if that is one of its two outcomes.
fn check(
    runtime: &tokio::runtime::Runtime,
    server: &TestServer,
    token: &str,
    model: &mut Model,
    report: &mut Report,
    cycle: usize,
) {
    let endpoint = server.endpoint();
    runtime.block_on(async {
        let channel = Channel::from_shared(endpoint)
            .expect("endpoint")
            .connect()
            .await
            .expect("connect after restart");
        let mut kv = SecretsClient::new(channel.clone());
        let mut kms = KmsClient::new(channel.clone());
        let mut keys = vault_proto::v1::keys_client::KeysClient::new(channel.clone());
        let mut tokens = TokensClient::new(channel);
        let mut violation = |text: String| report.violations.push(format!("cycle {cycle}: {text}"));
        let mut paths: Vec<String> = model.secrets.keys().cloned().collect();
        paths.sort();
        for path in paths {
            let secret = model.secrets.get_mut(&path).expect("known");
            let get = |version: u64| v1::GetRequest {
                tenant: TENANT.into(),
                path: path.clone(),
                version,
            };
            let current = match kv.read_metadata(authorized(
                v1::ReadMetadataRequest {
                    tenant: TENANT.into(),
                    path: path.clone(),
                },
                token,
            ))
            .await
            {
                Ok(answer) => answer.into_inner().current_version,
                Err(status) if status.code() == Code::NotFound => 0,
                Err(status) => {
                    violation(format!("metadata of {path}: {status:?}"));
                    continue;
                }
            };
            let pending = secret.in_flight.take();
            if current == secret.version + 1 {
                // Only the write in flight may have made it, and then with its own data.
                let Some(Pending::Write(data)) = &pending else {
                    violation(format!(
                        "{path} is at version {current}, past the acknowledged {} with no write in flight",
                        secret.version
                    ));
                    continue;
                };
                match kv.get(authorized(get(current), token)).await {
                    Ok(answer) if string_map(&answer.get_ref().data) == *data => {
                        report.in_flight += 1;
                        secret.version = current;
                        secret.data = data.clone();
                    }
                    other => {
                        violation(format!(
                            "{path} v{current} (the write in flight) reads {:?}",
                            other.map(|a| string_map(&a.into_inner().data))
                        ));
                        continue;
                    }
                }
            } else if current != secret.version {
                violation(format!(
                    "{path} is at version {current}, the acknowledged one is {}",
                    secret.version
                ));
                continue;
            } else if pending.is_some() {
                report.in_flight += 1;
            }
            if let Some(Pending::Delete(version)) = pending {
                // Either outcome; learn which (a delete makes the version read as NOT_FOUND).
                match kv.get(authorized(get(version), token)).await {
                    Ok(_) => {}
                    Err(status) if status.code() == Code::NotFound => {
                        secret.deleted.insert(version);
                    }
                    Err(status) => violation(format!(
                        "{path} v{version} (a delete in flight) reads {status:?}"
                    )),
                }
            }
            if secret.version == 0 {
                continue;
            }
            // Every acknowledged delete, old ones too, still reads as NOT_FOUND (deleted, or
            // pruned past max_versions since).
            let mut deleted: Vec<u64> = secret.deleted.iter().copied().collect();
            deleted.sort_unstable();
            for version in deleted {
                match kv.get(authorized(get(version), token)).await {
                    Err(status) if status.code() == Code::NotFound => {}
                    other => violation(format!(
                        "{path} v{version}: its delete was acknowledged, yet it reads {:?}",
                        other.map(|a| a.into_inner().version)
                    )),
                }
            }
            if secret.deleted.contains(&secret.version) {
                continue;
            }
            let answer = kv.get(authorized(get(secret.version), token)).await;
            {
                match answer {
                    Ok(answer) => {
                        let data = string_map(&answer.get_ref().data);
                        if data != secret.data {
                            violation(format!(
                                "{path} v{} reads {data:?}, acknowledged {:?}",
                                secret.version, secret.data
                            ));
                        }
                    }
                    Err(status) => violation(format!(
                        "{path} v{} (acknowledged) does not read: {status:?}",
                        secret.version
                    )),
                }
            }
        }
        // Refused values: nowhere in the current data of their secret.
        for (path, value) in &model.refused {
            if let Ok(answer) = kv
                .get(authorized(
                    v1::GetRequest {
                        tenant: TENANT.into(),
                        path: path.clone(),
                        version: 0,
                    },
                    token,
                ))
                .await
                && string_map(&answer.get_ref().data)
                    .values()
                    .any(|v| v == value)
            {
                violation(format!("{path}: the refused write {value} is visible"));
            }
        }
        model.refused.clear();
        // Named key: uses counted at least as acknowledged, ciphertexts still open.
        match kms
            .read_key(authorized(
                v1::ReadKeyRequest {
                    tenant: TENANT.into(),
                    name: KEY.into(),
                },
                token,
            ))
            .await
        {
            Ok(answer) => {
                let counted: u64 = answer
                    .into_inner()
                    .key
                    .map(|key| key.versions.iter().map(|v| v.invocations).sum())
                    .unwrap_or(0);
                if counted < model.encryptions {
                    violation(format!(
                        "the named key counts {counted} encryptions, {} were acknowledged",
                        model.encryptions
                    ));
                }
            }
            Err(status) => violation(format!("read key: {status:?}")),
        }
        for (ciphertext, plaintext) in std::mem::take(&mut model.ciphertexts) {
            match kms
                .decrypt(authorized(
                    v1::DecryptRequest {
                        tenant: TENANT.into(),
                        key: KEY.into(),
                        ciphertext,
                        ..Default::default()
                    },
                    token,
                ))
                .await
            {
                Ok(answer) if answer.get_ref().plaintext == plaintext => {}
                other => violation(format!(
                    "an acknowledged ciphertext does not decrypt to its plaintext: {:?}",
                    other.err()
                )),
            }
        }
        // Tenant KEK: the acknowledged rotation's version, and uses at least the wraps.
        match keys
            .key_status(authorized(
                v1::KeyStatusRequest {
                    tenant: TENANT.into(),
                    ..Default::default()
                },
                token,
            ))
            .await
        {
            Ok(answer) => {
                let status = answer.into_inner();
                let tenant = status.tenants.iter().find(|t| t.tenant == TENANT);
                let current = tenant.map_or(0, |t| t.current_version);
                let used: u64 = tenant
                    .map(|t| t.versions.iter().map(|v| v.invocations).sum())
                    .unwrap_or(0);
                if current < model.kek_version {
                    violation(format!(
                        "the tenant KEK is at version {current}, a rotation to {} was acknowledged",
                        model.kek_version
                    ));
                }
                // No version is retired (SERVER_FLAGS), so every use is in this sum.
                if used < model.wraps {
                    violation(format!(
                        "the tenant KEKs count {used} uses, {} DEK wraps were acknowledged",
                        model.wraps
                    ));
                }
            }
            Err(status) => violation(format!("key status: {status:?}")),
        }
        for accessor in std::mem::take(&mut model.tokens) {
            if let Err(status) = tokens
                .lookup_token(authorized(
                    v1::LookupTokenRequest {
                        accessor: accessor.clone(),
                        token: String::new(),
                    },
                    token,
                ))
                .await
            {
                violation(format!("acknowledged token {accessor} is unknown: {status:?}"));
                continue;
            }
            // Then revoked: a token may have at most 10,000 live children, and a long run
            // creates more than that.
            if let Err(status) = tokens
                .revoke_token(authorized(
                    v1::RevokeTokenRequest {
                        accessor: accessor.clone(),
                        ..Default::default()
                    },
                    token,
                ))
                .await
            {
                violation(format!("revoking token {accessor}: {status:?}"));
            }
        }
    });
}
