//! Several `vault-server` nodes on one real etcd cluster (Debian's `etcd-server`, started on
//! loopback ports chosen at run time): leadership, failover that loses no acknowledged write,
//! fencing of a node that lost its term, and what losing etcd members does.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use vault_storage::etcd_process::EtcdCluster;
use vault_tests::{TestServer, eventually, files_containing, init, unseal};

/// The lease TTL the nodes run with: failover takes about this long.
const TTL_SECS: u64 = 3;

fn node(dir: &Path, id: &str, etcd: &EtcdCluster, extra: &[String]) -> TestServer {
    let endpoints = etcd.endpoints().join(",");
    let ttl = TTL_SECS.to_string();
    let mut args = vec![
        "--storage",
        "etcd",
        "--etcd-endpoints",
        &endpoints,
        "--node-id",
        id,
        "--lease-ttl-secs",
        &ttl,
        "--etcd-timeout-ms",
        "2000",
    ];
    args.extend(extra.iter().map(String::as_str));
    TestServer::start(&dir.join(id), &args)
}

fn status(server: &TestServer) -> Option<serde_json::Value> {
    let output = server.cli(None, &["status", "--format", "json"]);
    (output.code == 0 || output.code == 2).then(|| output.status_json())
}

fn role(server: &TestServer) -> String {
    status(server)
        .and_then(|s| s["role"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Three nodes on `etcd`, initialized through the first and unsealed one by one; returns the
/// nodes, the root token, and the index of the active node once every node agrees on it.
fn three_nodes(dir: &Path, etcd: &EtcdCluster) -> (Vec<TestServer>, String, usize) {
    let (nodes, root, active, _) = three_nodes_with(dir, etcd, |_| Vec::new());
    (nodes, root, active)
}

/// [`three_nodes`], each node started with the flags `extra` gives for its id; also returns the
/// unseal share.
fn three_nodes_with(
    dir: &Path,
    etcd: &EtcdCluster,
    extra: impl Fn(&str) -> Vec<String>,
) -> (Vec<TestServer>, String, usize, String) {
    let nodes: Vec<TestServer> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(dir, id, etcd, &extra(id)))
        .collect();
    let (shares, root) = init(&nodes[0], 1, 1);
    for node in &nodes {
        unseal(node, &[&shares[0]]);
    }
    let mut active = usize::MAX;
    eventually("one active node that every node names", || {
        let named: Vec<String> = nodes
            .iter()
            .filter_map(|n| status(n).and_then(|s| s["active_node"].as_str().map(str::to_owned)))
            .collect();
        let roles: Vec<String> = nodes.iter().map(role).collect();
        match roles.iter().position(|r| r == "active") {
            Some(i)
                if roles.iter().filter(|r| *r == "active").count() == 1
                    && named.len() == 3
                    && named.iter().all(|id| *id == format!("n{}", i + 1)) =>
            {
                active = i;
                true
            }
            _ => false,
        }
    });
    let share = shares[0].clone();
    (nodes, root, active, share)
}

/// Initializes and unseals a lone node, waits until it is active and creates the tenant acme;
/// returns the root token.
fn active_with_acme(server: &TestServer) -> String {
    let (shares, root) = init(server, 1, 1);
    unseal(server, &[&shares[0]]);
    eventually("the node is active", || role(server) == "active");
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    root
}

/// A put through `server` and the get that reads it back.
fn puts_and_reads_back(server: &TestServer, root: &str) {
    server
        .cli(Some(root), &["put", "--tenant", "acme", "db/a", "v=1"])
        .ok();
    let read = server
        .cli(
            Some(root),
            &["get", "--tenant", "acme", "db/a", "--format", "json"],
        )
        .json();
    assert_eq!(read["data"]["v"], "1");
}

/// Writers through every node, the active one killed with SIGKILL half-way: a standby is
/// active within the lease TTL + 5 s, and every write that was acknowledged is readable
/// afterwards from every surviving node, with its value and version.
#[test]
fn failover_under_load_loses_no_acknowledged_write() {
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut nodes, root, active) = three_nodes(dir.path(), &etcd);
    nodes[0]
        .cli(Some(&root), &["tenant", "create", "acme"])
        .ok();

    let acknowledged: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::default();
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(w, addr)| {
            let (addr, root, acknowledged, killed) = (
                addr.clone(),
                root.clone(),
                Arc::clone(&acknowledged),
                Arc::clone(&killed),
            );
            std::thread::spawn(move || {
                // Until 15 writes of this writer are acknowledged (bounded: 400 attempts);
                // attempts fail while no node is active, and are retried.
                let mut mine = 0;
                for i in 0..400 {
                    // The killed node's writer stops at the kill; the others go on.
                    if mine >= 15
                        || (w == active && killed.load(std::sync::atomic::Ordering::Acquire))
                    {
                        return;
                    }
                    let path = format!("load/w{w}/k{i}");
                    let value = format!("value={w}-{i}");
                    let output = vault_tests::run_cli(
                        &addr,
                        Some(&root),
                        &["put", "--tenant", "acme", &path, &value, "--format", "json"],
                        None,
                    );
                    if output.code == 0 {
                        let version = output.json()["version"].as_u64().expect("version");
                        acknowledged
                            .lock()
                            .unwrap()
                            .push((path, format!("{w}-{i}"), version));
                        mine += 1;
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();
    eventually("some acknowledged writes before the kill", || {
        acknowledged.lock().unwrap().len() >= 6
    });
    let victim = nodes.remove(active);
    killed.store(true, std::sync::atomic::Ordering::Release);
    let killed_at = Instant::now();
    victim.kill();
    let deadline = killed_at + Duration::from_secs(TTL_SECS + 5);
    let took_over = loop {
        if let Some(i) = nodes.iter().position(|n| role(n) == "active") {
            let first_write = nodes[i].cli(
                Some(&root),
                &["put", "--tenant", "acme", "after/failover", "v=1"],
            );
            if first_write.code == 0 {
                break killed_at.elapsed();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no standby became active and took a write within the lease TTL + 5 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for writer in writers {
        writer.join().expect("writer");
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= 30,
        "too few writes went through: {}",
        acknowledged.len()
    );
    for node in &nodes {
        for (path, value, version) in &acknowledged {
            let read = node
                .cli(
                    Some(&root),
                    &["get", "--tenant", "acme", path, "--format", "json"],
                )
                .json();
            assert_eq!(
                read["data"]["value"],
                value.as_str(),
                "{path} on {}",
                node.addr
            );
            assert_eq!(
                read["version"].as_u64(),
                Some(*version),
                "{path} on {}",
                node.addr
            );
        }
    }
    eprintln!(
        "failover: first write {} ms after the kill; {} acknowledged writes all read back",
        took_over.as_millis(),
        acknowledged.len()
    );
}

/// The active node is paused (SIGSTOP) until another node is active; a write sent to it while
/// it is paused is served after it resumes, still believing it leads: its storage write must
/// not commit under the old term (fenced), or must have been relayed to the new active node.
/// Either way nothing the old node committed itself comes after the takeover, and it rejoins as
/// a standby.
#[test]
fn a_paused_active_node_commits_nothing_after_another_takes_over() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, root, active) = three_nodes(dir.path(), &etcd);
    nodes[0]
        .cli(Some(&root), &["tenant", "create", "acme"])
        .ok();
    let old = &nodes[active];
    let others: Vec<&TestServer> = nodes.iter().filter(|n| n.addr != old.addr).collect();

    old.signal("STOP");
    // Queued in the paused process's socket: it reads it only after SIGCONT.
    let late = {
        let (addr, root) = (old.addr.clone(), root.clone());
        std::thread::spawn(move || {
            vault_tests::run_cli(
                &addr,
                Some(&root),
                &["put", "--tenant", "acme", "late/write", "v=late"],
                None,
            )
        })
    };
    eventually("another node active while the old one is paused", || {
        others.iter().any(|n| role(n) == "active")
    });
    let new_active = others.iter().find(|n| role(n) == "active").expect("active");
    new_active
        .cli(Some(&root), &["put", "--tenant", "acme", "new/term", "v=1"])
        .ok();
    old.signal("CONT");
    let late = late.join().expect("late writer");

    let read = new_active.cli(Some(&root), &["get", "--tenant", "acme", "late/write"]);
    eprintln!("old node log: {}", old.stderr().join("\n"));
    eprintln!(
        "the late write: {}",
        if late.code == 0 {
            "relayed to the new active node"
        } else {
            late.stderr.trim()
        }
    );
    if late.code == 0 {
        // Relayed: the new active node committed it, and its audit log says so.
        assert_eq!(read.code, 0, "an acknowledged write is missing");
        let relayed = vault_tests::audit_records(&new_active.audit_dir())
            .into_iter()
            .any(|r| r.to_string().contains("late/write"));
        assert!(
            relayed,
            "the new active node has no record of the relayed write"
        );
    } else {
        // Fenced: refused, and nothing of it is in the store.
        assert_ne!(read.code, 0, "a refused write was committed");
    }
    // The old node recorded no successful change of its own after it resumed.
    let own_ok = vault_tests::audit_records(&old.audit_dir())
        .into_iter()
        .filter(|r| r.to_string().contains("late/write"))
        .filter(|r| !r.to_string().contains("forwarded to the active node"))
        .any(|r| r["kind"] == "outcome" && r["code"] == "OK");
    assert!(
        !own_ok,
        "the paused node committed a write after the takeover"
    );
    eventually("the old node rejoins as a standby", || {
        role(old) == "standby"
    });
}

/// Losing one of three etcd members keeps the vault serving; losing two makes calls fail
/// (UNAVAILABLE, within the deadline, never a wrong answer); one member back and it serves
/// again.
#[test]
fn losing_etcd_members_fails_calls_cleanly_and_service_returns() {
    let mut etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = node(dir.path(), "n1", &etcd, &[]);
    let root = active_with_acme(&server);
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "db/a", "v=1"])
        .ok();

    etcd.kill(2);
    let deadline = Instant::now() + Duration::from_secs(TTL_SECS + 15);
    loop {
        let write = server.cli(Some(&root), &["put", "--tenant", "acme", "db/b", "v=2"]);
        if write.code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write with one member of three down: {}\nserver log:\n{}",
            write.stderr,
            server.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    etcd.kill(1);
    let started = Instant::now();
    let refused = server.cli(Some(&root), &["get", "--tenant", "acme", "db/a"]);
    assert_ne!(refused.code, 0, "a read answered without a quorum");
    assert!(
        refused.stderr.contains("unavailable") || refused.stderr.contains("UNAVAILABLE"),
        "{}",
        refused.stderr
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the refusal took {:?}",
        started.elapsed()
    );

    etcd.restart(1);
    eventually("service returns with a quorum again", || {
        let read = server.cli(
            Some(&root),
            &["get", "--tenant", "acme", "db/b", "--format", "json"],
        );
        read.code == 0 && read.json()["data"]["v"] == "2"
    });
}

/// A token revoked through one node is refused by every node on the first call after the
/// revocation was acknowledged; a KEK rotation through one node is what every node seals under
/// next.
#[test]
fn a_revocation_and_a_rotation_hold_on_every_node_at_once() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, root, _) = three_nodes(dir.path(), &etcd);
    nodes[0]
        .cli(Some(&root), &["tenant", "create", "acme"])
        .ok();
    let token = nodes[1]
        .cli(
            Some(&root),
            &["token", "create", "--system", "--format", "json"],
        )
        .json();
    let (secret, accessor) = (
        token["token"].as_str().expect("token").to_owned(),
        token["info"]["accessor"]
            .as_str()
            .expect("accessor")
            .to_owned(),
    );
    for node in &nodes {
        node.cli(Some(&secret), &["token", "lookup"]).ok();
    }
    nodes[2]
        .cli(Some(&root), &["token", "revoke", "--accessor", &accessor])
        .ok();
    for node in &nodes {
        let refused = node.cli(Some(&secret), &["token", "lookup"]);
        assert!(
            refused.failed().contains("permission denied"),
            "a revoked token was accepted by {}: {}",
            node.addr,
            refused.stdout
        );
    }

    let rotated = nodes[0]
        .cli(
            Some(&root),
            &["rotate", "--tenant", "acme", "--format", "json"],
        )
        .json();
    let version = rotated["key_version"].as_u64().expect("key version");
    for (i, node) in nodes.iter().enumerate() {
        let path = format!("after/rotate/{i}");
        node.cli(Some(&root), &["put", "--tenant", "acme", &path, "v=1"])
            .ok();
        for reader in &nodes {
            let read = reader
                .cli(
                    Some(&root),
                    &["get", "--tenant", "acme", &path, "--format", "json"],
                )
                .json();
            assert_eq!(
                read["key_version"].as_u64(),
                Some(version),
                "{path} written through {} and read through {}",
                node.addr,
                reader.addr
            );
        }
    }
}

/// Encrypts `text` under the tenant acme's named key `orders` through `node`.
fn encrypt(node: &TestServer, root: &str, text: &str) -> String {
    node.cli_with_stdin(
        Some(root),
        &["key", "encrypt", "--tenant", "acme", "orders"],
        Some(text.as_bytes()),
    )
    .ok()
    .trim()
    .to_owned()
}

fn decrypt(node: &TestServer, root: &str, ciphertext: &str) -> vault_tests::CliOutput {
    node.cli(
        Some(root),
        &["key", "decrypt", "--tenant", "acme", "orders", ciphertext],
    )
}

/// A standby serves reads itself: with the active node paused (so nothing could be forwarded)
/// both standbys still answer gets and decryptions at once; every write acknowledged through
/// the active node is what the next read through a standby returns; and a change to what
/// standbys cache (a named key's minimum decryption version) holds on the next read there.
#[test]
fn standbys_serve_linearizable_reads_themselves() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, root, active) = three_nodes(dir.path(), &etcd);
    let leader = &nodes[active];
    let standbys: Vec<&TestServer> = nodes.iter().filter(|n| n.addr != leader.addr).collect();
    leader.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    leader
        .cli(
            Some(&root),
            &["key", "create", "--tenant", "acme", "orders"],
        )
        .ok();
    let v1 = encrypt(leader, &root, "first");
    // Read your writes, through a standby, write after write.
    for i in 0..20 {
        let standby = standbys[i % 2];
        let value = format!("v={i}");
        leader
            .cli(
                Some(&root),
                &["put", "--tenant", "acme", "db/counter", &value],
            )
            .ok();
        let read = standby
            .cli(
                Some(&root),
                &["get", "--tenant", "acme", "db/counter", "--format", "json"],
            )
            .json();
        assert_eq!(read["data"]["v"], i.to_string(), "through {}", standby.addr);
        assert_eq!(read["version"], i + 1, "through {}", standby.addr);
        assert_eq!(decrypt(standby, &root, &v1).ok(), "first");
    }
    // What standbys cache changes on the active node: the next read on a standby obeys it.
    leader
        .cli(
            Some(&root),
            &["key", "rotate", "--tenant", "acme", "orders"],
        )
        .ok();
    let v2 = encrypt(leader, &root, "second");
    leader
        .cli(
            Some(&root),
            &[
                "key",
                "config",
                "--tenant",
                "acme",
                "orders",
                "--min-decryption-version",
                "2",
            ],
        )
        .ok();
    // Nothing can be relayed while the active node is paused: the standbys answer alone, from
    // caches the change reached.
    leader.signal("STOP");
    let started = Instant::now();
    for standby in &standbys {
        let refused = decrypt(standby, &root, &v1);
        assert!(
            refused.failed().contains("below min_decryption_version 2"),
            "a standby decrypted under a version below the minimum: {}",
            refused.stdout
        );
        assert_eq!(decrypt(standby, &root, &v2).ok(), "second");
    }
    for standby in &standbys {
        let read = standby
            .cli(
                Some(&root),
                &["get", "--tenant", "acme", "db/counter", "--format", "json"],
            )
            .json();
        assert_eq!(read["data"]["v"], "19");
        assert_eq!(decrypt(standby, &root, &v2).ok(), "second");
    }
    let took = started.elapsed();
    leader.signal("CONT");
    assert!(
        took < Duration::from_secs(TTL_SECS),
        "standby reads waited for the paused active node ({took:?})"
    );
}

/// A standby's watch that etcd compacted past (the standby was paused while the active node
/// changed what it caches, and its etcd connection broke meanwhile) is cancelled by etcd; the
/// standby drops its caches and watches again, and its next read obeys the change.
#[test]
fn a_watch_etcd_compacted_past_reloads_the_standbys_caches() {
    let mut etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, root, active) = three_nodes(dir.path(), &etcd);
    let leader = &nodes[active];
    let standby = nodes
        .iter()
        .find(|n| n.addr != leader.addr)
        .expect("standby");
    leader.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    leader
        .cli(
            Some(&root),
            &["key", "create", "--tenant", "acme", "orders"],
        )
        .ok();
    let v1 = encrypt(leader, &root, "first");
    leader
        .cli(
            Some(&root),
            &["key", "rotate", "--tenant", "acme", "orders"],
        )
        .ok();
    // The standby caches the key (both versions).
    assert_eq!(decrypt(standby, &root, &v1).ok(), "first");

    // Paused, the standby does not see its watch stream go with the member's restart, nor
    // the change after it; the watch it opens again when it resumes starts below the
    // compaction.
    standby.signal("STOP");
    etcd.restart(0);
    leader
        .cli(
            Some(&root),
            &[
                "key",
                "config",
                "--tenant",
                "acme",
                "orders",
                "--min-decryption-version",
                "2",
            ],
        )
        .ok();
    let compacted = etcd.compact();
    standby.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !standby.stderr().iter().any(|line| {
        line.contains("etcd compacted past this node's watch; its caches were reloaded")
    }) {
        assert!(
            Instant::now() < deadline,
            "the standby did not reload after the compaction; its log:\n{}",
            standby.stderr().join("\n")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Served by the standby alone (the active node is paused, nothing can be relayed).
    leader.signal("STOP");
    let refused = decrypt(standby, &root, &v1);
    leader.signal("CONT");
    assert!(
        refused.failed().contains("below min_decryption_version 2"),
        "the standby decrypted with a cache from before revision {compacted}: {}",
        refused.stderr
    );
}

/// Complete lines of one node's invocation log, counted per key ("kek <tenant> <version>").
fn logged_invocations(log: &Path, counts: &mut std::collections::HashMap<String, u64>) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    // A kill can tear the last line; only whole lines count.
    let whole = text.rfind('\n').map_or("", |end| &text[..end]);
    for line in whole.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
}

/// Key-use budgets hold across nodes and failovers: writers through all three nodes while the
/// active node is killed (SIGKILL) twice; the uses every node's invocation log records, summed
/// per KEK version, never pass the budget, and the count in etcd is never below them.
#[test]
fn key_budgets_hold_exactly_across_failovers() {
    const BUDGET: u64 = 40;
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = |id: &str| dir.path().join(format!("{id}.uses"));
    // Small budgets and blocks, and each node's log of every key use.
    let flags = |id: &str| -> Vec<String> {
        vec![
            "--key-budget".into(),
            BUDGET.to_string(),
            "--key-reserve-block".into(),
            "8".into(),
            "--key-max-live-versions".into(),
            "0".into(),
            "--source-rate-limit".into(),
            "0".into(),
            "--danger-invocation-log".into(),
            log(id).to_str().expect("utf-8").to_owned(),
        ]
    };
    let (mut nodes, root, mut active, share) = three_nodes_with(dir.path(), &etcd, flags);
    nodes[0]
        .cli(Some(&root), &["tenant", "create", "acme"])
        .ok();
    let id = nodes[0]
        .cli(Some(&root), &["tenant", "show", "acme", "--format", "json"])
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut acked = 0u64;
    for round in 0..2 {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writers: Vec<_> = nodes
            .iter()
            .enumerate()
            .map(|(w, node)| {
                let (addr, root, stop, count) = (
                    node.addr.clone(),
                    root.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&count),
                );
                std::thread::spawn(move || {
                    for i in 0..300 {
                        if stop.load(std::sync::atomic::Ordering::Acquire) {
                            return;
                        }
                        let path = format!("r{round}/w{w}/k{}", i % 10);
                        let output = vault_tests::run_cli(
                            &addr,
                            Some(&root),
                            &["put", "--tenant", "acme", &path, "v=x"],
                            None,
                        );
                        if output.code == 0 {
                            count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                        } else {
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                })
            })
            .collect();
        eventually("writes acknowledged before the kill", || {
            count.load(std::sync::atomic::Ordering::Acquire) >= 30
        });
        let victim = nodes.remove(active);
        victim.kill();
        eventually("another node active and writing", || {
            count.load(std::sync::atomic::Ordering::Acquire) >= 60
        });
        stop.store(true, std::sync::atomic::Ordering::Release);
        for writer in writers {
            writer.join().expect("writer");
        }
        acked += count.load(std::sync::atomic::Ordering::Acquire);
        active = nodes
            .iter()
            .position(|n| role(n) == "active")
            .expect("an active node");
        // The killed node comes back as a standby (with its log), for the next round.
        let id = ["n1", "n2", "n3"]
            .into_iter()
            .find(|id| !nodes.iter().any(|n| n.data_dir.ends_with(id)))
            .expect("the killed node's id");
        let back = node(dir.path(), id, &etcd, &flags(id));
        unseal(&back, &[share.as_str()]);
        nodes.push(back);
    }
    let mut truth = std::collections::HashMap::new();
    for id in ["n1", "n2", "n3"] {
        logged_invocations(&log(id), &mut truth);
    }
    let status = nodes[active]
        .cli(Some(&root), &["kek", "status", "--format", "json"])
        .json();
    let acme = &status["tenants"][0];
    let mut used = 0;
    for version in acme["versions"].as_array().expect("versions") {
        let number = version["version"].as_u64().expect("version");
        let reserved = version["reserved"].as_u64().expect("reserved");
        let true_uses = truth
            .get(&format!("kek {id} {number}"))
            .copied()
            .unwrap_or(0);
        assert!(
            true_uses <= BUDGET,
            "version {number} was used {true_uses} times across the nodes, past its budget {BUDGET}"
        );
        assert!(
            reserved >= true_uses,
            "version {number}: etcd holds {reserved} reserved uses, below the {true_uses} taken"
        );
        used += true_uses;
    }
    assert!(
        used >= acked,
        "{used} key uses logged for {acked} acknowledged writes"
    );
    assert!(
        acme["current_version"].as_u64().expect("current") >= 3,
        "the load did not rotate on budget: {status}"
    );
    eprintln!(
        "budgets: {acked} writes over two failovers, {used} key uses, none past {BUDGET} per version"
    );
}

/// etcd out of space (its space alarm raised, here by a small quota): a write is refused with
/// RESOURCE_EXHAUSTED and a message that says what to do; nothing of it is stored, what was
/// stored before still reads.
#[test]
fn etcd_out_of_space_refuses_writes_cleanly() {
    let etcd = EtcdCluster::start_with(1, &["--quota-backend-bytes", "16777216"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = node(dir.path(), "n1", &etcd, &[]);
    let root = active_with_acme(&server);
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "small", "v=kept"])
        .ok();
    let value = dir.path().join("big-value");
    std::fs::write(&value, vec![b'x'; 900 * 1024]).expect("write the value");
    let big = format!("v=@{}", value.display());
    let mut refused = None;
    for i in 0..200 {
        let path = format!("big/{i}");
        let output = server.cli(Some(&root), &["put", "--tenant", "acme", &path, &big]);
        if output.code != 0 {
            refused = Some((path, output));
            break;
        }
    }
    let (path, output) = refused.expect("200 puts of 900 KiB fit in a 16 MiB quota");
    assert!(output.stderr.contains("out of space"), "{}", output.stderr);
    let outcome = vault_tests::audit_records(&server.audit_dir())
        .into_iter()
        .rfind(|r| r["kind"] == "outcome" && r["path"] == path.as_str())
        .expect("the refused put's outcome record");
    assert_eq!(outcome["code"], "RESOURCE_EXHAUSTED", "{outcome}");
    let missing = server.cli(Some(&root), &["get", "--tenant", "acme", &path]);
    assert!(
        missing.failed().contains("not found"),
        "the refused put left {}",
        missing.stdout
    );
    let kept = server
        .cli(
            Some(&root),
            &["get", "--tenant", "acme", "small", "--format", "json"],
        )
        .json();
    assert_eq!(kept["data"]["v"], "kept");
}

/// Crypto-shredding on etcd: once a tenant's keys are destroyed, the shredding step compacts
/// etcd past the deletion and defragments every member, so the sealed KEK blobs are in no
/// member's database file afterwards. etcd's write-ahead log keeps each entry until etcd
/// retires the log segment (README, "Crypto-shredding on etcd"); the test reports what it
/// finds there.
#[test]
fn shredding_on_etcd_leaves_no_sealed_kek_in_any_members_database() {
    use vault_storage::{EtcdOptions, EtcdStorage, Space, Storage};
    let etcd = EtcdCluster::start(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let extra: Vec<String> = [
        "--tenant-shred-delay-secs",
        "0",
        "--maintenance-interval-ms",
        "20",
    ]
    .map(str::to_owned)
    .to_vec();
    let server = node(dir.path(), "n1", &etcd, &extra);
    let root = active_with_acme(&server);
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/primary", "password=pw"],
        )
        .ok();
    server
        .cli(Some(&root), &["rotate", "--tenant", "acme"])
        .ok();
    let id = server
        .cli(Some(&root), &["tenant", "show", "acme", "--format", "json"])
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let keys = EtcdStorage::connect(EtcdOptions::new(etcd.endpoints(), "vault/keys/"))
        .expect("connect to etcd");
    let prefix = format!("kek/{id}/").into_bytes();
    let sealed: Vec<String> = keys
        .scan(Space::Config, &prefix, &prefix, usize::MAX)
        .expect("scan")
        .into_iter()
        .map(|(_, value)| {
            let record: serde_json::Value = serde_json::from_slice(&value).expect("kek record");
            record["sealed"].as_str().expect("sealed").to_owned()
        })
        .collect();
    assert_eq!(sealed.len(), 2);
    // Not the write-ahead log (see above): the members' databases and snapshots.
    let databases = |i: usize| etcd.data_dir(i).join("member").join("snap");
    for blob in &sealed {
        eventually("every member's database holds the KEK", || {
            (0..3).all(|i| !files_containing(&databases(i), blob.as_bytes()).is_empty())
        });
    }

    server.cli(Some(&root), &["tenant", "delete", "acme"]).ok();
    eventually("the shred receipt", || {
        vault_tests::audit_records(&server.audit_dir())
            .iter()
            .any(|r| {
                r["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("crypto-shred receipt"))
            })
    });
    assert!(
        keys.scan(Space::Config, &prefix, &prefix, usize::MAX)
            .expect("scan")
            .is_empty()
    );
    for (version, blob) in sealed.iter().enumerate() {
        for i in 0..3 {
            assert_eq!(
                files_containing(&databases(i), blob.as_bytes()),
                Vec::<std::path::PathBuf>::new(),
                "KEK version {} of the shredded tenant is still in etcd member {i}'s database",
                version + 1
            );
        }
    }
    let in_wal: usize = (0..3)
        .map(|i| {
            sealed
                .iter()
                .filter(|blob| {
                    !files_containing(
                        &etcd.data_dir(i).join("member").join("wal"),
                        blob.as_bytes(),
                    )
                    .is_empty()
                })
                .count()
        })
        .sum();
    eprintln!(
        "shredding on etcd: no sealed KEK in any member's database; {in_wal} (member, KEK) pairs still in a write-ahead log segment"
    );
}

/// A tenant's rate limit is the cluster's, not each node's: a run of gets by the tenant's
/// token spread over all three nodes (standbys serve gets themselves) passes no more than the
/// one limit allows (its burst plus its rate over the run), where three per-node limits would
/// have let all of them through.
#[test]
fn a_tenants_rate_limit_holds_across_the_nodes() {
    const RATE: u64 = 5;
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let (nodes, root, active) = three_nodes(dir.path(), &etcd);
    let leader = &nodes[active];
    leader
        .cli(
            Some(&root),
            &[
                "tenant",
                "create",
                "acme",
                "--rate-limit",
                &RATE.to_string(),
            ],
        )
        .ok();
    let policy = dir.path().join("reader.toml");
    std::fs::write(
        &policy,
        "[[rule]]\npath = \"*\"\ncapabilities = [\"read\"]\n",
    )
    .expect("policy");
    leader
        .cli(
            Some(&root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "reader",
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    leader
        .cli(Some(&root), &["put", "--tenant", "acme", "db/a", "k=v"])
        .ok();
    let token = vault_tests::reader_token(leader, &root);
    let started = Instant::now();
    let mut passed = 0u64;
    let mut limited = 0u64;
    for i in 0..30 {
        let output = nodes[i % 3].cli(Some(&token), &["get", "--tenant", "acme", "db/a"]);
        if output.code == 0 {
            passed += 1;
        } else {
            assert!(
                output.stderr.contains("over its rate limit"),
                "{}",
                output.stderr
            );
            limited += 1;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    // The one bucket: its burst (RATE) plus what it refills over the run.
    let allowed = RATE + (RATE as f64 * elapsed).ceil() as u64;
    eprintln!(
        "rate limit across nodes: {passed} passed, {limited} limited in {elapsed:.2} s (one limit allows {allowed})"
    );
    assert!(
        passed <= allowed,
        "{passed} gets passed in {elapsed:.2} s; one limit of {RATE}/s allows {allowed}"
    );
    assert!(limited > 0, "the rate limit never applied");
}

/// etcd with authentication on: a node signs in with --etcd-user and the password from a file
/// and serves; a wrong password or no user stops the node at start with an error that says so.
#[test]
fn nodes_sign_in_to_etcd_and_a_wrong_password_stops_them_clearly() {
    let etcd = EtcdCluster::start(1);
    etcd.enable_auth("s3cret-etcd");
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoints = etcd.endpoints().join(",");
    let start = |id: &str, user: Option<(&str, &str)>| {
        let mut args = vec![
            "--storage".to_owned(),
            "etcd".to_owned(),
            "--etcd-endpoints".to_owned(),
            endpoints.clone(),
            "--node-id".to_owned(),
            id.to_owned(),
            "--etcd-timeout-ms".to_owned(),
            "2000".to_owned(),
        ];
        if let Some((name, password)) = user {
            let file = dir.path().join(format!("{id}.password"));
            std::fs::write(&file, format!("{password}\n")).expect("password file");
            args.extend([
                "--etcd-user".to_owned(),
                name.to_owned(),
                "--etcd-password-file".to_owned(),
                file.to_str().expect("utf-8").to_owned(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::try_start(&dir.path().join(id), &args)
    };
    let wrong = start("wrong", Some(("root", "not-the-password")))
        .err()
        .expect("a node with a wrong etcd password started");
    assert!(wrong.contains("authentication failed"), "{wrong}");
    assert!(
        !wrong.contains("not-the-password"),
        "the password was printed: {wrong}"
    );
    let anonymous = start("anonymous", None)
        .err()
        .expect("a node without an etcd user started against etcd with authentication");
    assert!(
        anonymous.contains("user name is empty") || anonymous.contains("permission"),
        "{anonymous}"
    );

    let server =
        start("n1", Some(("root", "s3cret-etcd"))).expect("a node with the right password");
    let root = active_with_acme(&server);
    puts_and_reads_back(&server, &root);
}

/// Two sealed nodes initialized at once (and again one after the other): exactly one init
/// succeeds, the other is refused as already initialized, and the winner's share unseals both.
#[test]
fn only_one_of_two_nodes_initialized_at_once_succeeds() {
    let etcd = EtcdCluster::start(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let nodes: Vec<TestServer> = ["n1", "n2"]
        .iter()
        .map(|id| node(dir.path(), id, &etcd, &[]))
        .collect();
    let inits: Vec<_> = nodes
        .iter()
        .map(|n| {
            let addr = n.addr.clone();
            std::thread::spawn(move || {
                vault_tests::run_cli(
                    &addr,
                    None,
                    &[
                        "init",
                        "--shares",
                        "1",
                        "--threshold",
                        "1",
                        "--format",
                        "json",
                    ],
                    None,
                )
            })
        })
        .collect();
    let outputs: Vec<_> = inits.into_iter().map(|t| t.join().expect("init")).collect();
    let won: Vec<_> = outputs.iter().filter(|o| o.code == 0).collect();
    assert_eq!(
        won.len(),
        1,
        "inits that succeeded: {:?}",
        outputs.iter().map(|o| &o.stderr).collect::<Vec<_>>()
    );
    let lost = outputs
        .iter()
        .find(|o| o.code != 0)
        .expect("the refused init");
    assert!(
        lost.stderr.contains("already initialized"),
        "{}",
        lost.stderr
    );
    // And one after the other, through the node that lost.
    let loser = &nodes[outputs.iter().position(|o| o.code != 0).expect("loser")];
    let again = loser.cli(None, &["init", "--shares", "1", "--threshold", "1"]);
    assert!(
        again.failed().contains("already initialized"),
        "{}",
        again.stderr
    );
    let share = won[0].json()["shares"][0]
        .as_str()
        .expect("share")
        .to_owned();
    for node in &nodes {
        unseal(node, &[&share]);
    }
}

/// etcd serving clients over TLS only, to certificates of its CA: a node given the CA and a
/// client certificate serves; one without the client certificate cannot reach etcd and stops
/// at start with an error.
#[test]
fn nodes_speak_tls_to_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = crate::tls::pki(dir.path());
    let etcd = EtcdCluster::start_tls(
        1,
        vault_storage::etcd_process::EtcdTlsFiles {
            ca: pki.ca.clone(),
            cert: pki.server_cert.clone(),
            key: pki.server_key.clone(),
        },
    );
    let path = |p: &std::path::Path| p.to_str().expect("utf-8").to_owned();
    let refused = TestServer::try_start(
        &dir.path().join("no-client-cert"),
        &[
            "--storage",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoints().join(","),
            "--etcd-ca-cert",
            &path(&pki.ca),
            "--etcd-timeout-ms",
            "2000",
        ],
    );
    assert!(
        refused.is_err(),
        "a node without a client certificate reached etcd"
    );
    let server = node(
        dir.path(),
        "n1",
        &etcd,
        &[
            "--etcd-ca-cert".to_owned(),
            path(&pki.ca),
            "--etcd-client-cert".to_owned(),
            path(&pki.client_cert),
            "--etcd-client-key".to_owned(),
            path(&pki.client_key),
        ],
    );
    let root = active_with_acme(&server);
    puts_and_reads_back(&server, &root);
}
