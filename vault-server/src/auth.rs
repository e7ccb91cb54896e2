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
    call::{Call, presented_token},
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

#[tonic::async_trait]
impl Tokens for TokensService {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::CreateTokenRequest {
            tenant,
            policies,
            ttl_seconds,
            display_name,
            cidrs,
            system,
            refresh_max_ttl_seconds,
        } = request.into_inner();
        call.target(&tenant, "");
        let vault = Arc::clone(&self.shared.vault);
        let created = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let request = TokenRequest {
                    tenant: if system && tenant.is_empty() {
                        None
                    } else {
                        Some(TenantName::parse(&tenant)?)
                    },
                    system,
                    refresh_max_ttl: seconds(refresh_max_ttl_seconds),
                    policies: policies
                        .iter()
                        .map(|p| PolicyName::parse(p))
                        .collect::<Result<_, Error>>()?,
                    ttl: seconds(ttl_seconds),
                    display_name,
                    cidrs: cidrs
                        .iter()
                        .map(|c| Cidr::parse(c))
                        .collect::<Result<_, Error>>()?,
                };
                call.intent()?;
                vault.create_token(&caller, request)
            })
            .await?;
        call.note(format!("created token {}", created.info.accessor));
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
        let call = Call::of(&request);
        let token = presented_token(&request);
        let accessor = accessor_arg(request.into_inner().accessor);
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.lookup_token(&caller, accessor.as_deref())
            })
            .await?;
        Ok(Response::new(v1::LookupTokenResponse {
            info: Some(info_message(info)),
        }))
    }

    async fn renew_token(
        &self,
        request: Request<v1::RenewTokenRequest>,
    ) -> Result<Response<v1::RenewTokenResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::RenewTokenRequest {
            accessor,
            increment_seconds,
        } = request.into_inner();
        let accessor = accessor_arg(accessor);
        let vault = Arc::clone(&self.shared.vault);
        let info = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                call.intent()?;
                vault.renew_token(&caller, accessor.as_deref(), seconds(increment_seconds))
            })
            .await?;
        Ok(Response::new(v1::RenewTokenResponse {
            info: Some(info_message(info)),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let accessor = accessor_arg(request.into_inner().accessor);
        let vault = Arc::clone(&self.shared.vault);
        let revoked = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                call.intent()?;
                vault.revoke_token(&caller, accessor.as_deref())
            })
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

#[tonic::async_trait]
impl Policies for PoliciesService {
    async fn write_policy(
        &self,
        request: Request<v1::WritePolicyRequest>,
    ) -> Result<Response<v1::WritePolicyResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::WritePolicyRequest {
            tenant,
            name,
            rules,
            require_mfa,
        } = request.into_inner();
        call.target(&tenant, &name);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let tenant = TenantName::parse(&tenant)?;
            let policy = Policy::new(
                PolicyName::parse(&name)?,
                rules
                    .into_iter()
                    .map(|r| (r.path, r.capabilities))
                    .collect(),
            )?
            .with_required_mfa(&require_mfa)?;
            call.intent()?;
            vault.write_policy(&caller, &tenant, &policy)
        })
        .await?;
        Ok(Response::new(v1::WritePolicyResponse {}))
    }

    async fn read_policy(
        &self,
        request: Request<v1::ReadPolicyRequest>,
    ) -> Result<Response<v1::ReadPolicyResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ReadPolicyRequest { tenant, name } = request.into_inner();
        call.target(&tenant, &name);
        let vault = Arc::clone(&self.shared.vault);
        let policy = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.read_policy(
                    &caller,
                    &TenantName::parse(&tenant)?,
                    &PolicyName::parse(&name)?,
                )
            })
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
        let call = Call::of(&request);
        let token = presented_token(&request);
        let tenant = request.into_inner().tenant;
        call.target(&tenant, "");
        let vault = Arc::clone(&self.shared.vault);
        let names = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.list_policies(&caller, &TenantName::parse(&tenant)?)
            })
            .await?;
        Ok(Response::new(v1::ListPoliciesResponse { names }))
    }

    async fn delete_policy(
        &self,
        request: Request<v1::DeletePolicyRequest>,
    ) -> Result<Response<v1::DeletePolicyResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::DeletePolicyRequest { tenant, name } = request.into_inner();
        call.target(&tenant, &name);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let (tenant, name) = (TenantName::parse(&tenant)?, PolicyName::parse(&name)?);
            call.intent()?;
            vault.delete_policy(&caller, &tenant, &name)
        })
        .await?;
        Ok(Response::new(v1::DeletePolicyResponse {}))
    }
}
