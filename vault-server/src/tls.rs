//! TLS for every listener (gRPC, the HTTP API, metrics) from `--tls-cert`, `--tls-key` and
//! `--tls-client-ca`, with the certificate and key re-read on SIGHUP.
//!
//! One [`ServerCert`] holds the certificate chain and key in force; every listener's rustls
//! configuration resolves through it, so a reload takes effect for the next handshake on all
//! of them, and connections already open keep theirs. A reload that fails (a file missing, a
//! key that does not match the certificate) keeps the pair in force and says why. The client
//! CA is read at start only.
//!
//! gRPC's handshakes are made here, not by tonic ([`incoming`]): each in its own task, bounded
//! by the header timeout, so a client that never finishes one holds nothing but its own
//! connection's place.

use std::{
    io,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures_util::{Stream, StreamExt};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

use crate::transport::GuardedStream;

/// The certificate and key every listener presents.
pub struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// Reads a certificate chain and its key, and checks that they belong together.
fn read_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in it",
            cert.display()
        ));
    }
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private_key)
        .map_err(|e| format!("--tls-key {}: {e}", key.display()))?;
    let pair = CertifiedKey::new(certs, signing);
    pair.keys_match().map_err(|e| {
        format!(
            "--tls-key {} does not match --tls-cert {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(Arc::new(pair))
}

impl ServerCert {
    /// Reads the pair at start.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerCert>, String> {
        Ok(Arc::new(ServerCert {
            current: RwLock::new(read_pair(cert, key)?),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }))
    }

    /// Re-reads the files (the paths may have changed with the configuration); the pair in
    /// force stays when they do not make a valid one.
    pub fn reload(&self, cert: &Path, key: &Path) -> Result<(), String> {
        let pair = read_pair(cert, key)?;
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = pair;
        Ok(())
    }

    /// The certificate in force (its DER), to tell a reload from no change.
    pub fn fingerprint(&self) -> String {
        let current = self
            .current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        current.cert.first().map_or_else(String::new, |leaf| {
            hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf.as_ref()).as_ref())
        })
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        ))
    }
}

/// A listener's rustls configuration: the shared certificate, client certificates when a CA is
/// given, and the listener's ALPN protocols.
pub fn server_config(
    cert: &Arc<ServerCert>,
    client_ca: Option<&Path>,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for certificate in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?
            {
                let certificate =
                    certificate.map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
                roots
                    .add(certificate)
                    .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("--tls-client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::clone(cert) as Arc<dyn ResolvesServerCert>);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// TLS connections from the accepted ones: each handshake in its own task, at most
/// `handshake_timeout` long; the failures are dropped.
pub fn incoming(
    accepted: impl Stream<Item = io::Result<GuardedStream>> + Send + 'static,
    config: Arc<rustls::ServerConfig>,
    handshake_timeout: Duration,
) -> impl Stream<Item = io::Result<TlsStream<GuardedStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let next = tokio::select! {
                next = accepted.next() => next,
                () = sender.closed() => break,
            };
            let Some(next) = next else { break };
            let Ok(stream) = next else { continue };
            let (acceptor, sender) = (acceptor.clone(), sender.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
