//! Real etcd members for tests (feature `testing`): a cluster of `etcd` processes (Debian's
//! `etcd-server`) on loopback ports chosen at run time, each in a temporary directory, stopped
//! and removed when the value is dropped. Waits on the members' `/health` endpoint, never for a
//! fixed time.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// One member: its process (while it runs), ports and data directory.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` (and metrics), also when clients must use TLS.
    metrics_port: u16,
    child: Option<Child>,
}

/// The PEM files of a cluster whose clients must use TLS with a certificate of `ca`.
#[derive(Clone, Debug)]
pub struct EtcdTlsFiles {
    pub ca: PathBuf,
    /// The members' certificate (for 127.0.0.1) and key.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A running etcd cluster.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial_cluster: String,
    /// Flags every member is started with besides the cluster's own.
    extra: Vec<String>,
    tls: Option<EtcdTlsFiles>,
}

/// Whether an `etcd` binary is on the PATH (tests that need one say so when it is not).
pub fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The loopback ports members are given come from below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768 and up here), so an outgoing connection or a `bind(:0)`
/// elsewhere in the test run cannot take a port between the check here and etcd's own bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port from [`PORTS`] that could be bound just now, taken in turn from a start
/// that differs per process (tests run in several processes at once).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    if NEXT.load(Ordering::Relaxed) == u32::MAX {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let start = (std::process::id().wrapping_mul(7919) ^ nanos) % span;
        let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    }
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + u16::try_from(offset).expect("offset within the span");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {PORTS:?}");
}

/// `GET /health` on a member's client port: whether it answers healthy.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(1000)));
    if stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.contains("\"health\":\"true\"")
}

/// A POST of `body` (JSON) to the gRPC gateway of the member on `port` (etcd's `/v3/...`
/// paths); the answer's body.
fn gateway(port: u16, path: &str, body: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to etcd");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send to etcd");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("etcd's answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "etcd answered {answer}");
    answer
}

impl EtcdCluster {
    /// Compacts etcd's history up to its current revision (physically: the old revisions are
    /// gone before this returns) through the first live member, as an operator's
    /// `etcdctl compact` would; returns the revision.
    pub fn compact(&self) -> i64 {
        let member = self
            .members
            .iter()
            .find(|m| m.child.is_some())
            .expect("a live member");
        let range = gateway(member.client_port, "/v3/kv/range", r#"{"key":"AA=="}"#);
        // `"header":{...,"revision":"123",...}`: the gateway writes int64 as strings.
        let revision: i64 = range
            .split("\"revision\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("no revision in {range}"));
        gateway(
            member.client_port,
            "/v3/kv/compaction",
            &format!(r#"{{"revision":"{revision}","physical":true}}"#),
        );
        revision
    }

    /// Turns etcd's authentication on with one user, `root` (etcd's administrator, which
    /// compaction and defragmentation need), whose password is `password`; every request
    /// needs a user from then on.
    pub fn enable_auth(&self, password: &str) {
        let member = self
            .members
            .iter()
            .find(|m| m.child.is_some())
            .expect("a live member");
        let port = member.client_port;
        gateway(
            port,
            "/v3/auth/user/add",
            &format!(r#"{{"name":"root","password":"{password}"}}"#),
        );
        // The role exists already on some versions; granting it is what matters.
        let _ =
            std::panic::catch_unwind(|| gateway(port, "/v3/auth/role/add", r#"{"name":"root"}"#));
        gateway(
            port,
            "/v3/auth/user/grant",
            r#"{"user":"root","role":"root"}"#,
        );
        gateway(port, "/v3/auth/enable", "{}");
    }

    /// Starts `members` members and waits until every one is healthy.
    pub fn start(members: usize) -> EtcdCluster {
        EtcdCluster::start_with(members, &[])
    }

    /// [`EtcdCluster::start`] with more flags for every member (e.g. `--quota-backend-bytes`).
    pub fn start_with(members: usize, extra: &[&str]) -> EtcdCluster {
        EtcdCluster::start_inner(members, extra, None)
    }

    /// [`EtcdCluster::start`] with clients served over TLS only, and only those with a
    /// certificate `tls.ca` signed (`--client-cert-auth`); the endpoints are `https://`.
    pub fn start_tls(members: usize, tls: EtcdTlsFiles) -> EtcdCluster {
        EtcdCluster::start_inner(members, &[], Some(tls))
    }

    fn start_inner(members: usize, extra: &[&str], tls: Option<EtcdTlsFiles>) -> EtcdCluster {
        // A port can still be taken between the check and etcd's bind (another test process
        // checking the same port); a member that exits saying so is started again, with the
        // whole cluster on new ports, since every member names every peer's.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let mut cluster = EtcdCluster::fresh(members, extra, tls.clone());
            for i in 0..cluster.members.len() {
                cluster.spawn(i);
            }
            let mut lost_port = false;
            for i in 0..cluster.members.len() {
                match cluster.try_wait_healthy(i, Duration::from_secs(30)) {
                    Ok(()) => {}
                    Err(log) if log.contains("address already in use") && attempt < ATTEMPTS => {
                        lost_port = true;
                        break;
                    }
                    Err(log) => panic!("etcd member {i} did not become healthy; its log: {log}"),
                }
            }
            if !lost_port {
                return cluster;
            }
            drop(cluster);
        }
        unreachable!("the last attempt returns or panics")
    }

    /// A cluster of `members` members on new ports, none started.
    fn fresh(members: usize, extra: &[&str], tls: Option<EtcdTlsFiles>) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        EtcdCluster {
            dir,
            members,
            initial_cluster,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            tls,
        }
    }

    fn spawn(&mut self, i: usize) {
        let data_dir = self.data_dir(i);
        let log = std::fs::File::create(self.dir.path().join(format!("m{i}.log"))).expect("log");
        let mut extra = self.extra.clone();
        let scheme = if let Some(tls) = &self.tls {
            for (flag, path) in [
                ("--trusted-ca-file", &tls.ca),
                ("--cert-file", &tls.cert),
                ("--key-file", &tls.key),
            ] {
                extra.push(flag.to_owned());
                extra.push(path.to_str().expect("utf-8 path").to_owned());
            }
            extra.push("--client-cert-auth".to_owned());
            "https"
        } else {
            "http"
        };
        let member = &mut self.members[i];
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let metrics = format!("http://127.0.0.1:{}", member.metrics_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&member.name)
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "vault-test"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--listen-metrics-urls", &metrics])
            .args(&extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd (is etcd-server installed?)");
        member.child = Some(child);
    }

    fn wait_healthy(&mut self, i: usize, within: Duration) {
        if let Err(log) = self.try_wait_healthy(i, within) {
            panic!("etcd member {i} not healthy within {within:?}; its log: {log}");
        }
    }

    /// Waits until member `i` answers healthy; its log if it exited first or `within` passed.
    fn try_wait_healthy(&mut self, i: usize, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        let port = self.members[i].metrics_port;
        let log =
            |dir: &Path| std::fs::read_to_string(dir.join(format!("m{i}.log"))).unwrap_or_default();
        while !healthy(port) {
            let exited = match self.members[i].child.as_mut() {
                Some(child) => child.try_wait().ok().flatten().is_some(),
                None => true,
            };
            if exited || Instant::now() >= deadline {
                return Err(log(self.dir.path()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// Member `i`'s data directory (its files, for checks of what they hold).
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}.etcd"))
    }

    /// The directory every member's data and log are in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills member `i` (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its data directory and waits until it is healthy.
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i, Duration::from_secs(30));
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
