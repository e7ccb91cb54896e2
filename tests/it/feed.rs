//! Versions, the change feed and webhooks end to end: Watch resuming after a disconnect and
//! after a crash with no gap and no repeat, the CLI's version commands, and webhooks against a
//! local receiver (signatures, a receiver down then up across a server crash, dead letters).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::Duration,
};

use tonic::{Code, transport::Channel};
use vault_proto::v1::{self, secrets_client::SecretsClient, watch_client::WatchClient};
use vault_tests::{TestServer, channel, eventually, init, runtime, unseal, with_token};

async fn put(channel: &Channel, token: &str, path: &str, value: &str) -> u64 {
    let mut request = v1::PutRequest {
        tenant: "acme".into(),
        path: path.into(),
        ..Default::default()
    };
    request.data.insert("v".into(), value.as_bytes().to_vec());
    SecretsClient::new(channel.clone())
        .put(with_token(request, token))
        .await
        .expect("put")
        .into_inner()
        .revision
}

async fn open_watch(
    channel: &Channel,
    token: &str,
    from: u64,
) -> Result<tonic::Streaming<v1::WatchEvent>, tonic::Status> {
    WatchClient::new(channel.clone())
        .watch(with_token(
            v1::WatchRequest {
                tenant: "acme".into(),
                prefix: String::new(),
                from_revision: from,
                from_now: false,
            },
            token,
        ))
        .await
        .map(tonic::Response::into_inner)
}

async fn take(stream: &mut tonic::Streaming<v1::WatchEvent>, count: usize) -> Vec<v1::WatchEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        let event = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("an event within 30 s")
            .expect("stream")
            .expect("not ended");
        events.push(event);
    }
    events
}

fn revisions(events: &[v1::WatchEvent]) -> Vec<u64> {
    events.iter().map(|e| e.revision).collect()
}

fn start(dir: &Path, extra: &[&str]) -> (TestServer, String, String) {
    let server = TestServer::start(dir, extra);
    let (shares, token) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&token), &["tenant", "create", "acme"]).ok();
    (server, shares[0].clone(), token)
}

#[test]
fn watch_resumes_after_a_disconnect_and_a_crash_with_no_gap_and_no_repeat() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (server, share, root) = start(&data, &[]);
    let rt = runtime();
    let last = rt.block_on(async {
        let channel = channel(&server).await;
        let mut stream = open_watch(&channel, &root, 0).await.expect("watch");
        // Four concurrent writers while the watch is open.
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let channel = channel.clone();
                let root = root.clone();
                tokio::spawn(async move {
                    for i in 0..10 {
                        put(&channel, &root, &format!("w{w}/s{i}"), "x").await;
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
        let first = take(&mut stream, 40).await;
        assert_eq!(revisions(&first), (1..=40).collect::<Vec<u64>>());
        assert!(
            first
                .iter()
                .all(|e| e.r#type == v1::EventType::Created as i32)
        );
        // Disconnect; changes go on meanwhile.
        drop(stream);
        for i in 0..5 {
            put(&channel, &root, &format!("while-away/{i}"), "x").await;
        }
        let mut stream = open_watch(&channel, &root, 40).await.expect("resume");
        let resumed = take(&mut stream, 5).await;
        assert_eq!(revisions(&resumed), (41..=45).collect::<Vec<u64>>());
        assert_eq!(resumed[0].path, "while-away/0");
        45
    });

    // A crash: kill -9, restart, unseal. Revisions continue where they were.
    server.kill();
    let server = TestServer::start(&data, &[]);
    unseal(&server, &[&share]);
    rt.block_on(async {
        let channel = channel(&server).await;
        let mut stream = open_watch(&channel, &root, last)
            .await
            .expect("resume after crash");
        put(&channel, &root, "after-crash/a", "x").await;
        server
            .cli(Some(&root), &["rotate", "--tenant", "acme"])
            .ok();
        put(&channel, &root, "after-crash/a", "y").await;
        let events = take(&mut stream, 3).await;
        assert_eq!(revisions(&events), [46, 47, 48]);
        let kinds: Vec<i32> = events.iter().map(|e| e.r#type).collect();
        assert_eq!(
            kinds,
            [
                v1::EventType::Created as i32,
                v1::EventType::KeyRotated as i32,
                v1::EventType::Updated as i32
            ]
        );
        assert_eq!(events[1].key_version, 2);
        // Nothing more is queued: no repeats past the cursor.
        let extra = tokio::time::timeout(Duration::from_millis(300), stream.message()).await;
        assert!(extra.is_err(), "no further event: {extra:?}");
        // Ahead of the feed is refused naming the field.
        let ahead = open_watch(&channel, &root, 999).await.expect_err("ahead");
        assert_eq!(ahead.code(), Code::InvalidArgument);
        assert!(
            ahead.message().contains("from_revision"),
            "{}",
            ahead.message()
        );
    });
}

#[test]
fn a_pruned_feed_answers_out_of_range_and_listing_reports_the_revision_to_resume_from() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _, root) = start(&dir.path().join("data"), &["--feed-retention-secs", "1"]);
    let rt = runtime();
    rt.block_on(async {
        let channel = channel(&server).await;
        put(&channel, &root, "old/a", "x").await;
        put(&channel, &root, "old/b", "x").await;
    });
    // The background round prunes events older than a second.
    eventually("the first events to be pruned", || {
        let channel_rt = runtime();
        channel_rt.block_on(async {
            let channel = channel(&server).await;
            // A fresh write keeps the feed's newest revision retained.
            put(&channel, &root, "fresh", "x").await;
            matches!(open_watch(&channel, &root, 0).await, Err(s) if s.code() == Code::OutOfRange)
        })
    });
    let refused = server
        .cli(
            Some(&root),
            &["watch", "--tenant", "acme", "--from-revision", "0"],
        )
        .failed()
        .to_owned();
    assert!(
        refused.contains("older than the retained feed"),
        "{refused}"
    );
    assert!(
        refused.contains("--from-revision"),
        "the hint says how to resume: {refused}"
    );
    let listing = server
        .cli(
            Some(&root),
            &["list", "--tenant", "acme", "--format", "json"],
        )
        .json();
    let revision = listing["revision"].as_u64().expect("revision");
    assert!(revision >= 3);
    rt.block_on(async {
        let channel = channel(&server).await;
        open_watch(&channel, &root, revision)
            .await
            .expect("watching from the listing's revision works");
    });
}

#[test]
fn versions_history_check_and_set_and_metadata_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _, root) = start(&dir.path().join("data"), &[]);
    let token = Some(root.as_str());
    let secret = ["--tenant", "acme", "app/db"];
    server
        .cli(token, &[&["put"][..], &secret, &["password=one"]].concat())
        .ok();
    // Check-and-set: 0 only creates; the wrong version is refused naming the current one.
    let refused = server.cli(
        token,
        &[&["put"][..], &secret, &["password=two", "--cas", "0"]].concat(),
    );
    assert!(
        refused.failed().contains("the current version is 1"),
        "{}",
        refused.stderr
    );
    server
        .cli(
            token,
            &[&["put"][..], &secret, &["password=two", "--cas", "1"]].concat(),
        )
        .ok();
    server
        .cli(
            token,
            &[&["patch"][..], &secret, &["user=app", "--cas", "2"]].concat(),
        )
        .ok();
    let read = server
        .cli(
            token,
            &[&["get"][..], &secret, &["--format", "json"]].concat(),
        )
        .json();
    assert_eq!(read["version"], 3);
    assert_eq!(read["data"]["password"], "two");
    assert_eq!(read["data"]["user"], "app");

    server
        .cli(
            token,
            &[&["delete"][..], &secret, &["--versions", "1,2"]].concat(),
        )
        .ok();
    let deleted = server.cli(
        token,
        &[&["get"][..], &secret, &["--version", "2"]].concat(),
    );
    assert!(
        deleted.failed().contains("deleted at"),
        "{}",
        deleted.stderr
    );
    server
        .cli(
            token,
            &[&["undelete"][..], &secret, &["--versions", "2"]].concat(),
        )
        .ok();
    server
        .cli(
            token,
            &[&["destroy"][..], &secret, &["--versions", "1"]].concat(),
        )
        .ok();
    let history = server
        .cli(
            token,
            &[&["history"][..], &secret, &["--format", "json"]].concat(),
        )
        .json();
    let versions = history["versions"].as_array().expect("versions");
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[0]["destroyed"], true);
    assert_eq!(versions[1]["deletion_time"], "");
    assert!(
        versions[2]["author"]
            .as_str()
            .is_some_and(|a| !a.is_empty())
    );

    let meta = server
        .cli(
            token,
            &[
                &["metadata"][..],
                &secret,
                &[
                    "--max-versions",
                    "2",
                    "--custom",
                    "owner=payments",
                    "--expires-at",
                    "2099-01-01T00:00:00Z",
                    "--format",
                    "json",
                ],
            ]
            .concat(),
        )
        .json();
    assert_eq!(meta["max_versions"], 2);
    assert_eq!(meta["custom"]["owner"], "payments");
    assert_eq!(meta["expires_at"], "2099-01-01T00:00:00.000000000Z");
    assert_eq!(
        meta["oldest_version"], 2,
        "lowering max versions pruned version 1"
    );
    let bad = server.cli(
        token,
        &[&["metadata"][..], &secret, &["--expires-at", "tomorrow"]].concat(),
    );
    assert!(
        bad.failed().contains("invalid expires_at"),
        "{}",
        bad.stderr
    );

    // The feed saw every change, in order (pruning a destroyed version destroys nothing more,
    // so it is no event); `watch` prints it.
    let events = server.cli(
        token,
        &[
            "watch",
            "--tenant",
            "acme",
            "--from-revision",
            "0",
            "--count",
            "6",
            "--format",
            "json",
        ],
    );
    let kinds: Vec<(String, serde_json::Value)> = events
        .ok()
        .lines()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).expect("json line");
            (
                event["type"].as_str().expect("type").to_owned(),
                event["versions"].clone(),
            )
        })
        .collect();
    let expected: Vec<(String, serde_json::Value)> = [
        ("created", serde_json::json!([1])),
        ("updated", serde_json::json!([2])),
        ("updated", serde_json::json!([3])),
        ("deleted", serde_json::json!([1, 2])),
        ("undeleted", serde_json::json!([2])),
        ("destroyed", serde_json::json!([1])),
    ]
    .into_iter()
    .map(|(kind, versions)| (kind.to_owned(), versions))
    .collect();
    assert_eq!(kinds, expected);
    server
        .cli(token, &[&["delete"][..], &secret, &["--all"]].concat())
        .ok();
    let gone = server.cli(token, &[&["metadata"][..], &secret].concat());
    assert!(gone.failed().contains("not found"), "{}", gone.stderr);
}

/// A request the receiver saw: its headers (and `:request`, the request line) and body.
type Seen = (BTreeMap<String, String>, Vec<u8>);

/// A local HTTP receiver: records each request's headers and body, answers with the status in
/// `answer` (0: close the connection without answering).
struct Receiver {
    port: u16,
    requests: Arc<Mutex<Vec<Seen>>>,
    answer: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(listener: TcpListener, answer: u16) -> Receiver {
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let answer = Arc::new(AtomicU16::new(answer));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, status, stopping) = (
            Arc::clone(&requests),
            Arc::clone(&answer),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(connection) = connection else { continue };
                if let Some(request) = read_request(&connection) {
                    seen.lock().expect("lock").push(request);
                }
                let code = status.load(Ordering::SeqCst);
                let mut connection = connection;
                if code != 0 {
                    let _ = write!(
                        connection,
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                }
            }
        });
        Receiver {
            port,
            requests,
            answer,
            stop,
        }
    }

    fn requests(&self) -> Vec<Seen> {
        self.requests.lock().expect("lock").clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_request(connection: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(connection);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut headers = BTreeMap::new();
    headers.insert(":request".to_owned(), line.trim().to_owned());
    loop {
        line.clear();
        reader.read_line(&mut line).ok()?;
        let trimmed = line.trim();
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers.get("content-length")?.parse().ok()?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((headers, body))
}

fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[test]
fn webhooks_are_signed_and_reach_a_receiver_that_was_down_across_a_server_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let flags = [
        "--webhook-allow-network",
        "127.0.0.1/32",
        "--webhook-backoff-ms",
        "50",
        "--webhook-backoff-max-secs",
        "1",
        "--webhook-max-attempts",
        "1000",
    ];
    let (server, share, root) = start(&data, &flags);
    let token = Some(root.as_str());
    // Take a free port, then let it go: the receiver is down (connections refused).
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, "a-test-signing-secret-of-32-bytes").expect("secret");
    let url = format!("http://127.0.0.1:{port}/hooks/vault");
    let created = server
        .cli(
            token,
            &[
                "webhook",
                "create",
                "--tenant",
                "acme",
                "--url",
                &url,
                "--paths",
                "db/*",
                "--secret-file",
                secret_file.to_str().expect("utf-8"),
                "--format",
                "json",
            ],
        )
        .json();
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(
        created.get("secret").is_none(),
        "a given secret is not echoed"
    );
    for i in 0..3 {
        server
            .cli(
                token,
                &[
                    "put",
                    "--tenant",
                    "acme",
                    &format!("db/s{i}"),
                    "password=hunter2",
                ],
            )
            .ok();
    }
    server
        .cli(
            token,
            &["put", "--tenant", "acme", "web/not-matched", "k=v"],
        )
        .ok();
    let status = |server: &TestServer| {
        server
            .cli(
                token,
                &[
                    "webhook", "status", "--tenant", "acme", &id, "--format", "json",
                ],
            )
            .json()
    };
    eventually("failed attempts while the receiver is down", || {
        let status = status(&server);
        status["pending_total"] == 3
            && status["pending"]
                .as_array()
                .is_some_and(|p| p.iter().all(|d| d["attempts"].as_u64() >= Some(2)))
    });
    assert!(
        status(&server)["webhook"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connect")),
        "the status says why"
    );

    // The server crashes with the deliveries pending; the receiver comes up meanwhile.
    server.kill();
    let receiver = Receiver::start(
        TcpListener::bind(("127.0.0.1", port)).expect("rebind the receiver's port"),
        204,
    );
    let server = TestServer::start(&data, &flags);
    unseal(&server, &[&share]);
    eventually("every pending delivery to arrive", || {
        status(&server)["pending_total"] == 0
    });
    let requests = receiver.requests();
    let mut delivered: Vec<u64> = Vec::new();
    for (headers, body) in &requests {
        assert_eq!(headers[":request"], "POST /hooks/vault HTTP/1.1");
        let signature = &headers["x-vault-signature"];
        vault_core::vault::verify_signature(
            b"a-test-signing-secret-of-32-bytes",
            signature,
            body,
            now_seconds(),
            300,
        )
        .expect("the signature verifies");
        let tampered = [body.as_slice(), b" "].concat();
        assert!(
            vault_core::vault::verify_signature(
                b"a-test-signing-secret-of-32-bytes",
                signature,
                &tampered,
                now_seconds(),
                300
            )
            .is_err()
        );
        let text = String::from_utf8(body.clone()).expect("utf-8");
        assert!(!text.contains("hunter2"), "no values in a delivery: {text}");
        let event: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(event["tenant"], "acme");
        assert_eq!(event["type"], "created");
        assert!(event["path"].as_str().is_some_and(|p| p.starts_with("db/")));
        assert_eq!(
            headers["x-vault-delivery"],
            format!("{id}-{}", event["revision"])
        );
        delivered.push(event["revision"].as_u64().expect("revision"));
    }
    delivered.sort_unstable();
    delivered.dedup();
    assert_eq!(delivered, [1, 2, 3], "every matching event at least once");
    let status = status(&server);
    assert_eq!(status["webhook"]["delivered"], 3);
    assert_eq!(status["dead_total"], 0);
}

#[test]
fn a_failing_receiver_ends_in_the_dead_letter_list_and_replay_delivers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _, root) = start(
        &dir.path().join("data"),
        &[
            "--webhook-allow-network",
            "127.0.0.1/32",
            "--webhook-backoff-ms",
            "10",
            "--webhook-max-attempts",
            "3",
        ],
    );
    let token = Some(root.as_str());
    let receiver = Receiver::start(TcpListener::bind("127.0.0.1:0").expect("bind"), 500);
    let url = format!("http://127.0.0.1:{}/in", receiver.port);
    // Targets outside the allowlist are refused, without saying what the host resolved to
    // (internal DNS answers stay internal).
    let unreachable = "does not resolve to an address webhooks may reach";
    for (target, why) in [
        ("http://[::1]:8080/", unreachable),
        ("http://10.1.2.3/", unreachable),
        ("http://169.254.169.254/latest", unreachable),
        ("http://198.18.0.1/", unreachable),
        ("http://192.0.0.8/", unreachable),
        ("http://[fec0::1]/", unreachable),
        ("http://[64:ff9b:1::1]/", unreachable),
        ("ftp://example.com/", "http:// or https://"),
    ] {
        let refused = server.cli(
            token,
            &["webhook", "create", "--tenant", "acme", "--url", target],
        );
        let message = refused.failed();
        assert!(
            message.contains("invalid url") && message.contains(why),
            "{message}"
        );
    }
    let created = server
        .cli(
            token,
            &[
                "webhook", "create", "--tenant", "acme", "--url", &url, "--events", "updated",
                "--format", "json",
            ],
        )
        .json();
    let id = created["id"].as_str().expect("id").to_owned();
    let secret = created["secret"]
        .as_str()
        .expect("a generated secret")
        .to_owned();
    server
        .cli(token, &["put", "--tenant", "acme", "k", "v=1"])
        .ok();
    server
        .cli(token, &["put", "--tenant", "acme", "k", "v=2"])
        .ok();
    let status = || {
        server
            .cli(
                token,
                &[
                    "webhook", "status", "--tenant", "acme", &id, "--format", "json",
                ],
            )
            .json()
    };
    eventually("the delivery to be dead-lettered", || {
        status()["dead_total"] == 1
    });
    let dead = status();
    assert_eq!(dead["dead"][0]["attempts"], 3);
    assert_eq!(dead["dead"][0]["type"], "updated");
    assert_eq!(dead["dead"][0]["last_error"], "HTTP 500");
    assert_eq!(receiver.requests().len(), 3, "three attempts, then no more");

    receiver.answer.store(200, Ordering::SeqCst);
    let replayed = server
        .cli(
            token,
            &[
                "webhook", "replay", "--tenant", "acme", &id, "--format", "json",
            ],
        )
        .json();
    assert_eq!(replayed["replayed"], 1);
    eventually("the replayed delivery", || {
        let now = status();
        now["dead_total"] == 0 && now["webhook"]["delivered"] == 1
    });
    let (headers, body) = receiver.requests().pop().expect("a request");
    vault_core::vault::verify_signature(
        secret.as_bytes(),
        &headers["x-vault-signature"],
        &body,
        now_seconds(),
        300,
    )
    .expect("the generated secret verifies");
    let listed = server
        .cli(
            token,
            &["webhook", "list", "--tenant", "acme", "--format", "json"],
        )
        .json();
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    server
        .cli(token, &["webhook", "delete", "--tenant", "acme", &id])
        .ok();
    let gone = server.cli(token, &["webhook", "status", "--tenant", "acme", &id]);
    assert!(gone.failed().contains("not found"), "{}", gone.stderr);
}
