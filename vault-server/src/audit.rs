//! Audit service: the checkpoint public key, the chain head, query and export.

use std::{pin::Pin, sync::Arc};

use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    audit::{query, writer::AuditLog},
    time::parse_rfc3339,
};
use vault_proto::v1::{
    self, AuditExportRequest, AuditHeadRequest, AuditHeadResponse, AuditPublicKeyRequest,
    AuditPublicKeyResponse, AuditQueryRequest, AuditQueryResponse, audit_server::Audit,
};

use crate::{
    call::{Call, presented_token},
    serve::{Handlers, Reply, at},
};

const DEFAULT_PAGE_SIZE: usize = 100;
const MAX_PAGE_SIZE: usize = 1000;
/// Records sent per export message.
const EXPORT_CHUNK: usize = 256;

impl Handlers {
    fn audit_log(&self) -> Result<Arc<AuditLog>, Status> {
        self.shared.vault.audit().cloned().ok_or_else(|| {
            crate::status::status(
                tonic::Code::FailedPrecondition,
                vault_proto::reason::AUDIT_DISABLED,
                "the audit log is disabled on this server",
            )
        })
    }
}

fn time_field(field: &'static str, text: &str) -> Result<Option<i64>, Error> {
    if text.is_empty() {
        return Ok(None);
    }
    parse_rfc3339(text)
        .map(Some)
        .ok_or_else(|| Error::InvalidArgument {
            field,
            reason: "not an RFC 3339 time (e.g. 2026-11-22T14:00:00Z)".into(),
        })
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<v1::AuditExportChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Audit for Handlers {
    async fn public_key(&self, r: Request<AuditPublicKeyRequest>) -> Reply<AuditPublicKeyResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.audit_public_key()?.ok_or(Error::NotInitialized))
            .answer(|key| AuditPublicKeyResponse { public_key: key })
            .await
    }

    async fn head(&self, r: Request<AuditHeadRequest>) -> Reply<AuditHeadResponse> {
        self.rpc(r)
            .run(|step, ()| step.vault.require_audit_access(step.caller()?))
            .out()
            .await?;
        let head = self.audit_log()?.head();
        Ok(Response::new(AuditHeadResponse {
            seq: head.seq,
            hash: head.hash,
        }))
    }

    async fn query(&self, r: Request<AuditQueryRequest>) -> Reply<AuditQueryResponse> {
        let log = self.audit_log()?;
        self.rpc(r)
            .target(|r| at(&r.tenant, &r.path_prefix))
            .parse(Ok)
            .run(move |step, query| {
                // The whole log spans every tenant: system scope only (until tenant filtering).
                // Checked before the query is parsed: a caller without it is refused, whatever
                // it sent.
                step.vault.require_audit_access(step.caller()?)?;
                let page_size = match query.page_size as usize {
                    0 => DEFAULT_PAGE_SIZE,
                    n if n > MAX_PAGE_SIZE => {
                        return Err(Error::InvalidArgument {
                            field: "page_size",
                            reason: format!("must be at most {MAX_PAGE_SIZE}"),
                        });
                    }
                    n => n,
                };
                let from_seq = match query.page_token.as_str() {
                    "" => 0,
                    token => token.parse::<u64>().map_err(|_| Error::InvalidArgument {
                        field: "page_token",
                        reason: "not a token from a previous page".into(),
                    })?,
                };
                let filter = query::Filter {
                    tenant: query.tenant,
                    principal: query.principal,
                    path_prefix: query.path_prefix,
                    method: query.method,
                    outcome: query.outcome,
                    since: time_field("since", &query.since)?,
                    until: time_field("until", &query.until)?,
                };
                let mut records = Vec::new();
                let next = query::read(log.dir(), from_seq, |record| {
                    if filter.matches(&record) {
                        records.push(String::from_utf8_lossy(&record.to_line()).into_owned());
                    }
                    records.len() < page_size
                })
                .map_err(|e| {
                    Error::Storage(vault_core::error::StorageError(format!(
                        "reading the audit log: {e}"
                    )))
                })?;
                Ok(AuditQueryResponse {
                    records,
                    next_page_token: next.map(|seq| seq.to_string()).unwrap_or_default(),
                })
            })
            .answer(|response| response)
            .await
    }

    type ExportStream = ExportStream;

    async fn export(&self, request: Request<AuditExportRequest>) -> Reply<Self::ExportStream> {
        let call = Call::of(&request);
        let token = presented_token(&request);
        let since_text = request.into_inner().since;
        let log = self.audit_log()?;
        let vault = Arc::clone(&self.shared.vault);
        let since = call
            .blocking(move |call| {
                // The whole log spans every tenant: system scope only (until tenant filtering).
                vault.require_audit_access(&call.authenticate(&vault, token)?)?;
                time_field("since", &since_text)
            })
            .await?;
        let filter = query::Filter {
            since,
            ..query::Filter::default()
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut chunk = String::new();
            let mut count = 0;
            let result = query::read(log.dir(), 0, |record| {
                if filter.matches(&record) {
                    chunk.push_str(&String::from_utf8_lossy(&record.to_line()));
                    chunk.push('\n');
                    count += 1;
                    if count == EXPORT_CHUNK {
                        count = 0;
                        let lines = std::mem::take(&mut chunk);
                        // A client that went away stops the export.
                        return sender
                            .blocking_send(Ok(v1::AuditExportChunk { lines }))
                            .is_ok();
                    }
                }
                true
            });
            let last = match result {
                Ok(_) if chunk.is_empty() => return,
                Ok(_) => Ok(v1::AuditExportChunk { lines: chunk }),
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed");
                    Err(crate::status::status(
                        tonic::Code::Unavailable,
                        vault_proto::reason::AUDIT_UNAVAILABLE,
                        "reading the audit log failed; see the server log",
                    ))
                }
            };
            let _ = sender.blocking_send(last);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
