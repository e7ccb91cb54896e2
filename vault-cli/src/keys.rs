//! Key lifecycle commands: `rotate --all`, `keys status|retire`, `rekey init|submit|cancel|status`,
//! `share verify`, and `tenant restore|deleted`.

use clap::Subcommand;
use serde_json::json;
use vault_proto::v1::{
    self, keys_client::KeysClient, system_client::SystemClient, tenants_client::TenantsClient,
};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, authed, connect, token},
    input::read_share,
    output::{json_string, print_json, print_rows},
};

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// KEK versions with creation time, invocation count, remaining budget and state; the
    /// re-wrap job's progress; retired versions. Without --tenant: every tenant and the root key
    /// (system scope).
    Status {
        #[arg(long, env = "VAULT_TENANT")]
        tenant: Option<String>,
    },
    /// Schedule a KEK version for retirement: its data keys are re-wrapped into the current
    /// version in the background, then it is destroyed.
    Retire {
        #[arg(long, env = "VAULT_TENANT")]
        tenant: String,
        #[arg(long)]
        version: u32,
    },
}

#[derive(Subcommand, Debug)]
pub enum RekeyCommand {
    /// Start a rekey to new shares and threshold; prints the nonce operators submit with.
    Init {
        #[arg(long, default_value_t = 5)]
        shares: u32,
        #[arg(long, default_value_t = 3)]
        threshold: u32,
        /// Also rotate the root key: every KEK and system key is re-sealed under a new one
        /// (secret data is not touched). Needed once the root key nears its budget.
        #[arg(long)]
        rotate_root: bool,
    },
    /// Submit one current share (hidden prompt, standard input or --share-file; never an
    /// argument). The submission that reaches the threshold prints the new shares.
    Submit {
        #[arg(long)]
        nonce: String,
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
    /// Abandon the rekey in progress; the current shares stay valid.
    Cancel,
    /// The rekey in progress, if any.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum ShareCommand {
    /// Tell whether a share belongs to the current share set, without unsealing anything.
    Verify {
        #[arg(long, value_name = "FILE")]
        share_file: Option<std::path::PathBuf>,
    },
}

pub async fn rotate(
    addr: &str,
    tenant: Option<String>,
    all: bool,
    format: Format,
) -> CliResult<()> {
    let token = token()?;
    let mut client = SystemClient::new(connect(addr).await?);
    let request = v1::RotateRequest {
        tenant: if all {
            String::new()
        } else {
            tenant.unwrap_or_default()
        },
        all,
    };
    let response = client
        .rotate(authed(request, &token)?)
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner();
    if all {
        match format {
            Format::Json => print_json(&json!({
                "rotated": response.rotated.iter().map(|r| json!({
                    "tenant": r.tenant, "key_version": r.key_version,
                })).collect::<Vec<_>>(),
            })),
            Format::Text => {
                for r in &response.rotated {
                    println!(
                        "Rotated tenant {}: key version {} seals new data.",
                        r.tenant, r.key_version
                    );
                }
                println!("{} tenants rotated.", response.rotated.len());
            }
        }
        return Ok(());
    }
    match format {
        Format::Json => {
            print_json(&json!({ "tenant": response.tenant, "key_version": response.key_version }))
        }
        Format::Text => println!(
            "Rotated tenant {}: key version {} seals new data.",
            response.tenant, response.key_version
        ),
    }
    Ok(())
}

pub async fn keys(addr: &str, command: KeysCommand, format: Format) -> CliResult<()> {
    let token = token()?;
    let mut client = KeysClient::new(connect(addr).await?);
    let status_error = |s| CliError::from_status(s, addr);
    match command {
        KeysCommand::Status { tenant } => {
            let request = v1::KeyStatusRequest {
                tenant: tenant.unwrap_or_default(),
            };
            let status = client
                .key_status(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&status_json(&status)),
                Format::Text => print_status(&status),
            }
        }
        KeysCommand::Retire { tenant, version } => {
            let request = v1::RetireKeyVersionRequest {
                tenant: tenant.clone(),
                version,
            };
            client
                .retire_key_version(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => {
                    print_json(&json!({ "tenant": tenant, "version": version, "scheduled": true }))
                }
                Format::Text => println!(
                    "KEK version {version} of tenant {tenant} is scheduled for retirement; \
                     `vault-cli keys status --tenant {tenant}` shows the re-wrap progress."
                ),
            }
        }
    }
    Ok(())
}

fn status_json(status: &v1::KeyStatusResponse) -> serde_json::Value {
    json!({
        "budget": status.budget,
        "max_age_seconds": status.max_age_seconds,
        "max_live_versions": status.max_live_versions,
        "root": status.root.as_ref().map(|r| json!({
            "version": r.version, "invocations": r.invocations, "reserved": r.reserved,
            "remaining": r.remaining,
        })),
        "tenants": status.tenants.iter().map(|t| json!({
            "tenant": t.tenant,
            "id": t.id,
            "current_version": t.current_version,
            "versions": t.versions.iter().map(|v| json!({
                "version": v.version, "created_time": v.created_time,
                "invocations": v.invocations, "reserved": v.reserved,
                "remaining": v.remaining, "state": v.state,
            })).collect::<Vec<_>>(),
            "rewrap": t.rewrap.as_ref().map(|j| json!({
                "versions": j.versions, "started_time": j.started_time,
                "scanned": j.scanned, "rewrapped": j.rewrapped, "total": j.total,
            })),
            "retired": t.retired.iter().map(|r| json!({
                "version": r.version, "retired_time": r.retired_time, "rewrapped": r.rewrapped,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn print_status(status: &v1::KeyStatusResponse) {
    let age = match status.max_age_seconds {
        0 => "never by age".to_owned(),
        s => format!("every {s} s"),
    };
    let live = match status.max_live_versions {
        0 => "on request only".to_owned(),
        n => format!("beyond {n} live versions"),
    };
    println!(
        "Budget: {} invocations per key version; rotation {age}; retirement {live}.",
        status.budget
    );
    if let Some(root) = &status.root {
        println!(
            "Root key v{}: {} invocations, {} remaining.",
            root.version, root.invocations, root.remaining
        );
    }
    for tenant in &status.tenants {
        println!();
        println!(
            "Tenant {} (id {}): current version {}",
            tenant.tenant, tenant.id, tenant.current_version
        );
        println!(
            "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}",
            "VERSION", "STATE", "CREATED", "INVOCATIONS", "REMAINING"
        );
        for v in &tenant.versions {
            println!(
                "  {:>7}  {:<9}  {:<30}  {:>12}  {:>12}",
                v.version, v.state, v.created_time, v.invocations, v.remaining
            );
        }
        if let Some(job) = &tenant.rewrap {
            let versions: Vec<String> = job.versions.iter().map(u32::to_string).collect();
            println!(
                "  Re-wrap of versions {}: {} of {} secret versions scanned, {} data keys re-wrapped.",
                versions.join(", "),
                job.scanned,
                job.total,
                job.rewrapped
            );
        }
        for r in &tenant.retired {
            println!(
                "  Retired version {} at {} ({} data keys re-wrapped).",
                r.version, r.retired_time, r.rewrapped
            );
        }
    }
}

pub async fn rekey(addr: &str, command: RekeyCommand, format: Format) -> CliResult<()> {
    let mut client = SystemClient::new(connect(addr).await?);
    let status_error = |s| CliError::from_status(s, addr);
    match command {
        RekeyCommand::Init {
            shares,
            threshold,
            rotate_root,
        } => {
            let token = token()?;
            let request = v1::RekeyInitRequest {
                shares,
                threshold,
                rotate_root,
            };
            let status = client
                .rekey_init(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            print_rekey_status(&status, format);
        }
        RekeyCommand::Status => {
            let status = client
                .rekey_status(v1::RekeyStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_rekey_status(&status, format);
        }
        RekeyCommand::Cancel => {
            let token = token()?;
            client
                .rekey_cancel(authed(v1::RekeyCancelRequest {}, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "cancelled": true })),
                Format::Text => println!("Rekey cancelled; the current shares stay valid."),
            }
        }
        RekeyCommand::Submit { nonce, share_file } => {
            let share = read_share(share_file.as_deref())?;
            let response = client
                .rekey_submit(v1::RekeySubmitRequest {
                    nonce,
                    share: share.as_str().to_owned(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_rekey_submit(&response, format);
        }
    }
    Ok(())
}

fn print_rekey_status(status: &v1::RekeyStatusResponse, format: Format) {
    match format {
        Format::Json => print_json(&json!({
            "started": status.started, "nonce": status.nonce, "shares": status.shares,
            "threshold": status.threshold, "progress": status.progress,
            "required": status.required, "started_time": status.started_time,
            "rotate_root": status.rotate_root,
        })),
        Format::Text if !status.started => println!("No rekey in progress."),
        Format::Text => {
            print_rows(&[
                ("Nonce", status.nonce.clone()),
                ("New shares", status.shares.to_string()),
                ("New threshold", status.threshold.to_string()),
                (
                    "Progress",
                    format!("{}/{}", status.progress, status.required),
                ),
                ("Started", status.started_time.clone()),
                ("Rotates root key", status.rotate_root.to_string()),
            ]);
            println!();
            println!(
                "Each operator now runs `vault-cli rekey submit --nonce {}` with one current share.",
                status.nonce
            );
        }
    }
}

fn print_rekey_submit(response: &v1::RekeySubmitResponse, format: Format) {
    match format {
        Format::Json => {
            // Built by hand into a zeroizing buffer rather than through a serde value.
            let mut out = Zeroizing::new(format!(
                "{{\"complete\":{},\"progress\":{},\"required\":{},\"threshold\":{},\"shares\":[",
                response.complete, response.progress, response.required, response.threshold
            ));
            for (index, share) in response.shares.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(share));
            }
            out.push_str("]}");
            println!("{}", out.as_str());
        }
        Format::Text if !response.complete => println!(
            "Share accepted: {}/{} submitted.",
            response.progress, response.required
        ),
        Format::Text => {
            for (index, share) in response.shares.iter().enumerate() {
                println!("New unseal share {}: {share}", index + 1);
            }
            println!();
            println!(
                "Rekey complete. Any {} of these {} shares unseal the vault; the previous shares no \
                 longer do. Give each to a different operator; they are shown only now.",
                response.threshold,
                response.shares.len()
            );
        }
    }
}

pub async fn share(addr: &str, command: ShareCommand, format: Format) -> CliResult<()> {
    let ShareCommand::Verify { share_file } = command;
    let share = read_share(share_file.as_deref())?;
    let mut client = SystemClient::new(connect(addr).await?);
    let result = client
        .verify_share(v1::VerifyShareRequest {
            share: share.as_str().to_owned(),
        })
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner()
        .result;
    match format {
        Format::Json => print_json(&json!({ "result": result, "current": result == "current" })),
        Format::Text => match result.as_str() {
            "current" => println!("The share belongs to the current share set."),
            "not-current" => println!(
                "The share does NOT belong to the current share set (an old share from before a \
                 rekey, a mistyped one, or another vault's)."
            ),
            _ => println!(
                "Unknown: this vault was initialized before share commitments were kept; a rekey \
                 adds them."
            ),
        },
    }
    if result == "not-current" {
        return Err(CliError::new(
            "the share is not part of the current share set",
        ));
    }
    Ok(())
}

pub async fn restore(
    addr: &str,
    name: String,
    id: Option<String>,
    format: Format,
) -> CliResult<()> {
    let token = token()?;
    let mut client = TenantsClient::new(connect(addr).await?);
    let request = v1::RestoreTenantRequest {
        name,
        id: id.unwrap_or_default(),
    };
    let tenant = client
        .restore_tenant(authed(request, &token)?)
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner()
        .tenant
        .unwrap_or_default();
    match format {
        Format::Json => {
            print_json(&json!({ "name": tenant.name, "id": tenant.id, "restored": true }))
        }
        Format::Text => println!(
            "Restored tenant {} (id {}); its keys will not be destroyed.",
            tenant.name, tenant.id
        ),
    }
    Ok(())
}

pub async fn deleted(addr: &str, format: Format) -> CliResult<()> {
    let token = token()?;
    let mut client = TenantsClient::new(connect(addr).await?);
    let tenants = client
        .list_deleted_tenants(authed(v1::ListDeletedTenantsRequest {}, &token)?)
        .await
        .map_err(|s| CliError::from_status(s, addr))?
        .into_inner()
        .tenants;
    match format {
        Format::Json => print_json(&json!({
            "tenants": tenants.iter().map(|t| json!({
                "name": t.name, "id": t.id, "deleted_time": t.deleted_time,
                "shred_after": t.shred_after,
            })).collect::<Vec<_>>(),
        })),
        Format::Text => {
            for t in &tenants {
                println!(
                    "{} (id {}): deleted {}, keys destroyed after {}",
                    t.name, t.id, t.deleted_time, t.shred_after
                );
            }
        }
    }
    Ok(())
}
