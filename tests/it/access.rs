//! Access control end to end: policies from TOML, tenant tokens, denials that say nothing to
//! the client but name the check in the audit record, cascading revocation, login, and the
//! RPC table of the server (`vault_server::rpcs::RPCS`) walked for every capability.

use tonic::{Code, Status, transport::Channel};
use vault_proto::v1::{
    self, app_roles_client::AppRolesClient, audit_client::AuditClient,
    jwt_auth_client::JwtAuthClient, keys_client::KeysClient, mfa_client::MfaClient,
    policies_client::PoliciesClient, secrets_client::SecretsClient, system_client::SystemClient,
    tenants_client::TenantsClient, tokens_client::TokensClient, watch_client::WatchClient,
    webhooks_client::WebhooksClient,
};
use vault_server::rpcs::{Access, RPCS};
use vault_tests::{TestServer, init, run_cli_with, unseal, with_token};

const EXAMPLE_POLICY: &str = r#"
[[rule]]
path = "db/*"
capabilities = ["read", "list"]
[[rule]]
path = "db/admin/*"
capabilities = ["deny"]
"#;

fn ready(dir: &std::path::Path) -> (TestServer, String) {
    // Webhooks in the table post to a local port.
    let server = TestServer::start(dir, &["--webhook-allow-network", "127.0.0.1/32"]);
    let (shares, token) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    for tenant in ["acme", "globex"] {
        server.cli(Some(&token), &["tenant", "create", tenant]).ok();
    }
    (server, token)
}

#[test]
fn tenant_tokens_do_what_their_policies_allow_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"));
    let root = Some(root.as_str());
    let policy_file = dir.path().join("readers.toml");
    std::fs::write(&policy_file, EXAMPLE_POLICY).expect("write policy");
    server
        .cli(
            root,
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "readers",
                policy_file.to_str().expect("utf-8"),
            ],
        )
        .ok();
    assert_eq!(
        server
            .cli(root, &["policy", "list", "--tenant", "acme"])
            .ok()
            .trim(),
        "readers"
    );
    server
        .cli(
            root,
            &["put", "--tenant", "acme", "db/primary", "password=p1"],
        )
        .ok();
    server
        .cli(root, &["put", "--tenant", "acme", "db/admin/key", "k=v"])
        .ok();
    server
        .cli(
            root,
            &["put", "--tenant", "globex", "db/primary", "password=g1"],
        )
        .ok();

    let created = server
        .cli(
            root,
            &[
                "token", "create", "--tenant", "acme", "--policy", "readers", "--ttl", "2h",
                "--format", "json",
            ],
        )
        .json();
    let reader = created["token"].as_str().expect("token").to_owned();
    assert!(reader.starts_with("vt."));
    assert!(
        created["info"]["accessor"]
            .as_str()
            .is_some_and(|a| a.starts_with("va."))
    );
    let reader = Some(reader.as_str());

    assert_eq!(
        server
            .cli(
                reader,
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
    assert!(
        server
            .cli(reader, &["list", "--tenant", "acme", "db/"])
            .ok()
            .contains("primary")
    );
    for args in [
        &["put", "--tenant", "acme", "db/primary", "password=x"][..],
        &["get", "--tenant", "acme", "db/admin/key"],
        &["delete", "--tenant", "acme", "db/primary"],
        &["get", "--tenant", "globex", "db/primary"],
        &["get", "--tenant", "no-such-tenant", "db/primary"],
        &["tenant", "list"],
        &["rotate", "--tenant", "acme"],
        &["policy", "list", "--tenant", "acme"],
        &["audit", "query"],
    ] {
        let denied = server.cli(reader, args);
        assert_eq!(
            denied.failed().trim(),
            "vault-cli: error: permission denied",
            "{args:?}"
        );
    }
    // The audit record names the check that failed; the client never learned it.
    let denials = server
        .cli(
            root,
            &[
                "audit",
                "query",
                "--outcome",
                "denied",
                "--page-size",
                "100",
                "--format",
                "json",
            ],
        )
        .json();
    let details: Vec<&str> = denials["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["detail"].as_str())
        .collect();
    assert!(
        details
            .iter()
            .any(|d| d.contains("denies \"db/admin/key\"")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("no policy grants write on \"db/primary\"")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("token of another tenant used for tenant globex")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("needs the system scope")),
        "{details:?}"
    );

    let lookup = server
        .cli(reader, &["token", "lookup", "--format", "json"])
        .json();
    assert_eq!(
        (lookup["tenant"].as_str(), lookup["policies"][0].as_str()),
        (Some("acme"), Some("readers"))
    );
    let bad_policy = std::fs::write(
        &policy_file,
        "[[rule]]\npath = \"db/*/x\"\ncapabilities = [\"read\"]\n",
    );
    bad_policy.expect("write");
    let refused = server.cli(
        root,
        &[
            "policy",
            "write",
            "--tenant",
            "acme",
            "bad",
            policy_file.to_str().expect("utf-8"),
        ],
    );
    assert!(
        refused
            .failed()
            .contains("rule 1: path \"db/*/x\": '*' may only end the path"),
        "{}",
        refused.stderr
    );
}

#[test]
fn revoking_a_token_revokes_the_tokens_it_created_and_login_keeps_a_private_token_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"));
    let policy_file = dir.path().join("p.toml");
    std::fs::write(&policy_file, EXAMPLE_POLICY).expect("write policy");
    server
        .cli(
            Some(&root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "readers",
                policy_file.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let parent = server
        .cli(
            Some(&root),
            &[
                "token", "create", "--tenant", "acme", "--policy", "readers", "--format", "json",
            ],
        )
        .json();
    let parent_token = parent["token"].as_str().expect("token").to_owned();
    let child = server
        .cli(
            Some(&parent_token),
            &[
                "token", "create", "--tenant", "acme", "--policy", "readers", "--format", "json",
            ],
        )
        .json();
    let child_token = child["token"].as_str().expect("token").to_owned();
    // A child may not ask for more than its parent has.
    let wider = server.cli(
        Some(&parent_token),
        &["token", "create", "--tenant", "acme", "--policy", "admins"],
    );
    assert!(
        wider.failed().contains("permission denied"),
        "{}",
        wider.stderr
    );

    // login keeps the child token in ~/.vault-token, mode 0600, used when VAULT_TOKEN is unset.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let home_env = [("HOME", home.to_str().expect("utf-8"))];
    let addr = server.endpoint();
    run_cli_with(
        &addr,
        None,
        &["login"],
        Some(child_token.as_bytes()),
        &home_env,
    )
    .ok();
    let token_file = home.join(".vault-token");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&token_file)
                .expect("token file")
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    let whoami = run_cli_with(
        &addr,
        None,
        &["token", "lookup", "--format", "json"],
        None,
        &home_env,
    )
    .json();
    assert_eq!(whoami["accessor"], child["info"]["accessor"]);
    let overridden = run_cli_with(
        &addr,
        Some(&root),
        &["token", "lookup", "--format", "json"],
        None,
        &home_env,
    )
    .json();
    assert_eq!(overridden["system"], true);

    let revoked = server
        .cli(
            Some(&root),
            &[
                "token",
                "revoke",
                "--accessor",
                parent["info"]["accessor"].as_str().expect("accessor"),
                "--format",
                "json",
            ],
        )
        .json();
    assert_eq!(revoked["revoked"], 2);
    for token in [&parent_token, &child_token] {
        assert!(
            server
                .cli(Some(token), &["token", "lookup"])
                .failed()
                .contains("permission denied")
        );
    }
}

/// One row of the RPC table (`vault_server::rpcs::RPCS`) as these tests use it.
#[derive(Clone, Copy)]
struct Row {
    rpc: &'static str,
    /// The capability a tenant token needs; `None`: system scope only.
    needs: Option<&'static str>,
}

/// The server's RPC table, restricted to the RPCs a capability or the system scope decides
/// (the others carry their own credential or act on the caller's own token or entity, and have
/// tests of their own): a new RPC gets its row there, and these tests walk it.
fn table() -> Vec<Row> {
    RPCS.iter()
        .filter_map(|rpc| match rpc.access {
            Access::Capability(needs) => Some(Row {
                rpc: rpc.method,
                needs: Some(needs),
            }),
            Access::System => Some(Row {
                rpc: rpc.method,
                needs: None,
            }),
            Access::OwnToken | Access::OwnEntity | Access::NoToken => None,
        })
        .collect()
}

/// The rows of every RPC but the named keys' (those have a test of their own).
fn non_kms_rows() -> Vec<Row> {
    table()
        .into_iter()
        .filter(|row| !row.rpc.starts_with("Kms/"))
        .collect()
}

/// The named keys' rows, and two secrets rows: the key capabilities grant nothing on secrets,
/// even on `*`.
fn kms_rows() -> Vec<Row> {
    table()
        .into_iter()
        .filter(|row| {
            row.rpc.starts_with("Kms/") || ["Secrets/Get", "Secrets/Put"].contains(&row.rpc)
        })
        .collect()
}

/// The webhook the status, delete and replay calls act on (set by the seed).
static WEBHOOK_ID: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());

fn webhook_id() -> String {
    WEBHOOK_ID.lock().expect("lock").clone()
}

/// The KEK version the `Keys/RetireKeyVersion` call retires (set by its seed).
static RETIRE_VERSION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A JWKS file for the JWT configurations the table's calls write (the test-only RSA key).
fn jwks_file(dir: &std::path::Path) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let rsa = ring::signature::RsaKeyPair::from_pkcs8(include_bytes!(
        "../fixtures/jwt-test-rsa-2048.pk8"
    ))
    .expect("fixture");
    let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let jwks = serde_json::json!({"keys": [{"kty": "RSA", "kid": "k",
        "n": URL_SAFE_NO_PAD.encode(&public.n), "e": URL_SAFE_NO_PAD.encode(&public.e)}]});
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks.to_string()).expect("jwks");
    path.to_str().expect("utf-8").to_owned()
}

fn jwt_config(name: String, jwks: &str) -> v1::JwtConfig {
    v1::JwtConfig {
        name,
        issuer: "https://idp.example.test".into(),
        jwks_file: jwks.into(),
        audiences: vec!["vault".into()],
        tenant: "acme".into(),
        policies: vec!["only-read".into()],
        ..Default::default()
    }
}

fn role(name: String) -> v1::AppRole {
    v1::AppRole {
        name,
        policies: vec!["only-read".into()],
        ..Default::default()
    }
}

async fn call(
    channel: &Channel,
    rpc: &str,
    token: &str,
    seq: usize,
    jwks: &str,
) -> Result<(), Status> {
    let put = |path: &str| {
        let mut request = v1::PutRequest {
            tenant: "acme".into(),
            path: path.into(),
            ..Default::default()
        };
        request.data.insert("k".into(), b"v".to_vec());
        request
    };
    let scratch = format!("scratch-{seq}");
    match rpc {
        "Secrets/Get" => SecretsClient::new(channel.clone())
            .get(with_token(
                v1::GetRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                    version: 0,
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/List" => SecretsClient::new(channel.clone())
            .list(with_token(
                v1::ListRequest {
                    tenant: "acme".into(),
                    prefix: "db/".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/Put" => SecretsClient::new(channel.clone())
            .put(with_token(put("db/b"), token))
            .await
            .map(drop),
        "Secrets/Delete" => SecretsClient::new(channel.clone())
            .delete(with_token(
                v1::DeleteRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "System/Rotate" => SystemClient::new(channel.clone())
            .rotate(with_token(
                v1::RotateRequest {
                    tenant: "acme".into(),
                    all: false,
                },
                token,
            ))
            .await
            .map(drop),
        "System/Seal" => SystemClient::new(channel.clone())
            .seal(with_token(v1::SealRequest {}, token))
            .await
            .map(drop),
        "Keys/KeyStatus" => KeysClient::new(channel.clone())
            .key_status(with_token(
                v1::KeyStatusRequest {
                    tenant: "acme".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Keys/RetireKeyVersion" => KeysClient::new(channel.clone())
            .retire_key_version(with_token(
                v1::RetireKeyVersionRequest {
                    tenant: "acme".into(),
                    version: RETIRE_VERSION.load(std::sync::atomic::Ordering::SeqCst),
                },
                token,
            ))
            .await
            .map(drop),
        "System/RekeyInit" => SystemClient::new(channel.clone())
            .rekey_init(with_token(
                v1::RekeyInitRequest {
                    shares: 1,
                    threshold: 1,
                    rotate_root: false,
                    share_recipients: Vec::new(),
                },
                token,
            ))
            .await
            .map(drop),
        "System/ListAlerts" => SystemClient::new(channel.clone())
            .list_alerts(with_token(v1::ListAlertsRequest { limit: 10 }, token))
            .await
            .map(drop),
        "System/ClusterMembers" => SystemClient::new(channel.clone())
            .cluster_members(with_token(v1::ClusterMembersRequest {}, token))
            .await
            .map(drop),
        "System/StepDown" => SystemClient::new(channel.clone())
            .step_down(with_token(v1::StepDownRequest {}, token))
            .await
            .map(drop),
        "System/RekeyCancel" => SystemClient::new(channel.clone())
            .rekey_cancel(with_token(v1::RekeyCancelRequest {}, token))
            .await
            .map(drop),
        "Tenants/RestoreTenant" => TenantsClient::new(channel.clone())
            .restore_tenant(with_token(
                v1::RestoreTenantRequest {
                    name: format!("restorable-{seq}"),
                    id: String::new(),
                },
                token,
            ))
            .await
            .map(drop),
        "Tenants/ListDeletedTenants" => TenantsClient::new(channel.clone())
            .list_deleted_tenants(with_token(v1::ListDeletedTenantsRequest {}, token))
            .await
            .map(drop),
        "Policies/ListPolicies" => PoliciesClient::new(channel.clone())
            .list_policies(with_token(
                v1::ListPoliciesRequest {
                    tenant: "acme".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Policies/ReadPolicy" => PoliciesClient::new(channel.clone())
            .read_policy(with_token(
                v1::ReadPolicyRequest {
                    tenant: "acme".into(),
                    name: "only-read".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Policies/WritePolicy" => {
            let rules = vec![v1::PolicyRule {
                path: "x".into(),
                capabilities: vec!["read".into()],
            }];
            PoliciesClient::new(channel.clone())
                .write_policy(with_token(
                    v1::WritePolicyRequest {
                        tenant: "acme".into(),
                        name: scratch,
                        rules,
                        ..Default::default()
                    },
                    token,
                ))
                .await
                .map(drop)
        }
        "Policies/DeletePolicy" => PoliciesClient::new(channel.clone())
            .delete_policy(with_token(
                v1::DeletePolicyRequest {
                    tenant: "acme".into(),
                    name: format!("doomed-{seq}"),
                },
                token,
            ))
            .await
            .map(drop),
        "Tenants/ListTenants" => TenantsClient::new(channel.clone())
            .list_tenants(with_token(v1::ListTenantsRequest::default(), token))
            .await
            .map(drop),
        "Tenants/CreateTenant" => TenantsClient::new(channel.clone())
            .create_tenant(with_token(
                v1::CreateTenantRequest {
                    name: scratch,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Audit/Head" => AuditClient::new(channel.clone())
            .head(with_token(v1::AuditHeadRequest {}, token))
            .await
            .map(drop),
        "Audit/Query" => AuditClient::new(channel.clone())
            .query(with_token(v1::AuditQueryRequest::default(), token))
            .await
            .map(drop),
        "Audit/Export" => {
            let mut chunks = AuditClient::new(channel.clone())
                .export(with_token(v1::AuditExportRequest::default(), token))
                .await?
                .into_inner();
            chunks.message().await.map(drop)
        }
        "System/Backup" => {
            let mut chunks = SystemClient::new(channel.clone())
                .backup(with_token(v1::BackupRequest {}, token))
                .await?
                .into_inner();
            // The whole stream: one backup runs at a time.
            while chunks.message().await?.is_some() {}
            Ok(())
        }
        "Tenants/GetTenant" => TenantsClient::new(channel.clone())
            .get_tenant(with_token(
                v1::GetTenantRequest {
                    name: "acme".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Tenants/UpdateTenant" => TenantsClient::new(channel.clone())
            .update_tenant(with_token(
                v1::UpdateTenantRequest {
                    name: "acme".into(),
                    rate_limit: Some(0),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Tenants/DeleteTenant" => TenantsClient::new(channel.clone())
            .delete_tenant(with_token(
                v1::DeleteTenantRequest {
                    name: format!("gone-{seq}"),
                },
                token,
            ))
            .await
            .map(drop),
        "AppRoles/WriteRole" => AppRolesClient::new(channel.clone())
            .write_role(with_token(
                v1::WriteRoleRequest {
                    tenant: "acme".into(),
                    role: Some(role(scratch)),
                },
                token,
            ))
            .await
            .map(drop),
        "AppRoles/ReadRole" => AppRolesClient::new(channel.clone())
            .read_role(with_token(
                v1::ReadRoleRequest {
                    tenant: "acme".into(),
                    name: "seeded".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "AppRoles/DeleteRole" => AppRolesClient::new(channel.clone())
            .delete_role(with_token(
                v1::DeleteRoleRequest {
                    tenant: "acme".into(),
                    name: format!("doomed-{seq}"),
                },
                token,
            ))
            .await
            .map(drop),
        "AppRoles/GenerateSecretId" => AppRolesClient::new(channel.clone())
            .generate_secret_id(with_token(
                v1::GenerateSecretIdRequest {
                    tenant: "acme".into(),
                    role: "seeded".into(),
                    cidrs: Vec::new(),
                },
                token,
            ))
            .await
            .map(drop),
        "JwtAuth/WriteJwtConfig" => JwtAuthClient::new(channel.clone())
            .write_jwt_config(with_token(
                v1::WriteJwtConfigRequest {
                    config: Some(jwt_config(scratch, jwks)),
                },
                token,
            ))
            .await
            .map(drop),
        "JwtAuth/ReadJwtConfig" => JwtAuthClient::new(channel.clone())
            .read_jwt_config(with_token(
                v1::ReadJwtConfigRequest {
                    name: "seeded".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "JwtAuth/DeleteJwtConfig" => JwtAuthClient::new(channel.clone())
            .delete_jwt_config(with_token(
                v1::DeleteJwtConfigRequest {
                    name: format!("doomed-{seq}"),
                },
                token,
            ))
            .await
            .map(drop),
        "Mfa/SetSystemMfa" => MfaClient::new(channel.clone())
            .set_system_mfa(with_token(v1::SetSystemMfaRequest::default(), token))
            .await
            .map(drop),
        "Mfa/GetSystemMfa" => MfaClient::new(channel.clone())
            .get_system_mfa(with_token(v1::GetSystemMfaRequest {}, token))
            .await
            .map(drop),
        "Mfa/ResetMfa" => MfaClient::new(channel.clone())
            .reset_mfa(with_token(
                v1::ResetMfaRequest {
                    entity: "root".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/Undelete" => SecretsClient::new(channel.clone())
            .undelete(with_token(
                v1::UndeleteRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                    versions: vec![1],
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/Destroy" => SecretsClient::new(channel.clone())
            .destroy(with_token(
                v1::DestroyRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                    versions: vec![1],
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/DeleteMetadata" => SecretsClient::new(channel.clone())
            .delete_metadata(with_token(
                v1::DeleteMetadataRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/Patch" => {
            let mut patch = v1::PatchRequest {
                tenant: "acme".into(),
                path: "db/a".into(),
                ..Default::default()
            };
            patch.data.insert("k2".into(), b"v2".to_vec());
            SecretsClient::new(channel.clone())
                .patch(with_token(patch, token))
                .await
                .map(drop)
        }
        "Secrets/ReadMetadata" => SecretsClient::new(channel.clone())
            .read_metadata(with_token(
                v1::ReadMetadataRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/UpdateMetadata" => SecretsClient::new(channel.clone())
            .update_metadata(with_token(
                v1::UpdateMetadataRequest {
                    tenant: "acme".into(),
                    path: "db/a".into(),
                    custom: [("owner".to_owned(), "team".to_owned())].into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Watch/Watch" => WatchClient::new(channel.clone())
            .watch(with_token(
                v1::WatchRequest {
                    tenant: "acme".into(),
                    prefix: "db/".into(),
                    from_now: true,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Webhooks/CreateWebhook" => WebhooksClient::new(channel.clone())
            .create_webhook(with_token(
                v1::CreateWebhookRequest {
                    tenant: "acme".into(),
                    url: "http://127.0.0.1:9/table".into(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Webhooks/ListWebhooks" => WebhooksClient::new(channel.clone())
            .list_webhooks(with_token(
                v1::ListWebhooksRequest {
                    tenant: "acme".into(),
                },
                token,
            ))
            .await
            .map(drop),
        "Webhooks/WebhookStatus" => WebhooksClient::new(channel.clone())
            .webhook_status(with_token(
                v1::WebhookStatusRequest {
                    tenant: "acme".into(),
                    id: webhook_id(),
                },
                token,
            ))
            .await
            .map(drop),
        "Webhooks/DeleteWebhook" => WebhooksClient::new(channel.clone())
            .delete_webhook(with_token(
                v1::DeleteWebhookRequest {
                    tenant: "acme".into(),
                    id: webhook_id(),
                },
                token,
            ))
            .await
            .map(drop),
        "Webhooks/ReplayWebhook" => WebhooksClient::new(channel.clone())
            .replay_webhook(with_token(
                v1::ReplayWebhookRequest {
                    tenant: "acme".into(),
                    id: webhook_id(),
                    revision: 0,
                },
                token,
            ))
            .await
            .map(drop),
        other => panic!("no call for {other}"),
    }
}

/// What the calls act on, made fresh by root before each one: the secret that reads and
/// deletes use, and the policy a delete removes.
async fn seed(channel: &Channel, root: &str, seq: usize, jwks: &str, rpc: &str) {
    let mut system = SystemClient::new(channel.clone());
    // A rekey in progress for the call that cancels one, none for the others.
    let _ = system
        .rekey_cancel(with_token(v1::RekeyCancelRequest {}, root))
        .await;
    if rpc == "System/RekeyCancel" {
        system
            .rekey_init(with_token(
                v1::RekeyInitRequest {
                    shares: 1,
                    threshold: 1,
                    rotate_root: false,
                    share_recipients: Vec::new(),
                },
                root,
            ))
            .await
            .expect("seed rekey");
    }
    if rpc == "Keys/RetireKeyVersion" {
        let rotate = || v1::RotateRequest {
            tenant: "acme".into(),
            all: false,
        };
        system
            .rotate(with_token(rotate(), root))
            .await
            .expect("seed rotation");
        let newest = system
            .rotate(with_token(rotate(), root))
            .await
            .expect("seed rotation")
            .into_inner()
            .key_version;
        RETIRE_VERSION.store(newest - 1, std::sync::atomic::Ordering::SeqCst);
    }
    if rpc.starts_with("Webhooks/") {
        let created = WebhooksClient::new(channel.clone())
            .create_webhook(with_token(
                v1::CreateWebhookRequest {
                    tenant: "acme".into(),
                    url: "http://127.0.0.1:9/seed".into(),
                    ..Default::default()
                },
                root,
            ))
            .await
            .expect("seed webhook")
            .into_inner();
        *WEBHOOK_ID.lock().expect("lock") = created.webhook.map(|w| w.id).unwrap_or_default();
    }
    let mut tenants = TenantsClient::new(channel.clone());
    let restorable = format!("restorable-{seq}");
    tenants
        .create_tenant(with_token(
            v1::CreateTenantRequest {
                name: restorable.clone(),
                ..Default::default()
            },
            root,
        ))
        .await
        .expect("seed restorable tenant");
    tenants
        .delete_tenant(with_token(
            v1::DeleteTenantRequest { name: restorable },
            root,
        ))
        .await
        .expect("seed deleted tenant");
    let mut put = v1::PutRequest {
        tenant: "acme".into(),
        path: "db/a".into(),
        ..Default::default()
    };
    put.data.insert("k".into(), b"v".to_vec());
    SecretsClient::new(channel.clone())
        .put(with_token(put, root))
        .await
        .expect("seed secret");
    let rules = vec![v1::PolicyRule {
        path: "x".into(),
        capabilities: vec!["read".into()],
    }];
    let request = v1::WritePolicyRequest {
        tenant: "acme".into(),
        name: format!("doomed-{seq}"),
        rules,
        ..Default::default()
    };
    PoliciesClient::new(channel.clone())
        .write_policy(with_token(request, root))
        .await
        .expect("seed policy");
    TenantsClient::new(channel.clone())
        .create_tenant(with_token(
            v1::CreateTenantRequest {
                name: format!("gone-{seq}"),
                ..Default::default()
            },
            root,
        ))
        .await
        .expect("seed tenant");
    for name in ["seeded".to_owned(), format!("doomed-{seq}")] {
        AppRolesClient::new(channel.clone())
            .write_role(with_token(
                v1::WriteRoleRequest {
                    tenant: "acme".into(),
                    role: Some(role(name.clone())),
                },
                root,
            ))
            .await
            .expect("seed role");
        JwtAuthClient::new(channel.clone())
            .write_jwt_config(with_token(
                v1::WriteJwtConfigRequest {
                    config: Some(jwt_config(name, jwks)),
                },
                root,
            ))
            .await
            .expect("seed jwt config");
    }
    // Root's entity is enrolled, so that resetting it has something to reset.
    MfaClient::new(channel.clone())
        .enroll_totp(with_token(v1::EnrollTotpRequest::default(), root))
        .await
        .map(drop)
        .or_else(|status| {
            // Enrolled already: re-enrolling needs a code, and an enrolment is all we need.
            (status.code() == Code::PermissionDenied)
                .then_some(())
                .ok_or(status)
        })
        .expect("seed mfa enrolment");
}

#[test]
fn every_rpc_is_denied_without_its_capability_and_allowed_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"));
    let jwks = jwks_file(dir.path());
    let capabilities = ["read", "list", "write", "delete", "rotate", "admin"];
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let channel = Channel::from_shared(server.endpoint())
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            let holders = capability_holders(&channel, &root, &capabilities).await;
            let mut seq = 0;
            for row in non_kms_rows().iter().filter(|row| row.rpc != "System/Seal") {
                for (capability, token) in &holders {
                    seq += 1;
                    seed(&channel, &root, seq, &jwks, row.rpc).await;
                    let result = call(&channel, row.rpc, token, seq, &jwks).await;
                    let allowed = row.needs == Some(*capability);
                    match (&result, allowed) {
                        (Ok(()), true) => {}
                        (Err(status), false) if status.code() == Code::PermissionDenied => {}
                        _ => panic!(
                            "{} with only {capability}: expected {}, got {result:?}",
                            row.rpc,
                            if allowed {
                                "allowed"
                            } else {
                                "PERMISSION_DENIED"
                            }
                        ),
                    }
                }
                seq += 1;
                seed(&channel, &root, seq, &jwks, row.rpc).await;
                let result = call(&channel, row.rpc, &root, seq, &jwks).await;
                assert!(
                    result.is_ok(),
                    "{} must be allowed for root: {result:?}",
                    row.rpc
                );
            }
            // Seal last: denied to every tenant token, allowed to root.
            for (capability, token) in &holders {
                let status = call(&channel, "System/Seal", token, 0, &jwks)
                    .await
                    .expect_err("seal denied");
                assert_eq!(
                    status.code(),
                    Code::PermissionDenied,
                    "seal with only {capability}"
                );
            }
            call(&channel, "System/Seal", &root, 0, &jwks)
                .await
                .expect("root seals");
        });
}

#[test]
fn a_token_bound_to_a_network_that_excludes_loopback_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"));
    let policy_file = dir.path().join("p.toml");
    std::fs::write(&policy_file, EXAMPLE_POLICY).expect("write policy");
    server
        .cli(
            Some(&root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "readers",
                policy_file.to_str().expect("utf-8"),
            ],
        )
        .ok();
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "db/primary", "password=p"],
        )
        .ok();
    let token_for = |cidr: &str| {
        let created = server
            .cli(
                Some(&root),
                &[
                    "token", "create", "--tenant", "acme", "--policy", "readers", "--cidr", cidr,
                    "--format", "json",
                ],
            )
            .json();
        assert_eq!(created["info"]["cidrs"][0], cidr);
        created["token"].as_str().expect("token").to_owned()
    };
    let elsewhere = token_for("10.0.0.0/8");
    let refused = server.cli(Some(&elsewhere), &["get", "--tenant", "acme", "db/primary"]);
    assert_eq!(
        refused.failed().trim(),
        "vault-cli: error: permission denied"
    );
    let local = token_for("127.0.0.0/8");
    assert_eq!(
        server
            .cli(
                Some(&local),
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
        "p"
    );
    let bad = server.cli(
        Some(&root),
        &[
            "token",
            "create",
            "--tenant",
            "acme",
            "--policy",
            "readers",
            "--cidr",
            "10.0.0.0/99",
        ],
    );
    assert!(bad.failed().contains("invalid cidr"), "{}", bad.stderr);
}

/// One acme token per capability, each with a policy granting only that capability on `*`.
async fn capability_holders<'a>(
    channel: &Channel,
    root: &str,
    capabilities: &[&'a str],
) -> Vec<(&'a str, String)> {
    let mut holders = Vec::new();
    for capability in capabilities {
        let name = format!("only-{capability}");
        PoliciesClient::new(channel.clone())
            .write_policy(with_token(
                v1::WritePolicyRequest {
                    tenant: "acme".into(),
                    name: name.clone(),
                    rules: vec![v1::PolicyRule {
                        path: "*".into(),
                        capabilities: vec![(*capability).into()],
                    }],
                    ..Default::default()
                },
                root,
            ))
            .await
            .expect("policy");
        let created = TokensClient::new(channel.clone())
            .create_token(with_token(
                v1::CreateTokenRequest {
                    tenant: "acme".into(),
                    policies: vec![name],
                    ..Default::default()
                },
                root,
            ))
            .await
            .expect("token")
            .into_inner();
        holders.push((*capability, created.token));
    }
    holders
}

/// What the KMS calls act on: a ciphertext, a signature and a MAC made by root.
struct Made {
    ciphertext: String,
    signature: String,
    hmac: String,
}

fn named(tenant: &str, name: &str) -> (String, String) {
    (tenant.to_owned(), name.to_owned())
}

async fn kms_call(
    channel: &Channel,
    rpc: &str,
    token: &str,
    seq: usize,
    made: &Made,
) -> Result<(), Status> {
    use vault_proto::v1::kms_client::KmsClient;
    let mut kms = KmsClient::new(channel.clone());
    let (tenant, enc) = named("acme", "enc");
    let doomed = format!("doomed-{seq}");
    match rpc {
        "Kms/CreateKey" => kms
            .create_key(with_token(
                v1::CreateKeyRequest {
                    tenant,
                    name: format!("new-{seq}"),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/ReadKey" => kms
            .read_key(with_token(v1::ReadKeyRequest { tenant, name: enc }, token))
            .await
            .map(drop),
        "Kms/ListKeys" => kms
            .list_keys(with_token(
                v1::ListKeysRequest {
                    tenant,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/UpdateKey" => kms
            .update_key(with_token(
                v1::UpdateKeyRequest {
                    tenant,
                    name: enc,
                    deletion_allowed: Some(true),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/RotateKey" => kms
            .rotate_key(with_token(
                v1::RotateKeyRequest { tenant, name: enc },
                token,
            ))
            .await
            .map(drop),
        "Kms/TrimKey" => kms
            .trim_key(with_token(
                v1::TrimKeyRequest {
                    tenant,
                    name: enc,
                    min_available_version: 1,
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/DeleteKey" => kms
            .delete_key(with_token(
                v1::DeleteKeyRequest {
                    tenant,
                    name: doomed,
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/CancelKeyDeletion" => kms
            .cancel_key_deletion(with_token(
                v1::CancelKeyDeletionRequest {
                    tenant,
                    name: doomed,
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/ExportKey" => kms
            .export_key(with_token(
                v1::ExportKeyRequest { tenant, name: enc },
                token,
            ))
            .await
            .map(drop),
        "Kms/Encrypt" => kms
            .encrypt(with_token(
                v1::EncryptRequest {
                    tenant,
                    key: enc,
                    plaintext: b"p".to_vec(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/BatchEncrypt" => kms
            .batch_encrypt(with_token(
                v1::BatchEncryptRequest {
                    tenant,
                    key: enc,
                    items: vec![v1::EncryptItem::default()],
                    key_version: 0,
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/Decrypt" => kms
            .decrypt(with_token(
                v1::DecryptRequest {
                    tenant,
                    key: enc,
                    ciphertext: made.ciphertext.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/BatchDecrypt" => kms
            .batch_decrypt(with_token(
                v1::BatchDecryptRequest {
                    tenant,
                    key: enc,
                    items: vec![v1::DecryptItem {
                        ciphertext: made.ciphertext.clone(),
                        ..Default::default()
                    }],
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/Rewrap" => kms
            .rewrap(with_token(
                v1::RewrapRequest {
                    tenant,
                    key: enc,
                    ciphertext: made.ciphertext.clone(),
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/GenerateDataKey" => kms
            .generate_data_key(with_token(
                v1::GenerateDataKeyRequest {
                    tenant,
                    key: enc,
                    ..Default::default()
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/Sign" => kms
            .sign(with_token(
                v1::SignRequest {
                    tenant,
                    key: "sig".into(),
                    message: b"m".to_vec(),
                    key_version: 0,
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/Verify" => kms
            .verify(with_token(
                v1::VerifyRequest {
                    tenant,
                    key: "sig".into(),
                    message: b"m".to_vec(),
                    signature: made.signature.clone(),
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/Hmac" => kms
            .hmac(with_token(
                v1::HmacRequest {
                    tenant,
                    key: "mac".into(),
                    message: b"m".to_vec(),
                    key_version: 0,
                },
                token,
            ))
            .await
            .map(drop),
        "Kms/VerifyHmac" => kms
            .verify_hmac(with_token(
                v1::VerifyHmacRequest {
                    tenant,
                    key: "mac".into(),
                    message: b"m".to_vec(),
                    hmac: made.hmac.clone(),
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/Get" => SecretsClient::new(channel.clone())
            .get(with_token(
                v1::GetRequest {
                    tenant,
                    path: "db/a".into(),
                    version: 0,
                },
                token,
            ))
            .await
            .map(drop),
        "Secrets/Put" => {
            let mut put = v1::PutRequest {
                tenant,
                path: "db/a".into(),
                ..Default::default()
            };
            put.data.insert("k".into(), b"v".to_vec());
            SecretsClient::new(channel.clone())
                .put(with_token(put, token))
                .await
                .map(drop)
        }
        other => panic!("no call for {other}"),
    }
}

/// A deletable key `doomed-<seq>` for the delete and cancel calls (scheduled for deletion for
/// the cancel call).
async fn kms_seed(channel: &Channel, root: &str, seq: usize, rpc: &str) {
    use vault_proto::v1::kms_client::KmsClient;
    let mut kms = KmsClient::new(channel.clone());
    if rpc == "Kms/DeleteKey" || rpc == "Kms/CancelKeyDeletion" {
        kms.create_key(with_token(
            v1::CreateKeyRequest {
                tenant: "acme".into(),
                name: format!("doomed-{seq}"),
                deletion_allowed: true,
                ..Default::default()
            },
            root,
        ))
        .await
        .expect("seed key");
    }
    if rpc == "Kms/CancelKeyDeletion" {
        kms.delete_key(with_token(
            v1::DeleteKeyRequest {
                tenant: "acme".into(),
                name: format!("doomed-{seq}"),
            },
            root,
        ))
        .await
        .expect("seed deletion");
    }
}

#[test]
fn every_named_key_rpc_needs_its_capability_on_the_key_path() {
    use vault_proto::v1::kms_client::KmsClient;
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &["--kms-allow-exportable-keys"]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "db/a", "k=v"])
        .ok();
    let capabilities = [
        "read", "list", "write", "delete", "rotate", "admin", "encrypt", "decrypt", "sign",
        "verify", "rewrap", "datakey",
    ];
    vault_tests::runtime().block_on(async {
        let channel = vault_tests::channel(&server).await;
        let mut kms = KmsClient::new(channel.clone());
        for (name, key_type) in [("enc", ""), ("sig", "ed25519"), ("mac", "hmac-sha256")] {
            kms.create_key(with_token(
                v1::CreateKeyRequest {
                    tenant: "acme".into(),
                    name: name.into(),
                    r#type: key_type.into(),
                    exportable: true,
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect("key");
        }
        let made = Made {
            ciphertext: kms
                .encrypt(with_token(
                    v1::EncryptRequest {
                        tenant: "acme".into(),
                        key: "enc".into(),
                        plaintext: b"p".to_vec(),
                        ..Default::default()
                    },
                    &root,
                ))
                .await
                .expect("encrypt")
                .into_inner()
                .ciphertext,
            signature: kms
                .sign(with_token(
                    v1::SignRequest {
                        tenant: "acme".into(),
                        key: "sig".into(),
                        message: b"m".to_vec(),
                        key_version: 0,
                    },
                    &root,
                ))
                .await
                .expect("sign")
                .into_inner()
                .signature,
            hmac: kms
                .hmac(with_token(
                    v1::HmacRequest {
                        tenant: "acme".into(),
                        key: "mac".into(),
                        message: b"m".to_vec(),
                        key_version: 0,
                    },
                    &root,
                ))
                .await
                .expect("hmac")
                .into_inner()
                .hmac,
        };
        let holders = capability_holders(&channel, &root, &capabilities).await;
        let mut seq = 0;
        for row in kms_rows() {
            for (capability, token) in holders
                .iter()
                .map(|(c, t)| (*c, t.as_str()))
                .chain([("root", root.as_str())])
            {
                seq += 1;
                kms_seed(&channel, &root, seq, row.rpc).await;
                let result = kms_call(&channel, row.rpc, token, seq, &made).await;
                let allowed = capability == "root" || row.needs == Some(capability);
                match (&result, allowed) {
                    (Ok(()), true) => {}
                    (Err(status), false) if status.code() == Code::PermissionDenied => {}
                    _ => panic!(
                        "{} with {capability}: allowed {allowed}, got {result:?}",
                        row.rpc
                    ),
                }
            }
        }
    });
}
