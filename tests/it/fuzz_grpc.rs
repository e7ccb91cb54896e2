//! Fuzz target `grpc`: every request message of every RPC, built field by field from the fuzz
//! input (structure-aware: the message's descriptor says which fields exist and of what type,
//! and [`arbitrary`]'s `Unstructured` chooses their values), sent to a real, unsealed server
//! with a root token, so the bytes reach the handlers' parsers and the core behind them. One
//! input in eight goes as raw bytes instead, for tonic's decoder.
//!
//! A violation is: the server exiting, a panic in its log, or an answer a bad request must
//! never get: INTERNAL, UNKNOWN or DATA_LOSS, or UNAVAILABLE for storage or audit (the disk
//! is healthy here, so bad input broke something). Run it as the other targets are
//! (`scripts/fuzz SECONDS grpc`); without `FUZZ_SECONDS` it is the suite's short replay.
//!
//! Left out: `System/Seal` and `System/StepDown` (a sealed or stepped-down server answers
//! everything after with SEALED or a relay, so the rest of the run would test nothing). Should
//! anything else seal the vault, it is unsealed again.

use std::sync::Mutex;

use prost::Message;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, Value,
};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};
use vault_fuzz::{
    arbitrary::{Arbitrary, Unstructured},
    run, text,
};
use vault_proto::reason;
use vault_tests::{TestServer, init, runtime, unseal, with_token};

/// Methods the fuzzer does not call, and why (see the module documentation).
const LEFT_OUT: &[&str] = &["/vault.v1.System/Seal", "/vault.v1.System/StepDown"];

/// Tenants the fuzzer's requests name; the ones that exist are made again if a request deleted
/// them.
const TENANTS: &[&str] = &["acme", "beta"];

/// One method of the API.
struct Method {
    path: http::uri::PathAndQuery,
    input: MessageDescriptor,
    streams: bool,
}

fn methods() -> Vec<Method> {
    let pool = DescriptorPool::decode(vault_proto::v1::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods = Vec::new();
    let mut left_out = 0;
    for service in pool.services() {
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            if LEFT_OUT.contains(&path.as_str()) {
                left_out += 1;
                continue;
            }
            if method.is_client_streaming() {
                continue;
            }
            methods.push(Method {
                path: path.parse().expect("method path"),
                input: method.input(),
                streams: method.is_server_streaming(),
            });
        }
    }
    // A method renamed away from the list would be called (and seal the vault).
    assert_eq!(
        left_out,
        LEFT_OUT.len(),
        "a left-out method is not in the API any more"
    );
    methods
}

/// The request body as bytes and the answer's discarded: the fuzzer judges the status alone.
#[derive(Default, Clone, Copy)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        let left = bytes::Buf::remaining(src);
        bytes::Buf::advance(src, left);
        Ok(Some(()))
    }
}

/// What a request's fields are filled with: for fields whose name says what they hold, values
/// that exist on the server (so the call gets past "not found" to the code behind it) or that
/// are nearly right; else, or one time in four, tricky text ([`text`]).
struct Values {
    /// A token of a tenant, for fields that take a token. Never the root token the calls are
    /// made with: a request revoking it would end the run's depth (and revocations are made
    /// with this token, since one naming no token revokes the caller's own).
    token: String,
}

impl Values {
    fn string(&self, field: &str, u: &mut Unstructured<'_>) -> String {
        let pool: &[&str] = match field {
            "tenant" | "tenants" => TENANTS,
            "name" | "key" | "key_name" => &["acme", "beta", "k1", "signer", "reader", "hook"],
            "path" | "prefix" | "paths" => &["db", "app/cfg", "db/", "", "a/b/c"],
            "policy" | "policies" | "token_policies" => &["reader", "default", "root"],
            "ciphertext" | "input" => &["vault:v1:AAAA", "vault:v0:", "vault:v1:", "vault:"],
            "role" | "role_name" => &["ci", "deploy"],
            "algorithm" | "type" | "key_type" => &[
                "aes256-gcm96",
                "ed25519",
                "ecdsa-p256",
                "hmac-sha256",
                "rsa-2048",
            ],
            "token" | "accessor" => return self.token_like(u),
            _ => &[],
        };
        if pool.is_empty() || u.ratio(1, 4u8).unwrap_or(true) {
            return text(u);
        }
        let index = u.choose_index(pool.len()).unwrap_or(0);
        pool[index].to_owned()
    }

    fn token_like(&self, u: &mut Unstructured<'_>) -> String {
        match u.int_in_range(0..=3u8).unwrap_or(0) {
            0 => self.token.clone(),
            1 => {
                let mut token = self.token.clone();
                token.pop();
                token
            }
            _ => text(u),
        }
    }

    fn number(u: &mut Unstructured<'_>) -> u64 {
        const EDGES: &[u64] = &[
            0,
            1,
            2,
            3,
            60,
            255,
            256,
            4096,
            1 << 31,
            u32::MAX as u64,
            u64::MAX,
        ];
        if u.ratio(1, 2u8).unwrap_or(true) {
            EDGES[u.choose_index(EDGES.len()).unwrap_or(0)]
        } else {
            u64::arbitrary(u).unwrap_or(0)
        }
    }

    fn value(
        &self,
        field: &FieldDescriptor,
        kind: &Kind,
        u: &mut Unstructured<'_>,
        depth: u32,
    ) -> Value {
        match kind {
            Kind::Bool => Value::Bool(bool::arbitrary(u).unwrap_or(false)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(Self::number(u) as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(Self::number(u) as i64),
            Kind::Uint32 | Kind::Fixed32 => Value::U32(Self::number(u) as u32),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(Self::number(u)),
            Kind::Float => Value::F32(f32::arbitrary(u).unwrap_or(0.0)),
            Kind::Double => Value::F64(f64::arbitrary(u).unwrap_or(0.0)),
            Kind::String => Value::String(self.string(field.name(), u)),
            Kind::Bytes => {
                let bytes = if u.ratio(1, 2u8).unwrap_or(true) {
                    text(u).into_bytes()
                } else {
                    Vec::<u8>::arbitrary(u).unwrap_or_default()
                };
                Value::Bytes(bytes.into())
            }
            Kind::Enum(values) => {
                let known: Vec<i32> = values.values().map(|v| v.number()).collect();
                if u.ratio(1, 8u8).unwrap_or(false) || known.is_empty() {
                    Value::EnumNumber(Self::number(u) as i32)
                } else {
                    Value::EnumNumber(known[u.choose_index(known.len()).unwrap_or(0)])
                }
            }
            Kind::Message(inner) => Value::Message(self.message(inner, u, depth + 1)),
        }
    }

    fn key(&self, field: &FieldDescriptor, u: &mut Unstructured<'_>) -> MapKey {
        let n = Self::number(u);
        match field.kind() {
            Kind::Bool => MapKey::Bool(n % 2 == 1),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => MapKey::I32(n as i32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => MapKey::I64(n as i64),
            Kind::Uint32 | Kind::Fixed32 => MapKey::U32(n as u32),
            Kind::Uint64 | Kind::Fixed64 => MapKey::U64(n),
            _ => MapKey::String(self.string(field.name(), u)),
        }
    }

    /// A message of type `desc`: each field set or left at its default, lists and maps of up
    /// to four entries, nested messages to a depth of four.
    fn message(
        &self,
        desc: &MessageDescriptor,
        u: &mut Unstructured<'_>,
        depth: u32,
    ) -> DynamicMessage {
        let mut message = DynamicMessage::new(desc.clone());
        if depth > 4 {
            return message;
        }
        for field in desc.fields() {
            if u.is_empty() || !bool::arbitrary(u).unwrap_or(false) {
                continue;
            }
            let count = u.int_in_range(0..=4u8).unwrap_or(0);
            let value = if field.is_map() {
                let Kind::Message(entry) = field.kind() else {
                    continue;
                };
                let (key, value) = (entry.map_entry_key_field(), entry.map_entry_value_field());
                Value::Map(
                    (0..count)
                        .map(|_| {
                            (
                                self.key(&key, u),
                                self.value(&value, &value.kind(), u, depth),
                            )
                        })
                        .collect(),
                )
            } else if field.is_list() {
                Value::List(
                    (0..count)
                        .map(|_| self.value(&field, &field.kind(), u, depth))
                        .collect(),
                )
            } else {
                self.value(&field, &field.kind(), u, depth)
            };
            message.set_field(&field, value);
        }
        message
    }
}

/// Answers a bad request must never get, and the reason it had. `login` calls give up after
/// 300 ms, so only theirs may be cut short.
fn violation(status: &Status, login: bool) -> Option<String> {
    let why = reason::of(status).unwrap_or_default();
    let broken = match status.code() {
        Code::Internal | Code::Unknown | Code::DataLoss => true,
        Code::Unavailable => {
            [reason::STORAGE_UNAVAILABLE, reason::AUDIT_UNAVAILABLE].contains(&why)
        }
        // A call that hung until its deadline.
        Code::Cancelled | Code::DeadlineExceeded => !login,
        _ => false,
    };
    broken.then(|| format!("{:?} ({why}): {}", status.code(), status.message()))
}

/// The longest a call may take before the fuzzer calls it a hang.
const HANG: std::time::Duration = std::time::Duration::from_secs(30);

/// Messages read from a stream, at most (a backup or an export), and how long the fuzzer
/// waits for the next (a watch stays open).
const STREAM_MESSAGES: usize = 64;
const STREAM_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

#[test]
fn fuzz_grpc() {
    let dir = tempfile::tempdir().expect("tempdir");
    // No per-source rate limit: the fuzzer is one source making many calls.
    let server = TestServer::start(&dir.path().join("data"), &["--source-rate-limit", "0"]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    for tenant in TENANTS {
        server.cli(Some(&root), &["tenant", "create", tenant]).ok();
    }
    let policy = dir.path().join("reader.toml");
    std::fs::write(
        &policy,
        "[[rule]]\npath = \"db/*\"\ncapabilities = [\"read\", \"list\"]\n",
    )
    .expect("policy file");
    let policy = policy.to_str().expect("utf-8");
    server
        .cli(
            Some(&root),
            &["policy", "write", "--tenant", "acme", "reader", policy],
        )
        .ok();
    let token = vault_tests::reader_token(&server, &root);
    let values = Values { token };
    let methods = methods();
    let rt = runtime();
    let channel = rt.block_on(vault_tests::channel(&server));
    let server_endpoint = server.endpoint();
    let server = Mutex::new(server);
    let calls = Mutex::new(std::collections::BTreeMap::<String, u64>::new());
    // A request may delete a tenant the others name: every 64 calls the missing ones are made
    // again (that fails harmlessly while a deleted one is kept for its restore window).
    let restock = || {
        rt.block_on(async {
            let mut tenants = vault_proto::v1::tenants_client::TenantsClient::new(channel.clone());
            for tenant in TENANTS {
                let request = vault_proto::v1::CreateTenantRequest {
                    name: (*tenant).to_owned(),
                    settings: None,
                };
                let _ = tenants.create_tenant(with_token(request, &root)).await;
            }
        })
    };

    // A seed per method: its number, then bytes that set most fields.
    let seeds: Vec<Vec<u8>> = (0..methods.len())
        .map(|i| {
            let mut seed = (i as u16).to_be_bytes().to_vec();
            seed.extend((0..96u8).map(|j| [0x01, 0x03, 0xff, 0x02][usize::from(j % 4)]));
            seed
        })
        .collect();
    let seeds: Vec<&[u8]> = seeds.iter().map(Vec::as_slice).collect();
    // Logins from a source that keeps failing are held back (up to 5 s each), so logins go
    // out from 64 loopback addresses in turn (Linux routes all of 127/8 to lo), and give up
    // after 300 ms: the first few failures of each address reach the login's own checks.
    let login_channels: Vec<tonic::transport::Channel> = rt.block_on(async {
        let mut channels = Vec::new();
        for i in 0..64u8 {
            let endpoint = tonic::transport::Endpoint::from_shared(server_endpoint.clone())
                .expect("endpoint")
                .local_address(Some(std::net::IpAddr::from([127, 0, 1, i + 1])));
            channels.push(
                endpoint
                    .connect()
                    .await
                    .expect("connect from another address"),
            );
        }
        channels
    });
    let logins = std::sync::atomic::AtomicUsize::new(0);
    // Once the server is gone every later input would fail too: the first one is the crash.
    let gone = std::sync::atomic::AtomicBool::new(false);
    // How much of the server's log has been searched for panics.
    let log_read = std::sync::atomic::AtomicUsize::new(0);
    let report = run(env!("CARGO_MANIFEST_DIR"), "grpc", &seeds, |bytes| {
        if gone.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // The first two bytes choose the method (each seed starts with one method's number).
        let (index, rest) = match bytes {
            [high, low, rest @ ..] => (usize::from(u16::from_be_bytes([*high, *low])), rest),
            _ => (0, bytes),
        };
        let method = &methods[index % methods.len()];
        let mut u = Unstructured::new(rest);
        let revokes = method.path.path() == "/vault.v1.Tokens/RevokeToken";
        let credential = match u.int_in_range(0..=15u8).unwrap_or(0) {
            15 => None,
            14 => Some(values.token.as_str()),
            _ if revokes => Some(values.token.as_str()),
            _ => Some(root.as_str()),
        };
        let body = if u.ratio(1, 8u8).unwrap_or(false) {
            u.take_rest().to_vec()
        } else {
            values.message(&method.input, &mut u, 0).encode_to_vec()
        };
        let mut request = match credential {
            Some(token) => with_token(body, token),
            None => tonic::Request::new(body),
        };
        let login = method.path.path().starts_with("/vault.v1.Login/");
        request.set_timeout(if login {
            std::time::Duration::from_millis(300)
        } else {
            HANG
        });
        let channel = if login {
            let turn = logins.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            &login_channels[turn % login_channels.len()]
        } else {
            &channel
        };
        let call = async {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            if method.streams {
                let mut stream = grpc
                    .server_streaming(request, method.path.clone(), Raw)
                    .await?
                    .into_inner();
                for _ in 0..STREAM_MESSAGES {
                    match tokio::time::timeout(STREAM_WAIT, stream.message()).await {
                        Ok(Ok(Some(()))) => {}
                        Ok(Err(status)) => return Err(status),
                        // The end, or a stream that stays open (a watch): dropped.
                        Ok(Ok(None)) | Err(_) => break,
                    }
                }
                Ok(())
            } else {
                grpc.unary(request, method.path.clone(), Raw)
                    .await
                    .map(|_| ())
            }
        };
        let answer = rt
            .block_on(async { tokio::time::timeout(HANG + HANG, call).await })
            .unwrap_or_else(|_| panic!("{}: no answer within {:?}", method.path, HANG + HANG));
        let code = answer.as_ref().map_or_else(|s| s.code(), |()| Code::Ok);
        let made = {
            let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
            *calls.entry(format!("{code:?}")).or_default() += 1;
            calls.values().sum::<u64>()
        };
        {
            let mut server = server.lock().unwrap_or_else(|p| p.into_inner());
            if server.exited() {
                gone.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!(
                    "{}: the server exited:\n{}",
                    method.path,
                    server.stderr().join("\n")
                );
            }
            let lines = server.stderr();
            let from = log_read.swap(lines.len(), std::sync::atomic::Ordering::Relaxed);
            if let Some(panic) = lines
                .get(from..)
                .unwrap_or_default()
                .iter()
                .find(|l| l.contains("panicked"))
            {
                panic!("{}: the server logged a panic: {panic}", method.path);
            }
            if let Err(status) = &answer {
                if let Some(broken) = violation(status, login) {
                    panic!("{}: {broken}", method.path);
                }
                if reason::of(status) == Some(reason::SEALED) {
                    unseal(&server, &[&shares[0]]);
                }
            }
        }
        if made % 64 == 0 {
            restock();
        }
    });
    let calls = calls.into_inner().unwrap_or_else(|p| p.into_inner());
    eprintln!("grpc: {} calls by code: {calls:?}", report.executions);
    // The run reached the code behind the checks: a tenth of the calls were served.
    let served = calls.get("Ok").copied().unwrap_or_default();
    assert!(
        served * 10 >= report.executions,
        "only {served} of {} calls were served: the fuzzer lost its root token or its tenants",
        report.executions
    );
    server
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .kill();
}

/// Found by this target: a request message that does not decode was answered INTERNAL (tonic's
/// default), as if the server had failed. It is the caller's error: INVALID_ARGUMENT with the
/// reason INVALID_ARGUMENT, tonic's message naming the field, and an outcome record that says
/// so.
#[test]
fn a_request_that_does_not_decode_is_an_invalid_argument_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    let rt = runtime();
    let status = rt.block_on(async {
        let mut grpc = tonic::client::Grpc::new(vault_tests::channel(&server).await);
        grpc.ready().await.expect("ready");
        // Field 2 (`path`, a string) sent as a varint.
        grpc.unary(
            with_token(vec![0x10, 0x01], &root),
            "/vault.v1.Secrets/Get".parse().expect("path"),
            Raw,
        )
        .await
        .expect_err("a message that does not decode")
    });
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason::of(&status), Some(reason::INVALID_ARGUMENT));
    assert!(
        status.message().contains("GetRequest.path"),
        "the message names the field: {}",
        status.message()
    );
    let id = vault_tests::request_id(status.metadata());
    let records = vault_tests::audit_records(&server.audit_dir());
    assert!(
        records.iter().any(|r| r["kind"] == "outcome"
            && r["request_id"] == id.as_str()
            && r["code"] == "INVALID_ARGUMENT"),
        "no INVALID_ARGUMENT outcome record for {id}"
    );
    server.kill();
}
