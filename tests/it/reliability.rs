//! The short crash loop (the long one: `scripts/crash-test 200`): writers through gRPC, SIGKILL
//! at a random moment, a restart, and every acknowledged call checked against the model.

use vault_tests::crash::{Config, run};

#[test]
fn a_short_crash_loop_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos().into())
        .unwrap_or(1);
    eprintln!("crash loop seed {seed} (replay: scripts/crash-test 4 {seed})");
    let config = Config {
        cycles: 4,
        seed,
        writers: 3,
        kill_after_ms: (300, 900),
    };
    let report = run(config, dir.path(), &mut |line| eprintln!("{line}"));
    eprintln!("{}", report.summary());
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert!(
        report.acknowledged_total() >= 20,
        "too little went through to check anything: {}",
        report.summary()
    );
}

/// A tmpfs of `megabytes` mounted at `at` (the tests run as root, as CI does), unmounted when
/// dropped.
struct SmallDisk {
    at: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(at: &std::path::Path, megabytes: u32) -> SmallDisk {
        std::fs::create_dir_all(at).expect("mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a {megabytes} MiB tmpfs failed: the disk-full test needs root (CI runs as root)"
        );
        SmallDisk { at: at.to_owned() }
    }

    /// Fills what is left with one file; returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.at.join("filler");
        let mut file = std::fs::File::create(&path).expect("filler");
        let chunk = vec![0x5a_u8; 1 << 16];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.at)
            .status();
    }
}

/// The data directory (stores and audit log) on a small filesystem that fills up: calls fail
/// with UNAVAILABLE or RESOURCE_EXHAUSTED (never an answer without its outcome record, nothing
/// acknowledged lost, nothing refused visible without its intent record); once space returns,
/// the same process serves writes again, and a restart finds everything acknowledged.
#[test]
fn a_full_disk_fails_calls_cleanly_and_loses_nothing_acknowledged() {
    full_disk(false);
}

/// [`a_full_disk_fails_calls_cleanly_and_loses_nothing_acknowledged`] with the audit log on
/// another disk: the stores' own out-of-space path.
#[test]
fn a_full_data_disk_with_the_audit_log_elsewhere_fails_writes_cleanly() {
    full_disk(true);
}

/// The body of the two disk-full tests.
fn full_disk(audit_elsewhere: bool) {
    use tonic::Code;
    use vault_proto::{reason, v1::secrets_client::SecretsClient};
    use vault_tests::{TestServer, channel, init, runtime, unseal, with_token};

    let dir = tempfile::tempdir().expect("tempdir");
    // Room for both databases' preallocated write-ahead logs (about 45 MiB together).
    let disk = SmallDisk::mount(&dir.path().join("small"), 128);
    // The audit log on the same small disk, or elsewhere: then the stores fill up alone.
    let audit = dir.path().join("audit");
    let flags: Vec<&str> = if audit_elsewhere {
        vec!["--audit-dir", audit.to_str().expect("utf-8")]
    } else {
        Vec::new()
    };
    let server = TestServer::start(&disk.at.join("data"), &flags);
    let audit_dir = if audit_elsewhere {
        audit.clone()
    } else {
        server.audit_dir()
    };
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let put = |path: &str, value: Vec<u8>| vault_proto::v1::PutRequest {
        tenant: "acme".into(),
        path: path.into(),
        data: [("v".to_owned(), value)].into(),
        cas: None,
    };
    let value = |i: usize| {
        let mut bytes = format!("value-{i}-").into_bytes();
        // With the log elsewhere the stores must fill alone, past their preallocated WAL
        // (about 35 MiB): larger values.
        bytes.resize(if audit_elsewhere { 256 } else { 64 } * 1024, b'x');
        bytes
    };
    let rt = runtime();
    let acknowledged = rt.block_on(async {
        let mut kv = SecretsClient::new(channel(&server).await);
        let mut acknowledged: Vec<(String, u64, Vec<u8>, String)> = Vec::new();
        let mut refused = Vec::new();
        let mut reads: Vec<String> = Vec::new();
        let call = |path: String, i: usize| {
            let request = with_token(put(&path, value(i)), &root);
            (path, i, request)
        };
        for i in 0..5 {
            let (path, i, request) = call(format!("before/{i}"), i);
            let answer = kv.put(request).await.expect("put before the disk fills");
            let id = vault_tests::request_id(answer.metadata());
            acknowledged.push((path, answer.into_inner().version, value(i), id));
        }
        let filler = disk.fill();
        // Space the stores and the log had already taken (preallocated WAL and segments) can
        // let a few more through; within 400 writes the refusals must come.
        for i in 100..500 {
            let (path, i, request) = call(format!("full/{i}"), i);
            match kv.put(request).await {
                Ok(answer) => {
                    let id = vault_tests::request_id(answer.metadata());
                    acknowledged.push((path, answer.into_inner().version, value(i), id));
                }
                Err(status) => {
                    let why = status
                        .metadata()
                        .get(reason::METADATA_KEY)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    assert!(
                        matches!(status.code(), Code::Unavailable | Code::ResourceExhausted)
                            && [
                                reason::STORAGE_FULL,
                                reason::STORAGE_UNAVAILABLE,
                                reason::AUDIT_UNAVAILABLE
                            ]
                            .contains(&why.as_str()),
                        "a write on a full disk answered {status:?} ({why})"
                    );
                    refused.push((path, why));
                }
            }
            // A read on the full disk: answered only with its outcome record durable.
            let get = with_token(
                vault_proto::v1::GetRequest {
                    tenant: "acme".into(),
                    path: "before/0".into(),
                    version: 0,
                },
                &root,
            );
            match kv.get(get).await {
                Ok(answer) => {
                    let id = vault_tests::request_id(answer.metadata());
                    reads.push(id);
                }
                Err(status) => assert_eq!(
                    status.code(),
                    Code::Unavailable,
                    "a read on a full disk answered {status:?}"
                ),
            }
            if refused.len() >= 10 {
                break;
            }
        }
        assert!(
            refused.len() >= 10,
            "a full disk refused only {} of the writes; {} went through",
            refused.len(),
            acknowledged.len()
        );
        std::fs::remove_file(&filler).expect("free the space");
        // The same process serves writes again once space returns: RocksDB's space manager
        // polls the free space (every 5 s) and resumes the stopped database by itself, and the
        // audit writer opens a new segment at its next batch.
        let freed = std::time::Instant::now();
        let mut failures_after_freeing = 0;
        loop {
            let (path, i, request) = call("after/freeing".to_owned(), 1000);
            match kv.put(request).await {
                Ok(answer) => {
                    let id = vault_tests::request_id(answer.metadata());
                    acknowledged.push((path, answer.into_inner().version, value(i), id));
                    break;
                }
                Err(status) => {
                    assert!(
                        matches!(status.code(), Code::Unavailable | Code::ResourceExhausted),
                        "a write after freeing the space answered {status:?}"
                    );
                    failures_after_freeing += 1;
                    assert!(
                        freed.elapsed() < std::time::Duration::from_secs(60),
                        "writes did not come back within 60 s of freeing the space: {status:?}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
        eprintln!(
            "full disk: writes came back {:?} after the space was freed ({failures_after_freeing} refused meanwhile)",
            freed.elapsed()
        );
        // Everything acknowledged reads back, and has its outcome record.
        for (path, version, bytes, _) in &acknowledged {
            let read = kv
                .get(with_token(
                    vault_proto::v1::GetRequest {
                        tenant: "acme".into(),
                        path: path.clone(),
                        version: *version,
                    },
                    &root,
                ))
                .await
                .unwrap_or_else(|status| panic!("acknowledged {path} v{version}: {status:?}"));
            assert_eq!(read.get_ref().data.get("v"), Some(bytes), "{path}");
        }
        // No refused write is visible.
        for (path, _) in &refused {
            let read = kv
                .get(with_token(
                    vault_proto::v1::GetRequest {
                        tenant: "acme".into(),
                        path: path.clone(),
                        version: 0,
                    },
                    &root,
                ))
                .await;
            // A write refused for its outcome record after it committed is in its intent
            // record's reconciliation; one refused before it committed is not there at all.
            if let Ok(found) = read {
                let records = vault_tests::audit_records(&audit_dir.clone());
                assert!(
                    records
                        .iter()
                        .any(|r| r["kind"] == "intent" && r["path"] == path.as_str()),
                    "{path} was refused, yet reads {:?} with no intent record",
                    found.get_ref().version
                );
            }
        }
        let records = vault_tests::audit_records(&audit_dir.clone());
        for (path, _, _, id) in &acknowledged {
            assert!(
                records.iter().any(|r| r["kind"] == "outcome"
                    && r["outcome"] == "ok"
                    && r["request_id"] == id.as_str()),
                "acknowledged {path} ({id}) has no ok outcome record"
            );
        }
        for id in &reads {
            assert!(
                records.iter().any(|r| r["kind"] == "outcome"
                    && r["outcome"] == "ok"
                    && r["request_id"] == id.as_str()),
                "a read answered on the full disk ({id}) has no ok outcome record"
            );
        }
        eprintln!(
            "full disk: {} reads answered, {} writes acknowledged, {} refused ({:?})",
            reads.len(),
            acknowledged.len(),
            refused.len(),
            refused
                .iter()
                .map(|(_, why)| why.as_str())
                .collect::<std::collections::BTreeSet<_>>()
        );
        if audit_elsewhere {
            assert!(
                refused
                    .iter()
                    .any(|(_, why)| why.as_str() != reason::AUDIT_UNAVAILABLE),
                "with the audit log elsewhere, the stores' own refusal was never met: {refused:?}"
            );
        }
        acknowledged
    });
    // After a restart on the same (no longer full) disk, writes are served again and nothing
    // acknowledged before is lost.
    server.kill();
    let restarted = TestServer::start(&disk.at.join("data"), &flags);
    unseal(&restarted, &[&shares[0]]);
    restarted
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "after/restart", "v=1"],
        )
        .ok();
    for (path, version, bytes, _) in &acknowledged {
        let read = restarted
            .cli(
                Some(&root),
                &[
                    "get",
                    "--tenant",
                    "acme",
                    path,
                    "--version",
                    &version.to_string(),
                    "--field",
                    "v",
                ],
            )
            .ok()
            .to_owned();
        assert_eq!(
            read.as_bytes(),
            bytes.as_slice(),
            "{path} after the restart"
        );
    }
    restarted.kill();
    drop(disk);
}

// ---- Crash points (`vault_core::crash_point`, feature `failpoints`) ----
//
// Each test arms one crash point with FAILPOINTS=NAME=return (the server aborts there, as a
// kill -9 at that step would), makes the call that reaches it, restarts without it and checks
// the outcome RELIABILITY.md documents for that step.

use std::{path::Path, time::Duration};

use vault_tests::{CliOutput, TestServer, audit_records, init, unseal};

/// A vault on `dir/data`, initialized with one share, tenant acme and `db/a` (v=1); stopped.
fn prepared(dir: &Path) -> (std::path::PathBuf, String, String) {
    let data = dir.join("data");
    let server = TestServer::start(&data, &[]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "db/a", "v=1"])
        .ok();
    server.kill();
    (data, shares[0].clone(), root)
}

/// Starts the server with `point` armed, unseals it, runs `act` (whose call reaches the point)
/// and waits for the abort.
fn crash_at(data: &Path, share: &str, point: &str, act: impl FnOnce(&TestServer)) {
    let armed = format!("{point}=return");
    let server = TestServer::start_with_env(data, &[], &[("FAILPOINTS", &armed)]);
    require_crash_points(&server);
    unseal(&server, &[share]);
    act(&server);
    let status = server.wait_exit(Duration::from_secs(60));
    assert!(
        aborted(status),
        "the server did not abort at {point}: {status:?}"
    );
}

/// Fails clearly when target/debug/vault-server was last built without the crash points (a
/// `-p vault-server` build, e.g. `scripts/dev-server`): `cargo build --workspace --bins`.
fn require_crash_points(server: &TestServer) {
    vault_tests::eventually(
        "the server's warning that it has crash points (rebuild with `cargo build --workspace --bins`)",
        || {
            server
                .stderr()
                .iter()
                .any(|line| line.contains("failure-injection tests' crash points"))
        },
    );
}

/// Whether the server died of SIGABRT (a crash point), not of anything else.
fn aborted(status: Option<std::process::ExitStatus>) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.and_then(|s| s.signal()) == Some(6)
}

/// Asserts that a call whose committed effect starts the background job armed to crash was
/// answered, or lost its answer to that crash. The job runs on the maintenance tick, which can
/// come between the commit and the answer's delivery; only a committed call starts the job, so
/// a lost answer is a crash after the commit, and the checks after the restart hold either way.
fn answered_or_lost_to_the_crash(call: &CliOutput, point: &str) {
    assert!(
        call.code == 0 || call.stderr.contains("transport error"),
        "{point}: the call failed for a reason other than the crash: {}",
        call.stderr
    );
}

/// The restarted, unsealed server.
fn restarted(data: &Path, share: &str) -> TestServer {
    let server = TestServer::start(data, &[]);
    unseal(&server, &[share]);
    server
}

fn read_a(server: &TestServer, root: &str) -> serde_json::Value {
    server
        .cli(
            Some(root),
            &["get", "--tenant", "acme", "db/a", "--format", "json"],
        )
        .json()
}

/// The request ids of `method`'s intent records, and whether each has a `crashed` outcome.
fn intents(audit: &Path, method: &str) -> Vec<(String, bool)> {
    let records = audit_records(audit);
    records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["method"] == method)
        .map(|intent| {
            let id = intent["request_id"].as_str().unwrap_or_default().to_owned();
            let crashed = records.iter().any(|r| {
                r["kind"] == "outcome"
                    && r["request_id"] == id.as_str()
                    && r["outcome"] == "crashed"
            });
            (id, crashed)
        })
        .collect()
}

fn put_crashes_at(point: &str) -> (TestServer, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, share, root) = prepared(dir.path());
    crash_at(&data, &share, point, |server| {
        let lost = server.cli(Some(&root), &["put", "--tenant", "acme", "db/a", "v=2"]);
        assert_ne!(lost.code, 0, "a put that crashed the server was answered");
    });
    let server = restarted(&data, &share);
    // The put's intent was durable before the crash; the restart gave it its outcome.
    let puts = intents(&server.audit_dir(), "/vault.v1.Secrets/Put");
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(
        puts[1].1,
        "the crashed put's intent has no crashed outcome: {puts:?}"
    );
    (server, root, dir)
}

#[test]
fn a_crash_before_the_put_commits_leaves_the_old_version_and_a_crashed_intent() {
    let (server, root, _dir) = put_crashes_at("put-before-commit");
    let read = read_a(&server, &root);
    assert_eq!(
        (read["version"].as_u64(), read["data"]["v"].as_str()),
        (Some(1), Some("1"))
    );
    // The next put is version 2: nothing of the crashed one is left over.
    let next = server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/a", "v=3", "--format", "json"],
        )
        .json();
    assert_eq!(next["version"], 2);
    server.kill();
}

#[test]
fn a_crash_after_the_put_commits_keeps_the_new_version_and_a_crashed_intent() {
    let (server, root, _dir) = put_crashes_at("put-after-commit");
    let read = read_a(&server, &root);
    assert_eq!(
        (read["version"].as_u64(), read["data"]["v"].as_str()),
        (Some(2), Some("2"))
    );
    server.kill();
}

#[test]
fn a_crash_before_the_outcome_record_keeps_the_write_and_records_it_crashed() {
    let (server, root, _dir) = put_crashes_at("put-before-outcome");
    let read = read_a(&server, &root);
    assert_eq!(
        (read["version"].as_u64(), read["data"]["v"].as_str()),
        (Some(2), Some("2"))
    );
    server.kill();
}

fn kek_version(server: &TestServer, root: &str) -> u64 {
    let status = server
        .cli(
            Some(root),
            &["kek", "status", "--tenant", "acme", "--format", "json"],
        )
        .json();
    let tenant = status["tenants"]
        .as_array()
        .and_then(|tenants| tenants.first())
        .cloned()
        .unwrap_or(status);
    tenant["current_version"].as_u64().expect("current_version")
}

#[test]
fn a_crash_around_the_kek_write_of_a_rotation_leaves_one_consistent_key_set() {
    for (point, expected) in [
        ("kek-rotate-before-write", 1),
        ("kek-rotate-after-write", 2),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, share, root) = prepared(dir.path());
        crash_at(&data, &share, point, |server| {
            let lost = server.cli(Some(&root), &["rotate", "--tenant", "acme"]);
            assert_ne!(
                lost.code, 0,
                "{point}: a rotation that crashed was answered"
            );
        });
        let server = restarted(&data, &share);
        assert_eq!(kek_version(&server, &root), expected, "{point}");
        // Old data opens, new data is sealed under the current version.
        assert_eq!(read_a(&server, &root)["data"]["v"], "1", "{point}");
        let put = server
            .cli(
                Some(&root),
                &[
                    "put", "--tenant", "acme", "db/b", "v=new", "--format", "json",
                ],
            )
            .json();
        assert_eq!(put["version"], 1, "{point}");
        let read = server
            .cli(
                Some(&root),
                &["get", "--tenant", "acme", "db/b", "--format", "json"],
            )
            .json();
        assert_eq!(read["key_version"].as_u64(), Some(expected), "{point}");
        server.kill();
    }
}

#[test]
fn a_crash_in_the_middle_of_a_retirement_resumes_it_and_loses_no_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (data, share, root) = prepared(dir.path());
    {
        let server = restarted(&data, &share);
        for i in 0..300 {
            server
                .cli(
                    Some(&root),
                    &[
                        "put",
                        "--tenant",
                        "acme",
                        &format!("many/s{i}"),
                        &format!("v={i}"),
                    ],
                )
                .ok();
        }
        server
            .cli(Some(&root), &["rotate", "--tenant", "acme"])
            .ok();
        server.kill();
    }
    // The re-wrap job's first chunk is written, then the process dies.
    crash_at(&data, &share, "rewrap-after-chunk", |server| {
        let retired = server.cli(
            Some(&root),
            &["kek", "retire", "--tenant", "acme", "--version", "1"],
        );
        answered_or_lost_to_the_crash(&retired, "rewrap-after-chunk");
    });
    let server = restarted(&data, &share);
    vault_tests::eventually("the retirement to finish after the restart", || {
        let status = server
            .cli(
                Some(&root),
                &["kek", "status", "--tenant", "acme", "--format", "json"],
            )
            .json();
        let tenant = status["tenants"]
            .as_array()
            .and_then(|tenants| tenants.first())
            .cloned()
            .unwrap_or(status);
        tenant["retired"]
            .as_array()
            .is_some_and(|retired| retired.iter().any(|r| r["version"] == 1))
    });
    for i in 0..300 {
        let read = server
            .cli(
                Some(&root),
                &[
                    "get",
                    "--tenant",
                    "acme",
                    &format!("many/s{i}"),
                    "--format",
                    "json",
                ],
            )
            .json();
        assert_eq!(read["data"]["v"], i.to_string());
        assert_eq!(read["key_version"], 2);
    }
    assert_eq!(read_a(&server, &root)["data"]["v"], "1");
    server.kill();
}

#[test]
fn a_crash_around_the_rekey_commit_leaves_exactly_one_share_set_in_force() {
    for point in ["rekey-before-commit", "rekey-after-commit"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, share, root) = prepared(dir.path());
        let mut new_share = String::new();
        crash_at(&data, &share, point, |server| {
            let started = server
                .cli(
                    Some(&root),
                    &[
                        "rekey",
                        "init",
                        "--shares",
                        "1",
                        "--threshold",
                        "1",
                        "--format",
                        "json",
                    ],
                )
                .json();
            let nonce = started["nonce"].as_str().expect("nonce").to_owned();
            let staged = server
                .cli_with_stdin(
                    None,
                    &["rekey", "submit", "--nonce", &nonce, "--format", "json"],
                    Some(share.as_bytes()),
                )
                .json();
            new_share = staged["shares"][0]
                .as_str()
                .expect("a new share")
                .to_owned();
            let verification = staged["verification_nonce"]
                .as_str()
                .expect("verification nonce")
                .to_owned();
            let lost = server.cli_with_stdin(
                None,
                &[
                    "rekey",
                    "verify",
                    "--nonce",
                    &verification,
                    "--format",
                    "json",
                ],
                Some(new_share.as_bytes()),
            );
            assert_ne!(lost.code, 0, "{point}: a rekey that crashed was answered");
        });
        let (works, refused) = if point == "rekey-before-commit" {
            (&share, &new_share)
        } else {
            (&new_share, &share)
        };
        let server = TestServer::start(&data, &[]);
        let wrong = server.cli_with_stdin(None, &["unseal"], Some(refused.as_bytes()));
        assert_ne!(wrong.code, 0, "{point}: the share not in force unsealed");
        let status = unseal(&server, &[works]);
        assert_eq!(status["sealed"], false, "{point}");
        assert_eq!(read_a(&server, &root)["data"]["v"], "1", "{point}");
        server.kill();
    }
}

#[test]
fn a_crash_around_the_key_destruction_of_a_shredding_finishes_it_after_the_restart() {
    for point in ["shred-before-key-destroy", "shred-after-key-destroy"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, share, root) = prepared(dir.path());
        let flags = [
            "--tenant-shred-delay-secs",
            "0",
            "--maintenance-interval-ms",
            "20",
        ];
        let armed = format!("{point}=return");
        let server = TestServer::start_with_env(&data, &flags, &[("FAILPOINTS", &armed)]);
        require_crash_points(&server);
        unseal(&server, &[&share]);
        server.cli(Some(&root), &["tenant", "create", "other"]).ok();
        server
            .cli(Some(&root), &["put", "--tenant", "other", "db/b", "v=kept"])
            .ok();
        // The shredding runs in the background, right after the deletion.
        let deleted = server.cli(Some(&root), &["tenant", "delete", "acme"]);
        answered_or_lost_to_the_crash(&deleted, point);
        let status = server.wait_exit(Duration::from_secs(60));
        assert!(
            aborted(status),
            "the server did not abort at {point}: {status:?}"
        );
        let server = TestServer::start(&data, &flags);
        unseal(&server, &[&share]);
        let receipt = |server: &TestServer| {
            audit_records(&server.audit_dir()).into_iter().any(|r| {
                r["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("crypto-shred receipt"))
            })
        };
        vault_tests::eventually("the shredding to finish after the restart", || {
            receipt(&server)
        });
        assert_eq!(
            server.cli(Some(&root), &["tenant", "deleted"]).ok(),
            "",
            "{point}"
        );
        let tenants = server.cli(Some(&root), &["tenant", "list"]).ok().to_owned();
        assert!(
            !tenants.lines().any(|t| t.trim() == "acme"),
            "{point}: the deleted tenant is live: {tenants}"
        );
        let restored = server.cli(Some(&root), &["tenant", "restore", "acme"]);
        assert_ne!(restored.code, 0, "{point}: a shredded tenant was restored");
        assert_eq!(
            server
                .cli(
                    Some(&root),
                    &["get", "--tenant", "other", "db/b", "--field", "v"]
                )
                .ok(),
            "kept",
            "{point}"
        );
        server.kill();
    }
}

/// I/O errors (this kernel has no device-mapper `error` target; the seams are the data store's
/// writes and the audit writer's, armed by FAILPOINTS for paths under `faulty/`): the first
/// writes fail with UNAVAILABLE and the reason of the failing part, none is answered without
/// its record or half-written, and the same process serves writes again once the errors stop.
#[test]
fn io_errors_fail_calls_cleanly_and_the_server_recovers_without_a_restart() {
    for point in ["storage-write-error", "audit-write-error"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, share, root) = prepared(dir.path());
        let armed = format!("{point}=3*return");
        let server = TestServer::start_with_env(&data, &[], &[("FAILPOINTS", &armed)]);
        require_crash_points(&server);
        unseal(&server, &[&share]);
        let mut failed = Vec::new();
        let mut acknowledged = Vec::new();
        for i in 0..8 {
            let path = format!("faulty/s{i}");
            let put = server.cli(
                Some(&root),
                &[
                    "put",
                    "--tenant",
                    "acme",
                    &path,
                    &format!("v={i}"),
                    "--format",
                    "json",
                ],
            );
            if put.code == 0 {
                acknowledged.push((path, i));
            } else {
                assert!(
                    put.stderr.contains("unavailable"),
                    "{point}: a put under the fault failed with {}",
                    put.stderr
                );
                failed.push(path);
            }
        }
        // Three faults: three failed storage writes, or fewer calls when a failed call's
        // outcome record meets a fault too. The failures come first; then the same process
        // recovers.
        let expected: Vec<String> = (0..failed.len()).map(|i| format!("faulty/s{i}")).collect();
        assert!(
            (1..=3).contains(&failed.len()) && failed == expected,
            "{point}: {failed:?}"
        );
        for (path, i) in &acknowledged {
            let read = server
                .cli(
                    Some(&root),
                    &["get", "--tenant", "acme", path, "--field", "v"],
                )
                .ok()
                .to_owned();
            assert_eq!(read, i.to_string(), "{point}: {path}");
        }
        let records = audit_records(&server.audit_dir());
        for path in &failed {
            // Not committed: a storage error fails the batch, an audit error the intent before
            // it. Either way nothing reads, and the refusal has its outcome record.
            let read = server.cli(Some(&root), &["get", "--tenant", "acme", path]);
            assert_ne!(read.code, 0, "{point}: the failed write {path} reads");
            if point == "storage-write-error" {
                assert!(
                    records.iter().any(|r| r["kind"] == "outcome"
                        && r["path"] == path.as_str()
                        && r["code"] == "UNAVAILABLE"),
                    "{point}: the failed put of {path} has no UNAVAILABLE outcome record"
                );
            }
        }
        server.kill();
    }
}

#[test]
fn a_crash_around_the_commit_of_a_tenant_restore_leaves_it_deleted_or_restored_whole() {
    for (point, restored) in [
        ("restore-before-commit", false),
        ("restore-after-commit", true),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (data, share, root) = prepared(dir.path());
        {
            let server = restarted(&data, &share);
            server.cli(Some(&root), &["tenant", "delete", "acme"]).ok();
            server.kill();
        }
        crash_at(&data, &share, point, |server| {
            let lost = server.cli(Some(&root), &["tenant", "restore", "acme"]);
            assert_ne!(lost.code, 0, "{point}: a restore that crashed was answered");
        });
        let server = restarted(&data, &share);
        let deleted = server
            .cli(Some(&root), &["tenant", "deleted"])
            .ok()
            .to_owned();
        assert_eq!(
            !deleted.contains("acme"),
            restored,
            "{point}: deleted tenants after the restart: {deleted}"
        );
        if !restored {
            // Still deleted, and still restorable.
            server.cli(Some(&root), &["tenant", "restore", "acme"]).ok();
        }
        assert_eq!(read_a(&server, &root)["data"]["v"], "1", "{point}");
        server.kill();
    }
}
