//! Keys service: the lifecycle state of every KEK version, and retirement on request.

use tonic::Request;
use vault_core::{
    names::TenantName,
    time::rfc3339,
    vault::{KeyStatus, PageRequest},
};
use vault_proto::v1::{
    self, KeyStatusRequest, KeyStatusResponse, RetireKeyVersionRequest, RetireKeyVersionResponse,
    keys_server::Keys,
};

use crate::serve::{Handlers, Reply, at};

fn status_message(status: KeyStatus) -> KeyStatusResponse {
    KeyStatusResponse {
        budget: status.budget,
        max_age_seconds: u64::try_from(status.max_age_nanos / 1_000_000_000).unwrap_or(0),
        max_live_versions: status.max_live_versions,
        tenants: status
            .tenants
            .into_iter()
            .map(|tenant| v1::TenantKeys {
                tenant: tenant.tenant.to_string(),
                id: tenant.id.to_hex(),
                current_version: tenant.current,
                versions: tenant
                    .versions
                    .into_iter()
                    .map(|v| v1::KeyVersion {
                        version: v.version,
                        created_time: rfc3339(v.created_unix_nanos),
                        invocations: v.invocations,
                        reserved: v.reserved,
                        remaining: v.remaining,
                        state: v.state.into(),
                    })
                    .collect(),
                rewrap: tenant.rewrap.map(|job| v1::RewrapProgress {
                    versions: job.versions,
                    started_time: rfc3339(job.started_unix_nanos),
                    scanned: job.scanned,
                    rewrapped: job.rewrapped,
                    total: job.total,
                }),
                retired: tenant
                    .retired
                    .into_iter()
                    .map(|r| v1::RetiredKeyVersion {
                        version: r.version,
                        retired_time: rfc3339(r.retired_unix_nanos),
                        rewrapped: r.rewrapped,
                    })
                    .collect(),
            })
            .collect(),
        next_page_token: status.next_page_token.unwrap_or_default(),
        root: status.root.map(|root| v1::RootKey {
            version: root.version,
            invocations: root.invocations,
            reserved: root.reserved,
            remaining: root.remaining,
        }),
    }
}

#[tonic::async_trait]
impl Keys for Handlers {
    async fn key_status(&self, r: Request<KeyStatusRequest>) -> Reply<KeyStatusResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, ""))
            .parse(|r| {
                let tenant = match r.tenant.as_str() {
                    "" => None,
                    name => Some(TenantName::parse(name)?),
                };
                let page = PageRequest {
                    size: r.page_size as usize,
                    token: r.page_token.clone(),
                };
                Ok((tenant, page))
            })
            .run(|step, (tenant, page)| {
                step.vault
                    .keks()
                    .key_status(step.caller()?, tenant.as_ref(), &page)
            })
            .answer(status_message)
            .await
    }

    async fn retire_key_version(
        &self,
        r: Request<RetireKeyVersionRequest>,
    ) -> Reply<RetireKeyVersionResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, ""))
            .parse(|r| Ok((TenantName::parse(&r.tenant)?, r.version)))
            .run(|step, (tenant, version)| {
                step.vault
                    .keks()
                    .retire_key_version(step.caller()?, &tenant, version)
            })
            .answer(|()| RetireKeyVersionResponse {})
            .await
    }
}
