//! Connecting to the server and turning its statuses into messages with hints.

use std::path::PathBuf;

use tonic::{Code, Request, Status, metadata::MetadataValue, transport::Channel};
use vault_proto::reason;
use zeroize::Zeroizing;

use crate::Format;

/// [`Ctx::call`] for one method of one client, in one line:
/// `call!(ctx, SecretsClient::new, put, request)`.
macro_rules! call {
    ($ctx:expr, $client:expr, $method:ident, $request:expr) => {
        $ctx.call($client, $request, |mut client, request| async move {
            client.$method(request).await
        })
    };
}

/// A failed command: one line for the user, and a hint where one helps.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: None,
        }
    }

    pub fn with_hint(message: impl Into<String>, hint: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// An error of vault-core's (bad local input, e.g. an identity file).
    pub fn from_core(error: vault_core::Error) -> Self {
        CliError::new(error.to_string())
    }

    pub fn from_status(status: Status, addr: &str) -> Self {
        let message = status.message().to_owned();
        let request_id = status
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let why = vault_proto::reason::of(&status);
        let hint = match status.code() {
            Code::Unauthenticated => {
                Some("set VAULT_TOKEN to a token (init prints the root token)".to_owned())
            }
            _ if why == Some(reason::SEALED) => {
                Some("unseal it: each operator runs `vault-cli unseal` with one share".to_owned())
            }
            _ if why == Some(reason::NOT_INITIALIZED) => {
                Some("run `vault-cli init` first".to_owned())
            }
            // Made on this side from a connection error (no server sent it).
            Code::Unavailable if why.is_none() && std::error::Error::source(&status).is_some() => {
                Some(format!(
                    "is vault-server running at {addr}? (set VAULT_ADDR)"
                ))
            }
            Code::Internal | Code::Unavailable => {
                request_id.map(|id| format!("the server log has details under request id {id}"))
            }
            _ => None,
        };
        let message = if message.is_empty() {
            format!("{:?}", status.code())
        } else {
            message
        };
        CliError { message, hint }
    }
}

pub type CliResult<T> = Result<T, CliError>;

/// TLS files from the global flags.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

/// What every command gets from the global flags: where the server is, how to reach it, the
/// output format and the MFA code to send. Made once in main and passed down (no globals).
#[derive(Clone)]
pub struct Ctx {
    pub addr: String,
    pub format: Format,
    tls: TlsFiles,
    /// The one-time MFA code (`--mfa`) sent with every authenticated request.
    mfa: Option<Zeroizing<String>>,
}

impl Ctx {
    pub fn new(addr: String, format: Format, tls: TlsFiles, mfa: Option<String>) -> Ctx {
        Ctx {
            addr,
            format,
            tls,
            mfa: mfa.map(Zeroizing::new),
        }
    }

    /// A client-library builder for the server with the TLS files of the global flags (read
    /// only for an https address, so an exported VAULT_CACERT does not get in the way of a
    /// loopback server).
    pub fn builder(&self) -> CliResult<vault_client::ClientBuilder> {
        let addr = self.addr.as_str();
        let mut builder = vault_client::ClientBuilder::new(addr);
        if !addr.starts_with("https://") {
            return Ok(builder);
        }
        let ca = self.tls.ca_cert.as_ref().ok_or_else(|| {
            CliError::with_hint(
                format!("{addr} is https but no CA certificate is given"),
                "pass --ca-cert FILE or set VAULT_CACERT",
            )
        })?;
        builder = builder.ca_certificate_file(ca).map_err(from_client)?;
        if let (Some(cert), Some(key)) = (&self.tls.client_cert, &self.tls.client_key) {
            builder = builder
                .client_identity_files(cert, key)
                .map_err(from_client)?;
        }
        Ok(builder)
    }

    pub async fn connect(&self) -> CliResult<Channel> {
        self.builder()?.channel().await.map_err(from_client)
    }

    /// One authenticated call, the whole ceremony in one place: the token (VAULT_TOKEN or
    /// ~/.vault-token), a connection, the request with the token and MFA code, and a refusal
    /// turned into a CLI error with its hint. `rpc` makes the call on the client `client`
    /// builds; `call!` writes it in one line: `call!(ctx, SecretsClient::new, put, request)`.
    pub async fn call<C, Req, Resp, Fut>(
        &self,
        client: fn(Channel) -> C,
        request: Req,
        rpc: impl FnOnce(C, Request<Req>) -> Fut,
    ) -> CliResult<Resp>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let token = token()?;
        let client = client(self.connect().await?);
        let request = self.authed(request, &token)?;
        self.answer(rpc(client, request).await)
    }

    /// The message of the server's answer, or its refusal as a CLI error with a hint: for calls
    /// made without [`Ctx::call`] (those that need no token, several on one connection).
    pub fn answer<T>(&self, result: Result<tonic::Response<T>, Status>) -> CliResult<T> {
        result
            .map(tonic::Response::into_inner)
            .map_err(|status| self.status_error(status))
    }

    /// A status from the server as a CLI message with a hint.
    pub fn status_error(&self, status: Status) -> CliError {
        CliError::from_status(status, &self.addr)
    }

    /// A request carrying the bearer token (and the MFA code, if one was given).
    pub fn authed<T>(&self, message: T, token: &Zeroizing<String>) -> CliResult<Request<T>> {
        let mut request = Request::new(message);
        let value = MetadataValue::try_from(format!("Bearer {}", token.as_str()))
            .map_err(|_| CliError::new("VAULT_TOKEN contains characters that cannot be sent"))?;
        request.metadata_mut().insert("authorization", value);
        if let Some(code) = &self.mfa {
            let value = MetadataValue::try_from(code.as_str()).map_err(|_| {
                CliError::new("--mfa: the code contains characters that cannot be sent")
            })?;
            request.metadata_mut().insert("x-vault-mfa", value);
        }
        Ok(request)
    }
}

/// A client-library error as a CLI message; the library's own text says what to do.
pub fn from_client(error: vault_client::Error) -> CliError {
    match error {
        vault_client::Error::Connect { addr, reason } => CliError::with_hint(
            format!("cannot connect to the vault at {addr}: {reason}"),
            "is vault-server running there? (set VAULT_ADDR)",
        ),
        vault_client::Error::Config { message } => CliError::new(message),
        other => CliError::new(other.to_string()),
    }
}

/// Where `vault-cli login` keeps a refresh token: `~/.vault-refresh-token`.
pub fn refresh_token_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".vault-refresh-token"))
}

/// Where `vault-cli login` keeps the token: `~/.vault-token`.
pub fn token_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|home| !home.is_empty())
        .map(|home| PathBuf::from(home).join(".vault-token"))
}

/// The token from VAULT_TOKEN, else from `~/.vault-token` (written by `vault-cli login`).
pub fn token() -> CliResult<Zeroizing<String>> {
    if let Ok(token) = std::env::var("VAULT_TOKEN")
        && !token.trim().is_empty()
    {
        return Ok(Zeroizing::new(token.trim().to_owned()));
    }
    if let Some(path) = token_file()
        && let Ok(text) = std::fs::read_to_string(&path)
    {
        let text = Zeroizing::new(text);
        if !text.trim().is_empty() {
            return Ok(Zeroizing::new(text.trim().to_owned()));
        }
    }
    Err(CliError::with_hint(
        "no token: VAULT_TOKEN is not set and there is no ~/.vault-token",
        "export VAULT_TOKEN=<token> or run `vault-cli login` (init prints the root token)",
    ))
}
