//! System service: init, unseal, seal, status, rotate, rekey and the share check.

use std::pin::Pin;

use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    names::TenantName,
    recipient::{Handout, ShareRecipient},
    shamir::UnsealShare,
    time::rfc3339,
    vault::{
        GenerateRootProgress, InitRecipients, MigrationProgress, RekeyProgress, SealStatus,
        SealTarget, ShareCheck,
    },
};
use vault_proto::v1::{
    self, BackupChunk, BackupRequest, ClusterMember, ClusterMembersRequest, ClusterMembersResponse,
    GenerateRootCancelRequest, GenerateRootCancelResponse, GenerateRootInitRequest,
    GenerateRootStatusRequest, GenerateRootStatusResponse, GenerateRootSubmitRequest,
    GenerateRootSubmitResponse, InitRequest, InitResponse, RekeyCancelRequest, RekeyCancelResponse,
    RekeyInitRequest, RekeyStatusRequest, RekeyStatusResponse, RekeySubmitRequest,
    RekeySubmitResponse, RekeyVerifyRequest, RekeyVerifyResponse, RotateRequest, RotateResponse,
    SealMigrateCancelRequest, SealMigrateCancelResponse, SealMigrateInitRequest,
    SealMigrateStatusRequest, SealMigrateStatusResponse, SealMigrateSubmitRequest, SealRequest,
    SealResponse, StatusRequest, StatusResponse, StepDownRequest, StepDownResponse, UnsealRequest,
    UnsealResponse, VerifyShareRequest, VerifyShareResponse, system_server::System,
};

use crate::{
    call::{Call, presented_token},
    serve::{Handlers, Reply, at},
};

type BackupStream = Pin<Box<dyn Stream<Item = Result<BackupChunk, Status>> + Send>>;

fn unseal_response(status: SealStatus) -> UnsealResponse {
    UnsealResponse {
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
impl System for Handlers {
    type BackupStream = BackupStream;

    async fn backup(&self, request: Request<BackupRequest>) -> Reply<Self::BackupStream> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let vault = std::sync::Arc::clone(&self.shared.vault);
        let caller = call
            .blocking(move |call| {
                let caller = call.authenticate(&vault, token)?;
                vault.require_system_op(&caller, vault_core::vault::SystemOp::Backup)?;
                Ok(caller)
            })
            .await?;
        let running = crate::backup::Running::take()?;
        let receiver = crate::backup::stream(
            std::sync::Arc::clone(&self.shared.vault),
            caller,
            self.shared.node_id.clone(),
            self.shared.backup_keep,
            running,
        );
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn init(&self, r: Request<InitRequest>) -> Reply<InitResponse> {
        let answer = self
            .rpc(r)
            .parse(|r| {
                let recipients = InitRecipients {
                    shares: ShareRecipient::parse_all("share_recipients", &r.share_recipients)?,
                    root_token: (!r.root_token_recipient.is_empty())
                        .then(|| {
                            ShareRecipient::parse("root_token_recipient", &r.root_token_recipient)
                        })
                        .transpose()?,
                };
                Ok((r.shares, r.threshold, recipients))
            })
            .run(|step, (shares, threshold, recipients)| {
                step.vault.seal().init(shares, threshold, recipients)
            })
            .returning(
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
            )
            .answer(|output| {
                let shares_encrypted = output.shares.first().is_some_and(Handout::is_encrypted);
                let root_token_encrypted = output.root_token.is_encrypted();
                InitResponse {
                    shares: output.shares.iter().map(handout_share).collect(),
                    root_token: match &output.root_token {
                        Handout::Plain(token) => token.expose_secret().to_owned(),
                        Handout::Encrypted(armored) => armored.clone(),
                    },
                    threshold: output.threshold,
                    shares_encrypted,
                    root_token_encrypted,
                    seal_type: output.seal_type,
                }
            })
            .await;
        // With an auto seal, init unseals.
        self.shared.health.refresh(&self.shared.vault).await;
        answer
    }

    async fn unseal(&self, r: Request<UnsealRequest>) -> Reply<UnsealResponse> {
        let unsealed = self
            .rpc(r)
            .parse(|r| Ok((share_of(r.share)?, r.reset)))
            .run(|step, (share, reset)| {
                if reset {
                    return step.vault.seal().reset_unseal(&share);
                }
                step.vault.seal().unseal(share)
            })
            .out()
            .await?;
        if !unsealed.sealed {
            // An earlier failure of the auto seal is no longer why the vault is sealed.
            self.shared.set_seal_error(String::new());
        }
        self.shared.health.refresh(&self.shared.vault).await;
        Ok(tonic::Response::new(unseal_response(unsealed)))
    }

    async fn seal(&self, r: Request<SealRequest>) -> Reply<SealResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.seal().seal(step.caller()?))
            .out()
            .await?;
        tracing::warn!("vault sealed by request");
        self.shared.health.refresh(&self.shared.vault).await;
        Ok(tonic::Response::new(SealResponse {}))
    }

    async fn status(&self, r: Request<StatusRequest>) -> Reply<StatusResponse> {
        // Status takes the seal locks, which init and unseal hold across storage I/O: it runs
        // on the blocking pool like every other step.
        let status = self
            .rpc(r)
            .run(|step, ()| Ok(step.vault.seal().status()))
            .out()
            .await?;
        let cluster = self.cluster_status().await;
        Ok(tonic::Response::new(StatusResponse {
            initialized: status.initialized,
            sealed: status.sealed,
            threshold: status.threshold,
            shares: status.shares,
            progress: status.progress,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            node_id: self.shared.node_id.clone(),
            storage: self.shared.vault.storage_kind().to_owned(),
            role: cluster.role,
            active_node: cluster.active_node,
            active_address: cluster.active_address,
            members: cluster.members,
            etcd_revision: cluster.revision,
            seal_error: if status.sealed {
                self.shared.seal_error()
            } else {
                String::new()
            },
            seal_type: status.seal_type,
        }))
    }

    async fn cluster_members(
        &self,
        r: Request<ClusterMembersRequest>,
    ) -> Reply<ClusterMembersResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.require_system(step.caller()?))
            .out()
            .await?;
        let members = self.cluster_members_list().await?;
        Ok(tonic::Response::new(ClusterMembersResponse { members }))
    }

    async fn step_down(&self, r: Request<StepDownRequest>) -> Reply<StepDownResponse> {
        let cluster = self.shared.cluster.clone();
        self.rpc(r)
            .run(move |step, ()| {
                step.vault.require_system(step.caller()?)?;
                step_down(&cluster)
            })
            .answer(|()| StepDownResponse {})
            .await
    }

    async fn rotate(&self, r: Request<RotateRequest>) -> Reply<RotateResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, ""))
            .parse(|r| match (r.all, r.tenant.is_empty()) {
                (true, true) => Ok(None),
                (true, false) => Err(Error::InvalidArgument {
                    field: "tenant",
                    reason: "must be empty with `all`".into(),
                }),
                (false, _) => Ok(Some(TenantName::parse(&r.tenant)?)),
            })
            .run(|step, tenant| match tenant {
                None => step.vault.keks().rotate_all(step.caller()?).map(Err),
                Some(tenant) => {
                    let version = step.vault.keks().rotate(step.caller()?, &tenant)?;
                    Ok(Ok((tenant, version)))
                }
            })
            .answer(|rotated| match rotated {
                Ok((tenant, key_version)) => RotateResponse {
                    tenant: tenant.to_string(),
                    key_version,
                    rotated: Vec::new(),
                },
                Err(all) => RotateResponse {
                    rotated: all
                        .into_iter()
                        .map(|(tenant, key_version)| v1::RotatedTenant {
                            tenant: tenant.to_string(),
                            key_version,
                        })
                        .collect(),
                    ..Default::default()
                },
            })
            .await
    }

    async fn rekey_init(&self, r: Request<RekeyInitRequest>) -> Reply<RekeyStatusResponse> {
        self.rpc(r)
            .parse(|r| {
                let recipients =
                    ShareRecipient::parse_all("share_recipients", &r.share_recipients)?;
                Ok((r, recipients))
            })
            .run(|step, (r, recipients)| {
                step.vault.seal().rekey_init(
                    step.caller()?,
                    r.shares,
                    r.threshold,
                    r.rotate_root,
                    recipients,
                )
            })
            // The intent record names the recipients before anything changes.
            .noted(|(r, recipients)| {
                if recipients.is_empty() {
                    "new shares in the clear".to_owned()
                } else {
                    format!("new shares encrypted to {}", r.share_recipients.join(", "))
                }
            })
            .answer(|progress| rekey_status(Some(progress)))
            .await
    }

    async fn rekey_submit(&self, r: Request<RekeySubmitRequest>) -> Reply<RekeySubmitResponse> {
        self.rpc(r)
            .parse(|r| Ok((r.nonce, share_of(r.share)?)))
            .run(|step, (nonce, share)| step.vault.seal().rekey_submit(&nonce, share))
            .returning(
                // This submission may be the one that stages the rekey and returns the new shares:
                // its record says so before anything is committed.
                |_| "the new unseal shares, if this submission stages the rekey".into(),
                |progress: &RekeyProgress| !progress.new_shares.is_empty(),
            )
            .answer(|progress| {
                if progress.staged {
                    tracing::warn!(
                        shares = progress.shares,
                        threshold = progress.threshold,
                        "rekey staged: the new shares were handed out; the current shares stay in force until a threshold of the new ones is verified"
                    );
                }
                RekeySubmitResponse {
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
                }
            })
            .await
    }

    async fn rekey_verify(&self, r: Request<RekeyVerifyRequest>) -> Reply<RekeyVerifyResponse> {
        self.rpc(r)
            .parse(|r| Ok((r.nonce, share_of(r.share)?)))
            .run(|step, (nonce, share)| step.vault.seal().rekey_verify(&nonce, share))
            .answer(|progress| {
                if progress.complete {
                    tracing::warn!(
                        shares = progress.shares,
                        threshold = progress.threshold,
                        "rekey verified and committed: the previous unseal shares no longer work"
                    );
                }
                RekeyVerifyResponse {
                    complete: progress.complete,
                    progress: progress.verification_progress,
                    required: progress.verification_required,
                }
            })
            .await
    }

    async fn rekey_cancel(&self, r: Request<RekeyCancelRequest>) -> Reply<RekeyCancelResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.seal().rekey_cancel(step.caller()?))
            .answer(|()| RekeyCancelResponse {})
            .await
    }

    async fn generate_root_init(
        &self,
        r: Request<GenerateRootInitRequest>,
    ) -> Reply<GenerateRootStatusResponse> {
        self.rpc(r)
            .parse(|r| {
                Ok((
                    ShareRecipient::parse("recipient", &r.recipient)?,
                    share_of(r.share)?,
                ))
            })
            .run(|step, (recipient, share)| step.vault.seal().generate_root_init(recipient, share))
            .answer(|progress| generate_root_status(Some(progress)))
            .await
    }

    async fn generate_root_submit(
        &self,
        r: Request<GenerateRootSubmitRequest>,
    ) -> Reply<GenerateRootSubmitResponse> {
        self.rpc(r)
            .parse(|r| Ok((r.nonce, share_of(r.share)?)))
            .run(|step, (nonce, share)| step.vault.seal().generate_root_submit(&nonce, share))
            .returning(
                |_| "a new root token, encrypted to the attempt's recipient, if this submission completes it".into(),
                |progress: &GenerateRootProgress| progress.complete,
            )
            .answer(|progress| {
                if progress.complete {
                    tracing::warn!(
                        accessor = %progress.accessor,
                        "generate-root: a new root token was made; revoke it after use"
                    );
                }
                GenerateRootSubmitResponse {
                    complete: progress.complete,
                    progress: progress.progress,
                    required: progress.required,
                    encrypted_root_token: progress.encrypted_token,
                    accessor: progress.accessor,
                }
            })
            .await
    }

    async fn generate_root_status(
        &self,
        r: Request<GenerateRootStatusRequest>,
    ) -> Reply<GenerateRootStatusResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.seal().generate_root_status())
            .answer(generate_root_status)
            .await
    }

    async fn generate_root_cancel(
        &self,
        r: Request<GenerateRootCancelRequest>,
    ) -> Reply<GenerateRootCancelResponse> {
        self.rpc(r)
            .parse(|r| share_of(r.share))
            .run(|step, share| step.vault.seal().generate_root_cancel(&share))
            .answer(|()| GenerateRootCancelResponse {})
            .await
    }

    async fn seal_migrate_init(
        &self,
        r: Request<SealMigrateInitRequest>,
    ) -> Reply<SealMigrateStatusResponse> {
        self.rpc(r)
            .parse(|r| {
                let target = match r.to.as_str() {
                    "auto" | "transit" => SealTarget::Auto,
                    "shamir" => SealTarget::Shamir,
                    other => {
                        return Err(Error::InvalidArgument {
                            field: "to",
                            reason: format!("{other:?}: give \"auto\" or \"shamir\""),
                        });
                    }
                };
                Ok((target, share_of(r.share)?))
            })
            .run(|step, (target, share)| step.vault.seal().seal_migrate_init(target, share))
            .answer(|progress| migration_status(Some(progress)))
            .await
    }

    async fn seal_migrate_submit(
        &self,
        r: Request<SealMigrateSubmitRequest>,
    ) -> Reply<SealMigrateStatusResponse> {
        self.rpc(r)
            .parse(|r| Ok((r.nonce, share_of(r.share)?)))
            .run(|step, (nonce, share)| step.vault.seal().seal_migrate_submit(&nonce, share))
            .answer(|progress| {
                if progress.complete {
                    tracing::warn!(to = %progress.to, "seal migrated");
                }
                migration_status(Some(progress))
            })
            .await
    }

    async fn seal_migrate_status(
        &self,
        r: Request<SealMigrateStatusRequest>,
    ) -> Reply<SealMigrateStatusResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.seal().seal_migrate_status())
            .answer(migration_status)
            .await
    }

    async fn seal_migrate_cancel(
        &self,
        r: Request<SealMigrateCancelRequest>,
    ) -> Reply<SealMigrateCancelResponse> {
        self.rpc(r)
            .parse(|r| share_of(r.share))
            .run(|step, share| step.vault.seal().seal_migrate_cancel(&share))
            .answer(|()| SealMigrateCancelResponse {})
            .await
    }

    async fn list_alerts(
        &self,
        r: Request<v1::ListAlertsRequest>,
    ) -> Reply<v1::ListAlertsResponse> {
        let limit = match r.get_ref().limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        self.rpc(r)
            .run(|step, ()| step.vault.require_system(step.caller()?))
            .out()
            .await?;
        let alerts = crate::alerts::alerts()
            .map(|alerts| alerts.recent(limit))
            .unwrap_or_default()
            .into_iter()
            .map(|alert| v1::SecurityAlert {
                time: rfc3339(alert.time_unix_nanos),
                rule: alert.rule.to_owned(),
                principal: alert.principal,
                tenant: alert.tenant,
                source: alert.source,
                detail: alert.detail,
            })
            .collect();
        Ok(tonic::Response::new(v1::ListAlertsResponse { alerts }))
    }

    async fn rekey_status(&self, r: Request<RekeyStatusRequest>) -> Reply<RekeyStatusResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.seal().rekey_status())
            .answer(rekey_status)
            .await
    }

    async fn verify_share(&self, r: Request<VerifyShareRequest>) -> Reply<VerifyShareResponse> {
        self.rpc(r)
            .parse(|r| share_of(r.share))
            .run(|step, share| step.vault.seal().verify_share(&share))
            .answer(|check| VerifyShareResponse {
                result: match check {
                    ShareCheck::Current => "current",
                    ShareCheck::Staged => "staged",
                    ShareCheck::NotCurrent => "not-current",
                    ShareCheck::Unknown => "unknown",
                }
                .into(),
            })
            .await
    }
}

fn rekey_status(progress: Option<RekeyProgress>) -> RekeyStatusResponse {
    match progress {
        Some(p) => RekeyStatusResponse {
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
        None => RekeyStatusResponse::default(),
    }
}

fn migration_status(progress: Option<MigrationProgress>) -> SealMigrateStatusResponse {
    match progress {
        Some(p) => SealMigrateStatusResponse {
            started: true,
            nonce: p.nonce,
            to: p.to,
            progress: p.progress,
            required: p.required,
            started_time: rfc3339(p.started_unix_nanos),
            complete: p.complete,
        },
        None => SealMigrateStatusResponse::default(),
    }
}

fn generate_root_status(progress: Option<GenerateRootProgress>) -> GenerateRootStatusResponse {
    match progress {
        Some(p) => GenerateRootStatusResponse {
            started: true,
            nonce: p.nonce,
            recipient: p.recipient,
            progress: p.progress,
            required: p.required,
            started_time: rfc3339(p.started_unix_nanos),
        },
        None => GenerateRootStatusResponse::default(),
    }
}

/// What status says about the cluster.
struct ClusterStatus {
    role: String,
    active_node: String,
    active_address: String,
    members: u32,
    revision: i64,
}

impl Handlers {
    async fn cluster_status(&self) -> ClusterStatus {
        #[cfg(feature = "etcd")]
        if let Some(cluster) = &self.shared.cluster {
            let view = cluster.view();
            let members = view.members;
            return ClusterStatus {
                role: view.role.as_str().to_owned(),
                active_node: view
                    .leader
                    .as_ref()
                    .map(|l| l.id.clone())
                    .unwrap_or_default(),
                active_address: view.leader.map(|l| l.address).unwrap_or_default(),
                members: u32::try_from(members).unwrap_or(u32::MAX),
                revision: view.revision,
            };
        }
        ClusterStatus {
            role: "active".to_owned(),
            active_node: self.shared.node_id.clone(),
            active_address: String::new(),
            members: 1,
            revision: 0,
        }
    }

    async fn cluster_members_list(&self) -> Result<Vec<ClusterMember>, Status> {
        #[cfg(feature = "etcd")]
        if let Some(cluster) = &self.shared.cluster {
            let members = cluster.members().await.map_err(|e| {
                tracing::warn!(error = %e, "cannot read the membership records");
                crate::status::status(
                    tonic::Code::Unavailable,
                    vault_proto::reason::STORAGE_UNAVAILABLE,
                    "storage unavailable; see the server log",
                )
            })?;
            return Ok(members
                .into_iter()
                .map(|m| ClusterMember {
                    id: m.id,
                    address: m.address,
                    role: m.role,
                    sealed: m.sealed,
                    last_heartbeat: rfc3339(m.heartbeat_unix_nanos),
                })
                .collect());
        }
        let sealed = self.shared.vault.seal().status().sealed;
        Ok(vec![ClusterMember {
            id: self.shared.node_id.clone(),
            address: String::new(),
            role: "active".to_owned(),
            sealed,
            last_heartbeat: rfc3339(vault_core::time::now_unix_nanos()),
        }])
    }
}

/// Asks the active node (this one: the call was relayed here) to give up leadership; on
/// embedded storage there is no other node, and nothing changes.
fn step_down(cluster: &crate::ClusterHandle) -> Result<(), Error> {
    #[cfg(feature = "etcd")]
    if let Some(cluster) = cluster {
        cluster.step_down();
        return Ok(());
    }
    // One node on embedded storage: it stays the active node (as Vault does without HA).
    let _ = cluster;
    Ok(())
}
