//! Machine logins (AppRole, JWT), refresh tokens and MFA, end to end against the real server.
//! JWTs are signed here with ring (the RSA key is the test-only fixture); TOTP codes come from
//! vault-core's RFC 6238 code.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    hmac,
    rand::SystemRandom,
    rsa::PublicKeyComponents,
    signature::{self, EcdsaKeyPair, RsaKeyPair},
};
use serde_json::{Value, json};
use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use vault_core::totp::{self, TotpSecret};
use vault_proto::v1::{
    self, login_client::LoginClient, mfa_client::MfaClient, secrets_client::SecretsClient,
    system_client::SystemClient, tenants_client::TenantsClient, tokens_client::TokensClient,
};
use vault_tests::{TestServer, audit_records, channel, init, runtime, unseal, with_token};
use zeroize::Zeroizing;

const RSA_PKCS8: &[u8] = include_bytes!("../fixtures/jwt-test-rsa-2048.pk8");
pub(crate) const ISSUER: &str = "https://idp.example.test";

const READER_POLICY: &str = "[[rule]]\npath = \"db/*\"\ncapabilities = [\"read\", \"list\"]\n";

/// A server with tenants acme and globex, a `reader` policy in acme and a secret db/a in it.
fn ready(dir: &std::path::Path, extra: &[&str]) -> (TestServer, String) {
    let server = TestServer::start(&dir.join("data"), extra);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    let policy = dir.join("reader.toml");
    std::fs::write(&policy, READER_POLICY).expect("policy");
    for tenant in ["acme", "globex"] {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
    }
    server
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
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "db/a", "k=v"])
        .ok();
    (server, root)
}

pub(crate) fn with_mfa<T>(message: T, token: &str, code: &str) -> Request<T> {
    let mut request = with_token(message, token);
    request
        .metadata_mut()
        .insert("x-vault-mfa", MetadataValue::try_from(code).expect("ascii"));
    request
}

async fn read_db_a(channel: &Channel, token: &str) -> Result<(), Status> {
    SecretsClient::new(channel.clone())
        .get(with_token(
            v1::GetRequest {
                tenant: "acme".into(),
                path: "db/a".into(),
                version: 0,
            },
            token,
        ))
        .await
        .map(drop)
}

/// The audit details of every call to `method` so far.
fn details(server: &TestServer, method: &str) -> Vec<String> {
    audit_records(&server.audit_dir())
        .into_iter()
        .filter(|r| r["method"] == method && r["kind"] != "intent")
        .map(|r| r["detail"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn approle_login_spends_secret_ids_and_checks_role_id_and_networks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let role = server
        .cli(
            Some(&root),
            &[
                "approle",
                "write",
                "--tenant",
                "acme",
                "app",
                "--policy",
                "reader",
                "--secret-id-uses",
                "1",
                "--refresh-max-ttl",
                "2h",
                "--format",
                "json",
            ],
        )
        .json();
    let role_id = role["role_id"].as_str().expect("role id").to_owned();
    assert!(role_id.starts_with("role-"), "{role}");
    let issued = server
        .cli(
            Some(&root),
            &[
                "approle",
                "secret-id",
                "--tenant",
                "acme",
                "app",
                "--format",
                "json",
            ],
        )
        .json();
    let secret_id = issued["secret_id"].as_str().expect("secret id").to_owned();
    assert!(secret_id.starts_with("vs."));
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, &secret_id).expect("write");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let login_args = [
        "login",
        "--method",
        "approle",
        "--tenant",
        "acme",
        "--role-id",
        &role_id,
        "--secret-id-file",
        secret_file.to_str().expect("utf-8"),
    ];
    let env = [("HOME", home.to_str().expect("utf-8"))];
    server.cli_with_env(None, &login_args, &env).ok();
    let token = std::fs::read_to_string(home.join(".vault-token")).expect("token file");
    assert!(home.join(".vault-refresh-token").exists());
    let looked = server
        .cli(Some(&token), &["token", "lookup", "--format", "json"])
        .json();
    assert_eq!(
        looked["entity"],
        format!("approle:{}:app", role_tenant_id(&server, &root))
    );
    assert_eq!(looked["policies"], json!(["reader"]));
    server
        .cli(
            Some(&token),
            &["get", "--tenant", "acme", "db/a", "--field", "k"],
        )
        .ok();
    // The secret id had one use.
    let again = server.cli_with_env(None, &login_args, &env);
    assert!(
        again.failed().contains("login failed"),
        "{}",
        again.failed()
    );
    // A wrong role id with a fresh secret id fails the same way.
    let fresh = server
        .cli(
            Some(&root),
            &[
                "approle",
                "secret-id",
                "--tenant",
                "acme",
                "app",
                "--format",
                "json",
            ],
        )
        .json()["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    std::fs::write(&secret_file, &fresh).expect("write");
    let mut wrong = login_args;
    wrong[6] = "role-0000";
    assert!(
        server
            .cli_with_env(None, &wrong, &env)
            .failed()
            .contains("login failed")
    );
    // A role bound to a network that excludes loopback refuses the login.
    server
        .cli(
            Some(&root),
            &[
                "approle",
                "write",
                "--tenant",
                "acme",
                "app",
                "--policy",
                "reader",
                "--bound-cidr",
                "10.0.0.0/8",
            ],
        )
        .ok();
    assert!(
        server
            .cli_with_env(None, &login_args, &env)
            .failed()
            .contains("login failed")
    );
    let details = details(&server, "/vault.v1.Login/LoginAppRole");
    assert!(
        details.iter().any(|d| d.contains("unknown secret id")),
        "{details:?}"
    );
    assert!(
        details.iter().any(|d| d.contains("unknown role id")),
        "{details:?}"
    );
    assert!(
        details
            .iter()
            .any(|d| d.contains("outside the bound networks")),
        "{details:?}"
    );
    // Nothing in the audit log carries the secret id or a token.
    let log = audit_records(&server.audit_dir())
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    assert!(!log.contains(&secret_id) && !log.contains(&fresh) && !log.contains(&token));
}

/// A token of an AppRole login to acme with `policy` (role `app-<policy>`).
fn approle_token(server: &TestServer, root: &str, dir: &std::path::Path, policy: &str) -> String {
    let role = format!("app-{policy}");
    let role_id = server
        .cli(
            Some(root),
            &[
                "approle", "write", "--tenant", "acme", &role, "--policy", policy, "--format",
                "json",
            ],
        )
        .json()["role_id"]
        .as_str()
        .expect("role id")
        .to_owned();
    let secret_id = server
        .cli(
            Some(root),
            &[
                "approle",
                "secret-id",
                "--tenant",
                "acme",
                &role,
                "--format",
                "json",
            ],
        )
        .json()["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    let secret_file = dir.join(format!("secret-id-{policy}"));
    std::fs::write(&secret_file, &secret_id).expect("write");
    let home = dir.join(format!("home-{policy}"));
    std::fs::create_dir_all(&home).expect("home");
    server
        .cli_with_env(
            None,
            &[
                "login",
                "--method",
                "approle",
                "--tenant",
                "acme",
                "--role-id",
                &role_id,
                "--secret-id-file",
                secret_file.to_str().expect("utf-8"),
            ],
            &[("HOME", home.to_str().expect("utf-8"))],
        )
        .ok();
    std::fs::read_to_string(home.join(".vault-token"))
        .expect("token file")
        .trim()
        .to_owned()
}

fn role_tenant_id(server: &TestServer, root: &str) -> String {
    server
        .cli(Some(root), &["tenant", "show", "acme", "--format", "json"])
        .json()["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

#[test]
fn refresh_rotates_both_tokens_and_a_reused_refresh_token_revokes_the_family() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    runtime().block_on(async {
        let channel = channel(&server).await;
        let created = TokensClient::new(channel.clone())
            .create_token(with_token(
                v1::CreateTokenRequest {
                    tenant: "acme".into(),
                    policies: vec!["reader".into()],
                    refresh_max_ttl_seconds: 3600,
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect("create")
            .into_inner();
        assert!(created.refresh_token.starts_with("vr."));
        let family = created.info.clone().expect("info").family;
        assert!(!family.is_empty());
        let mut login = LoginClient::new(channel.clone());
        let refresh = |token: &str| v1::RefreshRequest {
            refresh_token: token.to_owned(),
        };
        let second = login
            .refresh(refresh(&created.refresh_token))
            .await
            .expect("refresh")
            .into_inner();
        assert_ne!(second.token, created.token);
        assert_ne!(second.refresh_token, created.refresh_token);
        assert_eq!(second.info.clone().expect("info").family, family);
        read_db_a(&channel, &second.token)
            .await
            .expect("new token works");
        assert_eq!(
            read_db_a(&channel, &created.token)
                .await
                .expect_err("old")
                .code(),
            Code::PermissionDenied
        );
        // The same refresh token again at once: a retry inside the grace window gets a new
        // pair, and the pair it never saw is revoked.
        let retried = login
            .refresh(refresh(&created.refresh_token))
            .await
            .expect("retry within grace")
            .into_inner();
        read_db_a(&channel, &retried.token)
            .await
            .expect("retried works");
        assert!(read_db_a(&channel, &second.token).await.is_err());
        // The lost pair's refresh token is now stale: presenting it is theft. The whole family
        // goes, including the pair in use.
        let stolen = login
            .refresh(refresh(&second.refresh_token))
            .await
            .expect_err("reuse");
        assert_eq!(stolen.code(), Code::Unauthenticated);
        assert!(read_db_a(&channel, &retried.token).await.is_err());
        assert_eq!(
            login
                .refresh(refresh(&retried.refresh_token))
                .await
                .expect_err("family revoked")
                .code(),
            Code::Unauthenticated
        );
        // Garbage and access tokens are not refresh tokens.
        for bogus in ["", "vr.nope", created.token.as_str()] {
            assert_eq!(
                login
                    .refresh(refresh(bogus))
                    .await
                    .expect_err("bogus")
                    .code(),
                Code::Unauthenticated,
                "{bogus:?}"
            );
        }
    });
    let details = details(&server, "/vault.v1.Login/Refresh");
    assert!(
        details
            .iter()
            .any(|d| d.contains("reused") && d.contains("revoked")),
        "{details:?}"
    );
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) fn sign_rs256(key: &RsaKeyPair, header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signature = vec![0; key.public().modulus_len()];
    key.sign(
        &signature::RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    format!("{input}.{}", b64(&signature))
}

/// The test RSA key, and a JWKS file (key id k1) in `dir` that publishes its public half.
pub(crate) fn jwks(dir: &std::path::Path) -> (RsaKeyPair, std::path::PathBuf) {
    let rsa = RsaKeyPair::from_pkcs8(RSA_PKCS8).expect("rsa fixture");
    let public = PublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let jwks = json!({"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": "k1",
        "n": b64(&public.n), "e": b64(&public.e)}]});
    let jwks_file = dir.join("jwks.json");
    std::fs::write(&jwks_file, jwks.to_string()).expect("jwks");
    (rsa, jwks_file)
}

pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[test]
fn jwt_login_checks_signature_issuer_audience_expiry_and_algorithm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let (rsa, jwks_file) = jwks(dir.path());
    let public = PublicKeyComponents::<Vec<u8>>::from(rsa.public());
    let jwks = std::fs::read_to_string(&jwks_file).expect("jwks");
    let config = dir.path().join("corp.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"{ISSUER}\"\njwks_file = \"{}\"\naudiences = [\"vault\"]\ntenant_claim = \"tenant\"\n\
             token_ttl = \"15m\"\n[[policy_map]]\nclaim = \"groups\"\nvalue = \"dba\"\npolicies = [\"reader\"]\n",
            jwks_file.display()
        ),
    )
    .expect("config");
    server
        .cli(
            Some(&root),
            &["jwt", "write", "corp", config.to_str().expect("utf-8")],
        )
        .ok();
    let header = json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let claims = |overrides: Value| {
        let mut claims = json!({"iss": ISSUER, "aud": "vault", "sub": "alice", "tenant": "acme",
            "groups": ["dba", "dev"], "iat": now(), "exp": now() + 300});
        for (key, value) in overrides.as_object().expect("object") {
            claims[key] = value.clone();
        }
        claims
    };
    let acme_id = role_tenant_id(&server, &root);
    runtime().block_on(async {
        let channel = channel(&server).await;
        let mut login = LoginClient::new(channel.clone());
        let attempt = |jwt: String| v1::LoginJwtRequest {
            config: "corp".into(),
            jwt,
        };
        let good = login
            .login_jwt(attempt(sign_rs256(&rsa, &header, &claims(json!({})))))
            .await
            .expect("valid jwt")
            .into_inner();
        let info = good.info.expect("info");
        // The tenant id is part of the entity: alice of another tenant is someone else.
        assert_eq!(info.entity, format!("jwt:corp:{acme_id}:alice"));
        assert_eq!(info.tenant, "acme");
        assert_eq!(info.policies, ["reader"]);
        read_db_a(&channel, &good.token).await.expect("token works");

        let other = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            EcdsaKeyPair::generate_pkcs8(
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                &SystemRandom::new(),
            )
            .expect("p256")
            .as_ref(),
            &SystemRandom::new(),
        )
        .expect("p256");
        let es_input = format!(
            "{}.{}",
            b64(json!({"alg": "ES256", "kid": "k2"}).to_string().as_bytes()),
            b64(claims(json!({})).to_string().as_bytes())
        );
        let es_signature = other
            .sign(&SystemRandom::new(), es_input.as_bytes())
            .expect("sign");
        let none_jwt = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"}).to_string().as_bytes()),
            b64(claims(json!({})).to_string().as_bytes())
        );
        // Algorithm confusion: HS256 "signed" with the RSA public key, in the forms an attacker
        // would try (the JWKS document and the raw modulus).
        let hs_input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256", "typ": "JWT", "kid": "k1"})
                .to_string()
                .as_bytes()),
            b64(claims(json!({})).to_string().as_bytes())
        );
        let hs_with = |key: &[u8]| {
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), hs_input.as_bytes());
            format!("{hs_input}.{}", b64(tag.as_ref()))
        };
        let bad = [
            (
                "expired",
                sign_rs256(
                    &rsa,
                    &header,
                    &claims(json!({"exp": now() - 3600, "iat": now() - 7200})),
                ),
                "expired",
            ),
            (
                "wrong audience",
                sign_rs256(&rsa, &header, &claims(json!({"aud": "other"}))),
                "audience",
            ),
            (
                "wrong issuer",
                sign_rs256(&rsa, &header, &claims(json!({"iss": "https://evil.test"}))),
                "issuer",
            ),
            (
                "unknown key",
                format!("{es_input}.{}", b64(es_signature.as_ref())),
                "k2",
            ),
            ("alg none", none_jwt, "none"),
            ("hs256 with jwks", hs_with(jwks.as_bytes()), "HS256"),
            ("hs256 with modulus", hs_with(&public.n), "HS256"),
            (
                "tampered",
                {
                    let jwt = sign_rs256(&rsa, &header, &claims(json!({})));
                    let parts: Vec<&str> = jwt.split('.').collect();
                    let forged = b64(claims(json!({"groups": ["admins"], "sub": "mallory"}))
                        .to_string()
                        .as_bytes());
                    format!("{}.{forged}.{}", parts[0], parts[2])
                },
                "signature",
            ),
            (
                "unmapped groups",
                sign_rs256(&rsa, &header, &claims(json!({"groups": ["dev"]}))),
                "no policy",
            ),
            // globex has no policy named reader: the mapping grants nothing there.
            (
                "other tenant",
                sign_rs256(&rsa, &header, &claims(json!({"tenant": "globex"}))),
                "no policy",
            ),
        ];
        for (case, jwt, _) in &bad {
            let status = login.login_jwt(attempt(jwt.clone())).await.expect_err(case);
            assert_eq!(status.code(), Code::Unauthenticated, "{case}");
            assert_eq!(status.message(), "login failed", "{case}");
        }
        let details = details(&server, "/vault.v1.Login/LoginJwt");
        for (case, _, needle) in &bad {
            assert!(
                details.iter().any(|d| d.contains(needle)),
                "{case}: no audit detail mentions {needle:?}: {details:?}"
            );
        }
        // Repeated failures from one source are slowed down, and the records say so.
        assert!(
            details
                .iter()
                .any(|d| d.contains("held") && d.contains("failed logins")),
            "{details:?}"
        );
    });
}

/// Decodes RFC 4648 base32 (no padding), as authenticator apps do.
fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in text.bytes() {
        let value = alphabet.iter().position(|&a| a == c).expect("base32") as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

pub(crate) struct Authenticator(TotpSecret);

impl Authenticator {
    pub(crate) fn from_enrollment(secret: &str) -> Self {
        Authenticator(
            TotpSecret::from_bytes(Zeroizing::new(base32_decode(secret))).expect("secret"),
        )
    }

    /// The code of the current step plus `ahead` (the server accepts one step either way).
    pub(crate) fn code(&self, ahead: u64) -> String {
        format!(
            "{:06}",
            totp::code_at(&self.0, totp::step_of(now()) + ahead)
        )
    }
}

#[test]
fn mfa_required_capabilities_need_a_fresh_code_and_failures_lock_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let policy = dir.path().join("rotator.toml");
    std::fs::write(
        &policy,
        "require_mfa = [\"rotate\"]\n[[rule]]\npath = \"*\"\ncapabilities = [\"rotate\", \"read\"]\n",
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
                "rotator",
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    // A login's token: its holder is the entity, and may enrol it (trust on first use).
    let token = approle_token(&server, &root, dir.path(), "rotator");
    runtime().block_on(async {
        let channel = channel(&server).await;
        let mut mfa = MfaClient::new(channel.clone());
        let enrolled = mfa
            .enroll_totp(with_token(v1::EnrollTotpRequest::default(), &token))
            .await
            .expect("enroll")
            .into_inner();
        assert!(enrolled.otpauth_uri.starts_with("otpauth://totp/"));
        let app = Authenticator::from_enrollment(&enrolled.secret);
        let mut system = SystemClient::new(channel.clone());
        let rotate = || v1::RotateRequest {
            tenant: "acme".into(),
            all: false,
        };
        let denied = system
            .rotate(with_token(rotate(), &token))
            .await
            .expect_err("no code");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert_eq!(denied.message(), "permission denied");
        let wrong = if app.code(0) == "000000" {
            "111111"
        } else {
            "000000"
        };
        assert_eq!(
            system
                .rotate(with_mfa(rotate(), &token, wrong))
                .await
                .expect_err("wrong code")
                .code(),
            Code::PermissionDenied
        );
        let code = app.code(0);
        system
            .rotate(with_mfa(rotate(), &token, &code))
            .await
            .expect("right code");
        assert_eq!(
            system
                .rotate(with_mfa(rotate(), &token, &code))
                .await
                .expect_err("replayed code")
                .code(),
            Code::PermissionDenied
        );
        // Capabilities the policy does not mark need no code.
        read_db_a(&channel, &token)
            .await
            .expect("read needs no mfa");
        // Failed attempts are limited: after five wrong codes even a right one is refused.
        for _ in 0..5 {
            let _ = system.rotate(with_mfa(rotate(), &token, wrong)).await;
        }
        assert_eq!(
            system
                .rotate(with_mfa(rotate(), &token, &app.code(1)))
                .await
                .expect_err("locked out")
                .code(),
            Code::PermissionDenied
        );

        // System operations: root enrols, then requires MFA for deleting tenants.
        let root_app = Authenticator::from_enrollment(
            &mfa.enroll_totp(with_token(v1::EnrollTotpRequest::default(), &root))
                .await
                .expect("root enrols")
                .into_inner()
                .secret,
        );
        mfa.set_system_mfa(with_token(
            v1::SetSystemMfaRequest {
                operations: vec!["tenant-delete".into()],
            },
            &root,
        ))
        .await
        .expect("require mfa");
        // From now on, MFA settings themselves need a code: a stolen system token can neither
        // switch the requirement off nor reset root's enrolment.
        for status in [
            mfa.set_system_mfa(with_token(v1::SetSystemMfaRequest::default(), &root))
                .await
                .map(drop)
                .expect_err("clear without a code"),
            mfa.reset_mfa(with_token(
                v1::ResetMfaRequest {
                    entity: "root".into(),
                },
                &root,
            ))
            .await
            .map(drop)
            .expect_err("reset without a code"),
        ] {
            assert_eq!(status.code(), Code::PermissionDenied);
        }
        let mut tenants = TenantsClient::new(channel.clone());
        let delete = || v1::DeleteTenantRequest {
            name: "globex".into(),
        };
        assert_eq!(
            tenants
                .delete_tenant(with_token(delete(), &root))
                .await
                .expect_err("root without a code")
                .code(),
            Code::PermissionDenied
        );
        tenants
            .delete_tenant(with_mfa(delete(), &root, &root_app.code(0)))
            .await
            .expect("root with a code");
    });
    let details = details(&server, "/vault.v1.System/Rotate");
    for needle in [
        "requires mfa for rotate; no mfa code was presented",
        "mfa code does not match",
        "already used",
        "mfa locked",
    ] {
        assert!(
            details.iter().any(|d| d.contains(needle)),
            "{needle}: {details:?}"
        );
    }
    let deletes = self::details(&server, "/vault.v1.Tenants/DeleteTenant");
    assert!(
        deletes
            .iter()
            .any(|d| d.contains("tenant-delete requires mfa")),
        "{deletes:?}"
    );
}
