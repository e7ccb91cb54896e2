//! System service: init, unseal, seal, status, rotate, rekey and the share check.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    names::TenantName,
    recipient::{Handout, ShareRecipient},
    shamir::UnsealShare,
    time::rfc3339,
    vault::{InitRecipients, RekeyProgress, SealStatus, ShareCheck},
};
use vault_proto::v1::{self, system_server::System};

use crate::{
    Shared,
    serve::{at, nothing, serve, serve_noted, serve_returning},
};

pub struct SystemService {
    shared: Arc<Shared>,
}

impl SystemService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        SystemService { shared }
    }
}

fn unseal_response(status: SealStatus) -> v1::UnsealResponse {
    v1::UnsealResponse {
        sealed: status.sealed,
        threshold: status.threshold,
        shares: status.shares,
        progress: status.progress,
    }
}

/// A share as the answer carries it: base64, or the armored age file made for its holder.
fn handout_share(share: &Handout<UnsealShare>) -> String {
    match share {
        Handout::Plain(share) => share.expose_secret().to_string(),
        Handout::Encrypted(armored) => armored.clone(),
    }
}

/// A share from a request, parsed (the text zeroizes once parsed).
fn share_of(text: String) -> Result<UnsealShare, Error> {
    UnsealShare::parse(&zeroize::Zeroizing::new(text))
}

#[tonic::async_trait]
impl System for SystemService {
    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<v1::InitResponse>, Status> {
        let output = serve_returning(
            &self.shared.vault,
            request,
            nothing,
            |r| {
                let recipients = InitRecipients {
                    shares: ShareRecipient::parse_all("share_recipients", &r.share_recipients)?,
                    root_token: (!r.root_token_recipient.is_empty())
                        .then(|| {
                            ShareRecipient::parse("root_token_recipient", &r.root_token_recipient)
                        })
                        .transpose()?,
                };
                Ok((r.shares, r.threshold, recipients))
            },
            |(shares, _, recipients)| {
                format!(
                    "{shares} unseal shares ({}) and the root token ({})",
                    if recipients.shares.is_empty() {
                        "in the clear"
                    } else {
                        "each encrypted to its recipient"
                    },
                    if recipients.root_token.is_some() {
                        "encrypted to its recipient"
                    } else {
                        "in the clear"
                    }
                )
            },
            |_| true,
            |step, (shares, threshold, recipients)| step.vault.init(shares, threshold, recipients),
        )
        .await?;
        let shares_encrypted = output.shares.first().is_some_and(Handout::is_encrypted);
        let root_token_encrypted = output.root_token.is_encrypted();
        Ok(Response::new(v1::InitResponse {
            shares: output.shares.iter().map(handout_share).collect(),
            root_token: match &output.root_token {
                Handout::Plain(token) => token.expose_secret().to_owned(),
                Handout::Encrypted(armored) => armored.clone(),
            },
            threshold: output.threshold,
            shares_encrypted,
            root_token_encrypted,
        }))
    }

    async fn unseal(
        &self,
        request: Request<v1::UnsealRequest>,
    ) -> Result<Response<v1::UnsealResponse>, Status> {
        let status = serve(
            &self.shared.vault,
            request,
            nothing,
            |r| Ok((share_of(r.share)?, r.reset)),
            |step, (share, reset)| {
                if reset {
                    return step.vault.reset_unseal(&share);
                }
                step.vault.unseal(share)
            },
        )
        .await?;
        Ok(Response::new(unseal_response(status)))
    }

    async fn seal(
        &self,
        request: Request<v1::SealRequest>,
    ) -> Result<Response<v1::SealResponse>, Status> {
        serve(
            &self.shared.vault,
            request,
            nothing,
            |_| Ok(()),
            |step, ()| step.vault.seal(step.caller()?),
        )
        .await?;
        tracing::warn!("vault sealed by request");
        Ok(Response::new(v1::SealResponse {}))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        // Status takes the seal locks, which init and unseal hold across storage I/O: it runs
        // on the blocking pool like every other step.
        let status = serve(
            &self.shared.vault,
            request,
            nothing,
            |_| Ok(()),
            |step, ()| Ok(step.vault.status()),
        )
        .await?;
        Ok(Response::new(v1::StatusResponse {
            initialized: status.initialized,
            sealed: status.sealed,
            threshold: status.threshold,
            shares: status.shares,
            progress: status.progress,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: self.shared.node_id.clone(),
            storage: self.shared.vault.storage_kind().to_owned(),
        }))
    }

    async fn rotate(
        &self,
        request: Request<v1::RotateRequest>,
    ) -> Result<Response<v1::RotateResponse>, Status> {
        let rotated = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, ""),
            |r| match (r.all, r.tenant.is_empty()) {
                (true, true) => Ok(None),
                (true, false) => Err(Error::InvalidArgument {
                    field: "tenant",
                    reason: "must be empty with `all`".into(),
                }),
                (false, _) => Ok(Some(TenantName::parse(&r.tenant)?)),
            },
            |step, tenant| match tenant {
                None => step.vault.keks().rotate_all(step.caller()?).map(Err),
                Some(tenant) => {
                    let version = step.vault.keks().rotate(step.caller()?, &tenant)?;
                    Ok(Ok((tenant, version)))
                }
            },
        )
        .await?;
        Ok(Response::new(match rotated {
            Ok((tenant, key_version)) => v1::RotateResponse {
                tenant: tenant.to_string(),
                key_version,
                rotated: Vec::new(),
            },
            Err(all) => v1::RotateResponse {
                rotated: all
                    .into_iter()
                    .map(|(tenant, key_version)| v1::RotatedTenant {
                        tenant: tenant.to_string(),
                        key_version,
                    })
                    .collect(),
                ..Default::default()
            },
        }))
    }

    async fn rekey_init(
        &self,
        request: Request<v1::RekeyInitRequest>,
    ) -> Result<Response<v1::RekeyStatusResponse>, Status> {
        let progress = serve_noted(
            &self.shared.vault,
            request,
            nothing,
            |r| {
                let recipients =
                    ShareRecipient::parse_all("share_recipients", &r.share_recipients)?;
                Ok((r, recipients))
            },
            // The intent record names the recipients before anything changes.
            |(r, recipients)| {
                if recipients.is_empty() {
                    "new shares in the clear".to_owned()
                } else {
                    format!("new shares encrypted to {}", r.share_recipients.join(", "))
                }
            },
            |step, (r, recipients)| {
                step.vault.rekey_init(
                    step.caller()?,
                    r.shares,
                    r.threshold,
                    r.rotate_root,
                    recipients,
                )
            },
        )
        .await?;
        Ok(Response::new(rekey_status(Some(progress))))
    }

    async fn rekey_submit(
        &self,
        request: Request<v1::RekeySubmitRequest>,
    ) -> Result<Response<v1::RekeySubmitResponse>, Status> {
        let progress = serve_returning(
            &self.shared.vault,
            request,
            nothing,
            |r| Ok((r.nonce, share_of(r.share)?)),
            // This submission may be the one that stages the rekey and returns the new shares:
            // its record says so before anything is committed.
            |_| "the new unseal shares, if this submission stages the rekey".into(),
            |progress: &RekeyProgress| !progress.new_shares.is_empty(),
            |step, (nonce, share)| step.vault.rekey_submit(&nonce, share),
        )
        .await?;
        if progress.staged {
            tracing::warn!(
                shares = progress.shares,
                threshold = progress.threshold,
                "rekey staged: the new shares were handed out; the current shares stay in force until a threshold of the new ones is verified"
            );
        }
        Ok(Response::new(v1::RekeySubmitResponse {
            complete: false,
            progress: progress.progress,
            required: progress.required,
            shares_encrypted: progress
                .new_shares
                .first()
                .is_some_and(Handout::is_encrypted),
            shares: progress.new_shares.iter().map(handout_share).collect(),
            threshold: progress.threshold,
            verification_nonce: progress.verification_nonce,
        }))
    }

    async fn rekey_verify(
        &self,
        request: Request<v1::RekeyVerifyRequest>,
    ) -> Result<Response<v1::RekeyVerifyResponse>, Status> {
        let progress = serve(
            &self.shared.vault,
            request,
            nothing,
            |r| Ok((r.nonce, share_of(r.share)?)),
            |step, (nonce, share)| step.vault.rekey_verify(&nonce, share),
        )
        .await?;
        if progress.complete {
            tracing::warn!(
                shares = progress.shares,
                threshold = progress.threshold,
                "rekey verified and committed: the previous unseal shares no longer work"
            );
        }
        Ok(Response::new(v1::RekeyVerifyResponse {
            complete: progress.complete,
            progress: progress.verification_progress,
            required: progress.verification_required,
        }))
    }

    async fn rekey_cancel(
        &self,
        request: Request<v1::RekeyCancelRequest>,
    ) -> Result<Response<v1::RekeyCancelResponse>, Status> {
        serve(
            &self.shared.vault,
            request,
            nothing,
            |_| Ok(()),
            |step, ()| step.vault.rekey_cancel(step.caller()?),
        )
        .await?;
        Ok(Response::new(v1::RekeyCancelResponse {}))
    }

    async fn rekey_status(
        &self,
        request: Request<v1::RekeyStatusRequest>,
    ) -> Result<Response<v1::RekeyStatusResponse>, Status> {
        let progress = serve(
            &self.shared.vault,
            request,
            nothing,
            |_| Ok(()),
            |step, ()| step.vault.rekey_status(),
        )
        .await?;
        Ok(Response::new(rekey_status(progress)))
    }

    async fn verify_share(
        &self,
        request: Request<v1::VerifyShareRequest>,
    ) -> Result<Response<v1::VerifyShareResponse>, Status> {
        let check = serve(
            &self.shared.vault,
            request,
            nothing,
            |r| share_of(r.share),
            |step, share| step.vault.verify_share(&share),
        )
        .await?;
        Ok(Response::new(v1::VerifyShareResponse {
            result: match check {
                ShareCheck::Current => "current",
                ShareCheck::Staged => "staged",
                ShareCheck::NotCurrent => "not-current",
                ShareCheck::Unknown => "unknown",
            }
            .into(),
        }))
    }
}

fn rekey_status(progress: Option<RekeyProgress>) -> v1::RekeyStatusResponse {
    match progress {
        Some(p) => v1::RekeyStatusResponse {
            started: true,
            nonce: p.nonce,
            shares: p.shares,
            threshold: p.threshold,
            progress: p.progress,
            required: p.required,
            started_time: rfc3339(p.started_unix_nanos),
            rotate_root: p.rotate_root,
            verification_pending: p.staged,
            verification_nonce: p.verification_nonce,
            verification_progress: p.verification_progress,
            verification_required: p.verification_required,
            share_recipients: p.recipients,
        },
        None => v1::RekeyStatusResponse::default(),
    }
}
