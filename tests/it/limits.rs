//! Tenant settings (allowed networks, rate limit), tenant deletion, trusted proxies, and the
//! per-source limit applied before authentication. (The server-wide concurrency limit is
//! tested on `CallLayer` itself, in vault-server's `call.rs`, where a call can be held open.)

use tonic::{Code, Request, metadata::MetadataValue, transport::Channel};
use vault_proto::v1::{self, secrets_client::SecretsClient};
use vault_tests::{TestServer, audit_records, init, unseal};

const READER_POLICY: &str =
    "[[rule]]\npath = \"*\"\ncapabilities = [\"read\", \"list\", \"admin\"]\n";

fn ready(dir: &std::path::Path, extra: &[&str]) -> (TestServer, String) {
    let server = TestServer::start(&dir.join("data"), extra);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    (server, root)
}

/// Creates `tenant` with `settings` flags, a policy and a token for it; returns the token.
fn tenant_with_token(
    server: &TestServer,
    root: &str,
    dir: &std::path::Path,
    tenant: &str,
    settings: &[&str],
) -> String {
    let mut args = vec!["tenant", "create", tenant];
    args.extend_from_slice(settings);
    server.cli(Some(root), &args).ok();
    let policy = dir.join("reader.toml");
    std::fs::write(&policy, READER_POLICY).expect("policy");
    server
        .cli(
            Some(root),
            &[
                "policy",
                "write",
                "--tenant",
                tenant,
                "reader",
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    server
        .cli(Some(root), &["put", "--tenant", tenant, "db/a", "k=v"])
        .ok();
    server
        .cli(
            Some(root),
            &[
                "token", "create", "--tenant", tenant, "--policy", "reader", "--format", "json",
            ],
        )
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

fn get(tenant: &str, token: &str, forwarded_for: Option<&str>) -> Request<v1::GetRequest> {
    let mut request = Request::new(v1::GetRequest {
        tenant: tenant.into(),
        path: "db/a".into(),
        version: 0,
    });
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
    );
    if let Some(address) = forwarded_for {
        request.metadata_mut().insert(
            "x-forwarded-for",
            MetadataValue::try_from(address).expect("ascii"),
        );
    }
    request
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(server: &TestServer) -> Channel {
    Channel::from_shared(server.endpoint())
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

#[test]
fn tenant_networks_rate_limits_show_update_and_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let token = tenant_with_token(
        &server,
        &root,
        dir.path(),
        "acme",
        &["--cidr", "10.0.0.0/8"],
    );
    let shown = server
        .cli(Some(&root), &["tenant", "show", "acme", "--format", "json"])
        .json();
    assert_eq!(shown["allowed_cidrs"], serde_json::json!(["10.0.0.0/8"]));
    // Loopback is outside the tenant's networks.
    let refused = server.cli(Some(&token), &["get", "--tenant", "acme", "db/a"]);
    assert!(refused.failed().contains("permission denied"));
    let detail_found = audit_records(&server.audit_dir()).iter().any(|r| {
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("tenant acme allows calls only from 10.0.0.0/8"))
    });
    assert!(
        detail_found,
        "no audit record names the tenant network check"
    );
    server
        .cli(
            Some(&root),
            &[
                "tenant",
                "update",
                "acme",
                "--clear-cidrs",
                "--rate-limit",
                "2",
            ],
        )
        .ok();
    // A tenant administrator may see its own tenant, not change it.
    let own = server
        .cli(
            Some(&token),
            &["tenant", "show", "acme", "--format", "json"],
        )
        .json();
    assert_eq!(own["rate_limit"], 2);
    assert!(
        server
            .cli(
                Some(&token),
                &["tenant", "update", "acme", "--rate-limit", "0"]
            )
            .failed()
            .contains("permission denied")
    );
    runtime().block_on(async {
        let mut secrets = SecretsClient::new(connect(&server).await);
        // Two calls a second with bursts of two: a quick run of ten cannot all pass.
        let mut exhausted = 0;
        for _ in 0..10 {
            match secrets.get(get("acme", &token, None)).await {
                Ok(_) => {}
                Err(status) => {
                    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                    exhausted += 1;
                }
            }
        }
        assert!(exhausted > 0, "the rate limit never applied");
    });
    server
        .cli(
            Some(&root),
            &["tenant", "update", "acme", "--rate-limit", "0"],
        )
        .ok();
    server
        .cli(Some(&token), &["get", "--tenant", "acme", "db/a"])
        .ok();
    // Deleting the tenant stops its tokens at once, and a new tenant of the same name is
    // somebody else.
    server.cli(Some(&root), &["tenant", "delete", "acme"]).ok();
    assert!(
        server
            .cli(Some(&token), &["get", "--tenant", "acme", "db/a"])
            .failed()
            .contains("permission denied")
    );
    assert!(
        server
            .cli(Some(&root), &["tenant", "show", "acme"])
            .failed()
            .contains("not found")
    );
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    assert!(
        server
            .cli(Some(&token), &["get", "--tenant", "acme", "db/a"])
            .failed()
            .contains("permission denied")
    );
    assert!(
        server
            .cli(Some(&root), &["get", "--tenant", "acme", "db/a"])
            .failed()
            .contains("not found"),
        "the new tenant must not see the old one's data"
    );
}

#[test]
fn forwarded_for_counts_only_from_a_trusted_proxy() {
    for trusted in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra: &[&str] = if trusted {
            &["--trusted-proxy", "127.0.0.1/32"]
        } else {
            &[]
        };
        let (server, root) = ready(dir.path(), extra);
        let token = tenant_with_token(
            &server,
            &root,
            dir.path(),
            "acme",
            &["--cidr", "10.0.0.0/8"],
        );
        runtime().block_on(async {
            let mut secrets = SecretsClient::new(connect(&server).await);
            let direct = secrets.get(get("acme", &token, None)).await;
            assert_eq!(direct.expect_err("loopback").code(), Code::PermissionDenied);
            let forwarded = secrets
                .get(get("acme", &token, Some("192.0.2.1, 10.1.2.3")))
                .await;
            // A client's own forged header, in a field of its own before the proxy's: the
            // right-most entry (what the proxy saw) is what counts.
            let mut spoofed = get("acme", &token, Some("10.9.9.9"));
            spoofed.metadata_mut().append(
                "x-forwarded-for",
                MetadataValue::try_from("192.0.2.1").expect("ascii"),
            );
            assert_eq!(
                secrets.get(spoofed).await.expect_err("spoofed").code(),
                Code::PermissionDenied
            );
            if trusted {
                forwarded.expect("the proxy's client is inside the tenant's networks");
            } else {
                assert_eq!(
                    forwarded.expect_err("header ignored").code(),
                    Code::PermissionDenied
                );
            }
        });
        if trusted {
            let via_proxy = audit_records(&server.audit_dir()).iter().any(|r| {
                r["source"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("10.1.2.3 (via 127.0.0.1:"))
            });
            assert!(via_proxy, "the audit record names the client and the proxy");
        }
    }
}

#[test]
fn floods_are_refused_before_authentication_and_recorded_once_a_second() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, _root) = ready(dir.path(), &["--source-rate-limit", "5"]);
    let refused = runtime().block_on(async {
        let mut secrets = SecretsClient::new(connect(&server).await);
        let mut refused = 0;
        for _ in 0..60 {
            match secrets.get(get("acme", "vt.not-a-token", None)).await {
                Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
                Err(status) => assert_eq!(status.code(), Code::PermissionDenied, "{status:?}"),
                Ok(_) => panic!("a bogus token was accepted"),
            }
        }
        refused
    });
    assert!(
        refused >= 30,
        "only {refused} of 60 calls were refused at 5/s"
    );
    let records: Vec<_> = audit_records(&server.audit_dir())
        .into_iter()
        .filter(|r| r["code"] == "RESOURCE_EXHAUSTED")
        .collect();
    assert!(!records.is_empty(), "refusals leave a trace");
    assert!(
        records.len() < refused,
        "{} records for {refused} refusals: floods must not fill the audit log",
        records.len()
    );
}
