//! The transit auto seal: the unseal key of one vault wrapped by a named key of another (its
//! KMS, over gRPC with TLS), as `vault-server --seal transit` uses it.
//!
//! The seal's calls come from the server's blocking threads, so the client lives on a thread
//! of its own with its own runtime (which also renews the token in the background); each wrap
//! or unwrap is a message to it (refused at once when 16 wait) and an answer back (waited for
//! at most twice the call timeout). A failed call drops the connection; the thread connects
//! again at the next call or within [`KEEPALIVE`], so that the token's renewal goes on while
//! the vault has nothing to ask. Each wrap binds the unseal key's version as the named key's
//! encryption context (`vault-seal=unseal-key`, `version=N`).
//!
//! Limits: the unseal key passes through the request and answer buffers of gRPC and prost,
//! which do not zeroize; mutual TLS to the seal's vault is not supported.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use tokio::sync::mpsc;
use vault_core::{Error as CoreError, autoseal::AutoSeal, secret::SecretKey};
use vault_proto::v1::{self, kms_client::KmsClient};
use zeroize::Zeroizing;

use crate::{Client, ClientBuilder, Credentials};

/// How long one wrap or unwrap may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a lost connection is made again while nothing is asked (so the token stays
/// renewed).
const KEEPALIVE: Duration = Duration::from_secs(30);

/// Whether `url` is http:// to a loopback address (no user part, which could hide another
/// host after an `@`).
pub fn is_loopback_url(url: &str) -> bool {
    let Ok(uri) = url.parse::<tonic::codegen::http::Uri>() else {
        return false;
    };
    let Some(authority) = uri.authority() else {
        return false;
    };
    if uri.scheme_str() != Some("http") || authority.as_str().contains('@') {
        return false;
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where the transit seal's key is and how to reach it.
pub struct TransitSettings {
    /// `https://other-vault:8200` (plaintext `http://` only on loopback, as the server allows).
    pub addr: String,
    /// The tenant that owns the named key.
    pub tenant: String,
    /// The named key (an AES-256-GCM key of the other vault's KMS).
    pub key: String,
    /// A file with the token (its policy needs `encrypt` and `decrypt` on the key).
    pub token_file: PathBuf,
    /// The CA certificate (PEM) of the other vault's TLS certificate, for `https://`.
    pub ca_file: Option<PathBuf>,
}

enum Op {
    Wrap(Zeroizing<Vec<u8>>, u32),
    Unwrap(String, u32),
}

struct Job {
    op: Op,
    /// When the caller stops waiting: a job still queued then is dropped, not run.
    deadline: std::time::Instant,
    reply: std::sync::mpsc::SyncSender<Result<Zeroizing<Vec<u8>>, String>>,
}

/// A seal whose key is another vault's named key.
pub struct TransitSeal {
    addr: String,
    tenant: String,
    key: String,
    jobs: mpsc::Sender<Job>,
}

impl TransitSeal {
    /// Reads the token (and CA) files and starts the seal's thread; connects on first use.
    pub fn start(settings: TransitSettings) -> Result<TransitSeal, String> {
        for (flag, value) in [
            ("--seal-addr", &settings.addr),
            ("--seal-tenant", &settings.tenant),
            ("--seal-key", &settings.key),
        ] {
            if value.trim().is_empty() {
                return Err(format!("--seal transit needs {flag}"));
            }
        }
        if !settings.addr.starts_with("https://") && !is_loopback_url(&settings.addr) {
            return Err(format!(
                "--seal-addr {}: the transit seal talks TLS (https://) except on loopback, so \
                 that neither its token nor the unseal key crosses a network in the clear",
                settings.addr
            ));
        }
        let token = Zeroizing::new(std::fs::read_to_string(&settings.token_file).map_err(|e| {
            format!(
                "--seal-token-file {}: cannot read it: {e}",
                settings.token_file.display()
            )
        })?);
        let token = Zeroizing::new(token.trim().to_owned());
        if token.is_empty() {
            return Err(format!(
                "--seal-token-file {} is empty",
                settings.token_file.display()
            ));
        }
        let mut builder = Client::builder(settings.addr.clone()).timeout(CALL_TIMEOUT);
        if let Some(ca) = &settings.ca_file {
            builder = builder
                .ca_certificate_file(ca)
                .map_err(|e| format!("--seal-ca-file: {e}"))?;
        } else if settings.addr.starts_with("https://") {
            return Err(
                "--seal-addr is https: give the other vault's CA with --seal-ca-file".into(),
            );
        }
        let (jobs, queue) = mpsc::channel(16);
        let worker = Worker {
            builder,
            token,
            tenant: settings.tenant.clone(),
            key: settings.key.clone(),
            client: None,
        };
        // The runtime is made on the thread itself: nothing async is dropped here.
        std::thread::Builder::new()
            .name("transit-seal".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime.block_on(worker.run(queue)),
                    Err(error) => {
                        eprintln!("vault-server: cannot start the transit seal's runtime: {error}");
                    }
                }
            })
            .map_err(|e| format!("cannot start the transit seal's thread: {e}"))?;
        Ok(TransitSeal {
            addr: settings.addr,
            tenant: settings.tenant,
            key: settings.key,
            jobs,
        })
    }

    fn ask(&self, op: Op) -> Result<Zeroizing<Vec<u8>>, CoreError> {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let deadline = std::time::Instant::now() + CALL_TIMEOUT * 2;
        self.jobs
            .try_send(Job {
                op,
                reply,
                deadline,
            })
            .map_err(|error| match error {
                mpsc::error::TrySendError::Full(_) => {
                    self.unavailable("too many calls waiting for it")
                }
                mpsc::error::TrySendError::Closed(_) => self.unavailable("its thread has stopped"),
            })?;
        answer
            .recv_timeout(CALL_TIMEOUT * 2)
            .map_err(|_| self.unavailable("no answer in time"))?
            .map_err(|reason| self.unavailable(&reason))
    }

    fn unavailable(&self, reason: &str) -> CoreError {
        CoreError::SealUnavailable(format!(
            "transit seal {} key {}/{}: {reason}",
            self.addr, self.tenant, self.key
        ))
    }
}

impl AutoSeal for TransitSeal {
    fn kind(&self) -> &'static str {
        "transit"
    }

    fn id(&self) -> String {
        format!("{}/{}", self.tenant, self.key)
    }

    fn wrap(&self, key: &SecretKey, version: u32) -> Result<String, CoreError> {
        let wrapped = self.ask(Op::Wrap(
            Zeroizing::new(key.expose_secret().to_vec()),
            version,
        ))?;
        String::from_utf8(wrapped.to_vec())
            .map_err(|_| self.unavailable("a ciphertext that is not text"))
    }

    fn unwrap(&self, wrapped: &str, version: u32) -> Result<SecretKey, CoreError> {
        let bytes = self.ask(Op::Unwrap(wrapped.to_owned(), version))?;
        SecretKey::from_bytes(bytes)
            .ok_or_else(|| self.unavailable("it returned a key of the wrong length"))
    }
}

/// The seal's thread: one connection, made again after a failure.
struct Worker {
    builder: ClientBuilder,
    token: Zeroizing<String>,
    tenant: String,
    key: String,
    client: Option<Client>,
}

impl Worker {
    async fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        let mut keepalive = tokio::time::interval(KEEPALIVE);
        loop {
            let job = tokio::select! {
                job = queue.recv() => job,
                _ = keepalive.tick() => {
                    if self.client.is_none()
                        && tokio::time::timeout(CALL_TIMEOUT, self.connected()).await.is_err()
                    {
                        self.client = None;
                    }
                    continue;
                }
            };
            let Some(job) = job else {
                return;
            };
            if std::time::Instant::now() >= job.deadline {
                let _ = job.reply.send(Err("its caller stopped waiting".into()));
                continue;
            }
            let answer = match tokio::time::timeout(CALL_TIMEOUT, self.call(job.op)).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {} s", CALL_TIMEOUT.as_secs())),
            };
            if answer.is_err() {
                self.client = None;
            }
            let _ = job.reply.send(answer);
        }
    }

    async fn connected(&mut self) -> Result<&Client, String> {
        if self.client.is_none() {
            let builder = ClientBuilder {
                addr: self.builder.addr.clone(),
                ca_pem: self.builder.ca_pem.clone(),
                identity: None,
                renew: true,
                timeout: CALL_TIMEOUT,
            };
            let client = builder
                .connect(Credentials::token(self.token.as_str()))
                .await
                .map_err(|e| e.to_string())?;
            self.client = Some(client);
        }
        self.client
            .as_ref()
            .ok_or_else(|| "not connected".to_owned())
    }

    async fn call(&mut self, op: Op) -> Result<Zeroizing<Vec<u8>>, String> {
        let tenant = self.tenant.clone();
        let key = self.key.clone();
        let client = self.connected().await?;
        let mut kms = KmsClient::new(client.channel());
        match op {
            Op::Wrap(mut plaintext, version) => {
                let request = client
                    .request(v1::EncryptRequest {
                        tenant,
                        key,
                        plaintext: std::mem::take(&mut *plaintext),
                        context: context(version),
                        sensitive_context: Vec::new(),
                        key_version: 0,
                    })
                    .map_err(|e| e.to_string())?;
                let answer = kms
                    .encrypt(request)
                    .await
                    .map_err(|status| crate::Error::from(status).to_string())?;
                Ok(Zeroizing::new(answer.into_inner().ciphertext.into_bytes()))
            }
            Op::Unwrap(ciphertext, version) => {
                let request = client
                    .request(v1::DecryptRequest {
                        tenant,
                        key,
                        ciphertext,
                        context: context(version),
                        sensitive_context: Vec::new(),
                    })
                    .map_err(|e| e.to_string())?;
                let answer = kms
                    .decrypt(request)
                    .await
                    .map_err(|status| crate::Error::from(status).to_string())?;
                Ok(Zeroizing::new(answer.into_inner().plaintext))
            }
        }
    }
}

/// The encryption context each wrap binds: a ciphertext made for another purpose or unseal
/// key version does not decrypt as this one.
fn context(version: u32) -> HashMap<String, String> {
    HashMap::from([
        ("vault-seal".to_owned(), "unseal-key".to_owned()),
        ("version".to_owned(), version.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_loopback_addresses_pass_as_plaintext_seal_addresses() {
        for url in [
            "http://127.0.0.1:8200",
            "http://localhost:8200",
            "http://[::1]:8200",
        ] {
            assert!(super::is_loopback_url(url), "{url}");
        }
        for url in [
            "http://localhost:8200@evil.example/",
            "http://evil.example:8200",
            "http://10.0.0.1:8200",
            "https://127.0.0.1:8200",
            "http://localhost.evil.example:8200",
            "not a url",
        ] {
            assert!(!super::is_loopback_url(url), "{url}");
        }
    }
}
