//! What `run` and `render` share: references to secret fields, resolving them with one read
//! per secret, and waiting for any of the referenced secrets to change.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::mpsc;
use vault_client::{Client, Credentials, Error, SecretValue, Start};

use crate::client::{CliError, CliResult, Ctx, from_client, token};

/// One field of one secret, and where it was asked for (for error messages).
pub struct FieldRef {
    pub path: String,
    pub field: String,
    pub origin: String,
}

/// A client logged in with the CLI's token (VAULT_TOKEN or ~/.vault-token). With `renew`, the
/// token is renewed in the background for as long as the command runs.
pub async fn client(ctx: &Ctx, renew: bool) -> CliResult<Client> {
    let token = token()?;
    ctx.builder()?
        .renew_in_background(renew)
        .connect(Credentials::token(token.as_str()))
        .await
        .map_err(from_client)
}

/// The values of `refs`, in order: one read per distinct secret, so fields of one secret come
/// from the same version. Fails naming the first secret or field that cannot be read.
pub async fn resolve(
    client: &Client,
    tenant: &str,
    refs: &[FieldRef],
) -> CliResult<Vec<SecretValue>> {
    let mut secrets = BTreeMap::new();
    for reference in refs {
        if !secrets.contains_key(&reference.path) {
            let secret = client
                .get(tenant, &reference.path)
                .await
                .map_err(|e| located(reference, e))?;
            secrets.insert(reference.path.clone(), secret);
        }
    }
    refs.iter()
        .map(|reference| {
            let value = secrets
                .get(&reference.path)
                .ok_or_else(|| CliError::new(format!("{}: not read", reference.path)))?
                .field(&reference.field)
                .map_err(|e| located(reference, e))?;
            Ok(SecretValue::new(value.expose().to_vec()))
        })
        .collect()
}

fn located(reference: &FieldRef, error: Error) -> CliError {
    match error {
        Error::NotFound { message } => CliError::new(format!(
            "{}: {}#{}: {message}",
            reference.origin, reference.path, reference.field
        )),
        other => {
            let mut error = from_client(other);
            error.message = format!("{}: {}", reference.origin, error.message);
            error
        }
    }
}

/// Changes to a set of secrets, from one watch per secret (a watch on one secret needs only
/// `read` on it, which reading it needs anyway).
pub struct Changes {
    events: mpsc::Receiver<Result<(), Error>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Changes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Changes {
    /// Opens the watches. Open them before reading the secrets: every change after this
    /// returns is then reported, so nothing falls between the read and the watch.
    pub async fn open(client: &Client, tenant: &str, paths: BTreeSet<String>) -> CliResult<Self> {
        let (sender, events) = mpsc::channel(16);
        let mut tasks = Vec::new();
        for path in paths {
            let mut watch = client.watch(tenant, &path, Start::Now).await.map_err(|e| {
                CliError::new(format!("watching {path}: {}", from_client(e).message))
            })?;
            let sender = sender.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let outcome = match watch.next().await {
                        Ok(_) => Ok(()),
                        // The feed moved past us: whatever changed, reading again tells.
                        // Re-opened before the reader is told, so no change falls between.
                        Err(Error::OutOfRange { .. }) => match watch.restart(Start::Now).await {
                            Err(error) if !error.is_retryable() => Err(error),
                            _ => Ok(()),
                        },
                        Err(error) => Err(error),
                    };
                    let failed = outcome.is_err();
                    if sender.send(outcome).await.is_err() || failed {
                        return;
                    }
                }
            }));
        }
        Ok(Changes { events, tasks })
    }

    /// Waits until one of the secrets changed (and takes every change already waiting, so a
    /// burst is one change); fails when a watch ends for good (access revoked, say).
    pub async fn next(&mut self) -> CliResult<()> {
        let first = self
            .events
            .recv()
            .await
            .ok_or_else(|| CliError::new("every watch has ended"))?;
        first.map_err(from_client)?;
        while let Ok(more) = self.events.try_recv() {
            more.map_err(from_client)?;
        }
        Ok(())
    }
}

/// Whether two resolutions hold the same values.
pub fn same(a: &[SecretValue], b: &[SecretValue]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}
