//! Tokens and Policies services.

use std::{sync::Arc, time::Duration};

use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    cidr::Cidr,
    names::TenantName,
    policy::{Policy, PolicyName},
    time::rfc3339,
    vault::{TokenInfo, TokenRequest},
};
use vault_proto::v1::{self, policies_server::Policies, tokens_server::Tokens};

use crate::{
    Shared,
    serve::{at, nothing, serve},
};

pub struct TokensService {
    shared: Arc<Shared>,
}

impl TokensService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        TokensService { shared }
    }
}

pub struct PoliciesService {
    shared: Arc<Shared>,
}

impl PoliciesService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        PoliciesService { shared }
    }
}

fn time_or_empty(unix_nanos: i64) -> String {
    if unix_nanos == 0 {
        String::new()
    } else {
        rfc3339(unix_nanos)
    }
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

pub(crate) fn seconds(value: u64) -> Option<Duration> {
    (value > 0).then(|| Duration::from_secs(value))
}

fn token_request(r: v1::CreateTokenRequest) -> Result<TokenRequest, Error> {
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
impl Tokens for TokensService {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let created = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, ""),
            token_request,
            |step, request| {
                let created = step.vault.access().create_token(step.caller()?, request)?;
                step.call
                    .note(format!("created token {}", created.info.accessor));
                Ok(created)
            },
        )
        .await?;
        Ok(Response::new(v1::CreateTokenResponse {
            token: created.token.expose_secret().to_owned(),
            info: Some(info_message(created.info)),
            refresh_token: created
                .refresh_token
                .map(|t| t.expose_secret().to_owned())
                .unwrap_or_default(),
        }))
    }

    async fn lookup_token(
        &self,
        request: Request<v1::LookupTokenRequest>,
    ) -> Result<Response<v1::LookupTokenResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            nothing,
            |r| Ok(accessor_arg(r.accessor)),
            |step, accessor| {
                step.vault
                    .access()
                    .lookup_token(step.caller()?, accessor.as_deref())
            },
        )
        .await?;
        Ok(Response::new(v1::LookupTokenResponse {
            info: Some(info_message(info)),
        }))
    }

    async fn renew_token(
        &self,
        request: Request<v1::RenewTokenRequest>,
    ) -> Result<Response<v1::RenewTokenResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            nothing,
            |r| Ok((accessor_arg(r.accessor), seconds(r.increment_seconds))),
            |step, (accessor, increment)| {
                step.vault
                    .access()
                    .renew_token(step.caller()?, accessor.as_deref(), increment)
            },
        )
        .await?;
        Ok(Response::new(v1::RenewTokenResponse {
            info: Some(info_message(info)),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let revoked = serve(
            &self.shared.vault,
            request,
            nothing,
            |r| Ok(accessor_arg(r.accessor)),
            |step, accessor| {
                step.vault
                    .access()
                    .revoke_token(step.caller()?, accessor.as_deref())
            },
        )
        .await?;
        Ok(Response::new(v1::RevokeTokenResponse {
            revoked: u32::try_from(revoked).unwrap_or(u32::MAX),
        }))
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
impl Policies for PoliciesService {
    async fn write_policy(
        &self,
        request: Request<v1::WritePolicyRequest>,
    ) -> Result<Response<v1::WritePolicyResponse>, Status> {
        serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.name),
            |r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let rules = r.rules.into_iter().map(|r| (r.path, r.capabilities));
                let policy = Policy::new(PolicyName::parse(&r.name)?, rules.collect())?
                    .with_required_mfa(&r.require_mfa)?;
                Ok((tenant, policy))
            },
            |step, (tenant, policy)| {
                step.vault
                    .access()
                    .write_policy(step.caller()?, &tenant, &policy)
            },
        )
        .await?;
        Ok(Response::new(v1::WritePolicyResponse {}))
    }

    async fn read_policy(
        &self,
        request: Request<v1::ReadPolicyRequest>,
    ) -> Result<Response<v1::ReadPolicyResponse>, Status> {
        let policy = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.name),
            |r| policy_of(&r.tenant, &r.name),
            |step, (tenant, name)| {
                step.vault
                    .access()
                    .read_policy(step.caller()?, &tenant, &name)
            },
        )
        .await?;
        Ok(Response::new(v1::ReadPolicyResponse {
            name: policy.name.as_str().to_owned(),
            rules: rules_message(&policy),
            require_mfa: policy
                .require_mfa
                .iter()
                .map(|c| c.as_str().to_owned())
                .collect(),
        }))
    }

    async fn list_policies(
        &self,
        request: Request<v1::ListPoliciesRequest>,
    ) -> Result<Response<v1::ListPoliciesResponse>, Status> {
        let names = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, ""),
            |r| TenantName::parse(&r.tenant),
            |step, tenant| step.vault.access().list_policies(step.caller()?, &tenant),
        )
        .await?;
        Ok(Response::new(v1::ListPoliciesResponse { names }))
    }

    async fn delete_policy(
        &self,
        request: Request<v1::DeletePolicyRequest>,
    ) -> Result<Response<v1::DeletePolicyResponse>, Status> {
        serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, &r.name),
            |r| policy_of(&r.tenant, &r.name),
            |step, (tenant, name)| {
                step.vault
                    .access()
                    .delete_policy(step.caller()?, &tenant, &name)
            },
        )
        .await?;
        Ok(Response::new(v1::DeletePolicyResponse {}))
    }
}
