//! `sys/`: health, seal status, init, unseal, seal, leader, mounts, rotate.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD};
use http::{Method, StatusCode};
use serde_json::{Value, json};
use vault_proto::v1;

use super::{
    Gateway, Incoming,
    params::Params,
    reply::{Answer, Failure},
};

/// Vault's `sys/health`: the status code says active (200), standby (429), not initialised
/// (501) or sealed (503), each changeable by its query parameter (`standbyok=true`,
/// `activecode=`, `standbycode=`, `sealedcode=`, `uninitcode=`). Not audited, like gRPC
/// health, under the same per-source limits, and a server-wide bound of its own (so gRPC
/// health watches cannot take every place). Its refusals are 503, never 429 (a standby).
pub(crate) async fn health(
    gateway: &Gateway,
    mut incoming: Incoming,
    query: Option<&str>,
) -> Result<Answer, Failure> {
    let _admitted = gateway.admit_health(&incoming)?;
    // Its parameters are in the query; a body is never read.
    incoming.params = Params::parse(query, b"")?;
    let vault = Arc::clone(&gateway.shared.vault);
    let status = tokio::task::spawn_blocking(move || vault.seal().status())
        .await
        .map_err(|_| Failure::internal())?;
    let standby = !gateway.is_active();
    let params = &incoming.params;
    let code = |name: &str, default: u16| -> Result<u16, Failure> {
        match params.u64(name)? {
            None => Ok(default),
            Some(code) => u16::try_from(code)
                .ok()
                .filter(|c| (100..600).contains(c))
                .ok_or_else(|| Failure::field(name, "must be an HTTP status code (100-599)")),
        }
    };
    let active_code = code("activecode", 200)?;
    let status_code = if !status.initialized {
        code("uninitcode", 501)?
    } else if status.sealed {
        code("sealedcode", 503)?
    } else if standby {
        if params.bool("standbyok")?.unwrap_or(false) {
            active_code
        } else {
            code("standbycode", 429)?
        }
    } else {
        active_code
    };
    let body = json!({
        "initialized": status.initialized,
        "sealed": status.sealed,
        "standby": standby,
        "performance_standby": false,
        "replication_performance_mode": "disabled",
        "replication_dr_mode": "disabled",
        "server_time_utc": vault_core::time::now_unix_nanos() / 1_000_000_000,
        "version": env!("CARGO_PKG_VERSION"),
        "cluster_name": "vault",
        "cluster_id": "",
        "enterprise": false,
    });
    let status_code = StatusCode::from_u16(status_code).map_err(|_| Failure::internal())?;
    let answer = Answer::raw("", status_code, body);
    Ok(if incoming.method == Method::HEAD {
        answer.headless()
    } else {
        answer
    })
}

/// The node's status (one `System/Status` call).
async fn status(
    gateway: &Gateway,
    incoming: &Incoming,
) -> Result<super::grpc::Called<v1::StatusResponse>, Failure> {
    gateway
        .unary(incoming, "System/Status", v1::StatusRequest {})
        .await
}

/// Vault's seal-status body from what a status or unseal answer says.
fn seal_status_body(
    initialized: bool,
    sealed: bool,
    threshold: u32,
    shares: u32,
    progress: u32,
    storage: &str,
    seal_type: &str,
) -> Value {
    let seal_type = if seal_type.is_empty() {
        "shamir"
    } else {
        seal_type
    };
    json!({
        "type": seal_type,
        "initialized": initialized,
        "sealed": sealed,
        "t": threshold,
        "n": shares,
        "progress": progress,
        "nonce": "",
        "version": env!("CARGO_PKG_VERSION"),
        "build_date": "",
        "migration": false,
        "cluster_name": "vault",
        "cluster_id": "",
        "recovery_seal": seal_type != "shamir",
        "storage_type": storage,
    })
}

pub(crate) async fn seal_status(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let called = status(gateway, incoming).await?;
    let s = &called.message;
    Ok(Answer::raw(
        &called.request_id,
        StatusCode::OK,
        seal_status_body(
            s.initialized,
            s.sealed,
            s.threshold,
            s.shares,
            s.progress,
            &s.storage,
            &s.seal_type,
        ),
    ))
}

pub(crate) async fn init_status(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let called = status(gateway, incoming).await?;
    Ok(Answer::raw(
        &called.request_id,
        StatusCode::OK,
        json!({ "initialized": called.message.initialized }),
    ))
}

/// `PUT sys/init`: `secret_shares` and `secret_threshold`. Shares encrypted to operators are
/// age recipients here (`vault-cli init --share-recipient`), not PGP keys.
pub(crate) async fn init(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let pgp = "shares are encrypted to age recipients here: use vault-cli init --share-recipient";
    params.unsupported("pgp_keys", pgp)?;
    params.unsupported("root_token_pgp_key", pgp)?;
    params.unsupported("recovery_pgp_keys", pgp)?;
    // With an auto seal, Vault's clients ask for recovery shares by these names (and send
    // them as 0 to a Shamir vault).
    let shares = match params.u32("recovery_shares")? {
        Some(shares) if shares > 0 => Some(shares),
        _ => params.u32("secret_shares")?,
    };
    let threshold = match params.u32("recovery_threshold")? {
        Some(threshold) if threshold > 0 => Some(threshold),
        _ => params.u32("secret_threshold")?,
    };
    let request = v1::InitRequest {
        shares: shares.unwrap_or(0),
        threshold: threshold.unwrap_or(0),
        ..Default::default()
    };
    let called = gateway
        .unary::<_, v1::InitResponse>(incoming, "System/Init", request)
        .await?;
    let m = &called.message;
    // Vault gives each share twice: hex (`keys`) and base64 (`keys_base64`); unseal takes
    // either.
    let hex: Vec<String> = m
        .shares
        .iter()
        .map(|share| match STANDARD.decode(share) {
            Ok(bytes) => hex::encode(zeroize::Zeroizing::new(bytes).as_slice()),
            Err(_) => share.clone(),
        })
        .collect();
    let body = if m.seal_type.is_empty() || m.seal_type == "shamir" {
        json!({
            "keys": hex,
            "keys_base64": m.shares,
            "root_token": m.root_token,
        })
    } else {
        json!({
            "keys": [],
            "keys_base64": [],
            "recovery_keys": hex,
            "recovery_keys_base64": m.shares,
            "root_token": m.root_token,
        })
    };
    Ok(Answer::raw(&called.request_id, StatusCode::OK, body))
}

/// `PUT sys/unseal`: `key` (one share) or `reset: true`.
pub(crate) async fn unseal(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let reset = params.bool("reset")?.unwrap_or(false);
    let share = params.str("key")?.unwrap_or_default();
    // Hex first, as Vault reads it, then base64 (the share's own form).
    let share = match hex::decode(share.trim()) {
        Ok(bytes) if !share.is_empty() => {
            STANDARD.encode(zeroize::Zeroizing::new(bytes).as_slice())
        }
        _ => share,
    };
    if share.is_empty() && !reset {
        return Err(Failure::field(
            "key",
            "missing (one unseal share), or give reset: true",
        ));
    }
    let called = gateway
        .unary::<_, v1::UnsealResponse>(
            incoming,
            "System/Unseal",
            v1::UnsealRequest { share, reset },
        )
        .await?;
    let m = &called.message;
    Ok(Answer::raw(
        &called.request_id,
        StatusCode::OK,
        seal_status_body(
            true,
            m.sealed,
            m.threshold,
            m.shares,
            m.progress,
            gateway.shared.vault.storage_kind(),
            // Only a Shamir-sealed vault takes shares.
            "shamir",
        ),
    ))
}

pub(crate) async fn seal(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let called = gateway
        .unary::<_, v1::SealResponse>(incoming, "System/Seal", v1::SealRequest {})
        .await?;
    Ok(Answer::empty(&called.request_id))
}

/// `sys/leader`: whether this node is the active one and where the active one is.
pub(crate) async fn leader(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let called = status(gateway, incoming).await?;
    let s = &called.message;
    let ha = s.storage == "etcd";
    let is_self = !ha || s.role == "active";
    let address = if s.active_address.is_empty() {
        String::new()
    } else {
        format!("http://{}", s.active_address)
    };
    Ok(Answer::raw(
        &called.request_id,
        StatusCode::OK,
        json!({
            "ha_enabled": ha,
            "is_self": is_self,
            "active_time": "0001-01-01T00:00:00Z",
            "leader_address": address,
            "leader_cluster_address": "",
            "performance_standby": false,
            "performance_standby_last_remote_wal": 0,
        }),
    ))
}

/// The mounts this vault serves: fixed, and true.
fn mount_table() -> Value {
    json!({
        "secret/": {
            "type": "kv",
            "description": "key/value secret storage (KV v2), per tenant",
            "accessor": "kv_secret",
            "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false},
            "options": {"version": "2"},
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
            "uuid": "",
        },
        "transit/": {
            "type": "transit",
            "description": "encryption as a service with named keys, per tenant",
            "accessor": "transit_transit",
            "config": {"default_lease_ttl": 0, "max_lease_ttl": 0, "force_no_cache": false},
            "options": null,
            "local": false,
            "seal_wrap": false,
            "external_entropy_access": false,
            "uuid": "",
        },
    })
}

/// Any valid token may see the mounts: the call is a lookup of its own token.
async fn authenticated(gateway: &Gateway, incoming: &Incoming) -> Result<String, Failure> {
    let called = gateway
        .unary::<_, v1::LookupTokenResponse>(
            incoming,
            "Tokens/LookupToken",
            v1::LookupTokenRequest::default(),
        )
        .await?;
    Ok(called.request_id)
}

pub(crate) async fn mounts(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let request_id = authenticated(gateway, incoming).await?;
    let table = mount_table();
    // Vault answers with the table both at the top and under `data`.
    let mut body = Answer::data(&request_id, table.clone());
    if let Value::Object(mounts) = table {
        body = body.merge(mounts);
    }
    Ok(body)
}

/// `sys/internal/ui/mounts/<path>`: which mount a path is under; Vault's CLI asks it before
/// every `kv` command to learn the KV version.
pub(crate) async fn ui_mount(
    gateway: &Gateway,
    incoming: &Incoming,
    path: &str,
) -> Result<Answer, Failure> {
    let request_id = authenticated(gateway, incoming).await?;
    let mount = path.split('/').next().unwrap_or_default();
    let table = mount_table();
    let Some(entry) = table.get(format!("{mount}/")) else {
        return Err(Failure::bad_request(format!(
            "no mount at {path:?}: this vault serves secret/ (KV v2) and transit/"
        ))
        .with_request_id(&request_id));
    };
    let mut data = entry.clone();
    if let Value::Object(fields) = &mut data {
        fields.insert("path".into(), json!(format!("{mount}/")));
    }
    Ok(Answer::data(&request_id, data))
}

/// `sys/rotate`: a new KEK version for the namespace's tenant, or for every tenant when no
/// namespace is given (which needs the system scope).
pub(crate) async fn rotate(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let request = v1::RotateRequest {
        all: incoming.namespace.is_empty(),
        tenant: incoming.namespace.clone(),
    };
    let called = gateway
        .unary::<_, v1::RotateResponse>(incoming, "System/Rotate", request)
        .await?;
    Ok(Answer::empty(&called.request_id))
}
