//! Login, AppRoles, JwtAuth and Mfa services.
//!
//! Logins carry their own credentials (no access token). A source whose logins keep failing is
//! slowed down: from the third failure within ten minutes each further attempt is held, for a
//! doubling time, before it is even checked; every failure's audit record counts them.

use std::{net::IpAddr, sync::Arc, time::Instant};

use tonic::{Code, Request, Response, Status};
use vault_core::{
    Error, Vault,
    cidr::Cidr,
    limits::LoginFailures,
    names::TenantName,
    policy::PolicyName,
    token::{Token, TokenKind},
    vault::{AppRole, AppRoleSpec, CreatedToken, JwtConfig, PolicyMapping, SecretIdSpec, SystemOp},
};
use vault_proto::v1::{
    self, app_roles_server::AppRoles, jwt_auth_server::JwtAuth, login_server::Login,
    mfa_server::Mfa,
};
use zeroize::Zeroizing;

use crate::{
    Shared,
    auth::{info_message, seconds},
    call::{Call, presented_token},
};

macro_rules! service {
    ($name:ident) => {
        pub struct $name {
            shared: Arc<Shared>,
        }

        impl $name {
            pub(crate) fn new(shared: Arc<Shared>) -> Self {
                $name { shared }
            }
        }
    };
}

service!(LoginService);
service!(AppRolesService);
service!(JwtAuthService);
service!(MfaService);

/// A credential of `kind` as presented; a malformed one is a failed login.
fn credential(text: String, kind: TokenKind, what: &str) -> Result<Token, Error> {
    Token::from_presented_kind(text, kind).map_err(|_| Error::LoginFailed {
        reason: format!("malformed {what}"),
    })
}

fn parse_cidrs(list: &[String], field: &'static str) -> Result<Vec<Cidr>, Error> {
    list.iter()
        .map(|c| {
            Cidr::parse(c).map_err(|_| Error::InvalidArgument {
                field,
                reason: format!("{c:?} is not a network such as 10.0.0.0/8"),
            })
        })
        .collect()
}

fn parse_policies(list: &[String]) -> Result<Vec<PolicyName>, Error> {
    list.iter().map(|p| PolicyName::parse(p)).collect()
}

/// Releases a source's held-back login when the login ends, however it ends.
struct HeldLogin<'a> {
    failures: &'a LoginFailures,
    ip: IpAddr,
}

impl Drop for HeldLogin<'_> {
    fn drop(&mut self) {
        self.failures.release(self.ip);
    }
}

impl LoginService {
    /// Runs a login: held first if its source keeps failing, then counted.
    async fn login(
        &self,
        call: &Call,
        work: impl FnOnce(&Vault, Option<IpAddr>) -> Result<CreatedToken, Error> + Send + 'static,
    ) -> Result<Response<v1::LoginResponse>, Status> {
        let failures = &self.shared.login_failures;
        let source = call.source_ip();
        let recent = source.map_or(0, |ip| failures.recent(ip, Instant::now()));
        let delay = LoginFailures::delay(recent);
        let mut held = None;
        if let Some(ip) = source.filter(|_| !delay.is_zero()) {
            // One held-back login per source at a time: parallel guesses are refused outright.
            if !failures.try_hold(ip) {
                call.note(format!(
                    "{recent} failed logins from this source recently; refused while another is held"
                ));
                return Err(Status::resource_exhausted(
                    "too many failed logins from this address; retry later",
                ));
            }
            held = Some(HeldLogin { failures, ip });
            call.note(format!(
                "{recent} failed logins from this source recently; held {} ms",
                delay.as_millis()
            ));
            // Waiting is not work: the server-wide slot goes to someone else meanwhile.
            call.release_slot();
            tokio::time::sleep(delay).await;
        }
        let vault = Arc::clone(&self.shared.vault);
        let result = call
            .blocking(move |call| {
                // A login changes state (a spent secret id, a new token, a rotated family).
                call.intent()?;
                work(&vault, call.source_ip())
            })
            .await;
        drop(held);
        match result {
            Ok(created) => {
                if let Some(ip) = source {
                    failures.succeeded(ip);
                }
                call.set_principal(&created.info.accessor);
                Ok(Response::new(v1::LoginResponse {
                    token: created.token.expose_secret().to_owned(),
                    info: Some(info_message(created.info)),
                    refresh_token: created
                        .refresh_token
                        .map(|t| t.expose_secret().to_owned())
                        .unwrap_or_default(),
                }))
            }
            Err(status) => {
                if status.code() == Code::Unauthenticated
                    && let Some(ip) = source
                {
                    let count = failures.failed(ip, Instant::now());
                    call.note(format!("failed login {count} from {ip} within the window"));
                }
                Err(status)
            }
        }
    }
}

#[tonic::async_trait]
impl Login for LoginService {
    async fn login_app_role(
        &self,
        request: Request<v1::LoginAppRoleRequest>,
    ) -> Result<Response<v1::LoginResponse>, Status> {
        let call = Call::of(&request);
        let v1::LoginAppRoleRequest {
            tenant,
            role_id,
            secret_id,
        } = request.into_inner();
        call.target(&tenant, "");
        self.login(&call, move |vault, source| {
            let secret_id = credential(secret_id, TokenKind::SecretId, "secret id")?;
            let tenant = TenantName::parse(&tenant).map_err(|_| Error::LoginFailed {
                reason: "malformed tenant name".into(),
            })?;
            vault.login_approle(&tenant, &role_id, &secret_id, source)
        })
        .await
    }

    async fn login_jwt(
        &self,
        request: Request<v1::LoginJwtRequest>,
    ) -> Result<Response<v1::LoginResponse>, Status> {
        let call = Call::of(&request);
        let v1::LoginJwtRequest { config, jwt } = request.into_inner();
        let jwt = Zeroizing::new(jwt);
        call.target("", &format!("jwt/{config}"));
        self.login(&call, move |vault, source| {
            vault.login_jwt(&config, &jwt, source)
        })
        .await
    }

    async fn refresh(
        &self,
        request: Request<v1::RefreshRequest>,
    ) -> Result<Response<v1::LoginResponse>, Status> {
        let call = Call::of(&request);
        let v1::RefreshRequest { refresh_token } = request.into_inner();
        self.login(&call, move |vault, source| {
            let token = credential(refresh_token, TokenKind::Refresh, "refresh token")?;
            vault.refresh(&token, source)
        })
        .await
    }
}

fn role_message(role: AppRole) -> v1::AppRole {
    let secs = |nanos: i64| u64::try_from(nanos / 1_000_000_000).unwrap_or(0);
    v1::AppRole {
        name: role.name,
        role_id: role.role_id,
        policies: role.policies,
        token_ttl_seconds: secs(role.token_ttl_nanos),
        refresh_max_ttl_seconds: secs(role.refresh_max_ttl_nanos),
        secret_id_uses: role.secret_id_uses,
        secret_id_ttl_seconds: secs(role.secret_id_ttl_nanos),
        bound_cidrs: role.bound_cidrs,
        token_cidrs: role.token_cidrs,
    }
}

#[tonic::async_trait]
impl AppRoles for AppRolesService {
    async fn write_role(
        &self,
        request: Request<v1::WriteRoleRequest>,
    ) -> Result<Response<v1::WriteRoleResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::WriteRoleRequest { tenant, role } = request.into_inner();
        let role = role.unwrap_or_default();
        call.target(&tenant, &format!("approle/{}", role.name));
        let vault = Arc::clone(&self.shared.vault);
        let role = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let spec = AppRoleSpec {
                    name: role.name,
                    policies: parse_policies(&role.policies)?,
                    token_ttl: seconds(role.token_ttl_seconds),
                    refresh_max_ttl: seconds(role.refresh_max_ttl_seconds),
                    secret_id_uses: role.secret_id_uses,
                    secret_id_ttl: seconds(role.secret_id_ttl_seconds),
                    bound_cidrs: parse_cidrs(&role.bound_cidrs, "bound_cidrs")?,
                    token_cidrs: parse_cidrs(&role.token_cidrs, "token_cidrs")?,
                };
                call.intent()?;
                vault.write_approle(&caller, &tenant, spec)
            })
            .await?;
        Ok(Response::new(v1::WriteRoleResponse {
            role: Some(role_message(role)),
        }))
    }

    async fn read_role(
        &self,
        request: Request<v1::ReadRoleRequest>,
    ) -> Result<Response<v1::ReadRoleResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ReadRoleRequest { tenant, name } = request.into_inner();
        call.target(&tenant, &format!("approle/{name}"));
        let vault = Arc::clone(&self.shared.vault);
        let role = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.read_approle(&caller, &TenantName::parse(&tenant)?, &name)
            })
            .await?;
        Ok(Response::new(v1::ReadRoleResponse {
            role: Some(role_message(role)),
        }))
    }

    async fn delete_role(
        &self,
        request: Request<v1::DeleteRoleRequest>,
    ) -> Result<Response<v1::DeleteRoleResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::DeleteRoleRequest { tenant, name } = request.into_inner();
        call.target(&tenant, &format!("approle/{name}"));
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let tenant = TenantName::parse(&tenant)?;
            call.intent()?;
            vault.delete_approle(&caller, &tenant, &name)
        })
        .await?;
        Ok(Response::new(v1::DeleteRoleResponse {}))
    }

    async fn generate_secret_id(
        &self,
        request: Request<v1::GenerateSecretIdRequest>,
    ) -> Result<Response<v1::GenerateSecretIdResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::GenerateSecretIdRequest {
            tenant,
            role,
            cidrs,
        } = request.into_inner();
        call.target(&tenant, &format!("approle/{role}"));
        let vault = Arc::clone(&self.shared.vault);
        let (secret_id, accessor) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                let spec = SecretIdSpec {
                    cidrs: parse_cidrs(&cidrs, "cidrs")?,
                };
                call.intent()?;
                vault.generate_secret_id(&caller, &tenant, &role, spec)
            })
            .await?;
        call.note(format!("secret id accessor {accessor}"));
        Ok(Response::new(v1::GenerateSecretIdResponse {
            secret_id: secret_id.expose_secret().to_owned(),
            accessor,
        }))
    }
}

fn config_message(config: JwtConfig) -> v1::JwtConfig {
    v1::JwtConfig {
        name: config.name,
        issuer: config.issuer,
        jwks_file: config.jwks_file.display().to_string(),
        audiences: config.audiences,
        tenant: config.tenant,
        tenant_claim: config.tenant_claim,
        user_claim: config.user_claim,
        policies: config.policies,
        policy_map: config
            .policy_map
            .into_iter()
            .map(|m| v1::PolicyMapping {
                claim: m.claim,
                value: m.value,
                policies: m.policies,
            })
            .collect(),
        token_ttl_seconds: config.token_ttl_seconds,
        refresh_max_ttl_seconds: config.refresh_max_ttl_seconds,
        bound_cidrs: config.bound_cidrs,
        leeway_seconds: config.leeway_seconds,
    }
}

#[tonic::async_trait]
impl JwtAuth for JwtAuthService {
    async fn write_jwt_config(
        &self,
        request: Request<v1::WriteJwtConfigRequest>,
    ) -> Result<Response<v1::WriteJwtConfigResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let config = request.into_inner().config.unwrap_or_default();
        call.target("", &format!("jwt/{}", config.name));
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let config = JwtConfig {
                name: config.name,
                issuer: config.issuer,
                jwks_file: config.jwks_file.into(),
                audiences: config.audiences,
                tenant: config.tenant,
                tenant_claim: config.tenant_claim,
                user_claim: config.user_claim,
                policies: config.policies,
                policy_map: config
                    .policy_map
                    .into_iter()
                    .map(|m| PolicyMapping {
                        claim: m.claim,
                        value: m.value,
                        policies: m.policies,
                    })
                    .collect(),
                token_ttl_seconds: config.token_ttl_seconds,
                refresh_max_ttl_seconds: config.refresh_max_ttl_seconds,
                bound_cidrs: config.bound_cidrs,
                leeway_seconds: config.leeway_seconds,
                // Set by the vault from the named tenant.
                tenant_id: String::new(),
            };
            call.intent()?;
            vault.write_jwt_config(&caller, config)
        })
        .await?;
        Ok(Response::new(v1::WriteJwtConfigResponse {}))
    }

    async fn read_jwt_config(
        &self,
        request: Request<v1::ReadJwtConfigRequest>,
    ) -> Result<Response<v1::ReadJwtConfigResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ReadJwtConfigRequest { name } = request.into_inner();
        call.target("", &format!("jwt/{name}"));
        let vault = Arc::clone(&self.shared.vault);
        let config = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.read_jwt_config(&caller, &name)
            })
            .await?;
        Ok(Response::new(v1::ReadJwtConfigResponse {
            config: Some(config_message(config)),
        }))
    }

    async fn delete_jwt_config(
        &self,
        request: Request<v1::DeleteJwtConfigRequest>,
    ) -> Result<Response<v1::DeleteJwtConfigResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::DeleteJwtConfigRequest { name } = request.into_inner();
        call.target("", &format!("jwt/{name}"));
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            call.intent()?;
            vault.delete_jwt_config(&caller, &name)
        })
        .await?;
        Ok(Response::new(v1::DeleteJwtConfigResponse {}))
    }
}

#[tonic::async_trait]
impl Mfa for MfaService {
    async fn enroll_totp(
        &self,
        request: Request<v1::EnrollTotpRequest>,
    ) -> Result<Response<v1::EnrollTotpResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::EnrollTotpRequest { entity } = request.into_inner();
        call.target("", &format!("mfa/{entity}"));
        let vault = Arc::clone(&self.shared.vault);
        let enrollment = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                call.intent_to_return("a new TOTP enrolment secret")?;
                vault.enroll_totp(&caller, (!entity.is_empty()).then_some(entity.as_str()))
            })
            .await?;
        call.answer_carries_credential();
        call.note(format!("enrolled entity {}", enrollment.entity));
        Ok(Response::new(v1::EnrollTotpResponse {
            entity: enrollment.entity,
            secret: enrollment.secret_base32.to_string(),
            otpauth_uri: enrollment.otpauth_uri.to_string(),
        }))
    }

    async fn reset_mfa(
        &self,
        request: Request<v1::ResetMfaRequest>,
    ) -> Result<Response<v1::ResetMfaResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::ResetMfaRequest { entity } = request.into_inner();
        call.target("", &format!("mfa/{entity}"));
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            call.intent()?;
            vault.reset_mfa(&caller, &entity)
        })
        .await?;
        Ok(Response::new(v1::ResetMfaResponse {}))
    }

    async fn set_system_mfa(
        &self,
        request: Request<v1::SetSystemMfaRequest>,
    ) -> Result<Response<v1::SetSystemMfaResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::SetSystemMfaRequest { operations } = request.into_inner();
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            let ops = operations
                .iter()
                .map(|op| SystemOp::parse(op))
                .collect::<Result<Vec<_>, Error>>()?;
            call.intent()?;
            vault.set_mfa_system_ops(&caller, ops)
        })
        .await?;
        Ok(Response::new(v1::SetSystemMfaResponse {}))
    }

    async fn get_system_mfa(
        &self,
        request: Request<v1::GetSystemMfaRequest>,
    ) -> Result<Response<v1::GetSystemMfaResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = Arc::clone(&self.shared.vault);
        let ops = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.require_system(&caller)?;
                vault.mfa_system_ops()
            })
            .await?;
        Ok(Response::new(v1::GetSystemMfaResponse {
            operations: ops.iter().map(|op| op.as_str().to_owned()).collect(),
        }))
    }
}
