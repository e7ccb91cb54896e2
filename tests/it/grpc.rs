//! Status codes, request ids, input validation, transport limits, health and reflection,
//! checked over gRPC against the real server.

use tonic::{Code, Request, metadata::MetadataValue};
use vault_proto::{
    reason,
    v1::{
        self, secrets_client::SecretsClient, system_client::SystemClient,
        tenants_client::TenantsClient,
    },
};
use vault_tests::{TestServer, channel, init, runtime, unseal};

struct Unsealed {
    _dir: tempfile::TempDir,
    server: TestServer,
    token: String,
}

fn unsealed(extra: &[&str]) -> Unsealed {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), extra);
    let (shares, token) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&token), &["tenant", "create", "acme"]).ok();
    Unsealed {
        _dir: dir,
        server,
        token,
    }
}

fn with_token<T>(message: T, token: &str) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        MetadataValue::try_from(format!("Bearer {token}")).expect("ascii"),
    );
    request
}

fn put(tenant: &str, path: &str, fields: &[(&str, Vec<u8>)]) -> v1::PutRequest {
    v1::PutRequest {
        cas: None,
        tenant: tenant.into(),
        path: path.into(),
        data: fields
            .iter()
            .map(|(name, value)| ((*name).to_owned(), value.clone()))
            .collect(),
    }
}

#[test]
fn tokens_are_required_and_checked_and_request_ids_are_echoed() {
    let fixture = unsealed(&[]);
    runtime().block_on(async {
        let mut secrets = SecretsClient::new(channel(&fixture.server).await);
        let get = v1::GetRequest {
            tenant: "acme".into(),
            path: "x".into(),
            version: 0,
        };
        let missing = secrets
            .get(Request::new(get.clone()))
            .await
            .expect_err("no token");
        assert_eq!(missing.code(), Code::Unauthenticated);
        assert_eq!(reason::of(&missing), Some(reason::TOKEN_REQUIRED));
        assert!(missing.metadata().get("x-request-id").is_some());
        let wrong = secrets
            .get(with_token(get.clone(), "vt.not-a-real-token"))
            .await
            .expect_err("bad token");
        assert_eq!(wrong.code(), Code::PermissionDenied);
        assert_eq!(reason::of(&wrong), Some(reason::PERMISSION_DENIED));
        let odd = secrets
            .get(with_token(get.clone(), "something-else"))
            .await
            .expect_err("odd token");
        assert_eq!(odd.code(), Code::PermissionDenied);
        let response = secrets
            .put(with_token(
                put("acme", "x", &[("k", b"v".to_vec())]),
                &fixture.token,
            ))
            .await
            .expect("put");
        let request_id = response
            .metadata()
            .get("x-request-id")
            .expect("request id")
            .to_str()
            .expect("ascii");
        assert_eq!(request_id.len(), 32);
        let not_found = secrets
            .get(with_token(
                v1::GetRequest {
                    path: "nope".into(),
                    ..get
                },
                &fixture.token,
            ))
            .await
            .expect_err("missing");
        assert_eq!(not_found.code(), Code::NotFound);
        assert_eq!(reason::of(&not_found), Some(reason::NOT_FOUND));
    });
}

#[test]
fn bad_input_is_invalid_argument_naming_the_field() {
    let fixture = unsealed(&["--max-value-bytes", "1024", "--max-request-bytes", "65536"]);
    runtime().block_on(async {
        let channel = channel(&fixture.server).await;
        let mut secrets = SecretsClient::new(channel.clone());
        let ok_data = [("k", b"v".to_vec())];
        let long_path = "a/".repeat(256) + "b";
        let cases: Vec<(v1::PutRequest, Code, &str)> = vec![
            (
                put("", "p", &ok_data),
                Code::InvalidArgument,
                "invalid tenant: must not be empty",
            ),
            (
                put("Acme!", "p", &ok_data),
                Code::InvalidArgument,
                "invalid tenant",
            ),
            (
                put("acme", "", &ok_data),
                Code::InvalidArgument,
                "invalid path: must not be empty",
            ),
            (
                put("acme", "db/../etc", &ok_data),
                Code::InvalidArgument,
                "invalid path: segment 2 is '..'",
            ),
            (
                put("acme", "db//x", &ok_data),
                Code::InvalidArgument,
                "invalid path: segment 2 is empty",
            ),
            (
                put("acme", "db/\0x", &ok_data),
                Code::InvalidArgument,
                "invalid path: must not contain NUL or control characters",
            ),
            (
                put("acme", "db/\u{7}x", &ok_data),
                Code::InvalidArgument,
                "invalid path: must not contain NUL or control characters",
            ),
            (
                put("acme", &long_path, &ok_data),
                Code::InvalidArgument,
                "invalid path: longer than 512 bytes",
            ),
            (
                put("acme", "p", &[]),
                Code::InvalidArgument,
                "invalid data: a secret needs at least one field",
            ),
            (
                put("acme", "p", &[("", b"v".to_vec())]),
                Code::InvalidArgument,
                "invalid data: a field name is empty",
            ),
            (
                put("acme", "p", &[("big", vec![7; 2000])]),
                Code::InvalidArgument,
                "data[\"big\"] is 2000 bytes, over the limit of 1024 bytes",
            ),
            (
                put("acme", "p", &[("huge", vec![7; 100_000])]),
                Code::ResourceExhausted,
                "transport limit of 65536 bytes",
            ),
            (
                put("initech", "p", &ok_data),
                Code::NotFound,
                "tenant initech not found",
            ),
        ];
        for (request, code, message) in cases {
            let path = request.path.chars().take(20).collect::<String>();
            let status = secrets
                .put(with_token(request, &fixture.token))
                .await
                .expect_err("must fail");
            assert_eq!(status.code(), code, "{path:?}: {}", status.message());
            assert!(
                status.message().contains(message),
                "{path:?}: {:?} lacks {message:?}",
                status.message()
            );
        }
        let list = v1::ListRequest {
            tenant: "acme".into(),
            prefix: "a/../".into(),
            ..Default::default()
        };
        let status = secrets
            .list(with_token(list, &fixture.token))
            .await
            .expect_err("bad prefix");
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, "invalid prefix: segment 2 is '..'")
        );
        let list = v1::ListRequest {
            tenant: "acme".into(),
            page_token: "%%%".into(),
            ..Default::default()
        };
        let status = secrets
            .list(with_token(list, &fixture.token))
            .await
            .expect_err("bad token");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("page_token"));
        let mut tenants = TenantsClient::new(channel.clone());
        let status = tenants
            .create_tenant(with_token(
                v1::CreateTenantRequest {
                    name: "has space".into(),
                    ..Default::default()
                },
                &fixture.token,
            ))
            .await
            .expect_err("bad");
        assert_eq!(status.code(), Code::InvalidArgument);
        let mut system = SystemClient::new(channel);
        let status = system
            .unseal(v1::UnsealRequest {
                share: "bm90IGEgc2hhcmU=".into(),
                reset: false,
            })
            .await
            .expect_err("bad share");
        assert_eq!(
            (status.code(), status.message()),
            (
                Code::InvalidArgument,
                "invalid share: must decode to 33 bytes"
            )
        );
        // The server is still healthy after all of that.
        secrets
            .put(with_token(
                put("acme", "still/alive", &ok_data),
                &fixture.token,
            ))
            .await
            .expect("put");
    });
}

#[test]
fn sealed_vault_answers_failed_precondition() {
    let fixture = unsealed(&[]);
    fixture.server.cli(Some(&fixture.token), &["seal"]).ok();
    runtime().block_on(async {
        let mut secrets = SecretsClient::new(channel(&fixture.server).await);
        let status = secrets
            .get(with_token(
                v1::GetRequest {
                    tenant: "acme".into(),
                    path: "x".into(),
                    version: 0,
                },
                &fixture.token,
            ))
            .await
            .expect_err("sealed");
        assert_eq!(
            (status.code(), status.message()),
            (Code::FailedPrecondition, "vault is sealed")
        );
        let status = secrets
            .get(Request::new(v1::GetRequest::default()))
            .await
            .expect_err("no token");
        assert_eq!(status.code(), Code::Unauthenticated);
    });
}

#[test]
fn health_and_reflection_are_served() {
    let fixture = unsealed(&[]);
    runtime().block_on(async {
        let channel = channel(&fixture.server).await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        for service in [
            "",
            "vault.v1.Secrets",
            "vault.v1.System",
            "vault.v1.Tenants",
        ] {
            let response = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap_or_else(|e| panic!("health of {service:?}: {e}"));
            assert_eq!(
                response.into_inner().status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = stream
            .message()
            .await
            .expect("message")
            .expect("one response");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for expected in ["vault.v1.Secrets", "vault.v1.System", "vault.v1.Tenants"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    });
}

#[test]
fn non_loopback_plaintext_listen_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let output = std::process::Command::new(vault_tests::binary("vault-server"))
        .args(["--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run vault-server");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without TLS"),
        "{stderr}"
    );
}

/// Every non-OK status carries a stable reason, the vault's own and tonic's alike: a sealed
/// vault answers SEALED (what the CLI and the client library branch on), and a method the
/// server does not have answers UNIMPLEMENTED with the reason UNIMPLEMENTED.
#[test]
fn every_failed_call_carries_a_stable_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]);
    let (_shares, token) = init(&server, 1, 1);
    runtime().block_on(async {
        let get = v1::GetRequest {
            tenant: "acme".into(),
            path: "x".into(),
            version: 0,
        };
        let mut secrets = SecretsClient::new(channel(&server).await);
        let sealed = secrets
            .get(with_token(get.clone(), &token))
            .await
            .expect_err("sealed");
        assert_eq!(sealed.code(), Code::FailedPrecondition);
        assert_eq!(reason::of(&sealed), Some(reason::SEALED));

        let mut grpc = tonic::client::Grpc::new(channel(&server).await);
        grpc.ready().await.expect("ready");
        let unknown = grpc
            .unary::<v1::GetRequest, v1::GetResponse, _>(
                with_token(get, &token),
                http::uri::PathAndQuery::from_static("/vault.v1.Secrets/NoSuchMethod"),
                tonic_prost::ProstCodec::default(),
            )
            .await
            .expect_err("unknown method");
        assert_eq!(unknown.code(), Code::Unimplemented);
        assert_eq!(reason::of(&unknown), Some("UNIMPLEMENTED"));
    });
}
