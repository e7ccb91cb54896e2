//! The audit log end to end: completeness, fail-closed, verification (offline and against the
//! server), start-up repair and refusal, query and export, and no secrets in audit files or logs.

use std::{collections::HashMap, fs, path::Path};

use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use vault_proto::v1::{self, secrets_client::SecretsClient, system_client::SystemClient};
use vault_tests::{TestServer, audit_records, init, request_id, unseal};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
    );
    request
}

fn put(path: &str, value: &str) -> v1::PutRequest {
    let mut request = v1::PutRequest {
        tenant: "acme".into(),
        path: path.into(),
        ..Default::default()
    };
    request
        .data
        .insert("password".into(), value.as_bytes().to_vec());
    request
}

fn get(path: &str) -> v1::GetRequest {
    v1::GetRequest {
        tenant: "acme".into(),
        path: path.into(),
        version: 0,
    }
}

/// A fresh server, initialized (1 share), unsealed, with tenant acme.
fn ready(dir: &Path, extra: &[&str]) -> (TestServer, String) {
    let server = TestServer::start(dir, extra);
    let (shares, token) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&token), &["tenant", "create", "acme"]).ok();
    (server, token)
}

const CANARY: &str = "audit-canary-9f86d081884c7d659a2feaa0c55ad015";

#[test]
fn every_call_has_exactly_one_outcome_record_joined_by_request_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, token) = ready(dir.path(), &[]);
    let expected: Vec<(String, &str, &str, &str)> = runtime().block_on(async {
        let channel = Channel::from_shared(server.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut secrets = SecretsClient::new(channel.clone());
        let mut system = SystemClient::new(channel);
        let mut calls = Vec::new();
        let ok = secrets
            .put(with_token(put("db/primary", CANARY), &token))
            .await
            .expect("put");
        calls.push((
            request_id(ok.metadata()),
            "/vault.v1.Secrets/Put",
            "ok",
            "OK",
        ));
        let ok = secrets
            .get(with_token(get("db/primary"), &token))
            .await
            .expect("get");
        calls.push((
            request_id(ok.metadata()),
            "/vault.v1.Secrets/Get",
            "ok",
            "OK",
        ));
        let missing = secrets
            .get(with_token(get("db/none"), &token))
            .await
            .expect_err("not found");
        calls.push((
            request_id(missing.metadata()),
            "/vault.v1.Secrets/Get",
            "error",
            "NOT_FOUND",
        ));
        let denied = secrets
            .get(with_token(get("db/primary"), "vt.forged-token"))
            .await
            .expect_err("denied");
        calls.push((
            request_id(denied.metadata()),
            "/vault.v1.Secrets/Get",
            "denied",
            "PERMISSION_DENIED",
        ));
        let anonymous = secrets
            .get(Request::new(get("db/primary")))
            .await
            .expect_err("unauthenticated");
        calls.push((
            request_id(anonymous.metadata()),
            "/vault.v1.Secrets/Get",
            "denied",
            "UNAUTHENTICATED",
        ));
        let malformed = secrets
            .put(with_token(put("db/../x", "v"), &token))
            .await
            .expect_err("malformed");
        calls.push((
            request_id(malformed.metadata()),
            "/vault.v1.Secrets/Put",
            "error",
            "INVALID_ARGUMENT",
        ));
        let bad_share = system
            .unseal(v1::UnsealRequest {
                share: "bm9wZQ==".into(),
                reset: false,
            })
            .await
            .expect_err("bad share");
        calls.push((
            request_id(bad_share.metadata()),
            "/vault.v1.System/Unseal",
            "error",
            "INVALID_ARGUMENT",
        ));
        let status = system.status(v1::StatusRequest {}).await.expect("status");
        calls.push((
            request_id(status.metadata()),
            "/vault.v1.System/Status",
            "ok",
            "OK",
        ));
        let sealed = system
            .seal(with_token(v1::SealRequest {}, &token))
            .await
            .expect("seal");
        calls.push((
            request_id(sealed.metadata()),
            "/vault.v1.System/Seal",
            "ok",
            "OK",
        ));
        let refused = secrets
            .get(with_token(get("db/primary"), &token))
            .await
            .expect_err("sealed");
        assert_eq!(refused.code(), Code::FailedPrecondition);
        calls.push((
            request_id(refused.metadata()),
            "/vault.v1.Secrets/Get",
            "error",
            "FAILED_PRECONDITION",
        ));
        calls
    });

    let records = audit_records(&server.audit_dir());
    let mut outcomes: HashMap<String, Vec<&serde_json::Value>> = HashMap::new();
    let mut intents: HashMap<String, usize> = HashMap::new();
    for record in &records {
        let id = record["request_id"].as_str().unwrap_or_default().to_owned();
        match record["kind"].as_str() {
            Some("outcome") => outcomes.entry(id).or_default().push(record),
            Some("intent") => *intents.entry(id).or_default() += 1,
            _ => {}
        }
    }
    for (id, method, outcome, code) in &expected {
        let found = outcomes.get(id).map(Vec::as_slice).unwrap_or_default();
        assert_eq!(
            found.len(),
            1,
            "{method} {code}: {} outcome records for request {id}",
            found.len()
        );
        let record = found[0];
        assert_eq!(
            (
                record["method"].as_str(),
                record["outcome"].as_str(),
                record["code"].as_str()
            ),
            (Some(*method), Some(*outcome), Some(*code)),
            "{record}"
        );
        assert!(
            record["source"]
                .as_str()
                .is_some_and(|s| s.starts_with("127.0.0.1:")),
            "{record}"
        );
        assert!(
            record["time"]
                .as_str()
                .is_some_and(|t| t.len() == 30 && t.ends_with('Z')),
            "{record}"
        );
        assert!(
            record["node"].as_str().is_some_and(|n| !n.is_empty()),
            "{record}"
        );
    }
    // The successful put and the seal were preceded by an intent; the malformed put was not
    // (it changed nothing).
    assert_eq!(intents.get(&expected[0].0), Some(&1));
    assert_eq!(intents.get(&expected[8].0), Some(&1));
    assert_eq!(intents.get(&expected[5].0), None);
    // The accessor names the principal; the token itself appears nowhere.
    assert!(
        outcomes[&expected[0].0][0]["principal"]
            .as_str()
            .is_some_and(|p| p.starts_with("va."))
    );
    for record in &records {
        let text = record.to_string();
        assert!(
            !text.contains(CANARY) && !text.contains(&token),
            "secret in audit record: {text}"
        );
    }
}

#[test]
fn a_failing_audit_log_fails_calls_closed_and_service_resumes_without_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fault = dir.path().join("audit-fault");
    let (server, token) = ready(
        &dir.path().join("data"),
        &["--danger-audit-fault-file", fault.to_str().expect("utf-8")],
    );
    let token = Some(token.as_str());
    server
        .cli(
            token,
            &[
                "put",
                "--tenant",
                "acme",
                "db/primary",
                &format!("password={CANARY}"),
            ],
        )
        .ok();
    fs::write(&fault, b"").expect("inject fault");
    let refused = server.cli(
        token,
        &[
            "get",
            "--tenant",
            "acme",
            "db/primary",
            "--field",
            "password",
        ],
    );
    assert!(
        refused.failed().contains("audit log unavailable"),
        "{}",
        refused.stderr
    );
    assert!(!refused.stdout.contains(CANARY) && !refused.stderr.contains(CANARY));
    let write_refused = server.cli(
        token,
        &["put", "--tenant", "acme", "db/other", "password=x"],
    );
    assert!(
        write_refused.failed().contains("audit log unavailable"),
        "{}",
        write_refused.stderr
    );
    fs::remove_file(&fault).expect("clear fault");
    assert_eq!(
        server
            .cli(
                token,
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
        CANARY
    );
    // The refused put changed nothing.
    assert!(
        server
            .cli(token, &["get", "--tenant", "acme", "db/other"])
            .failed()
            .contains("not found")
    );
}

#[test]
fn verify_passes_a_clean_log_and_catches_tampering_and_tail_truncation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, token) = ready(dir.path(), &["--audit-checkpoint-records", "5"]);
    let token_ref = Some(token.as_str());
    for i in 0..20 {
        server
            .cli(
                token_ref,
                &["put", "--tenant", "acme", &format!("db/s{i}"), "password=x"],
            )
            .ok();
    }
    let key_file = dir.path().join("audit.pub");
    server
        .cli(
            None,
            &[
                "audit",
                "public-key",
                "--out",
                key_file.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let audit_dir = server.audit_dir();
    let verify = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify",
            "--dir",
            audit_dir.to_str().expect("utf-8"),
            "--public-key",
            key_file.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        server.cli(token_ref, &args)
    };
    let clean = verify(&["--against-server"]);
    assert!(
        clean
            .ok()
            .contains("OK: the log verifies against the pinned key"),
        "{}",
        clean.stdout
    );
    assert!(
        clean.stdout.contains("matches the server's head"),
        "{}",
        clean.stdout
    );

    // Records cut off the tail: only the server's head can tell.
    let segment = fs::read_dir(&audit_dir)
        .expect("dir")
        .map_while(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("segment");
    let original = fs::read_to_string(&segment).expect("read");
    let mut kept: Vec<&str> = original.lines().collect();
    kept.truncate(kept.len() - 2);
    fs::write(&segment, kept.join("\n") + "\n").expect("truncate tail");
    let cut = verify(&["--against-server"]);
    assert_eq!(cut.code, 1, "{}", cut.stdout);
    assert!(
        cut.stdout.contains("records were removed from the tail"),
        "{}",
        cut.stdout
    );

    // An edited record in the middle.
    let mut edited: Vec<String> = original.lines().map(str::to_owned).collect();
    edited[10] = edited[10].replacen("db/s", "db/t", 1);
    fs::write(&segment, edited.join("\n") + "\n").expect("edit");
    let tampered = verify(&[]);
    assert_eq!(tampered.code, 1, "{}", tampered.stdout);
    assert!(
        tampered.stdout.contains("first broken link:"),
        "{}",
        tampered.stdout
    );
    assert!(
        tampered.stdout.contains(segment.to_str().expect("utf-8")),
        "{}",
        tampered.stdout
    );
}

#[test]
fn start_up_repairs_a_torn_tail_and_refuses_corruption_before_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, token) = ready(dir.path(), &[]);
    server
        .cli(
            Some(&token),
            &["put", "--tenant", "acme", "db/a", "password=x"],
        )
        .ok();
    let audit_dir = server.audit_dir();
    server.kill();
    let segment = fs::read_dir(&audit_dir)
        .expect("dir")
        .map_while(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .expect("segment");
    let mut bytes = fs::read(&segment).expect("read");
    bytes.extend_from_slice(br#"{"seq":999,"time":"2026-11-2"#);
    fs::write(&segment, &bytes).expect("tear");
    let restarted = TestServer::start(dir.path(), &[]);
    let records = audit_records(&audit_dir);
    assert!(records.iter().any(|r| {
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("repaired a torn tail"))
    }));
    restarted.kill();

    let mut bytes = fs::read(&segment).expect("read");
    let second_line = bytes.iter().position(|b| *b == b'\n').expect("newline") + 1;
    bytes[second_line + 2] = b'X';
    fs::write(&segment, &bytes).expect("corrupt");
    let refused = TestServer::try_start(dir.path(), &[])
        .err()
        .expect("start-up must be refused");
    assert!(
        refused.contains("refusing to start: the audit log is corrupt"),
        "{refused}"
    );
    assert!(
        refused.contains(&format!("{} at byte {second_line}", segment.display())),
        "{refused}"
    );
}

#[test]
fn query_and_export_return_the_records() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, token) = ready(dir.path(), &[]);
    let token = Some(token.as_str());
    for path in ["db/a", "db/b", "web/c"] {
        server
            .cli(token, &["put", "--tenant", "acme", path, "password=x"])
            .ok();
    }
    server.cli(token, &["get", "--tenant", "acme", "db/a"]).ok();
    let puts = server
        .cli(
            token,
            &[
                "audit",
                "query",
                "--method",
                "Put",
                "--outcome",
                "ok",
                "--format",
                "json",
            ],
        )
        .json();
    let paths: Vec<&str> = puts["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["kind"] == "outcome")
        .map(|r| r["path"].as_str().expect("path"))
        .collect();
    assert_eq!(paths, ["db/a", "db/b", "web/c"]);
    let page = server
        .cli(
            token,
            &[
                "audit",
                "query",
                "--path-prefix",
                "db/",
                "--page-size",
                "2",
                "--format",
                "json",
            ],
        )
        .json();
    assert_eq!(page["records"].as_array().expect("records").len(), 2);
    let next = page["next_page_token"].as_str().expect("token").to_owned();
    let rest = server
        .cli(
            token,
            &[
                "audit",
                "query",
                "--path-prefix",
                "db/",
                "--page-token",
                &next,
                "--format",
                "json",
            ],
        )
        .json();
    assert!(!rest["records"].as_array().expect("records").is_empty());
    let bad_time = server.cli(token, &["audit", "query", "--since", "yesterday"]);
    assert!(
        bad_time.failed().contains("invalid since"),
        "{}",
        bad_time.stderr
    );
    let export = server.cli(
        token,
        &["audit", "export", "--since", "2000-01-01T00:00:00Z"],
    );
    let lines: Vec<serde_json::Value> = export
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(lines.len() >= 10, "{}", lines.len());
    assert!(
        lines
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64())
    );
    let future = server.cli(
        token,
        &["audit", "export", "--since", "2200-01-01T00:00:00Z"],
    );
    assert_eq!(future.ok(), "");
}

#[test]
fn secrets_and_tokens_never_reach_audit_files_or_server_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, token) = ready(dir.path(), &[]);
    let token_ref = Some(token.as_str());
    server
        .cli(
            token_ref,
            &[
                "put",
                "--tenant",
                "acme",
                "db/canary",
                &format!("password={CANARY}"),
            ],
        )
        .ok();
    server
        .cli(token_ref, &["get", "--tenant", "acme", "db/canary"])
        .ok();
    server
        .cli(
            Some("vt.wrong-token-canary"),
            &["get", "--tenant", "acme", "db/canary"],
        )
        .failed();
    let mut haystacks: Vec<String> = server.stderr();
    for entry in fs::read_dir(server.audit_dir())
        .expect("dir")
        .map_while(Result::ok)
    {
        haystacks
            .push(String::from_utf8_lossy(&fs::read(entry.path()).expect("read")).into_owned());
    }
    for needle in [CANARY, token.as_str(), "vt.wrong-token-canary"] {
        assert!(
            !haystacks.iter().any(|h| h.contains(needle)),
            "{needle} found in an audit file or the server log"
        );
    }
}
