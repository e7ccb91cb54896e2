//! Test support: start the real `vault-server` on `127.0.0.1:0` in a temporary directory, run
//! the real `vault-cli` against it, and talk gRPC to it directly.
//!
//! The binaries are found next to the test executable's `deps/` directory; the README's test
//! command builds them before running the tests.
//!
//! [`TestServer`] starts `vault-server` on `127.0.0.1:0` in a temporary directory and reads the
//! bound address from its first line of standard output, so no test uses a fixed port. Nothing
//! waits a fixed time: where a test must wait, it polls a condition with a short sleep until a
//! deadline, and fails at the deadline.
//!
//! How the workspace is tested, and where:
//! - Unit tests in vault-core: AEAD round trip and context binding, every bit flip and
//!   truncation, the Wycheproof AES-256-GCM vectors with 96-bit nonces through the exact
//!   primitive `seal` uses (`crypto.rs`); Shamir over every threshold subset for (2,3), (3,5)
//!   and (5,10) (`shamir.rs`); the vault on the memory backend (`vault/tests/`), including that
//!   `schema::tenant_ranges` and `GLOBAL_RECORDS` cover everything a tenant owns.
//! - The storage conformance suite on both backends (`vault-core/storage/tests/conformance.rs`).
//! - The audit log (`vault-core/src/audit/tests.rs`): tampering with a 10,000-record log (bit
//!   flips, deleted, swapped, inserted, re-chained forgery, truncated or removed segments), a
//!   torn tail at every byte offset of the last record, fail-closed and recovery, crashed
//!   intents, retention with a controllable clock, the tail check, and the syslog sink catching
//!   up and never blocking.
//! - vault-server unit tests: the RPC table against the reflection descriptor set (`rpcs.rs`),
//!   every error variant to a known reason (`status.rs`), the call layer's limits (`call.rs`).
//! - End to end (`tests/it`, one binary): the operator tour with a SIGKILL crash and restart,
//!   status codes and reasons over gRPC, every RPC of the table denied without its capability
//!   and allowed with it (`access.rs`), tenant isolation as a property against a model, dev
//!   mode, a scan of every file under the data directory for canary secrets (raw, hex, base64),
//!   the audit log through the real binaries, the key lifecycle under kill -9, named keys, the
//!   feed and webhooks, TLS, and every example in `examples/`; a short crash loop
//!   (`reliability.rs`, [`crash`]; the long one is `scripts/crash-test`).

// Test support: a panic is how a test fails.
#![allow(clippy::expect_used, clippy::unwrap_used)]

pub mod crash;

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::Duration,
};

/// How long a server may take to print its listening line before the test gives up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The path of one of the workspace's binaries.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/it-<hash>  ->  target/<profile>/<name>; a binary of this crate
    // (crash-test) is in target/<profile> itself.
    let beside = exe.parent().expect("the executable's directory");
    let dir = if beside.join(name).exists() {
        beside
    } else {
        beside.parent().expect("target profile directory")
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

pub struct TestServer {
    child: Option<Child>,
    pub addr: String,
    pub data_dir: PathBuf,
    /// Everything the server printed on stdout before and including its listening line.
    pub banner: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    /// Starts a server on `data_dir` with extra arguments, and waits for its listening line.
    pub fn start(data_dir: &Path, extra: &[&str]) -> TestServer {
        Self::try_start(data_dir, extra)
            .unwrap_or_else(|output| panic!("vault-server did not start:\n{output}"))
    }

    /// Like `start`, but returns what the server printed if it exits instead of listening.
    pub fn try_start(data_dir: &Path, extra: &[&str]) -> Result<TestServer, String> {
        Self::try_start_on("127.0.0.1:0", data_dir, extra)
    }

    /// Like `start`, with extra environment variables.
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        Self::try_start_with("127.0.0.1:0", data_dir, extra, env)
            .unwrap_or_else(|output| panic!("vault-server did not start:\n{output}"))
    }

    /// Starts a server on a given address: a restart on the port a client already knows.
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> TestServer {
        Self::try_start_on(listen, data_dir, extra)
            .unwrap_or_else(|output| panic!("vault-server did not start:\n{output}"))
    }

    fn try_start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Result<TestServer, String> {
        Self::try_start_with(listen, data_dir, extra, &[])
    }

    fn try_start_with(
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<TestServer, String> {
        let mut command = Command::new(binary("vault-server"));
        command
            .arg("--listen")
            .arg(listen)
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra);
        command
            .env("VAULT_LOG", "warn,vault::call=info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn vault-server");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let lines_rx = line_channel(stdout);
        let (stderr_lines, stderr_reader) = line_collector(stderr);
        let mut banner = Vec::new();
        loop {
            match lines_rx.recv_timeout(START_TIMEOUT) {
                Ok(line) => {
                    let addr = line
                        .strip_prefix("vault-server listening on ")
                        .map(str::to_owned);
                    banner.push(line);
                    if let Some(addr) = addr {
                        // Keep receiving in the background so the channel never fills.
                        std::thread::spawn(move || while lines_rx.recv().is_ok() {});
                        return Ok(TestServer {
                            child: Some(child),
                            addr: format!("http://{addr}"),
                            data_dir: data_dir.to_owned(),
                            banner,
                            stderr: stderr_lines,
                        });
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The process is gone, so the reader reaches the end of the pipe.
                    let _ = stderr_reader.join();
                    let stderr = stderr_lines
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .join("\n");
                    return Err(format!("stdout:\n{}\nstderr:\n{stderr}", banner.join("\n")));
                }
            }
        }
    }

    /// What the server has written to stderr (its log) so far.
    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The audit directory (the default one, inside the data directory).
    pub fn audit_dir(&self) -> PathBuf {
        self.data_dir.join("audit")
    }

    /// Sends a signal (`STOP`, `CONT`, ...) to the server process.
    pub fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("a running server");
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log as it is collected (for reading it after the process is gone).
    pub fn log_handle(&self) -> Arc<Mutex<Vec<String>>> {
        Arc::clone(&self.stderr)
    }

    /// Whether the server process has exited (by itself: a panic, an abort, a refusal).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Waits (polling) up to `within` for the server to exit by itself, e.g. at a crash
    /// point of the failure-injection tests; its exit status, or `None` (and killed) if it
    /// was still running.
    pub fn wait_exit(mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server the graceful way (SIGTERM) and waits for it to exit (a minute at most).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("a running server");
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "vault-server did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs vault-cli against this server.
    pub fn cli(&self, token: Option<&str>, args: &[&str]) -> CliOutput {
        self.cli_with_stdin(token, args, None)
    }

    pub fn cli_with_stdin(
        &self,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&[u8]>,
    ) -> CliOutput {
        run_cli(&self.addr, token, args, stdin)
    }

    /// Runs vault-cli with extra environment variables (e.g. VAULT_TENANT).
    pub fn cli_with_env(
        &self,
        token: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> CliOutput {
        run_cli_with(&self.addr, token, args, None, env)
    }

    pub fn endpoint(&self) -> String {
        self.addr.clone()
    }

    /// The base URL of Vault's HTTP API (`http://127.0.0.1:PORT`), for a server started with
    /// `--http-listen`: read from its banner line.
    pub fn http_url(&self) -> String {
        self.banner
            .iter()
            .find_map(|line| line.strip_prefix("vault-server HTTP API listening on "))
            .expect("the server was started with --http-listen")
            .to_owned()
    }

    /// The metrics endpoint's URL (the server was started with `--metrics-listen`).
    pub fn metrics_url(&self) -> String {
        self.banner
            .iter()
            .find_map(|line| line.strip_prefix("vault-server metrics on "))
            .expect("the server was started with --metrics-listen")
            .to_owned()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }
}

/// An answer of Vault's HTTP API.
#[derive(Debug)]
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request to `base` (`http://host:port`) on its own connection: raw bytes over
/// TCP, so a test can send what no client library would (bad JSON, odd methods, huge bodies).
pub fn http_call(
    base: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpAnswer {
    use std::io::Read;
    let host = base.strip_prefix("http://").expect("http:// URL");
    let mut stream = std::net::TcpStream::connect(host).expect("connect to the HTTP API");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send head");
    // A body the server refuses early may not be read whole; that is its right.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: body.to_owned(),
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Asserts success and returns stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(
            self.code, 0,
            "vault-cli failed\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        &self.stdout
    }

    /// Asserts failure and returns stderr.
    pub fn failed(&self) -> &str {
        assert_ne!(
            self.code, 0,
            "vault-cli unexpectedly succeeded\nstdout: {}",
            self.stdout
        );
        &self.stderr
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }

    /// The output of `vault-cli status`, which exits 2 while the vault is sealed.
    pub fn status_json(&self) -> serde_json::Value {
        assert!(
            self.code == 0 || self.code == 2,
            "vault-cli status failed\nstdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

pub fn run_cli(addr: &str, token: Option<&str>, args: &[&str], stdin: Option<&[u8]>) -> CliOutput {
    run_cli_with(addr, token, args, stdin, &[])
}

pub fn run_cli_with(
    addr: &str,
    token: Option<&str>,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> CliOutput {
    let mut command = Command::new(binary("vault-cli"));
    command
        .args(args)
        .env("VAULT_ADDR", addr)
        .env_remove("VAULT_TOKEN")
        .env_remove("VAULT_TENANT");
    // No ~/.vault-token of the machine's user leaks in; tests that want one set HOME.
    command.env("HOME", "/nonexistent/vault-tests-home");
    command.envs(env.iter().copied());
    if let Some(token) = token {
        command.env("VAULT_TOKEN", token);
    }
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn vault-cli");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(bytes).expect("write stdin");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("vault-cli output");
    CliOutput {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Init through the CLI; returns (shares, root token).
pub fn init(server: &TestServer, shares: u32, threshold: u32) -> (Vec<String>, String) {
    let output = server.cli(
        None,
        &[
            "init",
            "--shares",
            &shares.to_string(),
            "--threshold",
            &threshold.to_string(),
            "--format",
            "json",
        ],
    );
    let json = output.json();
    let shares = json["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| s.as_str().expect("share").to_owned())
        .collect();
    let token = json["root_token"].as_str().expect("root token").to_owned();
    (shares, token)
}

/// The `x-request-id` the server put on an answer or a status: what its audit records carry.
pub fn request_id(metadata: &tonic::metadata::MetadataMap) -> String {
    metadata
        .get("x-request-id")
        .expect("x-request-id")
        .to_str()
        .expect("ascii")
        .to_owned()
}

/// A token of tenant acme with its policy `reader` (the caller writes the policy first).
pub fn reader_token(server: &TestServer, root: &str) -> String {
    server
        .cli(
            Some(root),
            &[
                "token", "create", "--tenant", "acme", "--policy", "reader", "--format", "json",
            ],
        )
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Unseals through the CLI, one share per invocation on standard input, as operators would.
pub fn unseal(server: &TestServer, shares: &[&str]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for share in shares {
        last = server
            .cli_with_stdin(
                None,
                &["unseal", "--format", "json"],
                Some(share.as_bytes()),
            )
            .json();
    }
    last
}

/// Every record in an audit directory, in order.
pub fn audit_records(dir: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("audit dir")
        .map_while(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut records = Vec::new();
    for file in files {
        for line in std::fs::read_to_string(&file)
            .expect("read segment")
            .lines()
        {
            records.push(
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("{}: {e}: {line}", file.display())),
            );
        }
    }
    records
}

/// Polls `check` (every 20 ms) until it holds; fails the test after a minute. For conditions a
/// background task makes true, instead of sleeping for a fixed time.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A single-threaded runtime for a test's gRPC calls.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A gRPC channel to the server.
pub async fn channel(server: &TestServer) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

/// A gRPC request carrying `token` as its bearer token.
pub fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        tonic::metadata::MetadataValue::try_from(format!("Bearer {token}")).expect("ascii token"),
    );
    request
}

/// The lines of `output`, as they come, from a thread that reads to the end (so the writer
/// never blocks on a full pipe, even when nobody listens any more).
fn line_channel(output: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (sender, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    lines
}

/// The lines of `output`, collected by a thread (joined once the writer is gone).
fn line_collector(
    output: impl std::io::Read + Send + 'static,
) -> (Arc<Mutex<Vec<String>>>, std::thread::JoinHandle<()>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let collected = Arc::clone(&lines);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(output).lines().map_while(Result::ok) {
            collected
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(line);
        }
    });
    (lines, reader)
}

/// A long-running process whose standard output is read line by line, so a test can wait for
/// what it prints (vault-cli run --watch, render --watch, example programs).
pub struct Process {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Everything read so far, for failure messages.
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Spawns `command` with piped stdout and stderr.
    pub fn spawn(mut command: Command) -> Process {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        Process {
            child,
            lines: line_channel(stdout),
            seen: Vec::new(),
            stderr: line_collector(stderr).0,
        }
    }

    /// The next stdout line that satisfies `check` (earlier ones are skipped); fails the test
    /// after a minute or when the output ends.
    pub fn line(&mut self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if check(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {what}\nstdout: {:#?}\nstderr: {:#?}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// The stdout lines read so far.
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Sends a signal (by name, e.g. "TERM") with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit (a minute at most) and returns its status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the process did not exit\nstdout: {:#?}\nstderr: {:#?}",
                self.seen,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A vault-cli command against `addr` with `token`, not yet started (for Process::spawn).
pub fn cli_command(addr: &str, token: &str, args: &[&str]) -> Command {
    let mut command = Command::new(binary("vault-cli"));
    command
        .args(args)
        .env("VAULT_ADDR", addr)
        .env("VAULT_TOKEN", token)
        .env_remove("VAULT_TENANT")
        .env("HOME", "/nonexistent/vault-tests-home");
    command
}

/// A log collected from a process that has exited, joined: polled until two reads 20 ms apart
/// agree (the reader thread drains the pipe after the exit), two seconds at most.
pub fn lines_after_exit(log: &Arc<Mutex<Vec<String>>>) -> String {
    let read = || log.lock().unwrap_or_else(|p| p.into_inner()).len();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut seen = read();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = read();
        if now == seen || std::time::Instant::now() >= deadline {
            break;
        }
        seen = now;
    }
    log.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
}

/// Every file below `dir` whose bytes contain `needle`.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)
            .expect("read dir")
            .map_while(Result::ok)
        {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}
