//! Key lifecycle against the real server: crash-safe invocation counts under kill -9, retirement
//! by re-wrap under concurrent load (with the retired key material gone from every file), rekey,
//! the share check, and crypto-shredding checked on a copy of the data store.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use vault_core::{
    crypto::Header,
    storage::{RocksStorage, Space, Storage},
};
use vault_proto::v1::{self, secrets_client::SecretsClient, system_client::SystemClient};
use vault_tests::{
    TestServer, audit_records, channel, eventually, files_containing, init, unseal, with_token,
};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn put_request(tenant: &str, path: &str, value: &str) -> v1::PutRequest {
    let mut request = v1::PutRequest {
        tenant: tenant.into(),
        path: path.into(),
        ..Default::default()
    };
    request.data.insert("v".into(), value.as_bytes().to_vec());
    request
}

/// Polls `check` (every 20 ms) until it holds; fails after a minute.
fn key_status(server: &TestServer, root: &str, tenant: Option<&str>) -> serde_json::Value {
    let mut args = vec!["kek", "status", "--format", "json"];
    if let Some(tenant) = tenant {
        args.extend(["--tenant", tenant]);
    }
    server.cli(Some(root), &args).json()
}

fn tenant_id(server: &TestServer, root: &str, tenant: &str) -> String {
    server
        .cli(Some(root), &["tenant", "show", tenant, "--format", "json"])
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// The `sealed` strings of the tenant's KEK records in a (stopped) server's key store.
fn sealed_keks(data_dir: &Path, tenant_id: &str) -> HashMap<u32, String> {
    let store = RocksStorage::open_key_store(&data_dir.join("keys")).expect("open key store");
    let prefix = format!("kek/{tenant_id}/").into_bytes();
    store
        .scan(Space::Config, &prefix, &prefix, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(key, value)| {
            let version = u32::from_be_bytes(key[prefix.len()..].try_into().expect("u32"));
            let record: serde_json::Value = serde_json::from_slice(&value).expect("kek record");
            (
                version,
                record["sealed"].as_str().expect("sealed").to_owned(),
            )
        })
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from)
        .expect("read dir")
        .map_while(Result::ok)
    {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Complete lines of the invocation log, counted per key ("kek <tenant> <version>" or
/// "root <version>").
fn logged_invocations(log: &Path) -> HashMap<String, u64> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let mut counts = HashMap::new();
    // A kill can tear the last line; only whole lines count.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    for line in whole.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[test]
fn persisted_counts_never_fall_below_the_true_invocations_across_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let log = dir.path().join("invocations.log");
    let log_text = log.to_str().expect("utf-8").to_owned();
    let args = [
        "--key-budget",
        "300",
        "--key-reserve-block",
        "16",
        "--key-max-live-versions",
        "0",
        "--source-rate-limit",
        "0",
        "--danger-invocation-log",
        &log_text,
    ];
    let mut server = TestServer::start(&data, &args);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let id = tenant_id(&server, &root, "acme");
    let acked = Arc::new(AtomicU64::new(0));
    let runtime = runtime();
    for round in 0..4 {
        let endpoint = channel(&server);
        let channel = runtime.block_on(endpoint);
        let stop = Arc::new(AtomicBool::new(false));
        let round_acked = Arc::new(AtomicU64::new(0));
        let mut writers = Vec::new();
        for writer in 0..4 {
            let (channel, stop, acked, round_acked, root) = (
                channel.clone(),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&round_acked),
                root.clone(),
            );
            writers.push(runtime.spawn(async move {
                let mut client = SecretsClient::new(channel);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    let request = put_request("acme", &format!("w{writer}/s{}", i % 20), "x");
                    if client.put(with_token(request, &root)).await.is_err() {
                        break;
                    }
                    acked.fetch_add(1, Ordering::SeqCst);
                    round_acked.fetch_add(1, Ordering::SeqCst);
                    i += 1;
                }
            }));
        }
        eventually("writes to be acknowledged", || {
            round_acked.load(Ordering::SeqCst) >= 150
        });
        // Crash with writes in flight.
        server.kill();
        stop.store(true, Ordering::SeqCst);
        for writer in writers {
            runtime.block_on(writer).expect("writer");
        }

        server = TestServer::start(&data, &args);
        unseal(&server, &[&shares[0]]);
        let status = key_status(&server, &root, None);
        let logged = logged_invocations(&log);
        let acme = &status["tenants"][0];
        let mut persisted_total = 0;
        for version in acme["versions"].as_array().expect("versions") {
            let number = version["version"].as_u64().expect("version");
            // After a restart the count starts at the durable mark.
            let persisted = version["reserved"].as_u64().expect("reserved");
            assert_eq!(version["invocations"], version["reserved"]);
            let truth = logged
                .get(&format!("kek {id} {number}"))
                .copied()
                .unwrap_or(0);
            assert!(
                persisted >= truth,
                "round {round}: version {number} persisted {persisted} < true {truth}"
            );
            assert!(persisted <= 300, "a version past its budget: {version}");
            persisted_total += persisted;
        }
        assert!(
            persisted_total >= acked.load(Ordering::SeqCst),
            "round {round}: persisted {persisted_total} < acknowledged writes {}",
            acked.load(Ordering::SeqCst)
        );
        let root_key = &status["root"];
        let root_truth = logged
            .get(&format!("root {}", root_key["version"]))
            .copied()
            .unwrap_or(0);
        assert!(root_key["reserved"].as_u64().expect("root count") >= root_truth);
    }
    // The load rotated the key on budget along the way.
    let status = key_status(&server, &root, Some("acme"));
    assert!(
        status["tenants"][0]["current_version"]
            .as_u64()
            .expect("current")
            >= 3,
        "{status}"
    );
}

#[test]
fn retirement_under_load_fails_no_read_and_leaves_no_retired_key_material() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &["--key-max-live-versions", "0"]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let id = tenant_id(&server, &root, "acme");
    let runtime = runtime();
    runtime.block_on(async {
        let channel = channel(&server).await;
        let mut secrets = SecretsClient::new(channel.clone());
        let mut system = SystemClient::new(channel);
        for i in 0..120 {
            secrets
                .put(with_token(
                    put_request("acme", &format!("app/s{i}"), &format!("v{i}")),
                    &root,
                ))
                .await
                .expect("put");
            if i % 40 == 39 {
                let rotate = v1::RotateRequest {
                    tenant: "acme".into(),
                    all: false,
                };
                system
                    .rotate(with_token(rotate, &root))
                    .await
                    .expect("rotate");
            }
        }
    });
    server.kill();
    let retiring = sealed_keks(&data, &id);
    assert_eq!(retiring.len(), 4);
    for (version, sealed) in &retiring {
        assert!(
            !files_containing(&data.join("keys"), sealed.as_bytes()).is_empty(),
            "KEK version {version} is not findable before retirement: the check below would prove nothing"
        );
    }

    // Now keep one live version: versions 1 to 3 are retired under load, and 4 after the
    // rotation below.
    let server = TestServer::start(
        &data,
        &[
            "--key-max-live-versions",
            "1",
            "--rewrap-rate",
            "100000",
            "--maintenance-interval-ms",
            "20",
            "--source-rate-limit",
            "0",
        ],
    );
    unseal(&server, &[&shares[0]]);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let load = runtime.block_on(async {
        let channel = channel(&server).await;
        let mut tasks = Vec::new();
        for reader in 0..3u64 {
            let (channel, stop, failed, reads, root) = (
                channel.clone(),
                Arc::clone(&stop),
                Arc::clone(&failed),
                Arc::clone(&reads),
                root.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut client = SecretsClient::new(channel);
                let mut i = reader;
                while !stop.load(Ordering::SeqCst) {
                    i = (i * 7 + 13) % 120;
                    let request = v1::GetRequest {
                        tenant: "acme".into(),
                        path: format!("app/s{i}"),
                        version: 0,
                    };
                    match client.get(with_token(request, &root)).await {
                        Ok(response) if response.get_ref().data.contains_key("v") => {}
                        other => {
                            eprintln!("failed read: {:?}", other.err());
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        let (channel, stop, root) = (channel.clone(), Arc::clone(&stop), root.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = SecretsClient::new(channel);
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                let request = put_request("acme", &format!("app/s{}", i % 120), "w");
                client
                    .put(with_token(request, &root))
                    .await
                    .expect("write under load");
                i += 1;
            }
        }));
        tasks
    });
    let mid_rotation = server.cli(Some(&root), &["rotate", "--tenant", "acme"]);
    mid_rotation.ok();
    eventually("retirement to finish", || {
        let status = key_status(&server, &root, Some("acme"));
        let acme = &status["tenants"][0];
        acme["versions"].as_array().is_some_and(|v| v.len() == 1)
            && acme["rewrap"].is_null()
            && acme["retired"].as_array().is_some_and(|r| r.len() == 4)
    });
    stop.store(true, Ordering::SeqCst);
    for task in load {
        runtime.block_on(task).expect("load task");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "reads failed during retirement"
    );
    assert!(reads.load(Ordering::SeqCst) > 0);
    let records = audit_records(&server.audit_dir());
    assert!(records.iter().any(|r| {
        r["principal"] == "vault"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("retired KEK versions"))
    }));
    server.kill();

    // Nothing is wrapped under a retired version, and their key material is in no file.
    let current = 5;
    let data_store = RocksStorage::open(&data.join("data")).expect("data store");
    let prefix = format!("t/{id}/v/").into_bytes();
    let stored = data_store
        .scan(Space::Secrets, &prefix, &prefix, usize::MAX)
        .expect("scan");
    assert!(stored.len() >= 120);
    for (_, value) in &stored {
        let dek_len = u32::from_be_bytes(value[8..12].try_into().expect("len")) as usize;
        let header = Header::parse(&value[12..12 + dek_len]).expect("header");
        assert_eq!(header.key.version, current, "a record on a retired version");
    }
    drop(data_store);
    assert_eq!(
        sealed_keks(&data, &id).into_keys().collect::<Vec<_>>(),
        vec![current]
    );
    for (version, sealed) in &retiring {
        assert_eq!(
            files_containing(&data.join("keys"), sealed.as_bytes()),
            Vec::<PathBuf>::new(),
            "retired KEK version {version} is still in the key store's files"
        );
    }
}

fn submit(server: &TestServer, nonce: &str, share: &str) -> serde_json::Value {
    server
        .cli_with_stdin(
            None,
            &["rekey", "submit", "--nonce", nonce, "--format", "json"],
            Some(share.as_bytes()),
        )
        .json()
}

fn verify_rekey(server: &TestServer, nonce: &str, share: &str) -> serde_json::Value {
    server
        .cli_with_stdin(
            None,
            &["rekey", "verify", "--nonce", nonce, "--format", "json"],
            Some(share.as_bytes()),
        )
        .json()
}

fn shares_of(answer: &serde_json::Value) -> Vec<String> {
    answer["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| s.as_str().expect("share").to_owned())
        .collect()
}

fn verify(server: &TestServer, share: &str) -> String {
    let output = server.cli_with_stdin(
        None,
        &["share", "verify", "--format", "json"],
        Some(share.as_bytes()),
    );
    // Exits 1 for a share that is not current, with the answer on stdout all the same.
    let answer: serde_json::Value = serde_json::from_str(&output.stdout).expect("json answer");
    answer["result"].as_str().expect("result").to_owned()
}

#[test]
fn rekey_replaces_the_shares_and_an_interrupted_one_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]);
    let (old, root) = init(&server, 3, 2);
    unseal(&server, &[&old[0], &old[1]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/primary", "password=p1"],
        )
        .ok();
    assert_eq!(verify(&server, &old[2]), "current");

    let started = server
        .cli(
            Some(&root),
            &[
                "rekey",
                "init",
                "--shares",
                "4",
                "--threshold",
                "3",
                "--format",
                "json",
            ],
        )
        .json();
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    assert_eq!(
        (started["progress"].as_u64(), started["required"].as_u64()),
        (Some(0), Some(2))
    );
    let wrong = server.cli_with_stdin(
        None,
        &["rekey", "submit", "--nonce", "0000"],
        Some(old[0].as_bytes()),
    );
    assert!(wrong.failed().contains("invalid nonce"), "{}", wrong.stderr);
    let first = submit(&server, &nonce, &old[0]);
    assert_eq!(
        (first["complete"].as_bool(), first["progress"].as_u64()),
        (Some(false), Some(1))
    );
    let status = server
        .cli(None, &["rekey", "status", "--format", "json"])
        .json();
    assert_eq!(status["progress"], 1);
    let staged = submit(&server, &nonce, &old[2]);
    assert_eq!(
        (staged["complete"].as_bool(), staged["staged"].as_bool()),
        (Some(false), Some(true))
    );
    let new = shares_of(&staged);
    assert_eq!(new.len(), 4);
    // Staged, not committed: the old shares are still the ones in force.
    assert_eq!(verify(&server, &old[0]), "current");
    assert_eq!(verify(&server, &new[0]), "staged");
    let verification = staged["verification_nonce"]
        .as_str()
        .expect("verification nonce")
        .to_owned();
    for share in [&new[0], &new[3]] {
        assert_eq!(
            verify_rekey(&server, &verification, share)["complete"],
            false
        );
    }
    assert_eq!(
        verify_rekey(&server, &verification, &new[1])["complete"],
        true
    );
    for share in &old {
        assert_eq!(verify(&server, share), "not-current");
    }
    assert_eq!(verify(&server, &new[3]), "current");
    let refused = server.cli_with_stdin(None, &["share", "verify"], Some(old[0].as_bytes()));
    assert!(
        refused
            .failed()
            .contains("not part of the current share set")
    );

    // Old shares no longer unseal (refused before they count); new ones do, and the data is
    // untouched.
    server.cli(Some(&root), &["seal"]).ok();
    let refused = server.cli_with_stdin(None, &["unseal"], Some(old[0].as_bytes()));
    assert!(
        refused
            .failed()
            .contains("this share is not one of the current shares"),
        "{}",
        refused.stderr
    );
    let status = unseal(&server, &[&new[1], &new[2], &new[0]]);
    assert_eq!(status["sealed"], false);
    assert_eq!(
        server
            .cli(
                Some(&root),
                &[
                    "get",
                    "--tenant",
                    "acme",
                    "db/primary",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        "p1"
    );

    // Cancelled: the shares stay.
    let cancelled = server
        .cli(
            Some(&root),
            &[
                "rekey",
                "init",
                "--shares",
                "2",
                "--threshold",
                "2",
                "--format",
                "json",
            ],
        )
        .json();
    server.cli(Some(&root), &["rekey", "cancel"]).ok();
    let gone = server.cli_with_stdin(
        None,
        &[
            "rekey",
            "submit",
            "--nonce",
            cancelled["nonce"].as_str().expect("nonce"),
        ],
        Some(new[0].as_bytes()),
    );
    assert!(gone.failed().contains("not found"), "{}", gone.stderr);

    // Interrupted: a crash half way through a rekey leaves the current shares working.
    let again = server
        .cli(
            Some(&root),
            &[
                "rekey",
                "init",
                "--shares",
                "2",
                "--threshold",
                "2",
                "--format",
                "json",
            ],
        )
        .json();
    submit(&server, again["nonce"].as_str().expect("nonce"), &new[0]);
    server.kill();
    let server = TestServer::start(&data, &[]);
    let status = server
        .cli(None, &["rekey", "status", "--format", "json"])
        .json();
    assert_eq!(status["started"], false);
    assert_eq!(
        unseal(&server, &[&new[0], &new[1], &new[3]])["sealed"],
        false
    );
    assert_eq!(verify(&server, &new[2]), "current");
}

#[test]
fn shredding_makes_a_tenant_unreadable_even_from_an_old_copy_of_the_data_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &["--tenant-shred-delay-secs", "3600"]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    for tenant in ["acme", "globex"] {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
        server
            .cli(
                Some(&root),
                &[
                    "put",
                    "--tenant",
                    tenant,
                    "db/primary",
                    &format!("password={tenant}-pw"),
                ],
            )
            .ok();
    }
    server.cli(Some(&root), &["rotate", "--all"]).ok();
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/replica", "password=r"],
        )
        .ok();

    // Within the waiting period a deleted tenant comes back whole.
    let deleted = server
        .cli(
            Some(&root),
            &["tenant", "delete", "acme", "--format", "json"],
        )
        .json();
    assert!(
        deleted["shred_after"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert!(
        server
            .cli(Some(&root), &["tenant", "deleted"])
            .ok()
            .starts_with("acme (id ")
    );
    server.cli(Some(&root), &["tenant", "restore", "acme"]).ok();
    assert_eq!(
        server
            .cli(
                Some(&root),
                &[
                    "get",
                    "--tenant",
                    "acme",
                    "db/primary",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        "acme-pw"
    );
    let id = tenant_id(&server, &root, "acme");
    server.kill();

    let backup = dir.path().join("data-store-copy");
    copy_dir(&data.join("data"), &backup);
    let sealed = sealed_keks(&data, &id);
    assert_eq!(sealed.len(), 2);
    for blob in sealed.values() {
        assert!(!files_containing(&data.join("keys"), blob.as_bytes()).is_empty());
    }

    let server = TestServer::start(
        &data,
        &[
            "--tenant-shred-delay-secs",
            "0",
            "--maintenance-interval-ms",
            "20",
        ],
    );
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "delete", "acme"]).ok();
    let receipt = |records: &[serde_json::Value]| {
        records
            .iter()
            .find(|r| {
                r["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("crypto-shred receipt"))
            })
            .cloned()
    };
    eventually("the shred receipt", || {
        receipt(&audit_records(&server.audit_dir())).is_some()
    });
    let receipt = receipt(&audit_records(&server.audit_dir())).expect("receipt");
    let detail = receipt["detail"].as_str().expect("detail");
    assert!(detail.contains(&id), "{detail}");
    assert!(detail.contains("KEK versions 1, 2 destroyed"), "{detail}");
    assert!(
        detail.contains("a copy of the key store taken before"),
        "{detail}"
    );
    assert_eq!(receipt["principal"], "vault");
    assert_eq!(server.cli(Some(&root), &["tenant", "deleted"]).ok(), "");
    server.kill();

    assert!(sealed_keks(&data, &id).is_empty());
    for (version, blob) in &sealed {
        assert_eq!(
            files_containing(&data.join("keys"), blob.as_bytes()),
            Vec::<PathBuf>::new(),
            "KEK version {version} of the shredded tenant is still in a key store file"
        );
    }

    // The old copy of the data store still holds acme's record and ciphertext; with today's key
    // store none of it opens, and the other tenant is unaffected.
    std::fs::remove_dir_all(data.join("data")).expect("remove data store");
    copy_dir(&backup, &data.join("data"));
    let server = TestServer::start(&data, &[]);
    unseal(&server, &[&shares[0]]);
    for secret in ["db/primary", "db/replica"] {
        let refused = server.cli(Some(&root), &["get", "--tenant", "acme", secret]);
        assert!(
            refused.failed().contains("crypto-shredded"),
            "{}",
            refused.stderr
        );
    }
    assert_eq!(
        server
            .cli(
                Some(&root),
                &[
                    "get",
                    "--tenant",
                    "globex",
                    "db/primary",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        "globex-pw"
    );
}
