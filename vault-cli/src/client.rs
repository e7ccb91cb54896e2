//! Connecting to the server and turning its statuses into messages with hints.

use std::{path::PathBuf, sync::OnceLock};

use tonic::{
    Code, Request, Status,
    metadata::MetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use zeroize::Zeroizing;

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

    pub fn from_status(status: Status, addr: &str) -> Self {
        let message = status.message().to_owned();
        let request_id = status
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let hint = match status.code() {
            Code::Unauthenticated => {
                Some("set VAULT_TOKEN to a token (init prints the root token)".to_owned())
            }
            Code::FailedPrecondition if message == "vault is sealed" => {
                Some("unseal it: each operator runs `vault-cli unseal` with one share".to_owned())
            }
            Code::FailedPrecondition if message == "vault is not initialized" => {
                Some("run `vault-cli init` first".to_owned())
            }
            Code::Unavailable if message.contains("transport") || message.contains("connect") => {
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

/// TLS files from the global flags; set once in main.
#[derive(Clone, Debug, Default)]
pub struct TlsFiles {
    pub ca_cert: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

static TLS: OnceLock<TlsFiles> = OnceLock::new();

pub fn set_tls(files: TlsFiles) {
    let _ = TLS.set(files);
}

static MFA_CODE: OnceLock<Option<String>> = OnceLock::new();

/// The one-time MFA code (`--mfa`) sent with every authenticated request.
pub fn set_mfa_code(code: Option<String>) {
    let _ = MFA_CODE.set(code);
}

fn tls_config(addr: &str) -> CliResult<ClientTlsConfig> {
    let files = TLS.get().cloned().unwrap_or_default();
    let read = |flag: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| CliError::new(format!("{flag} {}: {e}", path.display())))
    };
    let ca = files.ca_cert.as_ref().ok_or_else(|| {
        CliError::with_hint(
            format!("{addr} is https but no CA certificate is given"),
            "pass --ca-cert FILE or set VAULT_CACERT",
        )
    })?;
    let mut config =
        ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("--ca-cert", ca)?));
    if let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) {
        let key_pem = Zeroizing::new(read("--client-key", key)?);
        config = config.identity(Identity::from_pem(
            read("--client-cert", cert)?,
            key_pem.as_slice(),
        ));
    }
    Ok(config)
}

pub async fn connect(addr: &str) -> CliResult<Channel> {
    let mut endpoint = Endpoint::from_shared(addr.to_owned()).map_err(|_| {
        CliError::with_hint(
            format!("invalid address {addr:?}"),
            "VAULT_ADDR looks like http://127.0.0.1:8200",
        )
    })?;
    if addr.starts_with("https://") {
        endpoint = endpoint.tls_config(tls_config(addr)?).map_err(|e| {
            CliError::new(format!("invalid TLS configuration: {}", source_text(&e)))
        })?;
    }
    endpoint.connect().await.map_err(|e| {
        CliError::with_hint(
            format!("cannot connect to the vault at {addr}: {}", source_text(&e)),
            "is vault-server running there? (set VAULT_ADDR)",
        )
    })
}

fn source_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
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

/// A request carrying the bearer token.
pub fn authed<T>(message: T, token: &Zeroizing<String>) -> CliResult<Request<T>> {
    let mut request = Request::new(message);
    let value = MetadataValue::try_from(format!("Bearer {}", token.as_str()))
        .map_err(|_| CliError::new("VAULT_TOKEN contains characters that cannot be sent"))?;
    request.metadata_mut().insert("authorization", value);
    if let Some(Some(code)) = MFA_CODE.get() {
        let value = MetadataValue::try_from(code.as_str()).map_err(|_| {
            CliError::new("--mfa: the code contains characters that cannot be sent")
        })?;
        request.metadata_mut().insert("x-vault-mfa", value);
    }
    Ok(request)
}
