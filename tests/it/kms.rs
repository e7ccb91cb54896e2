//! Named keys (encryption as a service) end to end, against the real server over gRPC and the
//! real CLI: round trips for every key type, context binding, keys and tenants that do not
//! open each other's ciphertexts, tampering, rotation with re-wrap, minimum versions and
//! trimming, signatures checked with ring from the public key alone, exact budgets, a caller
//! with only `encrypt`, payload limits, deletion, export, and what the audit log says.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::signature::{ECDSA_P256_SHA256_ASN1, ED25519, UnparsedPublicKey};
use tonic::{Code, transport::Channel};
use vault_proto::v1::{self, kms_client::KmsClient};
use vault_tests::{TestServer, audit_records, channel, init, runtime, unseal, with_token};

fn ready(dir: &std::path::Path, extra: &[&str]) -> (TestServer, String) {
    let server = TestServer::start(dir, extra);
    let (shares, token) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    for tenant in ["acme", "globex"] {
        server.cli(Some(&token), &["tenant", "create", tenant]).ok();
    }
    (server, token)
}

fn kms(channel: &Channel) -> KmsClient<Channel> {
    KmsClient::new(channel.clone())
}

async fn create(channel: &Channel, token: &str, tenant: &str, name: &str, key_type: &str) {
    kms(channel)
        .create_key(with_token(
            v1::CreateKeyRequest {
                tenant: tenant.into(),
                name: name.into(),
                r#type: key_type.into(),
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap_or_else(|s| panic!("create {name}: {s:?}"));
}

fn ctx(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

async fn encrypt(
    channel: &Channel,
    token: &str,
    tenant: &str,
    key: &str,
    plaintext: &[u8],
    context: HashMap<String, String>,
) -> v1::EncryptResponse {
    kms(channel)
        .encrypt(with_token(
            v1::EncryptRequest {
                tenant: tenant.into(),
                key: key.into(),
                plaintext: plaintext.to_vec(),
                context,
                ..Default::default()
            },
            token,
        ))
        .await
        .unwrap_or_else(|s| panic!("encrypt with {key}: {s:?}"))
        .into_inner()
}

async fn decrypt(
    channel: &Channel,
    token: &str,
    tenant: &str,
    key: &str,
    ciphertext: &str,
    context: HashMap<String, String>,
) -> Result<Vec<u8>, tonic::Status> {
    kms(channel)
        .decrypt(with_token(
            v1::DecryptRequest {
                tenant: tenant.into(),
                key: key.into(),
                ciphertext: ciphertext.into(),
                context,
                ..Default::default()
            },
            token,
        ))
        .await
        .map(|r| r.into_inner().plaintext)
}

async fn read_key(channel: &Channel, token: &str, key: &str) -> v1::NamedKey {
    kms(channel)
        .read_key(with_token(
            v1::ReadKeyRequest {
                tenant: "acme".into(),
                name: key.into(),
            },
            token,
        ))
        .await
        .expect("read key")
        .into_inner()
        .key
        .expect("key")
}

/// Flips one bit in the base64 body of `vault:vN:...`.
fn tampered(text: &str) -> String {
    let (prefix, body) = text.rsplit_once(':').expect("vault:vN:body");
    let mut bytes = STANDARD.decode(body).expect("base64");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    format!("{prefix}:{}", STANDARD.encode(bytes))
}

#[test]
fn every_key_type_round_trips_and_ciphertexts_are_bound_to_key_tenant_and_context() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let channel = channel(&server).await;
        for key_type in ["aes256-gcm", "chacha20-poly1305", "xchacha20-poly1305"] {
            create(&channel, &root, "acme", key_type, key_type).await;
            create(
                &channel,
                &root,
                "acme",
                &format!("{key_type}-other"),
                key_type,
            )
            .await;
            create(&channel, &root, "globex", key_type, key_type).await;
            let context = ctx(&[("table", "cards"), ("row", "42")]);
            let sealed = encrypt(
                &channel,
                &root,
                "acme",
                key_type,
                b"4111 1111",
                context.clone(),
            )
            .await;
            assert!(
                sealed.ciphertext.starts_with("vault:v1:"),
                "{}",
                sealed.ciphertext
            );
            assert_eq!(
                decrypt(
                    &channel,
                    &root,
                    "acme",
                    key_type,
                    &sealed.ciphertext,
                    context.clone()
                )
                .await
                .expect("round trip"),
                b"4111 1111"
            );
            let refusals = [
                (
                    "wrong context",
                    "acme",
                    key_type.to_owned(),
                    sealed.ciphertext.clone(),
                    ctx(&[("table", "cards"), ("row", "43")]),
                ),
                (
                    "no context",
                    "acme",
                    key_type.to_owned(),
                    sealed.ciphertext.clone(),
                    HashMap::new(),
                ),
                (
                    "another key",
                    "acme",
                    format!("{key_type}-other"),
                    sealed.ciphertext.clone(),
                    context.clone(),
                ),
                (
                    "another tenant's key of the same name",
                    "globex",
                    key_type.to_owned(),
                    sealed.ciphertext.clone(),
                    context.clone(),
                ),
                (
                    "tampered",
                    "acme",
                    key_type.to_owned(),
                    tampered(&sealed.ciphertext),
                    context.clone(),
                ),
            ];
            for (what, tenant, key, ciphertext, context) in refusals {
                let status = decrypt(&channel, &root, tenant, &key, &ciphertext, context)
                    .await
                    .expect_err(what);
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{key_type}, {what}: {status:?}"
                );
                assert!(
                    status.message().contains("ciphertext"),
                    "{what}: {status:?}"
                );
            }
            // A data key decrypts like any ciphertext, with its context.
            let data_key = kms(&channel)
                .generate_data_key(with_token(
                    v1::GenerateDataKeyRequest {
                        tenant: "acme".into(),
                        key: key_type.into(),
                        context: ctx(&[("file", "a.bin")]),
                        ..Default::default()
                    },
                    &root,
                ))
                .await
                .expect("datakey")
                .into_inner();
            assert_eq!(data_key.plaintext.len(), 32);
            assert_eq!(
                decrypt(
                    &channel,
                    &root,
                    "acme",
                    key_type,
                    &data_key.ciphertext,
                    ctx(&[("file", "a.bin")])
                )
                .await
                .expect("data key decrypts"),
                data_key.plaintext
            );
            let wrapped_only = kms(&channel)
                .generate_data_key(with_token(
                    v1::GenerateDataKeyRequest {
                        tenant: "acme".into(),
                        key: key_type.into(),
                        wrapped_only: true,
                        ..Default::default()
                    },
                    &root,
                ))
                .await
                .expect("datakey")
                .into_inner();
            assert!(
                wrapped_only.plaintext.is_empty()
                    && wrapped_only.ciphertext.starts_with("vault:v1:")
            );
        }

        // Batches: each item with its own context; a bad item fails alone.
        let batch = kms(&channel)
            .batch_encrypt(with_token(
                v1::BatchEncryptRequest {
                    tenant: "acme".into(),
                    key: "aes256-gcm".into(),
                    items: (0..3)
                        .map(|i| v1::EncryptItem {
                            plaintext: format!("row {i}").into_bytes(),
                            context: ctx(&[("row", &i.to_string())]),
                            ..Default::default()
                        })
                        .collect(),
                    key_version: 0,
                },
                &root,
            ))
            .await
            .expect("batch encrypt")
            .into_inner();
        let mut items: Vec<v1::DecryptItem> = batch
            .results
            .iter()
            .enumerate()
            .map(|(i, r)| v1::DecryptItem {
                ciphertext: r.ciphertext.clone(),
                context: ctx(&[("row", &i.to_string())]),
                ..Default::default()
            })
            .collect();
        items[1].context = ctx(&[("row", "9")]);
        let opened = kms(&channel)
            .batch_decrypt(with_token(
                v1::BatchDecryptRequest {
                    tenant: "acme".into(),
                    key: "aes256-gcm".into(),
                    items,
                },
                &root,
            ))
            .await
            .expect("batch decrypt")
            .into_inner()
            .results;
        assert_eq!(opened[0].plaintext, b"row 0");
        assert!(opened[1].plaintext.is_empty() && opened[1].error.contains("ciphertext"));
        assert_eq!(opened[2].plaintext, b"row 2");

        // HMAC keys: the vault verifies its own MACs; another message or a tampered MAC fails.
        create(&channel, &root, "acme", "mac", "hmac-sha256").await;
        let mac = kms(&channel)
            .hmac(with_token(
                v1::HmacRequest {
                    tenant: "acme".into(),
                    key: "mac".into(),
                    message: b"user=alice".to_vec(),
                    key_version: 0,
                },
                &root,
            ))
            .await
            .expect("hmac")
            .into_inner()
            .hmac;
        for (message, mac, expected) in [
            (&b"user=alice"[..], mac.clone(), true),
            (b"user=alicf", mac.clone(), false),
            (b"user=alice", tampered(&mac), false),
        ] {
            let valid = kms(&channel)
                .verify_hmac(with_token(
                    v1::VerifyHmacRequest {
                        tenant: "acme".into(),
                        key: "mac".into(),
                        message: message.to_vec(),
                        hmac: mac,
                    },
                    &root,
                ))
                .await
                .expect("verify hmac")
                .into_inner()
                .valid;
            assert_eq!(valid, expected);
        }
        // A key of the wrong type says so and names the field.
        let status = kms(&channel)
            .encrypt(with_token(
                v1::EncryptRequest {
                    tenant: "acme".into(),
                    key: "mac".into(),
                    plaintext: b"x".to_vec(),
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect_err("hmac keys do not encrypt");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("invalid key:"), "{status:?}");
    });
}

#[test]
fn signatures_verify_in_the_vault_and_with_ring_from_the_public_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"), &[]);
    runtime().block_on(async {
        let channel = channel(&server).await;
        for (key_type, algorithm) in [
            (
                "ed25519",
                &ED25519 as &dyn ring::signature::VerificationAlgorithm,
            ),
            ("ecdsa-p256", &ECDSA_P256_SHA256_ASN1),
        ] {
            create(&channel, &root, "acme", key_type, key_type).await;
            let signature = kms(&channel)
                .sign(with_token(
                    v1::SignRequest {
                        tenant: "acme".into(),
                        key: key_type.into(),
                        message: b"release v1.2.3".to_vec(),
                        key_version: 0,
                    },
                    &root,
                ))
                .await
                .expect("sign")
                .into_inner()
                .signature;
            let key = read_key(&channel, &root, key_type).await;
            let public = &key.versions[0].public_key;
            assert!(
                key.versions[0]
                    .public_key_pem
                    .starts_with("-----BEGIN PUBLIC KEY-----")
            );
            let raw = STANDARD
                .decode(signature.strip_prefix("vault:v1:").expect("version 1"))
                .expect("base64");
            let independent = UnparsedPublicKey::new(algorithm, public);
            assert!(
                independent.verify(b"release v1.2.3", &raw).is_ok(),
                "{key_type}"
            );
            assert!(
                independent.verify(b"release v1.2.4", &raw).is_err(),
                "{key_type}"
            );
            for (message, expected) in [(&b"release v1.2.3"[..], true), (b"release v1.2.4", false)]
            {
                let valid = kms(&channel)
                    .verify(with_token(
                        v1::VerifyRequest {
                            tenant: "acme".into(),
                            key: key_type.into(),
                            message: message.to_vec(),
                            signature: signature.clone(),
                        },
                        &root,
                    ))
                    .await
                    .expect("verify")
                    .into_inner()
                    .valid;
                assert_eq!(valid, expected, "{key_type}");
            }
        }
        // The key material itself is never in a response: not in the key's description, and
        // export is refused for a key not created exportable (and creating one is refused by
        // default).
        let status = kms(&channel)
            .export_key(with_token(
                v1::ExportKeyRequest {
                    tenant: "acme".into(),
                    name: "ed25519".into(),
                },
                &root,
            ))
            .await
            .expect_err("not exportable");
        assert_eq!(status.code(), Code::FailedPrecondition);
        let status = kms(&channel)
            .create_key(with_token(
                v1::CreateKeyRequest {
                    tenant: "acme".into(),
                    name: "leaky".into(),
                    exportable: true,
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect_err("exportable refused by default");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert!(
            status.message().contains("--kms-allow-exportable-keys"),
            "{status:?}"
        );
    });
}

#[test]
fn rotation_rewrap_minimum_decryption_version_and_trimming() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"), &[]);
    let cli = |args: &[&str]| server.cli(Some(&root), args);
    cli(&["key", "create", "--tenant", "acme", "orders"]).ok();
    // The CLI reads the plaintext from standard input.
    let v1 = server
        .cli_with_stdin(
            Some(&root),
            &[
                "key",
                "encrypt",
                "--tenant",
                "acme",
                "orders",
                "--context",
                "user=alice",
            ],
            Some(b"first secret"),
        )
        .ok()
        .trim()
        .to_owned();
    assert!(v1.starts_with("vault:v1:"), "{v1}");
    assert_eq!(
        cli(&[
            "key", "rotate", "--tenant", "acme", "orders", "--format", "json"
        ])
        .json()["version"],
        2
    );
    let decrypted = cli(&[
        "key",
        "decrypt",
        "--tenant",
        "acme",
        "orders",
        &v1,
        "--context",
        "user=alice",
    ]);
    assert_eq!(
        decrypted.ok(),
        "first secret",
        "old ciphertexts still decrypt"
    );
    let rewrapped = cli(&[
        "key",
        "rewrap",
        "--tenant",
        "acme",
        "orders",
        &v1,
        "--context",
        "user=alice",
    ])
    .ok()
    .trim()
    .to_owned();
    assert!(rewrapped.starts_with("vault:v2:"), "{rewrapped}");
    cli(&[
        "key",
        "config",
        "--tenant",
        "acme",
        "orders",
        "--min-decryption-version",
        "2",
    ])
    .ok();
    let refused = cli(&[
        "key",
        "decrypt",
        "--tenant",
        "acme",
        "orders",
        &v1,
        "--context",
        "user=alice",
    ]);
    assert!(
        refused.failed().contains("below min_decryption_version 2"),
        "{}",
        refused.failed()
    );
    assert_eq!(
        cli(&[
            "key",
            "decrypt",
            "--tenant",
            "acme",
            "orders",
            &rewrapped,
            "--context",
            "user=alice"
        ])
        .ok(),
        "first secret"
    );
    let trimmed = cli(&[
        "key",
        "trim",
        "--tenant",
        "acme",
        "orders",
        "--min-available-version",
        "2",
        "--format",
        "json",
    ]);
    assert_eq!(trimmed.json()["destroyed_versions"], serde_json::json!([1]));
    let read = cli(&[
        "key", "read", "--tenant", "acme", "orders", "--format", "json",
    ])
    .json();
    assert_eq!(read["min_available_version"], 2);
    assert_eq!(read["versions"].as_array().map(Vec::len), Some(1));
    let gone = cli(&[
        "key",
        "decrypt",
        "--tenant",
        "acme",
        "orders",
        &v1,
        "--context",
        "user=alice",
    ]);
    assert!(
        gone.failed().contains("below min_decryption_version"),
        "{}",
        gone.failed()
    );

    // Nothing of the plaintext, and no sensitive context value, reaches the audit log; the key
    // name, version and the other context values do.
    server
        .cli_with_stdin(
            Some(&root),
            &[
                "key",
                "encrypt",
                "--tenant",
                "acme",
                "orders",
                "--context",
                "table=cards",
                "--sensitive-context",
                "ssn=078-05-1120",
            ],
            Some(b"canary-plaintext-7731"),
        )
        .ok();
    let records = audit_records(&server.audit_dir());
    let text: String = records.iter().map(|r| r.to_string()).collect();
    for canary in [
        "canary-plaintext-7731",
        "078-05-1120",
        "first secret",
        &v1[9..],
    ] {
        assert!(!text.contains(canary), "{canary} is in the audit log");
    }
    let encrypted = records
        .iter()
        .rev()
        .find(|r| {
            r["method"]
                .as_str()
                .is_some_and(|m| m.ends_with("/Encrypt"))
                && r["kind"] == "outcome"
        })
        .expect("an Encrypt outcome record");
    assert_eq!(encrypted["path"], "keys/orders");
    let detail = encrypted["detail"].as_str().expect("detail");
    assert!(
        detail.contains("key orders version 2")
            && detail.contains(r#""table"="cards""#)
            && detail.contains(r#""ssn"=(sensitive)"#),
        "{detail}"
    );
}

#[test]
fn aes_gcm_versions_rotate_exactly_on_budget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(&dir.path().join("data"), &["--key-reserve-block", "2"]);
    runtime().block_on(async {
        let channel = channel(&server).await;
        kms(&channel)
            .create_key(with_token(
                v1::CreateKeyRequest {
                    tenant: "acme".into(),
                    name: "small".into(),
                    budget: 5,
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect("create");
        let mut versions = Vec::new();
        for _ in 0..7 {
            versions.push(
                encrypt(&channel, &root, "acme", "small", b"x", HashMap::new())
                    .await
                    .key_version,
            );
        }
        let batch = kms(&channel)
            .batch_encrypt(with_token(
                v1::BatchEncryptRequest {
                    tenant: "acme".into(),
                    key: "small".into(),
                    items: vec![
                        v1::EncryptItem {
                            plaintext: b"y".to_vec(),
                            ..Default::default()
                        };
                        6
                    ],
                    key_version: 0,
                },
                &root,
            ))
            .await
            .expect("batch")
            .into_inner();
        versions.extend(batch.results.iter().map(|r| r.key_version));
        assert_eq!(versions, [1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3]);
        let key = read_key(&channel, &root, "small").await;
        let counts: Vec<(u32, u64, Option<u64>)> = key
            .versions
            .iter()
            .map(|v| (v.version, v.invocations, v.remaining))
            .collect();
        assert_eq!(counts, [(1, 5, Some(0)), (2, 5, Some(0)), (3, 3, Some(2))]);
    });
    // The automatic rotations are audited as the vault's own actions.
    let records = audit_records(&server.audit_dir());
    let rotations = records
        .iter()
        .filter(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with("rotating key small"))
        })
        .count();
    assert_eq!(rotations, 2);
}

#[test]
fn a_caller_with_only_encrypt_cannot_decrypt_and_limits_name_themselves() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(
        &dir.path().join("data"),
        &[
            "--kms-max-plaintext-bytes",
            "1024",
            "--kms-max-batch-items",
            "10",
            "--kms-deletion-delay-ms",
            "300",
        ],
    );
    let policy = dir.path().join("encrypt-only.toml");
    std::fs::write(
        &policy,
        "[[rule]]\npath = \"keys/orders\"\ncapabilities = [\"encrypt\"]\n",
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
                "encrypt-only",
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let writer = server
        .cli(
            Some(&root),
            &[
                "token",
                "create",
                "--tenant",
                "acme",
                "--policy",
                "encrypt-only",
                "--format",
                "json",
            ],
        )
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned();
    runtime().block_on(async {
        let channel = channel(&server).await;
        create(&channel, &root, "acme", "orders", "").await;
        create(&channel, &root, "acme", "other", "").await;
        let sealed = encrypt(&channel, &writer, "acme", "orders", b"card", HashMap::new()).await;
        let denied = decrypt(
            &channel,
            &writer,
            "acme",
            "orders",
            &sealed.ciphertext,
            HashMap::new(),
        )
        .await
        .expect_err("encrypt only");
        assert_eq!(denied.code(), Code::PermissionDenied);
        for (key, what) in [("other", "encrypt with another key")] {
            let status = kms(&channel)
                .encrypt(with_token(
                    v1::EncryptRequest {
                        tenant: "acme".into(),
                        key: key.into(),
                        plaintext: b"x".to_vec(),
                        ..Default::default()
                    },
                    &writer,
                ))
                .await
                .expect_err(what);
            assert_eq!(status.code(), Code::PermissionDenied, "{what}");
        }
        let status = kms(&channel)
            .rewrap(with_token(
                v1::RewrapRequest {
                    tenant: "acme".into(),
                    key: "orders".into(),
                    ciphertext: sealed.ciphertext.clone(),
                    ..Default::default()
                },
                &writer,
            ))
            .await
            .expect_err("rewrap needs rewrap");
        assert_eq!(status.code(), Code::PermissionDenied);

        // Limits: per item, per batch, per request.
        let too_large = kms(&channel)
            .encrypt(with_token(
                v1::EncryptRequest {
                    tenant: "acme".into(),
                    key: "orders".into(),
                    plaintext: vec![0; 1025],
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect_err("over the plaintext limit");
        assert_eq!(too_large.code(), Code::InvalidArgument);
        assert!(
            too_large
                .message()
                .contains("plaintext is 1025 bytes, over the limit of 1024"),
            "{too_large:?}"
        );
        let item = v1::EncryptItem {
            plaintext: vec![0; 10],
            ..Default::default()
        };
        let mut items = vec![item.clone(); 3];
        items[2].plaintext = vec![0; 2000];
        let status = kms(&channel)
            .batch_encrypt(with_token(
                v1::BatchEncryptRequest {
                    tenant: "acme".into(),
                    key: "orders".into(),
                    items,
                    key_version: 0,
                },
                &root,
            ))
            .await
            .expect_err("an item over the limit");
        assert!(
            status
                .message()
                .contains("items[2].plaintext is 2000 bytes"),
            "{status:?}"
        );
        let status = kms(&channel)
            .batch_encrypt(with_token(
                v1::BatchEncryptRequest {
                    tenant: "acme".into(),
                    key: "orders".into(),
                    items: vec![item; 11],
                    key_version: 0,
                },
                &root,
            ))
            .await
            .expect_err("too many items");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .contains("11 items, over the limit of 10 per batch"),
            "{status:?}"
        );
        let status = kms(&channel)
            .encrypt(with_token(
                v1::EncryptRequest {
                    tenant: "acme".into(),
                    key: "orders".into(),
                    plaintext: vec![0; 5 * 1024 * 1024],
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect_err("over the request limit");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

        // Deletion: refused until the key is marked deletable, then unusable, then gone.
        let mut admin = kms(&channel);
        let delete = || {
            with_token(
                v1::DeleteKeyRequest {
                    tenant: "acme".into(),
                    name: "other".into(),
                },
                &root,
            )
        };
        assert_eq!(
            admin
                .delete_key(delete())
                .await
                .expect_err("not deletable")
                .code(),
            Code::FailedPrecondition
        );
        kms(&channel)
            .update_key(with_token(
                v1::UpdateKeyRequest {
                    tenant: "acme".into(),
                    name: "other".into(),
                    deletion_allowed: Some(true),
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect("mark deletable");
        admin.delete_key(delete()).await.expect("delete");
        let status = kms(&channel)
            .encrypt(with_token(
                v1::EncryptRequest {
                    tenant: "acme".into(),
                    key: "other".into(),
                    plaintext: b"x".to_vec(),
                    ..Default::default()
                },
                &root,
            ))
            .await
            .expect_err("scheduled for deletion");
        assert_eq!(status.code(), Code::FailedPrecondition);
        // The maintenance rounds destroy it once the waiting period (300 ms here) is over.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let read = kms(&channel)
                .read_key(with_token(
                    v1::ReadKeyRequest {
                        tenant: "acme".into(),
                        name: "other".into(),
                    },
                    &root,
                ))
                .await;
            match read {
                Ok(_) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the deleted key was not destroyed"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(status) => {
                    assert_eq!(status.code(), Code::NotFound);
                    break;
                }
            }
        }
    });
}
