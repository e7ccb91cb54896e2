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
    call::{Call, presented_token},
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

#[tonic::async_trait]
impl System for SystemService {
    async fn init(
        &self,
        request: Request<v1::InitRequest>,
    ) -> Result<Response<v1::InitResponse>, Status> {
        let call = Call::of(&request);
        let v1::InitRequest {
            shares,
            threshold,
            share_recipients,
            root_token_recipient,
        } = request.into_inner();
        let vault = Arc::clone(&self.shared.vault);
        let output = call
            .blocking(move |call| {
                let recipients = InitRecipients {
                    shares: ShareRecipient::parse_all("share_recipients", &share_recipients)?,
                    root_token: (!root_token_recipient.is_empty())
                        .then(|| {
                            ShareRecipient::parse("root_token_recipient", &root_token_recipient)
                        })
                        .transpose()?,
                };
                let what = format!(
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
                );
                call.intent_to_return(&what)?;
                vault.init(shares, threshold, recipients)
            })
            .await?;
        call.answer_carries_credential();
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
        let call = Call::of(&request);
        let v1::UnsealRequest { share, reset } = request.into_inner();
        let share = zeroize::Zeroizing::new(share);
        let vault = Arc::clone(&self.shared.vault);
        let status = call
            .blocking(move |_| {
                let share = UnsealShare::parse(&share)?;
                if reset {
                    return vault.reset_unseal(&share);
                }
                vault.unseal(share)
            })
            .await?;
        Ok(Response::new(unseal_response(status)))
    }

    async fn seal(
        &self,
        request: Request<v1::SealRequest>,
    ) -> Result<Response<v1::SealResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            call.intent()?;
            vault.seal(&caller)
        })
        .await?;
        tracing::warn!("vault sealed by request");
        Ok(Response::new(v1::SealResponse {}))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let call = Call::of(&request);
        let vault = Arc::clone(&self.shared.vault);
        // Status takes the seal locks, which init and unseal hold across storage I/O.
        let status = call.blocking(move |_| Ok(vault.status())).await?;
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
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::RotateRequest { tenant, all } = request.into_inner();
        call.target(&tenant, "");
        let vault = Arc::clone(&self.shared.vault);
        if all {
            let rotated = call
                .blocking(move |call| {
                    let caller = call.authenticate(&vault, token)?;
                    if !tenant.is_empty() {
                        return Err(Error::InvalidArgument {
                            field: "tenant",
                            reason: "must be empty with `all`".into(),
                        });
                    }
                    call.intent()?;
                    vault.rotate_all(&caller)
                })
                .await?;
            return Ok(Response::new(v1::RotateResponse {
                rotated: rotated
                    .into_iter()
                    .map(|(tenant, key_version)| v1::RotatedTenant {
                        tenant: tenant.to_string(),
                        key_version,
                    })
                    .collect(),
                ..Default::default()
            }));
        }
        let (tenant, key_version) = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let tenant = TenantName::parse(&tenant)?;
                call.intent()?;
                let version = vault.rotate(&caller, &tenant)?;
                Ok::<_, Error>((tenant, version))
            })
            .await?;
        Ok(Response::new(v1::RotateResponse {
            tenant: tenant.to_string(),
            key_version,
            rotated: Vec::new(),
        }))
    }

    async fn rekey_init(
        &self,
        request: Request<v1::RekeyInitRequest>,
    ) -> Result<Response<v1::RekeyStatusResponse>, Status> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let v1::RekeyInitRequest {
            shares,
            threshold,
            rotate_root,
            share_recipients,
        } = request.into_inner();
        let vault = Arc::clone(&self.shared.vault);
        let progress = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                let recipients = ShareRecipient::parse_all("share_recipients", &share_recipients)?;
                call.note(if recipients.is_empty() {
                    "new shares in the clear".to_owned()
                } else {
                    format!("new shares encrypted to {}", share_recipients.join(", "))
                });
                call.intent()?;
                vault.rekey_init(&caller, shares, threshold, rotate_root, recipients)
            })
            .await?;
        Ok(Response::new(rekey_status(Some(progress))))
    }

    async fn rekey_submit(
        &self,
        request: Request<v1::RekeySubmitRequest>,
    ) -> Result<Response<v1::RekeySubmitResponse>, Status> {
        let call = Call::of(&request);
        let v1::RekeySubmitRequest { nonce, share } = request.into_inner();
        let share = zeroize::Zeroizing::new(share);
        let vault = Arc::clone(&self.shared.vault);
        let progress = call
            .blocking(move |call| {
                let share = UnsealShare::parse(&share)?;
                // This submission may be the one that stages the rekey and returns the new
                // shares: its record says so before anything is committed.
                call.intent_to_return(
                    "the new unseal shares, if this submission stages the rekey",
                )?;
                vault.rekey_submit(&nonce, share)
            })
            .await?;
        if !progress.new_shares.is_empty() {
            call.answer_carries_credential();
        }
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
        let call = Call::of(&request);
        let v1::RekeyVerifyRequest { nonce, share } = request.into_inner();
        let share = zeroize::Zeroizing::new(share);
        let vault = Arc::clone(&self.shared.vault);
        let progress = call
            .blocking(move |call| {
                let share = UnsealShare::parse(&share)?;
                call.intent()?;
                vault.rekey_verify(&nonce, share)
            })
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
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = Arc::clone(&self.shared.vault);
        call.blocking(move |call| {
            let caller = call.authenticate(&vault, token)?;
            call.intent()?;
            vault.rekey_cancel(&caller)
        })
        .await?;
        Ok(Response::new(v1::RekeyCancelResponse {}))
    }

    async fn rekey_status(
        &self,
        request: Request<v1::RekeyStatusRequest>,
    ) -> Result<Response<v1::RekeyStatusResponse>, Status> {
        let call = Call::of(&request);
        let vault = Arc::clone(&self.shared.vault);
        let progress = call.blocking(move |_| vault.rekey_status()).await?;
        Ok(Response::new(rekey_status(progress)))
    }

    async fn verify_share(
        &self,
        request: Request<v1::VerifyShareRequest>,
    ) -> Result<Response<v1::VerifyShareResponse>, Status> {
        let call = Call::of(&request);
        let v1::VerifyShareRequest { share } = request.into_inner();
        let share = zeroize::Zeroizing::new(share);
        let vault = Arc::clone(&self.shared.vault);
        let check = call
            .blocking(move |_| vault.verify_share(&UnsealShare::parse(&share)?))
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
