//! Login, AppRoles, JwtAuth and Mfa services.
//!
//! Logins carry their own credentials (no access token). A source whose logins keep failing is
//! slowed down: from the third failure within ten minutes each further attempt is held, for a
//! doubling time, before it is even checked; every failure's audit record counts them. While
//! held, a login gives up its place under the server-wide concurrency limit, and a second login
//! from the same source meanwhile is refused at once (RESOURCE_EXHAUSTED). Sources are counted
//! per address, IPv6 per /64 (`vault_core::limits::source_key`).

use std::{net::IpAddr, time::Instant};

use tonic::{Code, Request, Response};
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
    self, DeleteJwtConfigRequest, DeleteJwtConfigResponse, DeleteRoleRequest, DeleteRoleResponse,
    EnrollTotpRequest, EnrollTotpResponse, GenerateSecretIdRequest, GenerateSecretIdResponse,
    GetSystemMfaRequest, GetSystemMfaResponse, LoginAppRoleRequest, LoginJwtRequest, LoginResponse,
    ReadJwtConfigRequest, ReadJwtConfigResponse, ReadRoleRequest, ReadRoleResponse, RefreshRequest,
    ResetMfaRequest, ResetMfaResponse, SetSystemMfaRequest, SetSystemMfaResponse,
    WriteJwtConfigRequest, WriteJwtConfigResponse, WriteRoleRequest, WriteRoleResponse,
    app_roles_server::AppRoles, jwt_auth_server::JwtAuth, login_server::Login, mfa_server::Mfa,
};
use zeroize::Zeroizing;

use crate::{
    auth::{issued, seconds},
    call::Call,
    serve::{Handlers, Reply, Target, at, nothing, under},
};

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

impl Handlers {
    /// Runs a login through the pipeline: held first if its source keeps failing, then
    /// counted.
    async fn login_held_and_counted<Req: Send + 'static, P: Send + 'static>(
        &self,
        request: Request<Req>,
        target: Target<Req>,
        parse: impl Fn(Req) -> Result<P, Error> + Send + Sync + 'static,
        work: impl FnOnce(&Vault, Option<IpAddr>, P) -> Result<CreatedToken, Error> + Send + 'static,
    ) -> Reply<LoginResponse> {
        let call = &Call::of(&request);
        // Recorded before the hold-back, so a refused login names its target too.
        target(request.get_ref()).record(call);
        let failures = &self.shared.login_failures;
        let source = call.source_ip();
        let recent = source.map_or(0, |ip| failures.recent(ip, Instant::now()));
        let delay = LoginFailures::delay(recent);
        let mut held = None;
        if let Some(ip) = source.filter(|_| !delay.is_zero()) {
            // One held-back login per source at a time: parallel guesses are refused outright.
            if !failures.try_hold(ip) {
                crate::metrics::metrics().refused("failed-logins");
                call.note(format!(
                    "{recent} failed logins from this source recently; refused while another is held"
                ));
                return Err(crate::status::status(
                    tonic::Code::ResourceExhausted,
                    vault_proto::reason::LIMIT_REACHED,
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
        // A login changes state (a spent secret id, a new token, a rotated family): the table
        // makes it a mutation, so its intent is written before.
        let result = self
            .rpc(request)
            .target(target)
            .parse(parse)
            .run(move |step, parsed| work(step.vault, step.call.source_ip(), parsed))
            .out()
            .await;
        drop(held);
        match result {
            Ok(created) => {
                if let Some(ip) = source {
                    failures.succeeded(ip);
                }
                call.set_principal(&created.info.accessor);
                let (token, info, refresh_token) = issued(created);
                Ok(Response::new(LoginResponse {
                    token,
                    info,
                    refresh_token,
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
impl Login for Handlers {
    async fn login_app_role(&self, r: Request<LoginAppRoleRequest>) -> Reply<LoginResponse> {
        self.login_held_and_counted(
            r,
            |r| at(&r.tenant, ""),
            |r| {
                let secret_id = credential(r.secret_id, TokenKind::SecretId, "secret id")?;
                let tenant = TenantName::parse(&r.tenant).map_err(|_| Error::LoginFailed {
                    reason: "malformed tenant name".into(),
                })?;
                Ok((tenant, r.role_id, secret_id))
            },
            |vault, source, (tenant, role_id, secret_id)| {
                vault
                    .logins()
                    .login_approle(&tenant, &role_id, &secret_id, source)
            },
        )
        .await
    }

    async fn login_jwt(&self, r: Request<LoginJwtRequest>) -> Reply<LoginResponse> {
        self.login_held_and_counted(
            r,
            |r| under("", "jwt/", &r.config),
            |r| Ok((r.config, Zeroizing::new(r.jwt))),
            |vault, source, (config, jwt)| vault.logins().login_jwt(&config, &jwt, source),
        )
        .await
    }

    async fn refresh(&self, r: Request<RefreshRequest>) -> Reply<LoginResponse> {
        self.login_held_and_counted(
            r,
            nothing,
            |r| credential(r.refresh_token, TokenKind::Refresh, "refresh token"),
            |vault, source, token| vault.logins().refresh(&token, source),
        )
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

fn role_spec(role: v1::AppRole) -> Result<AppRoleSpec, Error> {
    Ok(AppRoleSpec {
        policies: parse_policies(&role.policies)?,
        token_ttl: seconds(role.token_ttl_seconds),
        refresh_max_ttl: seconds(role.refresh_max_ttl_seconds),
        secret_id_uses: role.secret_id_uses,
        secret_id_ttl: seconds(role.secret_id_ttl_seconds),
        bound_cidrs: parse_cidrs(&role.bound_cidrs, "bound_cidrs")?,
        token_cidrs: parse_cidrs(&role.token_cidrs, "token_cidrs")?,
        name: role.name,
    })
}

#[tonic::async_trait]
impl AppRoles for Handlers {
    async fn write_role(&self, r: Request<WriteRoleRequest>) -> Reply<WriteRoleResponse> {
        self.rpc(r)
            .target(|r| {
                let name = r.role.as_ref().map_or("", |role| role.name.as_str());
                under(&r.tenant, "approle/", name)
            })
            .parse(|r| {
                let tenant = TenantName::parse(&r.tenant)?;
                Ok((tenant, role_spec(r.role.unwrap_or_default())?))
            })
            .run(|step, (tenant, spec)| {
                step.vault
                    .logins()
                    .write_approle(step.caller()?, &tenant, spec)
            })
            .answer(|role| WriteRoleResponse {
                role: Some(role_message(role)),
            })
            .await
    }

    async fn read_role(&self, r: Request<ReadRoleRequest>) -> Reply<ReadRoleResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "approle/", &r.name))
            .parse(|r| Ok((TenantName::parse(&r.tenant)?, r.name)))
            .run(|step, (tenant, name)| {
                step.vault
                    .logins()
                    .read_approle(step.caller()?, &tenant, &name)
            })
            .answer(|role| ReadRoleResponse {
                role: Some(role_message(role)),
            })
            .await
    }

    async fn delete_role(&self, r: Request<DeleteRoleRequest>) -> Reply<DeleteRoleResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "approle/", &r.name))
            .parse(|r| Ok((TenantName::parse(&r.tenant)?, r.name)))
            .run(|step, (tenant, name)| {
                step.vault
                    .logins()
                    .delete_approle(step.caller()?, &tenant, &name)
            })
            .answer(|()| DeleteRoleResponse {})
            .await
    }

    async fn generate_secret_id(
        &self,
        r: Request<GenerateSecretIdRequest>,
    ) -> Reply<GenerateSecretIdResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "approle/", &r.role))
            .parse(|r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let spec = SecretIdSpec {
                    cidrs: parse_cidrs(&r.cidrs, "cidrs")?,
                };
                Ok((tenant, r.role, spec))
            })
            .run(|step, (tenant, role, spec)| {
                let generated =
                    step.vault
                        .logins()
                        .generate_secret_id(step.caller()?, &tenant, &role, spec)?;
                step.call
                    .note(format!("secret id accessor {}", generated.1));
                Ok(generated)
            })
            .answer(|(secret_id, accessor)| GenerateSecretIdResponse {
                secret_id: secret_id.expose_secret().to_owned(),
                accessor,
            })
            .await
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

fn jwt_config(config: v1::JwtConfig) -> JwtConfig {
    JwtConfig {
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
    }
}

#[tonic::async_trait]
impl JwtAuth for Handlers {
    async fn write_jwt_config(
        &self,
        r: Request<WriteJwtConfigRequest>,
    ) -> Reply<WriteJwtConfigResponse> {
        self.rpc(r)
            .target(|r| {
                under(
                    "",
                    "jwt/",
                    r.config.as_ref().map_or("", |c| c.name.as_str()),
                )
            })
            .parse(|r| Ok(jwt_config(r.config.unwrap_or_default())))
            .run(|step, config| step.vault.logins().write_jwt_config(step.caller()?, config))
            .answer(|()| WriteJwtConfigResponse {})
            .await
    }

    async fn read_jwt_config(
        &self,
        r: Request<ReadJwtConfigRequest>,
    ) -> Reply<ReadJwtConfigResponse> {
        self.rpc(r)
            .target(|r| under("", "jwt/", &r.name))
            .parse(|r| Ok(r.name))
            .run(|step, name| step.vault.logins().read_jwt_config(step.caller()?, &name))
            .answer(|config| ReadJwtConfigResponse {
                config: Some(config_message(config)),
            })
            .await
    }

    async fn delete_jwt_config(
        &self,
        r: Request<DeleteJwtConfigRequest>,
    ) -> Reply<DeleteJwtConfigResponse> {
        self.rpc(r)
            .target(|r| under("", "jwt/", &r.name))
            .parse(|r| Ok(r.name))
            .run(|step, name| step.vault.logins().delete_jwt_config(step.caller()?, &name))
            .answer(|()| DeleteJwtConfigResponse {})
            .await
    }
}

#[tonic::async_trait]
impl Mfa for Handlers {
    async fn enroll_totp(&self, r: Request<EnrollTotpRequest>) -> Reply<EnrollTotpResponse> {
        self.rpc(r)
            .target(|r| under("", "mfa/", &r.entity))
            .parse(|r| Ok(r.entity))
            .run(|step, entity| {
                let enrollment = step.vault.mfa().enroll_totp(
                    step.caller()?,
                    (!entity.is_empty()).then_some(entity.as_str()),
                )?;
                step.call
                    .note(format!("enrolled entity {}", enrollment.entity));
                Ok(enrollment)
            })
            .returning(|_| "a new TOTP enrolment secret".into(), |_| true)
            .answer(|enrollment| EnrollTotpResponse {
                entity: enrollment.entity,
                secret: enrollment.secret_base32.to_string(),
                otpauth_uri: enrollment.otpauth_uri.to_string(),
            })
            .await
    }

    async fn reset_mfa(&self, r: Request<ResetMfaRequest>) -> Reply<ResetMfaResponse> {
        self.rpc(r)
            .target(|r| under("", "mfa/", &r.entity))
            .parse(|r| Ok(r.entity))
            .run(|step, entity| step.vault.mfa().reset_mfa(step.caller()?, &entity))
            .answer(|()| ResetMfaResponse {})
            .await
    }

    async fn set_system_mfa(&self, r: Request<SetSystemMfaRequest>) -> Reply<SetSystemMfaResponse> {
        self.rpc(r)
            .parse(|r| {
                r.operations
                    .iter()
                    .map(|op| SystemOp::parse(op))
                    .collect::<Result<Vec<_>, Error>>()
            })
            .run(|step, ops| step.vault.mfa().set_mfa_system_ops(step.caller()?, ops))
            .answer(|()| SetSystemMfaResponse {})
            .await
    }

    async fn get_system_mfa(&self, r: Request<GetSystemMfaRequest>) -> Reply<GetSystemMfaResponse> {
        self.rpc(r)
            .run(|step, ()| {
                step.vault.require_system(step.caller()?)?;
                step.vault.mfa().mfa_system_ops()
            })
            .answer(|ops| GetSystemMfaResponse {
                operations: ops.iter().map(|op| op.as_str().to_owned()).collect(),
            })
            .await
    }
}
