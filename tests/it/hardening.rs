//! The guarantees of the security review (issue 16), each against the real server: a child
//! token cannot bring its own second factor; rekey is two-phase and a crash leaves exactly one
//! working share set; shares and the root token can be handed out encrypted to their holders;
//! garbage shares cannot hold the vault sealed; stalled streams from one source do not stall
//! another; one tenant's tarpit webhook receiver does not delay another tenant's deliveries;
//! watches are bounded per token; a graceful stop signs a final audit checkpoint.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use crate::logins::{Authenticator, with_mfa};
use tonic::Code;
use vault_proto::v1::{
    self, mfa_client::MfaClient, secrets_client::SecretsClient, system_client::SystemClient,
    tokens_client::TokensClient, watch_client::WatchClient,
};
use vault_tests::{
    TestServer, audit_records, channel, eventually, init, run_cli, runtime, unseal, with_token,
};

/// The `detail` of every outcome record of `method`.
fn details(dir: &Path, method: &str) -> Vec<String> {
    audit_records(dir)
        .into_iter()
        .filter(|r| r["method"] == method && r["kind"] == "outcome")
        .map(|r| r["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_child_token_cannot_bring_its_own_second_factor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let policy = dir.path().join("writer.toml");
    std::fs::write(
        &policy,
        "require_mfa = [\"write\"]\n[[rule]]\npath = \"*\"\ncapabilities = [\"read\", \"write\"]\n",
    )
    .expect("policy");
    server
        .cli(
            Some(&root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "writer",
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    // The stolen token: created by root for an application, so it acts for root's entity.
    let stolen = server
        .cli(
            Some(&root),
            &[
                "token", "create", "--tenant", "acme", "--policy", "writer", "--format", "json",
            ],
        )
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    runtime().block_on(async {
        let channel = channel(&server).await;
        let mut tokens = TokensClient::new(channel.clone());
        let mut mfa = MfaClient::new(channel.clone());
        let mut secrets = SecretsClient::new(channel.clone());
        let create = |system: bool| v1::CreateTokenRequest {
            tenant: if system { String::new() } else { "acme".into() },
            policies: if system {
                Vec::new()
            } else {
                vec!["writer".into()]
            },
            system,
            ..Default::default()
        };
        // The attack: mint a child, enrol a second factor of the thief's, write with it.
        let child = tokens
            .create_token(with_token(create(false), &stolen))
            .await
            .expect("a child (root has no second factor yet)")
            .into_inner();
        let info = child.info.expect("info");
        assert_eq!(
            info.entity, "root",
            "the child acts for its creator's entity"
        );
        let enrol = mfa
            .enroll_totp(with_token(v1::EnrollTotpRequest::default(), &child.token))
            .await
            .expect_err("a derived token enrols nothing");
        assert_eq!(enrol.code(), Code::PermissionDenied);
        let put = || v1::PutRequest {
            tenant: "acme".into(),
            path: "db/primary".into(),
            data: [("password".to_owned(), b"stolen".to_vec())].into(),
            ..Default::default()
        };
        let denied = secrets
            .put(with_mfa(put(), &child.token, "123456"))
            .await
            .expect_err("no second factor to pass");
        assert_eq!(denied.code(), Code::PermissionDenied);

        // Root enrols (a root token may enrol itself once); from then on minting a child with
        // an MFA-protected policy, or a system token, needs root's code.
        let enrolled = mfa
            .enroll_totp(with_token(v1::EnrollTotpRequest::default(), &root))
            .await
            .expect("root enrols")
            .into_inner();
        for (request, token) in [(create(false), &stolen), (create(true), &root)] {
            let refused = tokens
                .create_token(with_token(request, token))
                .await
                .expect_err("no code");
            assert_eq!(refused.code(), Code::PermissionDenied);
        }
        let system = tokens
            .create_token(with_mfa(
                create(true),
                &root,
                &Authenticator::from_enrollment(&enrolled.secret).code(0),
            ))
            .await
            .expect("with root's code")
            .into_inner();
        assert_eq!(system.info.expect("info").entity, "root");
        let enrol = mfa
            .enroll_totp(with_token(v1::EnrollTotpRequest::default(), &system.token))
            .await
            .expect_err("the system token enrols nothing either");
        assert_eq!(enrol.code(), Code::PermissionDenied);
    });
    // Every refusal names the failed check in its audit record.
    let audit = server.audit_dir();
    let puts = details(&audit, "/vault.v1.Secrets/Put");
    assert!(
        puts.iter()
            .any(|d| d.contains("policy writer requires mfa for write")
                && d.contains("entity root has no mfa enrolment")),
        "{puts:?}"
    );
    let enrolments = details(&audit, "/vault.v1.Mfa/EnrollTotp");
    assert!(
        enrolments
            .iter()
            .filter(|d| d.contains("was created by another token and acts for entity root"))
            .count()
            == 2,
        "{enrolments:?}"
    );
    let creations = details(&audit, "/vault.v1.Tokens/CreateToken");
    for needle in [
        "creating a token with policy writer, which requires mfa, requires the creator's mfa",
        "creating a system token requires the creator's mfa",
    ] {
        assert!(
            creations.iter().any(|d| d.contains(needle)),
            "{needle}: {creations:?}"
        );
    }
}

/// An age identity made with `vault-cli share keygen`: (identity file, recipient).
fn keygen(server: &TestServer, dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let file = dir.join(format!("{name}.age-identity"));
    let recipient = server
        .cli(
            None,
            &["share", "keygen", "--out", file.to_str().expect("utf-8")],
        )
        .ok()
        .trim()
        .to_owned();
    assert!(recipient.starts_with("age1"), "{recipient}");
    (file, recipient)
}

/// Decrypts an armored share (or token) with `vault-cli share decrypt`.
fn decrypt(server: &TestServer, identity: &Path, armored: &str) -> String {
    server
        .cli_with_stdin(
            None,
            &[
                "share",
                "decrypt",
                "--identity",
                identity.to_str().expect("utf-8"),
            ],
            Some(armored.as_bytes()),
        )
        .ok()
        .trim()
        .to_owned()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Whether this set of shares unseals the (sealed) server; a refused share leaves it sealed.
fn unseals(server: &TestServer, shares: &[String]) -> bool {
    let mut sealed = true;
    for share in shares {
        let output = server.cli_with_stdin(
            None,
            &["unseal", "--format", "json"],
            Some(share.as_bytes()),
        );
        if output.code != 0 {
            assert!(
                output
                    .stderr
                    .contains("this share is not one of the current shares"),
                "{}",
                output.stderr
            );
            return false;
        }
        sealed = output.json()["sealed"].as_bool().expect("sealed");
    }
    !sealed
}

#[test]
fn rekey_is_two_phase_and_a_crash_leaves_exactly_one_working_share_set() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]);
    // Init hands each share to its holder encrypted, and the root token to the first.
    let holders: Vec<_> = (0..3)
        .map(|i| keygen(&server, dir.path(), &format!("old{i}")))
        .collect();
    let mut args = vec![
        "init",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--format",
        "json",
    ];
    for (_, recipient) in &holders {
        args.extend(["--share-recipient", recipient.as_str()]);
    }
    args.extend(["--root-token-recipient", holders[0].1.as_str()]);
    let initialized = server.cli(None, &args);
    assert!(
        !initialized.stderr.contains("warning"),
        "{}",
        initialized.stderr
    );
    let initialized = initialized.json();
    assert_eq!(initialized["shares_encrypted"], true);
    assert_eq!(initialized["root_token_encrypted"], true);
    let armored = strings(&initialized["shares"]);
    assert!(
        armored
            .iter()
            .all(|a| a.starts_with("-----BEGIN AGE ENCRYPTED FILE-----"))
    );
    let old: Vec<String> = armored
        .iter()
        .zip(&holders)
        .map(|(share, (identity, _))| decrypt(&server, identity, share))
        .collect();
    // Another holder's identity opens nothing.
    let wrong = server.cli_with_stdin(
        None,
        &[
            "share",
            "decrypt",
            "--identity",
            holders[1].0.to_str().expect("utf-8"),
        ],
        Some(armored[0].as_bytes()),
    );
    assert!(
        wrong
            .failed()
            .contains("does not decrypt with this identity")
    );
    let root = decrypt(
        &server,
        &holders[0].0,
        initialized["root_token"].as_str().expect("token"),
    );
    assert!(root.starts_with("vt."));
    assert!(unseals(&server, &old[..2]));
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/primary", "password=p1"],
        )
        .ok();

    // Stage a rekey to new holders.
    let new_holders: Vec<_> = (0..3)
        .map(|i| keygen(&server, dir.path(), &format!("new{i}")))
        .collect();
    let mut args = vec![
        "rekey",
        "init",
        "--shares",
        "3",
        "--threshold",
        "2",
        "--format",
        "json",
    ];
    for (_, recipient) in &new_holders {
        args.extend(["--share-recipient", recipient.as_str()]);
    }
    let started = server.cli(Some(&root), &args).json();
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    // Whoever started the rekey chose the recipients: every operator sees who they are.
    let recipients: Vec<String> = new_holders.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(
        strings(
            &server
                .cli(None, &["rekey", "status", "--format", "json"])
                .json()["share_recipients"]
        ),
        recipients
    );
    let submit = |server: &TestServer, share: &str| {
        server
            .cli_with_stdin(
                None,
                &["rekey", "submit", "--nonce", &nonce, "--format", "json"],
                Some(share.as_bytes()),
            )
            .json()
    };
    submit(&server, &old[2]);
    let staged = submit(&server, &old[0]);
    assert_eq!(staged["staged"], true);
    assert_eq!(staged["shares_encrypted"], true);
    let new: Vec<String> = strings(&staged["shares"])
        .iter()
        .zip(&new_holders)
        .map(|(share, (identity, _))| decrypt(&server, identity, share))
        .collect();
    let verification = staged["verification_nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    // The record of the staging call said, before the commit, what it would return.
    let intents: Vec<_> = audit_records(&server.audit_dir())
        .into_iter()
        .filter(|r| r["method"] == "/vault.v1.System/RekeySubmit" && r["kind"] == "intent")
        .collect();
    assert!(
        intents.iter().all(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("returns the new unseal shares"))),
        "{intents:?}"
    );

    // Crash between staging and verification: the old shares are the only working set, and
    // the staged rekey is still there to verify.
    server.kill();
    let server = TestServer::start(&data, &[]);
    assert!(
        !unseals(&server, &new[..2]),
        "new shares before verification"
    );
    assert!(
        unseals(&server, &old[1..]),
        "old shares before verification"
    );
    let status = server
        .cli(None, &["rekey", "status", "--format", "json"])
        .json();
    assert_eq!(status["verification_pending"], true);
    assert_eq!(status["verification_nonce"], verification.as_str());
    for (share, complete) in [(&new[2], false), (&new[0], true)] {
        let verified = server
            .cli_with_stdin(
                None,
                &[
                    "rekey",
                    "verify",
                    "--nonce",
                    &verification,
                    "--format",
                    "json",
                ],
                Some(share.as_bytes()),
            )
            .json();
        assert_eq!(verified["complete"], complete);
    }

    // Crash after verification: the new shares are the only working set.
    server.kill();
    let server = TestServer::start(&data, &[]);
    assert!(
        !unseals(&server, &old[..2]),
        "old shares after verification"
    );
    assert!(unseals(&server, &new[1..]), "new shares after verification");
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
}

#[test]
fn garbage_shares_cannot_hold_the_vault_sealed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &["--source-rate-limit", "100000"]);
    let (shares, _) = init(&server, 5, 3);
    let garbage = |i: u32| {
        use base64::Engine;
        let mut bytes = [0u8; 33];
        getrandom_fill(&mut bytes, i);
        // Mostly identifiers the operators do not use, some they do.
        bytes[0] = if i.is_multiple_of(4) {
            1 + (i % 5) as u8
        } else {
            6 + (i % 200) as u8
        };
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    let refused = Arc::new(AtomicUsize::new(0));
    runtime().block_on(async {
        let channel = channel(&server).await;
        // An attacker floods garbage (and garbage resets) while three operators enter theirs.
        let attacker = {
            let channel = channel.clone();
            let refused = Arc::clone(&refused);
            tokio::spawn(async move {
                let mut system = SystemClient::new(channel);
                for i in 0..1000u32 {
                    let request = v1::UnsealRequest {
                        share: garbage(i),
                        reset: i % 10 == 0,
                    };
                    match system.unseal(request).await {
                        Err(status) => {
                            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
                            assert!(status.message().contains("not one of the current shares"));
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(answer) => panic!("garbage accepted: {:?}", answer.into_inner()),
                    }
                }
            })
        };
        let mut system = SystemClient::new(channel.clone());
        let mut last = None;
        for (n, share) in [&shares[3], &shares[0], &shares[4]].into_iter().enumerate() {
            // Spread over the flood: after 250, 500 and 750 refusals.
            while refused.load(Ordering::Relaxed) < 250 * (n + 1) && !attacker.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            last = Some(
                system
                    .unseal(v1::UnsealRequest {
                        share: share.clone(),
                        reset: false,
                    })
                    .await
                    .expect("a real share")
                    .into_inner(),
            );
        }
        attacker.await.expect("attacker");
        assert!(!last.expect("answer").sealed, "three real shares unseal");
    });
    assert_eq!(refused.load(Ordering::Relaxed), 1000);
}

/// Deterministic filler bytes for a garbage share (no RNG needed in the test).
fn getrandom_fill(bytes: &mut [u8], seed: u32) {
    let mut state = u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for byte in bytes.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
}

/// Opens `count` HTTP/2 streams to `server` from the loopback address `local`, each sending
/// request headers and never the end of its request. Returns what keeps them open.
async fn stall(
    server: SocketAddr,
    local: &str,
    count: usize,
    per_connection: usize,
) -> Vec<Box<dyn std::any::Any + Send>> {
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut opened = 0;
    while opened < count {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(format!("{local}:0").parse().expect("local address"))
            .expect("bind a second loopback address");
        let stream = socket.connect(server).await.expect("connect");
        let (mut client, connection) = h2::client::handshake(stream).await.expect("h2 handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        for _ in 0..per_connection.min(count - opened) {
            let request = http::Request::builder()
                .method("POST")
                .uri(format!("http://{server}/vault.v1.Secrets/Get"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
                .expect("request");
            client = client.ready().await.expect("stream allowed");
            let (response, body) = client.send_request(request, false).expect("send headers");
            held.push(Box::new((response, body)));
            opened += 1;
        }
        held.push(Box::new(client));
    }
    held
}

#[test]
fn stalled_streams_from_one_source_do_not_stall_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Bodies may take a minute to arrive, so the stalled streams stay for the whole test.
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--request-body-timeout-ms", "60000"],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "db/a", "k=v"])
        .ok();
    let address: SocketAddr = server
        .addr
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    runtime().block_on(async {
        // 1,500 streams from 127.0.0.2 that send headers and nothing more.
        let held = stall(address, "127.0.0.2", 1500, 100).await;
        let channel = channel(&server).await;
        let mut secrets = SecretsClient::new(channel);
        for i in 0..200 {
            let got = secrets
                .get(with_token(
                    v1::GetRequest {
                        tenant: "acme".into(),
                        path: "db/a".into(),
                        ..Default::default()
                    },
                    &root,
                ))
                .await
                .unwrap_or_else(|status| panic!("get {i} failed: {status:?}"));
            assert_eq!(got.into_inner().data["k"], b"v");
        }
        drop(held);
    });
}

#[test]
fn a_request_that_never_arrives_and_a_silent_connection_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--request-body-timeout-ms",
            "300",
            "--header-timeout-ms",
            "300",
        ],
    );
    let address: SocketAddr = server
        .addr
        .trim_start_matches("http://")
        .parse()
        .expect("address");
    runtime().block_on(async {
        // Headers, then nothing: answered DEADLINE_EXCEEDED once the body timeout passes.
        let stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let (client, connection) = h2::client::handshake(stream).await.expect("handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut client = client.ready().await.expect("ready");
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("http://{address}/vault.v1.System/Status"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .expect("request");
        let (response, _body) = client.send_request(request, false).expect("send");
        let response = tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .expect("answered")
            .expect("response");
        let status = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let status = match status {
            Some(status) => status,
            None => {
                let mut body = response.into_body();
                while body.data().await.is_some() {}
                body.trailers()
                    .await
                    .expect("trailers")
                    .and_then(|t| t.get("grpc-status").cloned())
                    .and_then(|v| v.to_str().ok().map(str::to_owned))
                    .expect("a status")
            }
        };
        assert_eq!(status, (Code::DeadlineExceeded as i32).to_string());
        // A connection that never sends a request is closed by the server.
        let mut silent = tokio::net::TcpStream::connect(address)
            .await
            .expect("connect");
        let mut buffer = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            use tokio::io::AsyncReadExt;
            loop {
                match silent.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the silent connection stayed open");
    });
    let records = details(&server.audit_dir(), "/vault.v1.System/Status");
    assert!(
        records
            .iter()
            .any(|d| d.contains("did not arrive within 300 ms")),
        "{records:?}"
    );
}

/// A webhook receiver: counts requests; answers 200 at once, or never (a tarpit).
struct Receiver {
    port: u16,
    seen: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Receiver {
    fn start(tarpit: bool) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for connection in listener.incoming() {
                let Ok(connection) = connection else { continue };
                let record = Arc::clone(&record);
                std::thread::spawn(move || serve(connection, tarpit, &record));
            }
        });
        Receiver { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn seen(&self) -> Vec<(Instant, String)> {
        self.seen.lock().expect("lock").clone()
    }
}

fn serve(mut connection: TcpStream, tarpit: bool, seen: &Mutex<Vec<(Instant, String)>>) {
    let mut reader = BufReader::new(connection.try_clone().expect("clone"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = value.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock()
        .expect("lock")
        .push((Instant::now(), String::from_utf8_lossy(&body).into_owned()));
    if tarpit {
        // Hold the connection without answering until the vault gives up.
        let mut sink = [0u8; 64];
        while connection.read(&mut sink).unwrap_or(0) > 0 {}
    } else {
        let _ = connection.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    }
}

#[test]
fn a_tarpit_receiver_of_one_tenant_does_not_delay_another_tenants_deliveries() {
    let timeout = Duration::from_secs(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--webhook-allow-network",
            "127.0.0.0/8",
            "--webhook-timeout-ms",
            "10000",
        ],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    let tarpit = Receiver::start(true);
    let good = Receiver::start(false);
    for (tenant, receiver) in [("slow", &tarpit), ("quick", &good)] {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
        server
            .cli(
                Some(&root),
                &[
                    "webhook",
                    "create",
                    "--tenant",
                    tenant,
                    "--url",
                    &receiver.url(),
                ],
            )
            .ok();
    }
    // Tenant "slow" fills the dispatcher's queue with deliveries to a receiver that never
    // answers...
    for i in 0..40 {
        server
            .cli(
                Some(&root),
                &["put", "--tenant", "slow", &format!("db/s{i}"), "k=v"],
            )
            .ok();
    }
    eventually("the tarpit holds posts", || !tarpit.seen().is_empty());
    // ...and tenant "quick" writes once: its delivery must not wait for the tarpit's posts
    // to time out.
    let written = Instant::now();
    server
        .cli(Some(&root), &["put", "--tenant", "quick", "db/q", "k=v"])
        .ok();
    eventually("quick's delivery arrives", || !good.seen().is_empty());
    let (arrived, body) = good.seen()[0].clone();
    assert!(body.contains("\"db/q\""), "{body}");
    let delay = arrived.duration_since(written);
    assert!(
        delay < timeout,
        "quick's delivery took {delay:?}, held up behind the tarpit (timeout {timeout:?})"
    );
    // The tarpit got at most its tenant's share of posts at once.
    assert!(tarpit.seen().len() <= 8, "{}", tarpit.seen().len());
}

#[test]
fn watches_are_bounded_per_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &["--max-watches-per-token", "2"]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    runtime().block_on(async {
        let channel = channel(&server).await;
        let mut watch = WatchClient::new(channel);
        let open = || v1::WatchRequest {
            tenant: "acme".into(),
            prefix: "db/".into(),
            from_now: true,
            ..Default::default()
        };
        let first = watch.watch(with_token(open(), &root)).await.expect("first");
        let _second = watch
            .watch(with_token(open(), &root))
            .await
            .expect("second");
        let third = watch
            .watch(with_token(open(), &root))
            .await
            .expect_err("over the limit");
        assert_eq!(third.code(), Code::ResourceExhausted);
        // A watch that ends gives its place back.
        drop(first);
        let mut reopened = None;
        for _ in 0..200 {
            match watch.watch(with_token(open(), &root)).await {
                Ok(stream) => {
                    reopened = Some(stream);
                    break;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        assert!(reopened.is_some(), "the place was not given back");
    });
}

#[test]
fn a_graceful_stop_signs_a_final_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No checkpoint would be due for an hour or 100,000 records.
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--audit-checkpoint-ms",
            "3600000",
            "--audit-checkpoint-records",
            "100000",
        ],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let key = dir.path().join("audit.pub");
    server
        .cli(
            None,
            &["audit", "public-key", "--out", key.to_str().expect("utf-8")],
        )
        .ok();
    let addr = server.addr.clone();
    let audit_dir = server.audit_dir();
    assert!(server.terminate().success());
    let verified = run_cli(
        &addr,
        None,
        &[
            "audit",
            "verify",
            "--dir",
            audit_dir.to_str().expect("utf-8"),
            "--public-key",
            key.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(verified.code, 0, "{}\n{}", verified.stdout, verified.stderr);
    assert!(
        verified
            .stdout
            .contains("OK: the log verifies against the pinned key"),
        "{}",
        verified.stdout
    );
}

#[test]
fn generate_root_makes_a_root_token_for_the_recipient_only_with_a_threshold_of_shares() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let (shares, root) = vault_tests::init(&server, 3, 2);
    vault_tests::unseal(&server, &[&shares[0], &shares[1]]);
    let (identity, recipient) = keygen(&server, dir.path(), "operator");
    // The old root token is revoked after use, as it should be; a system token is no root.
    let tenant_token = server
        .cli(
            Some(&root),
            &["token", "create", "--system", "--format", "json"],
        )
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let refused = server.cli(Some(&tenant_token), &["token", "revoke-root"]);
    assert!(
        refused.failed().contains("is not a root token"),
        "{}",
        refused.stderr
    );
    server.cli(Some(&root), &["token", "revoke-root"]).ok();
    let gone = server.cli(Some(&root), &["tenant", "list"]);
    assert!(
        gone.failed().contains("permission denied"),
        "{}",
        gone.stderr
    );

    // Without a token: init names the recipient and needs a current share (its first
    // submission); a caller without one cannot hold the attempt.
    let squatter = server.cli_with_stdin(
        None,
        &["generate-root", "init", "--recipient", &recipient],
        Some(b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"),
    );
    assert_ne!(squatter.code, 0, "{}", squatter.stdout);
    let started = server
        .cli_with_stdin(
            None,
            &[
                "generate-root",
                "init",
                "--recipient",
                &recipient,
                "--format",
                "json",
            ],
            Some(shares[2].as_bytes()),
        )
        .json();
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    assert_eq!(started["required"], 2);
    assert_eq!(started["progress"], 1);
    let again = server.cli_with_stdin(
        None,
        &["generate-root", "init", "--recipient", &recipient],
        Some(shares[1].as_bytes()),
    );
    assert!(again.failed().contains("in progress"), "{}", again.stderr);
    let submit = |share: &str, nonce: &str, to: &str| {
        server.cli_with_stdin(
            None,
            &[
                "generate-root",
                "submit",
                "--nonce",
                nonce,
                "--recipient",
                to,
                "--format",
                "json",
            ],
            Some(share.as_bytes()),
        )
    };
    let wrong_nonce = submit(&shares[0], "00", &recipient);
    assert!(
        wrong_nonce.failed().contains("nonce"),
        "{}",
        wrong_nonce.stderr
    );
    // A holder who expects another recipient submits nothing.
    let (_, stranger) = keygen(&server, dir.path(), "stranger");
    let elsewhere = submit(&shares[0], &nonce, &stranger);
    assert!(
        elsewhere.failed().contains("nothing was submitted"),
        "{}",
        elsewhere.stderr
    );
    let not_a_share = submit(
        "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh",
        &nonce,
        &recipient,
    );
    assert_ne!(not_a_share.code, 0, "{}", not_a_share.stdout);
    // The same share as init's counts once.
    let first = submit(&shares[2], &nonce, &recipient).json();
    assert_eq!(first["complete"], false, "{first}");
    assert_eq!(first["progress"], 1);
    assert_eq!(first["encrypted_root_token"], "");
    let done = submit(&shares[0], &nonce, &recipient).json();
    assert_eq!(done["complete"], true, "{done}");
    let armored = done["encrypted_root_token"]
        .as_str()
        .expect("armored")
        .to_owned();
    assert!(armored.contains("BEGIN AGE ENCRYPTED FILE"), "{armored}");
    assert!(!armored.contains("vt."));
    let new_root = decrypt(&server, &identity, &armored);
    assert!(new_root.starts_with("vt."), "a token: {}", new_root.len());
    assert_ne!(new_root, root);
    server.cli(Some(&new_root), &["tenant", "list"]).ok();
    let status = server
        .cli(None, &["generate-root", "status", "--format", "json"])
        .json();
    assert_eq!(status["started"], false, "{status}");

    // The audit log names the accessor, never the token.
    let records = vault_tests::audit_records(&server.audit_dir());
    let accessor = done["accessor"].as_str().expect("accessor");
    assert!(records.iter().any(|r| r["method"] == "generate-root"
        && r["detail"].as_str().is_some_and(|d| d.contains(accessor))));
    let log = format!("{records:?}");
    assert!(!log.contains(&new_root) && !log.contains(&shares[0]));

    // The system token the old root token created went with it.
    let orphan = server.cli(Some(&tenant_token), &["tenant", "list"]);
    assert!(
        orphan.failed().contains("permission denied"),
        "{}",
        orphan.stderr
    );
    // Cancel needs a current share.
    server
        .cli_with_stdin(
            None,
            &["generate-root", "init", "--recipient", &recipient],
            Some(shares[0].as_bytes()),
        )
        .ok();
    let refused = server.cli_with_stdin(
        None,
        &["generate-root", "cancel"],
        Some(b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"),
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    server
        .cli_with_stdin(
            None,
            &["generate-root", "cancel"],
            Some(shares[1].as_bytes()),
        )
        .ok();
    let status = server
        .cli(None, &["generate-root", "status", "--format", "json"])
        .json();
    assert_eq!(status["started"], false, "{status}");
    server.cli(Some(&new_root), &["token", "revoke-root"]).ok();
}
