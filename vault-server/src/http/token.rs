//! `auth/token/` (lookup, renew, revoke, create) and the logins `auth/approle/login` and
//! `auth/jwt/login` (`auth/oidc/login` alike). Tokens are this vault's; a lookup never shows
//! the token itself (`id` is empty: only its keyed hash is stored).

use serde_json::{Value, json};
use vault_proto::v1;

use super::{
    Gateway, Incoming,
    reply::{Answer, Failure},
};

/// Which token a lookup or revocation names.
#[derive(Clone, Copy)]
pub(crate) enum Which {
    /// The caller's own (`lookup-self`, `revoke-self`).
    Own,
    /// The one in the body's `token`.
    ByToken,
    /// The one whose accessor is the body's `accessor`.
    ByAccessor,
}

fn seconds_between(from: &str, to: &str) -> i64 {
    match (
        vault_core::time::parse_rfc3339(from),
        vault_core::time::parse_rfc3339(to),
    ) {
        (Some(from), Some(to)) => ((to - from) / 1_000_000_000).max(0),
        _ => 0,
    }
}

/// Seconds until an RFC 3339 time (0: none or past).
fn seconds_left(until: &str) -> i64 {
    match vault_core::time::parse_rfc3339(until) {
        Some(until) => ((until - vault_core::time::now_unix_nanos()) / 1_000_000_000).max(0),
        None => 0,
    }
}

/// Vault's lookup data of a token.
fn lookup_data(info: &v1::TokenInfo) -> Value {
    let created = vault_core::time::parse_rfc3339(&info.created_time).unwrap_or(0) / 1_000_000_000;
    let expires = (!info.expire_time.is_empty()).then_some(info.expire_time.as_str());
    json!({
        "accessor": info.accessor,
        "creation_time": created,
        "creation_ttl": expires.map_or(0, |e| seconds_between(&info.created_time, e)),
        "display_name": info.display_name,
        "entity_id": info.entity,
        "expire_time": expires,
        "explicit_max_ttl": if info.max_expire_time.is_empty() { 0 } else { seconds_between(&info.created_time, &info.max_expire_time) },
        "id": "",
        "issue_time": info.created_time,
        "meta": null,
        "num_uses": 0,
        "orphan": info.parent_accessor.is_empty(),
        "path": "auth/token/create",
        "policies": info.policies,
        "renewable": expires.is_some(),
        "ttl": expires.map_or(0, seconds_left),
        "type": "service",
        "namespace_path": if info.tenant.is_empty() { String::new() } else { format!("{}/", info.tenant) },
        "bound_cidrs": info.cidrs,
    })
}

/// Vault's `auth` block for a token just issued (or renewed: no token in it).
fn auth_block(token: &str, info: &v1::TokenInfo, refresh_token: &str) -> Value {
    let mut auth = json!({
        "client_token": token,
        "accessor": info.accessor,
        "policies": info.policies,
        "token_policies": info.policies,
        "identity_policies": null,
        "metadata": null,
        "lease_duration": seconds_left(&info.expire_time),
        "renewable": !info.expire_time.is_empty(),
        "entity_id": info.entity,
        "token_type": "service",
        "orphan": info.parent_accessor.is_empty(),
        "mfa_requirement": null,
        "num_uses": 0,
    });
    if !refresh_token.is_empty()
        && let Value::Object(fields) = &mut auth
    {
        fields.insert("refresh_token".into(), json!(refresh_token));
    }
    auth
}

/// The accessor and token fields of a lookup or revocation request.
fn named(incoming: &Incoming, which: Which) -> Result<(String, String), Failure> {
    let params = &incoming.params;
    Ok(match which {
        Which::Own => (String::new(), String::new()),
        Which::ByToken => (String::new(), params.required("token")?),
        Which::ByAccessor => (params.required("accessor")?, String::new()),
    })
}

pub(crate) async fn lookup(
    gateway: &Gateway,
    incoming: &Incoming,
    which: Which,
) -> Result<Answer, Failure> {
    let (accessor, token) = named(incoming, which)?;
    let called = gateway
        .unary::<_, v1::LookupTokenResponse>(
            incoming,
            "Tokens/LookupToken",
            v1::LookupTokenRequest { accessor, token },
        )
        .await?;
    let data = called
        .message
        .info
        .as_ref()
        .map_or(Value::Null, lookup_data);
    Ok(called.data(data))
}

pub(crate) async fn revoke(
    gateway: &Gateway,
    incoming: &Incoming,
    which: Which,
) -> Result<Answer, Failure> {
    let (accessor, token) = named(incoming, which)?;
    let called = gateway
        .unary::<_, v1::RevokeTokenResponse>(
            incoming,
            "Tokens/RevokeToken",
            v1::RevokeTokenRequest { accessor, token },
        )
        .await?;
    Ok(Answer::empty(&called.request_id))
}

/// `POST auth/token/renew-self`: `increment` (a duration; default: the token's own TTL).
pub(crate) async fn renew_self(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let request = v1::RenewTokenRequest {
        accessor: String::new(),
        increment_seconds: incoming.params.seconds("increment")?.unwrap_or(0),
    };
    let called = gateway
        .unary::<_, v1::RenewTokenResponse>(incoming, "Tokens/RenewToken", request)
        .await?;
    let auth = called
        .message
        .info
        .as_ref()
        .map_or(Value::Null, |info| auth_block("", info, ""));
    Ok(Answer::auth(&called.request_id, auth))
}

/// `POST auth/token/create`: `policies`, `ttl`, `display_name`, `bound_cidrs`; in the
/// namespace's tenant (or the caller's own).
pub(crate) async fn create(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let params = &incoming.params;
    params.unsupported("num_uses", "tokens here are limited by time, not uses")?;
    params.unsupported(
        "period",
        "periodic tokens do not exist here; renew within the TTL",
    )?;
    params.unsupported(
        "no_parent",
        "every token here has a parent, so revoking it revokes its children",
    )?;
    if let Some(kind) = params.str("type")?
        && kind != "service"
        && kind != "default"
    {
        return Err(Failure::field("type", "only service tokens exist here"));
    }
    let request = v1::CreateTokenRequest {
        tenant: gateway.tenant(incoming).await,
        policies: params.strings("policies")?.unwrap_or_default(),
        ttl_seconds: params.seconds("ttl")?.unwrap_or(0),
        display_name: params.str("display_name")?.unwrap_or_default(),
        cidrs: params.strings("bound_cidrs")?.unwrap_or_default(),
        system: false,
        refresh_max_ttl_seconds: 0,
    };
    let called = gateway
        .unary::<_, v1::CreateTokenResponse>(incoming, "Tokens/CreateToken", request)
        .await?;
    let m = &called.message;
    let auth = m.info.as_ref().map_or(Value::Null, |info| {
        auth_block(&m.token, info, &m.refresh_token)
    });
    Ok(Answer::auth(&called.request_id, auth))
}

/// A login's answer as Vault's `auth` block.
fn logged_in(called: &super::grpc::Called<v1::LoginResponse>) -> Answer {
    let m = &called.message;
    let auth = m.info.as_ref().map_or(Value::Null, |info| {
        auth_block(&m.token, info, &m.refresh_token)
    });
    Answer::auth(&called.request_id, auth)
}

/// `POST auth/approle/login`: `role_id`, `secret_id`, in the namespace's tenant (which an
/// AppRole login must name: it carries no token to take a tenant from).
pub(crate) async fn approle_login(
    gateway: &Gateway,
    incoming: &Incoming,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let request = v1::LoginAppRoleRequest {
        tenant: incoming.namespace.clone(),
        role_id: params.str("role_id")?.unwrap_or_default(),
        secret_id: params.str("secret_id")?.unwrap_or_default(),
    };
    let called = gateway
        .unary::<_, v1::LoginResponse>(incoming, "Login/LoginAppRole", request)
        .await
        .map_err(|failure| {
            if incoming.namespace.is_empty() && failure.message().starts_with("tenant") {
                let message = format!(
                    "{}; an AppRole login names its tenant as the namespace (X-Vault-Namespace, or BAO_NAMESPACE for the CLI)",
                    failure.message()
                );
                failure.reworded(message)
            } else {
                failure
            }
        })?;
    Ok(logged_in(&called))
}

/// `POST auth/jwt/login` (and `auth/oidc/login`): `role` names the JWT configuration, `jwt`
/// is the token to exchange.
pub(crate) async fn jwt_login(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let request = v1::LoginJwtRequest {
        config: params.str("role")?.unwrap_or_default(),
        jwt: params.str("jwt")?.unwrap_or_default(),
    };
    let called = gateway
        .unary::<_, v1::LoginResponse>(incoming, "Login/LoginJwt", request)
        .await?;
    Ok(logged_in(&called))
}
