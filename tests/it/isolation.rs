//! Tenant isolation as a property: random sequences of puts, gets, lists and deletes by the
//! tokens of several tenants, aimed at their own tenant, at other tenants and at tenants that
//! do not exist, run against the real server and compared call by call with a plain in-memory
//! model. A token never sees another tenant's data, and "exists in another tenant" answers
//! exactly like "does not exist".
//!
//! The seed is random per run and printed; `VAULT_ISOLATION_SEED=N` replays a run, and
//! `VAULT_ISOLATION_STEPS=N` makes it longer.

use std::collections::{BTreeMap, BTreeSet};

use tonic::{Code, Status, transport::Channel};
use vault_proto::v1::{self, secrets_client::SecretsClient};
use vault_tests::{TestServer, init, unseal, with_token};

const TENANTS: [&str; 3] = ["red", "green", "blue"];
/// Tenants no token belongs to: one that exists (made by root), one that never did.
const ORPHAN: &str = "orphan";
const GHOST: &str = "ghost";
const PATHS: [&str; 5] = ["db/a", "db/b", "app/x", "app/y/z", "top"];

/// A small deterministic generator (SplitMix64), so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// What a denied call looks like; it must be the same whatever the target tenant.
fn denial(status: &Status) -> (i32, String) {
    (status.code() as i32, status.message().to_owned())
}

#[test]
fn tokens_never_see_or_learn_of_another_tenants_data() {
    let seed = std::env::var("VAULT_ISOLATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    let steps: usize = std::env::var("VAULT_ISOLATION_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    eprintln!(
        "isolation property: seed {seed}, {steps} steps (VAULT_ISOLATION_SEED={seed} replays)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &["--source-rate-limit", "0"]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    let policy_file = dir.path().join("all.toml");
    std::fs::write(
        &policy_file,
        "[[rule]]\npath = \"*\"\ncapabilities = [\"read\", \"list\", \"write\", \"delete\"]\n",
    )
    .expect("policy");
    let policy = policy_file.to_str().expect("utf-8");
    let mut tokens = BTreeMap::new();
    for tenant in TENANTS.iter().chain([&ORPHAN]) {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
        server
            .cli(
                Some(&root),
                &["policy", "write", "--tenant", tenant, "all", policy],
            )
            .ok();
        let created = server
            .cli(
                Some(&root),
                &[
                    "token", "create", "--tenant", tenant, "--policy", "all", "--format", "json",
                ],
            )
            .json();
        tokens.insert(
            *tenant,
            created["token"].as_str().expect("token").to_owned(),
        );
    }
    // The orphan tenant holds data no token of the three may ever see.
    let mut model: BTreeMap<(&str, &str), String> = BTreeMap::new();

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
            let mut client = SecretsClient::new(channel);
            for path in PATHS {
                let value = format!("{ORPHAN}:{path}:seed");
                let mut put = v1::PutRequest {
                    tenant: ORPHAN.into(),
                    path: path.into(),
                    ..Default::default()
                };
                put.data.insert("v".into(), value.clone().into_bytes());
                client
                    .put(with_token(put, &tokens[ORPHAN]))
                    .await
                    .expect("seed orphan");
                model.insert((ORPHAN, path), value);
            }
            let mut rng = Rng(seed);
            let mut foreign_denials = BTreeSet::new();
            for step in 0..steps {
                let actor = rng.pick(&TENANTS);
                // Half the calls aim elsewhere: another tenant, the orphan or a ghost.
                let target = if rng.next().is_multiple_of(2) {
                    actor
                } else {
                    rng.pick(&["red", "green", "blue", ORPHAN, GHOST])
                };
                let path = rng.pick(&PATHS);
                let token = &tokens[actor];
                let context = format!("seed {seed} step {step}: {actor} -> {target}/{path}");
                let op = rng.next() % 4;
                let result: Result<Option<String>, Status> = match op {
                    0 => {
                        let value = format!("{actor}:{path}:{step}");
                        let mut put = v1::PutRequest {
                            tenant: target.into(),
                            path: path.into(),
                            ..Default::default()
                        };
                        put.data.insert("v".into(), value.clone().into_bytes());
                        client
                            .put(with_token(put, token))
                            .await
                            .map(|_| Some(value))
                    }
                    1 => client
                        .get(with_token(
                            v1::GetRequest {
                                tenant: target.into(),
                                path: path.into(),
                                version: 0,
                            },
                            token,
                        ))
                        .await
                        .map(|r| {
                            r.into_inner()
                                .data
                                .get("v")
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        }),
                    2 => client
                        .list(with_token(
                            v1::ListRequest {
                                tenant: target.into(),
                                recursive: true,
                                ..Default::default()
                            },
                            token,
                        ))
                        .await
                        .map(|r| Some(r.into_inner().keys.join(","))),
                    // Removing the secret entirely, so the model's listing matches.
                    _ => client
                        .delete_metadata(with_token(
                            v1::DeleteMetadataRequest {
                                tenant: target.into(),
                                path: path.into(),
                            },
                            token,
                        ))
                        .await
                        .map(|_| None),
                };
                if target != actor {
                    // Another tenant, existing or not: the same denial, and nothing changes.
                    let status = result.expect_err(&context);
                    assert_eq!(status.code(), Code::PermissionDenied, "{context}");
                    foreign_denials.insert(denial(&status));
                    continue;
                }
                match op {
                    0 => {
                        let value = result.expect(&context).expect("value");
                        model.insert((actor, path), value);
                    }
                    1 => match model.get(&(actor, path)) {
                        Some(expected) => {
                            let got = result.expect(&context).expect("field v");
                            assert_eq!(&got, expected, "{context}");
                            assert!(got.starts_with(&format!("{actor}:")), "{context}: {got}");
                        }
                        None => assert_eq!(
                            result.expect_err(&context).code(),
                            Code::NotFound,
                            "{context}"
                        ),
                    },
                    2 => {
                        let expected: Vec<&str> = model
                            .keys()
                            .filter(|(tenant, _)| *tenant == actor)
                            .map(|(_, path)| *path)
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        assert_eq!(
                            result.expect(&context).expect("keys"),
                            expected.join(","),
                            "{context}"
                        );
                    }
                    _ => {
                        let existed = model.remove(&(actor, path)).is_some();
                        match result {
                            Ok(_) => assert!(existed, "{context}: deleted a missing secret"),
                            Err(status) => {
                                assert!(!existed, "{context}: {status:?}");
                                assert_eq!(status.code(), Code::NotFound, "{context}");
                            }
                        }
                    }
                }
            }
            assert!(
                foreign_denials.len() <= 1,
                "seed {seed}: denials differ by target, which reveals existence: {foreign_denials:?}"
            );
            // The orphan's data is untouched by everything the others did.
            for path in PATHS {
                let response = client
                    .get(with_token(
                        v1::GetRequest {
                            tenant: ORPHAN.into(),
                            path: path.into(),
                            version: 0,
                        },
                        &tokens[ORPHAN],
                    ))
                    .await
                    .expect("orphan read")
                    .into_inner();
                assert_eq!(
                    response.data.get("v").map(|v| v.as_slice()),
                    model.get(&(ORPHAN, path)).map(|v| v.as_bytes()),
                    "seed {seed}: orphan {path}"
                );
            }
        });
}
