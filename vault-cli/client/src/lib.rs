//! The vault's Rust client library: connect (with TLS), log in (token, AppRole or JWT), keep the
//! token alive in the background, read secrets and fields, and watch for changes.
//!
//! ```no_run
//! # async fn example() -> Result<(), vault_client::Error> {
//! use vault_client::{Client, Credentials};
//!
//! // VAULT_ADDR, VAULT_CACERT (and VAULT_CLIENT_CERT / VAULT_CLIENT_KEY for mutual TLS).
//! let client = Client::builder_from_env()?
//!     .connect(Credentials::approle("acme", "ROLE-ID", "SECRET-ID"))
//!     .await?;
//! let secret = client.get("acme", "db/primary").await?;
//! let password = secret.field("password")?.as_str()?;
//! # let _ = password;
//! # Ok(())
//! # }
//! ```
//!
//! Secret values and tokens live in types that zeroize their memory on drop and have no Debug,
//! Display or Clone. Errors are typed ([`Error`]) and their messages say what to do.

#![forbid(unsafe_code)]

mod auth;
mod error;
mod secrets;
pub mod transit;
mod watch;

use std::{path::Path, sync::Arc, time::Duration};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

pub use auth::{Credentials, TokenStatus};
pub use error::{Error, Result};
pub use secrets::{Secret, SecretValue};
pub use watch::{Event, EventKind, Start, Watch};

/// The address used when VAULT_ADDR is not set.
pub const DEFAULT_ADDR: &str = "http://127.0.0.1:8200";

/// How long a call may take before it fails with [`Error::Unavailable`] (watches excepted).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where to connect and how: address, TLS, background renewal.
pub struct ClientBuilder {
    addr: String,
    ca_pem: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Zeroizing<Vec<u8>>)>,
    renew: bool,
    timeout: Duration,
}

impl ClientBuilder {
    /// An address such as `https://vault.internal:8200` (or `http://127.0.0.1:8200`; the server
    /// only serves plaintext on loopback).
    pub fn new(addr: impl Into<String>) -> Self {
        ClientBuilder {
            addr: addr.into(),
            ca_pem: None,
            identity: None,
            renew: true,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Trust this PEM CA certificate for an `https://` address.
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Read the CA certificate from a PEM file.
    pub fn ca_certificate_file(self, path: impl AsRef<Path>) -> Result<Self> {
        let pem = read_file("ca certificate", path.as_ref())?;
        Ok(self.ca_certificate_pem(pem.to_vec()))
    }

    /// Present this client certificate and key (PEM) to servers that require mutual TLS.
    pub fn client_identity_pem(
        mut self,
        cert: impl Into<Vec<u8>>,
        key: Zeroizing<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert.into(), key));
        self
    }

    /// Read the client certificate and key from PEM files.
    pub fn client_identity_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self> {
        let cert = read_file("client certificate", cert.as_ref())?;
        let key = read_file("client key", key.as_ref())?;
        Ok(self.client_identity_pem(cert.to_vec(), key))
    }

    /// Renew the token in the background before it expires, and log in again with the same
    /// credentials (or the refresh token) when it cannot be renewed any further. On by default.
    pub fn renew_in_background(mut self, renew: bool) -> Self {
        self.renew = renew;
        self
    }

    /// How long a call may take (default 30 s). Watches are not limited.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A gRPC channel to the server, for code that uses the generated stubs directly. No login.
    pub async fn channel(&self) -> Result<Channel> {
        let mut endpoint = Endpoint::from_shared(self.addr.clone()).map_err(|_| {
            Error::config(format!(
                "address {:?} is not a URL like https://vault.internal:8200",
                self.addr
            ))
        })?;
        if self.addr.starts_with("https://") {
            let ca = self.ca_pem.as_ref().ok_or_else(|| {
                Error::config(format!(
                    "{} is https but no CA certificate is given (VAULT_CACERT)",
                    self.addr
                ))
            })?;
            let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
            if let Some((cert, key)) = &self.identity {
                tls = tls.identity(Identity::from_pem(cert, key.as_slice()));
            }
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::config(format!("TLS: {}", error::chain(&e))))?;
        } else if self.identity.is_some() || self.ca_pem.is_some() {
            return Err(Error::config(format!(
                "TLS files are given but the address {} is not https://",
                self.addr
            )));
        }
        endpoint
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|e| Error::Connect {
                addr: self.addr.clone(),
                reason: error::chain(&e),
            })
    }

    /// Connects and logs in. Token credentials are checked with a lookup; AppRole and JWT
    /// credentials are exchanged for a token. With background renewal on (the default), a task
    /// keeps the token alive until the client is dropped.
    pub async fn connect(self, credentials: Credentials) -> Result<Client> {
        let channel = self.channel().await?;
        let session = auth::Session::login(channel.clone(), credentials, self.timeout).await?;
        let inner = Arc::new(Inner {
            channel,
            addr: self.addr,
            timeout: self.timeout,
            session,
        });
        let renewer = self
            .renew
            .then(|| tokio::spawn(auth::renew_in_background(Arc::downgrade(&inner))));
        Ok(Client { inner, renewer })
    }
}

fn read_file(what: &str, path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::config(format!("{what} {}: {e}", path.display())))
}

/// Shared by the client, its watches and its renewal task.
pub(crate) struct Inner {
    channel: Channel,
    addr: String,
    timeout: Duration,
    session: auth::Session,
}

impl Inner {
    /// A request carrying the current token and the call timeout.
    pub(crate) fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        let mut request = self.session.authorize(tonic::Request::new(message))?;
        request.set_timeout(self.timeout);
        Ok(request)
    }
}

/// A logged-in connection to the vault. Dropping it stops the background renewal (the token
/// stays valid until it expires; call [`Client::revoke`] to end it at once).
pub struct Client {
    inner: Arc<Inner>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(renewer) = &self.renewer {
            renewer.abort();
        }
    }
}

impl Client {
    /// A builder for `addr`.
    pub fn builder(addr: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(addr)
    }

    /// A builder from the environment the CLI also reads: VAULT_ADDR (default
    /// `http://127.0.0.1:8200`), VAULT_CACERT, VAULT_CLIENT_CERT and VAULT_CLIENT_KEY.
    pub fn builder_from_env() -> Result<ClientBuilder> {
        let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
        let addr = var("VAULT_ADDR")
            .map(|value| {
                value
                    .into_string()
                    .map_err(|_| Error::config("VAULT_ADDR is not UTF-8"))
            })
            .transpose()?
            .unwrap_or_else(|| DEFAULT_ADDR.to_owned());
        let mut builder = ClientBuilder::new(addr);
        if let Some(ca) = var("VAULT_CACERT") {
            builder = builder.ca_certificate_file(ca)?;
        }
        match (var("VAULT_CLIENT_CERT"), var("VAULT_CLIENT_KEY")) {
            (Some(cert), Some(key)) => builder = builder.client_identity_files(cert, key)?,
            (None, None) => {}
            _ => {
                return Err(Error::config(
                    "VAULT_CLIENT_CERT and VAULT_CLIENT_KEY go together; set both or neither",
                ));
            }
        }
        Ok(builder)
    }

    /// The address this client talks to.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The underlying channel, for the generated stubs (`vault_proto::v1::*_client`); pair it
    /// with [`Client::request`] so calls carry the token.
    pub fn channel(&self) -> Channel {
        self.inner.channel.clone()
    }

    /// A request for the generated stubs, carrying the current token and the call timeout.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>> {
        self.inner.request(message)
    }

    /// The token's accessor, expiry and the last background renewal problem, if any.
    pub fn token_status(&self) -> TokenStatus {
        self.inner.session.status()
    }

    /// Renews the token now (background renewal does this by itself).
    pub async fn renew(&self) -> Result<TokenStatus> {
        auth::renew_once(&self.inner).await?;
        Ok(self.token_status())
    }

    /// Revokes the token (and every token created from it).
    pub async fn revoke(&self) -> Result<()> {
        auth::revoke(&self.inner).await
    }
}
