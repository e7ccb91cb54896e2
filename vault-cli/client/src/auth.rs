//! Logins, the current token, and its renewal in the background.
//!
//! A token from a login is renewed when two thirds of its remaining lifetime have passed. When the
//! server will not extend it any more (its max TTL) or it is no longer valid, the session logs in
//! again: with the refresh token if the login gave one, else with the same AppRole or JWT
//! credentials. A token given directly cannot be replaced; the session then reports the problem
//! and calls fail with [`Error::Unauthenticated`] once it expires.

use std::{
    sync::{RwLock, Weak},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tonic::{Code, metadata::MetadataValue, transport::Channel};
use vault_core::time::{now_unix_nanos, parse_rfc3339};
use vault_proto::v1::{self, login_client::LoginClient, tokens_client::TokensClient};
use zeroize::Zeroizing;

use crate::{Error, Inner, Result};

/// How to log in. Holds secrets: no Debug, no Clone, zeroized on drop.
pub struct Credentials(Kind);

enum Kind {
    Token(Zeroizing<String>),
    AppRole {
        tenant: String,
        role_id: String,
        secret_id: Zeroizing<String>,
    },
    Jwt {
        config: String,
        jwt: Zeroizing<String>,
    },
}

impl Credentials {
    /// A token issued by `vault-cli token create` or a login.
    pub fn token(token: impl Into<String>) -> Self {
        Credentials(Kind::Token(Zeroizing::new(token.into())))
    }

    /// An AppRole login: the role id (configuration) and a secret id (delivered separately).
    pub fn approle(
        tenant: impl Into<String>,
        role_id: impl Into<String>,
        secret_id: impl Into<String>,
    ) -> Self {
        Credentials(Kind::AppRole {
            tenant: tenant.into(),
            role_id: role_id.into(),
            secret_id: Zeroizing::new(secret_id.into()),
        })
    }

    /// A JWT login against the named JWT configuration.
    pub fn jwt(config: impl Into<String>, jwt: impl Into<String>) -> Self {
        Credentials(Kind::Jwt {
            config: config.into(),
            jwt: Zeroizing::new(jwt.into()),
        })
    }

    /// The token in VAULT_TOKEN.
    pub fn from_env() -> Result<Self> {
        match std::env::var("VAULT_TOKEN") {
            Ok(token) => {
                let token = Zeroizing::new(token);
                if token.trim().is_empty() {
                    return Err(Error::config("VAULT_TOKEN is empty"));
                }
                Ok(Credentials::token(token.trim()))
            }
            Err(std::env::VarError::NotPresent) => Err(Error::config("VAULT_TOKEN is not set")),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::config("VAULT_TOKEN is not a token (not UTF-8)"))
            }
        }
    }
}

/// What the application may want to know about its token; no secrets.
#[derive(Clone, Debug)]
pub struct TokenStatus {
    pub accessor: String,
    /// Empty for a system-scope token.
    pub tenant: String,
    pub policies: Vec<String>,
    /// `None`: the token never expires.
    pub expires_at: Option<SystemTime>,
    /// The last background renewal or re-login failure, until one succeeds.
    pub renewal_problem: Option<String>,
}

struct TokenState {
    token: Zeroizing<String>,
    refresh: Option<Zeroizing<String>>,
    info: v1::TokenInfo,
    /// Nanoseconds since the epoch; 0 never expires.
    expires: i64,
    problem: Option<String>,
    /// Counts token replacements, so a watch opened with an old token knows to open again.
    generation: u64,
}

/// The credentials and the current token.
pub(crate) struct Session {
    credentials: Credentials,
    state: RwLock<TokenState>,
    /// One renewal or re-login at a time: two would present the same refresh token, and the
    /// server takes a reused refresh token for a stolen one (it revokes the whole family).
    renewing: tokio::sync::Mutex<()>,
}

/// A login's answer.
struct Issued {
    token: Zeroizing<String>,
    refresh: Option<Zeroizing<String>>,
    info: v1::TokenInfo,
}

fn expiry(info: &v1::TokenInfo) -> i64 {
    parse_rfc3339(&info.expire_time).unwrap_or(0)
}

fn bearer<T>(mut request: tonic::Request<T>, token: &str) -> Result<tonic::Request<T>> {
    let header = Zeroizing::new(format!("Bearer {token}"));
    let value = MetadataValue::try_from(header.as_str())
        .map_err(|_| Error::config("the token contains characters that cannot be sent"))?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

fn timed<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

fn issued(response: v1::LoginResponse) -> Issued {
    let v1::LoginResponse {
        token,
        info,
        refresh_token,
    } = response;
    Issued {
        token: Zeroizing::new(token),
        refresh: (!refresh_token.is_empty()).then(|| Zeroizing::new(refresh_token)),
        info: info.unwrap_or_default(),
    }
}

async fn log_in(channel: &Channel, credentials: &Credentials, timeout: Duration) -> Result<Issued> {
    match &credentials.0 {
        Kind::Token(token) => {
            let request = bearer(
                timed(
                    v1::LookupTokenRequest {
                        accessor: String::new(),
                        ..Default::default()
                    },
                    timeout,
                ),
                token,
            )?;
            // Any valid token may look itself up, so a refusal means the token is not valid
            // (the server answers an unknown token as it answers a policy denial).
            let info = TokensClient::new(channel.clone())
                .lookup_token(request)
                .await
                .map_err(|status| match Error::from(status) {
                    Error::Denied { .. } => Error::Unauthenticated {
                        message: "the token is not valid (expired, revoked or never issued)"
                            .to_owned(),
                    },
                    other => other,
                })?
                .into_inner()
                .info
                .unwrap_or_default();
            Ok(Issued {
                token: Zeroizing::new(token.as_str().to_owned()),
                refresh: None,
                info,
            })
        }
        Kind::AppRole {
            tenant,
            role_id,
            secret_id,
        } => {
            let request = v1::LoginAppRoleRequest {
                tenant: tenant.clone(),
                role_id: role_id.clone(),
                secret_id: secret_id.as_str().to_owned(),
            };
            let response = LoginClient::new(channel.clone())
                .login_app_role(timed(request, timeout))
                .await?;
            Ok(issued(response.into_inner()))
        }
        Kind::Jwt { config, jwt } => {
            let request = v1::LoginJwtRequest {
                config: config.clone(),
                jwt: jwt.as_str().to_owned(),
            };
            let response = LoginClient::new(channel.clone())
                .login_jwt(timed(request, timeout))
                .await?;
            Ok(issued(response.into_inner()))
        }
    }
}

impl Session {
    pub(crate) async fn login(
        channel: Channel,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Session> {
        let Issued {
            token,
            refresh,
            info,
        } = log_in(&channel, &credentials, timeout).await?;
        Ok(Session {
            credentials,
            state: RwLock::new(TokenState {
                token,
                refresh,
                expires: expiry(&info),
                info,
                problem: None,
                generation: 0,
            }),
            renewing: tokio::sync::Mutex::new(()),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, TokenState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, TokenState> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn authorize<T>(&self, request: tonic::Request<T>) -> Result<tonic::Request<T>> {
        bearer(request, &self.read().token)
    }

    pub(crate) fn status(&self) -> TokenStatus {
        let state = self.read();
        TokenStatus {
            accessor: state.info.accessor.clone(),
            tenant: state.info.tenant.clone(),
            policies: state.info.policies.clone(),
            expires_at: (state.expires > 0)
                .then(|| UNIX_EPOCH + Duration::from_nanos(state.expires.unsigned_abs())),
            renewal_problem: state.problem.clone(),
        }
    }

    fn replace(&self, issued: Issued) {
        let mut state = self.write();
        state.expires = expiry(&issued.info);
        state.token = issued.token;
        state.refresh = issued.refresh;
        state.info = issued.info;
        state.problem = None;
        state.generation += 1;
    }

    pub(crate) fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Whether a new token can be had without the application: a refresh token or login
    /// credentials.
    fn replaceable(&self) -> bool {
        self.can_replace(&self.read())
    }

    fn can_replace(&self, state: &TokenState) -> bool {
        state.refresh.is_some() || !matches!(self.credentials.0, Kind::Token(_))
    }

    fn set_problem(&self, problem: String) {
        self.write().problem = Some(problem);
    }

    /// When to try next: two thirds into the remaining lifetime, sooner after failures; `None`
    /// when there is nothing to do (the token never expires, or it expired and cannot be
    /// replaced).
    fn next_renewal(&self, failures: u32) -> Option<Duration> {
        let state = self.read();
        if state.expires == 0 {
            return None;
        }
        let remaining = state.expires.saturating_sub(now_unix_nanos());
        if remaining <= 0 && !self.can_replace(&state) {
            return None;
        }
        let nanos = if failures == 0 {
            remaining / 3 * 2
        } else {
            // 2 s, 4 s, ... 32 s; never past two thirds of what is left.
            let backoff = 1_000_000_000_i64 << failures.min(5);
            if remaining > 0 {
                (remaining / 3).min(backoff)
            } else {
                backoff
            }
        };
        Some(Duration::from_nanos(nanos.max(100_000_000).unsigned_abs()))
    }
}

/// Renews the token; logs in again when it cannot be extended or is no longer valid.
pub(crate) async fn renew_once(inner: &Inner) -> Result<()> {
    let _one_at_a_time = inner.session.renewing.lock().await;
    let before = inner.session.read().expires;
    let request = inner.request(v1::RenewTokenRequest {
        accessor: String::new(),
        increment_seconds: 0,
    })?;
    match TokensClient::new(inner.channel.clone())
        .renew_token(request)
        .await
    {
        Ok(response) => {
            let info = response.into_inner().info.unwrap_or_default();
            let expires = expiry(&info);
            if expires == 0 || expires > before {
                let mut state = inner.session.write();
                state.expires = expires;
                state.info = info;
                state.problem = None;
                return Ok(());
            }
            log_in_again(inner, "the token reached its max TTL").await
        }
        // A token may always renew itself: a refusal means it is no longer valid.
        Err(status) => match Error::from(status) {
            Error::Unauthenticated { message } | Error::Denied { message } => {
                log_in_again(inner, &message).await
            }
            other => Err(other),
        },
    }
}

async fn log_in_again(inner: &Inner, why: &str) -> Result<()> {
    let refresh = inner
        .session
        .read()
        .refresh
        .as_ref()
        .map(|refresh| Zeroizing::new(refresh.as_str().to_owned()));
    if let Some(refresh) = refresh {
        let request = v1::RefreshRequest {
            refresh_token: refresh.as_str().to_owned(),
        };
        match LoginClient::new(inner.channel.clone())
            .refresh(timed(request, inner.timeout))
            .await
        {
            Ok(response) => {
                inner.session.replace(issued(response.into_inner()));
                return Ok(());
            }
            // The family ended or was revoked: fall through to a full login.
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unauthenticated | Code::PermissionDenied
                ) => {}
            // Anything else may pass; a full login now could spend a limited-use secret id.
            Err(status) => return Err(Error::from(status)),
        }
    }
    if let Kind::Token(_) = inner.session.credentials.0 {
        return Err(Error::Unauthenticated {
            message: format!("{why}; a token given directly cannot be replaced"),
        });
    }
    let issued = log_in(&inner.channel, &inner.session.credentials, inner.timeout).await?;
    inner.session.replace(issued);
    Ok(())
}

pub(crate) async fn revoke(inner: &Inner) -> Result<()> {
    let request = inner.request(v1::RevokeTokenRequest {
        accessor: String::new(),
        ..Default::default()
    })?;
    TokensClient::new(inner.channel.clone())
        .revoke_token(request)
        .await?;
    Ok(())
}

/// The background task: renews until the client is dropped.
pub(crate) async fn renew_in_background(inner: Weak<Inner>) {
    let mut failures = 0;
    loop {
        let wait = match inner.upgrade() {
            Some(inner) => inner.session.next_renewal(failures),
            None => return,
        };
        let Some(wait) = wait else { return };
        tokio::time::sleep(wait).await;
        let Some(inner) = inner.upgrade() else { return };
        match renew_once(&inner).await {
            Ok(()) => failures = 0,
            Err(error) => {
                let hopeless =
                    matches!(error, Error::Unauthenticated { .. }) && !inner.session.replaceable();
                inner.session.set_problem(error.to_string());
                // A token given directly that cannot be extended or was revoked stays so.
                if hopeless {
                    return;
                }
                failures += 1;
            }
        }
    }
}
