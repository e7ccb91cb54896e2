//! Several `vault-server` nodes on one real etcd cluster (Debian's `etcd-server`, started on
//! loopback ports chosen at run time): leadership, failover that loses no acknowledged write,
//! fencing of a node that lost its term, and what losing etcd members does.

use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use vault_storage::etcd_process::EtcdCluster;
use vault_tests::{TestServer, eventually, init, unseal};

/// The lease TTL the nodes run with: failover takes about this long.
const TTL_SECS: u64 = 3;

fn node(dir: &Path, id: &str, etcd: &EtcdCluster) -> TestServer {
    TestServer::start(
        &dir.join(id),
        &[
            "--storage",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoints().join(","),
            "--node-id",
            id,
            "--lease-ttl-secs",
            &TTL_SECS.to_string(),
            "--etcd-timeout-ms",
            "2000",
        ],
    )
}

fn status(server: &TestServer) -> Option<serde_json::Value> {
    let output = server.cli(None, &["status", "--format", "json"]);
    (output.code == 0).then(|| output.json())
}

fn role(server: &TestServer) -> String {
    status(server)
        .and_then(|s| s["role"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Three nodes on `etcd`, initialized through the first and unsealed one by one; returns the
/// nodes, the root token, and the index of the active node once every node agrees on it.
fn three_nodes(dir: &Path, etcd: &EtcdCluster) -> (Vec<TestServer>, String, usize) {
    let nodes: Vec<TestServer> = ["n1", "n2", "n3"]
        .iter()
        .map(|id| node(dir, id, etcd))
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
    (nodes, root, active)
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
    let server = TestServer::start(
        &dir.path().join("n1"),
        &[
            "--storage",
            "etcd",
            "--etcd-endpoints",
            &etcd.endpoints().join(","),
            "--node-id",
            "n1",
            "--lease-ttl-secs",
            &TTL_SECS.to_string(),
            "--etcd-timeout-ms",
            "2000",
        ],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    eventually("the node is active", || role(&server) == "active");
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
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
