//! Tokens and Policies services.

use std::time::Duration;

use tonic::Request;
use vault_core::{
    Error, Vault,
    cidr::Cidr,
    names::TenantName,
    policy::{Policy, PolicyName},
    time::rfc3339,
    token::Token,
    vault::{CreatedToken, TokenInfo, TokenRequest},
};
use vault_proto::v1::{
    self, CreateTokenRequest, CreateTokenResponse, DeletePolicyRequest, DeletePolicyResponse,
    ListPoliciesRequest, ListPoliciesResponse, LookupTokenRequest, LookupTokenResponse,
    ReadPolicyRequest, ReadPolicyResponse, RenewTokenRequest, RenewTokenResponse,
    RevokeTokenRequest, RevokeTokenResponse, WritePolicyRequest, WritePolicyResponse,
    policies_server::Policies, tokens_server::Tokens,
};

use crate::serve::{Handlers, Reply, at};

fn time_or_empty(unix_nanos: i64) -> String {
    if unix_nanos == 0 {
        String::new()
    } else {
        rfc3339(unix_nanos)
    }
}

/// What an answer that issues a token carries: the token, its info and its refresh token
/// (empty without one).
pub(crate) fn issued(created: CreatedToken) -> (String, Option<v1::TokenInfo>, String) {
    (
        created.token.expose_secret().to_owned(),
        Some(info_message(created.info)),
        created
            .refresh_token
            .map(|t| t.expose_secret().to_owned())
            .unwrap_or_default(),
    )
}

pub(crate) fn info_message(info: TokenInfo) -> v1::TokenInfo {
    v1::TokenInfo {
        accessor: info.accessor,
        tenant: info.tenant.map(|t| t.to_string()).unwrap_or_default(),
        policies: info.policies,
        system: info.system,
        parent_accessor: info.parent,
        display_name: info.display_name,
        created_time: rfc3339(info.created_unix_nanos),
        expire_time: time_or_empty(info.expires_unix_nanos),
        max_expire_time: time_or_empty(info.max_expires_unix_nanos),
        cidrs: info.cidrs,
        entity: info.entity,
        family: info.family,
    }
}

fn accessor_arg(accessor: String) -> Option<String> {
    (!accessor.is_empty()).then_some(accessor)
}

/// Which token a lookup or revocation names: by accessor, by the token itself, or (neither)
/// the caller's own.
enum Named {
    Accessor(Option<String>),
    Token(Token),
}

fn named(accessor: String, token: String) -> Result<Named, Error> {
    match (accessor.is_empty(), token.is_empty()) {
        (_, true) => Ok(Named::Accessor(accessor_arg(accessor))),
        (true, false) => Ok(Named::Token(Token::from_presented(token).map_err(
            |_| Error::InvalidArgument {
                field: "token",
                reason: "not a token".into(),
            },
        )?)),
        (false, false) => Err(Error::InvalidArgument {
            field: "token",
            reason: "give the accessor or the token, not both".into(),
        }),
    }
}

impl Named {
    /// Runs `act` on the accessor named, resolving a token to its own. A token that does not
    /// exist and one the caller may not manage answer alike.
    fn with_accessor<T>(
        self,
        vault: &Vault,
        call: &crate::call::Call,
        act: impl FnOnce(Option<&str>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        match self {
            Named::Accessor(accessor) => act(accessor.as_deref()),
            Named::Token(token) => {
                let accessor = vault.access().accessor_of(&token)?;
                // The record names the token acted on by its accessor, as for a call that
                // gave the accessor.
                call.note(format!("token {accessor}"));
                act(Some(&accessor)).map_err(|e| match e {
                    Error::NotFound(_) => Error::NotFound("the token".into()),
                    other => other,
                })
            }
        }
    }
}

pub(crate) fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

fn token_request(r: CreateTokenRequest) -> Result<TokenRequest, Error> {
    Ok(TokenRequest {
        tenant: if r.system && r.tenant.is_empty() {
            None
        } else {
            Some(TenantName::parse(&r.tenant)?)
        },
        system: r.system,
        refresh_max_ttl: seconds(r.refresh_max_ttl_seconds),
        policies: r
            .policies
            .iter()
            .map(|p| PolicyName::parse(p))
            .collect::<Result<_, Error>>()?,
        ttl: seconds(r.ttl_seconds),
        display_name: r.display_name,
        cidrs: r
            .cidrs
            .iter()
            .map(|c| Cidr::parse(c))
            .collect::<Result<_, Error>>()?,
    })
}

#[tonic::async_trait]
impl Tokens for Handlers {
    async fn create_token(&self, r: Request<CreateTokenRequest>) -> Reply<CreateTokenResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, ""))
            .parse(token_request)
            .run(|step, request| {
                let created = step.vault.access().create_token(step.caller()?, request)?;
                step.call
                    .note(format!("created token {}", created.info.accessor));
                Ok(created)
            })
            .answer(|created| {
                let (token, info, refresh_token) = issued(created);
                CreateTokenResponse {
                    token,
                    info,
                    refresh_token,
                }
            })
            .await
    }

    async fn lookup_token(&self, r: Request<LookupTokenRequest>) -> Reply<LookupTokenResponse> {
        self.rpc(r)
            .parse(|r| named(r.accessor, r.token))
            .run(|step, named| {
                let caller = step.caller()?;
                named.with_accessor(step.vault, step.call, |accessor| {
                    step.vault.access().lookup_token(caller, accessor)
                })
            })
            .answer(|info| LookupTokenResponse {
                info: Some(info_message(info)),
            })
            .await
    }

    async fn renew_token(&self, r: Request<RenewTokenRequest>) -> Reply<RenewTokenResponse> {
        self.rpc(r)
            .parse(|r| Ok((accessor_arg(r.accessor), seconds(r.increment_seconds))))
            .run(|step, (accessor, increment)| {
                step.vault
                    .access()
                    .renew_token(step.caller()?, accessor.as_deref(), increment)
            })
            .answer(|info| RenewTokenResponse {
                info: Some(info_message(info)),
            })
            .await
    }

    async fn revoke_token(&self, r: Request<RevokeTokenRequest>) -> Reply<RevokeTokenResponse> {
        self.rpc(r)
            .parse(|r| named(r.accessor, r.token))
            .run(|step, named| {
                let caller = step.caller()?;
                named.with_accessor(step.vault, step.call, |accessor| {
                    step.vault.access().revoke_token(caller, accessor)
                })
            })
            .answer(|revoked| RevokeTokenResponse {
                revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
            })
            .await
    }
}

fn rules_message(policy: &Policy) -> Vec<v1::PolicyRule> {
    policy
        .rules
        .iter()
        .map(|rule| v1::PolicyRule {
            path: rule.path.clone(),
            capabilities: rule
                .capabilities
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
        })
        .collect()
}

/// The tenant and policy name a request names, parsed.
fn policy_of(tenant: &str, name: &str) -> Result<(TenantName, PolicyName), Error> {
    Ok((TenantName::parse(tenant)?, PolicyName::parse(name)?))
}

#[tonic::async_trait]
impl Policies for Handlers {
    async fn write_policy(&self, r: Request<WritePolicyRequest>) -> Reply<WritePolicyResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.name))
            .parse(|r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let rules = r.rules.into_iter().map(|r| (r.path, r.capabilities));
                let policy = Policy::new(PolicyName::parse(&r.name)?, rules.collect())?
                    .with_required_mfa(&r.require_mfa)?;
                Ok((tenant, policy))
            })
            .run(|step, (tenant, policy)| {
                step.vault
                    .access()
                    .write_policy(step.caller()?, &tenant, &policy)
            })
            .answer(|()| WritePolicyResponse {})
            .await
    }

    async fn read_policy(&self, r: Request<ReadPolicyRequest>) -> Reply<ReadPolicyResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.name))
            .parse(|r| policy_of(&r.tenant, &r.name))
            .run(|step, (tenant, name)| {
                step.vault
                    .access()
                    .read_policy(step.caller()?, &tenant, &name)
            })
            .answer(|policy| ReadPolicyResponse {
                name: policy.name.as_str().to_owned(),
                rules: rules_message(&policy),
                require_mfa: policy
                    .require_mfa
                    .iter()
                    .map(|c| c.as_str().to_owned())
                    .collect(),
            })
            .await
    }

    async fn list_policies(&self, r: Request<ListPoliciesRequest>) -> Reply<ListPoliciesResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, ""))
            .parse(|r| TenantName::parse(&r.tenant))
            .run(|step, tenant| step.vault.access().list_policies(step.caller()?, &tenant))
            .answer(|names| ListPoliciesResponse { names })
            .await
    }

    async fn delete_policy(&self, r: Request<DeletePolicyRequest>) -> Reply<DeletePolicyResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.name))
            .parse(|r| policy_of(&r.tenant, &r.name))
            .run(|step, (tenant, name)| {
                step.vault
                    .access()
                    .delete_policy(step.caller()?, &tenant, &name)
            })
            .answer(|()| DeletePolicyResponse {})
            .await
    }
}
