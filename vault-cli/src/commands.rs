//! One function per command.

use serde_json::json;
use tonic::Code;
use vault_proto::v1::{
    self, secrets_client::SecretsClient, system_client::SystemClient, tenants_client::TenantsClient,
};
use zeroize::Zeroizing;

use crate::{
    Cli, Command, Format, TenantCommand, bench,
    client::{CliError, CliResult, authed, connect, token},
    feed,
    input::{read_fields, read_share},
    output::{field_text, fields_json, json_string, print_json, print_rows, write_raw},
};

/// Runs the command; returns the exit code (`run` passes on its command's).
pub async fn run(cli: Cli) -> CliResult<u8> {
    let addr = cli.addr.clone();
    let format = cli.format;
    let status_error = |status: tonic::Status| CliError::from_status(status, &addr);
    match cli.command {
        Command::Run(args) => return crate::run::run(&addr, args).await,
        Command::Key(command) => return crate::kms::key(&addr, command, format).await,
        Command::Render(args) => crate::render::render(&addr, format, args).await?,
        Command::Init {
            shares,
            threshold,
            recipients,
            root_token_recipient,
        } => {
            let share_recipients = recipients.read()?;
            if share_recipients.is_empty() {
                eprintln!(
                    "vault-cli: warning: every unseal share and the root token are shown to you in \
                     the clear, so you hold a threshold alone; give --share-recipient (one age \
                     public key per operator) to hand each share to its holder encrypted"
                );
            }
            let mut client = SystemClient::new(connect(&addr).await?);
            let response = client
                .init(v1::InitRequest {
                    shares,
                    threshold,
                    share_recipients,
                    root_token_recipient: root_token_recipient.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            print_init(&response, format);
        }
        Command::Unseal { share_file, reset } => {
            let share = read_share(share_file.as_deref())?;
            let mut client = SystemClient::new(connect(&addr).await?);
            let request = v1::UnsealRequest {
                share: share.as_str().to_owned(),
                reset,
            };
            let response = client
                .unseal(request)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&json!({
                    "sealed": response.sealed, "threshold": response.threshold,
                    "shares": response.shares, "progress": response.progress,
                })),
                Format::Text if !response.sealed => println!("Vault is unsealed."),
                Format::Text => println!(
                    "Vault is sealed: {}/{} shares entered.",
                    response.progress, response.threshold
                ),
            }
        }
        Command::Status => {
            let mut client = SystemClient::new(connect(&addr).await?);
            let s = client
                .status(v1::StatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(&json!({
                    "initialized": s.initialized, "sealed": s.sealed, "threshold": s.threshold,
                    "shares": s.shares, "progress": s.progress, "version": s.version,
                    "node_id": s.node_id, "storage": s.storage,
                })),
                Format::Text => print_rows(&[
                    ("Initialized", s.initialized.to_string()),
                    ("Sealed", s.sealed.to_string()),
                    ("Shares", s.shares.to_string()),
                    ("Threshold", s.threshold.to_string()),
                    ("Unseal progress", format!("{}/{}", s.progress, s.threshold)),
                    ("Version", s.version),
                    ("Node", s.node_id),
                    ("Storage", s.storage),
                ]),
            }
        }
        Command::Seal => {
            let token = token()?;
            let mut client = SystemClient::new(connect(&addr).await?);
            client
                .seal(authed(v1::SealRequest {}, &token)?)
                .await
                .map_err(status_error)?;
            match format {
                Format::Json => print_json(&json!({ "sealed": true })),
                Format::Text => println!("Vault is sealed."),
            }
        }
        Command::Tenant(TenantCommand::Create { name, settings }) => {
            let token = token()?;
            let mut client = TenantsClient::new(connect(&addr).await?);
            let request = v1::CreateTenantRequest {
                name,
                settings: Some(v1::TenantSettings {
                    allowed_cidrs: settings.cidrs,
                    rate_limit: settings.rate_limit.unwrap_or(0),
                    default_max_versions: settings.max_versions.unwrap_or(0),
                    cas_required: settings.cas_required.unwrap_or(false),
                }),
            };
            let response = client
                .create_tenant(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            let tenant = response.into_inner().tenant.unwrap_or_default();
            match format {
                Format::Json => print_json(&tenant_json(&tenant)),
                Format::Text => println!("Created tenant {} (id {}).", tenant.name, tenant.id),
            }
        }
        Command::Tenant(TenantCommand::Show { name }) => {
            let token = token()?;
            let mut client = TenantsClient::new(connect(&addr).await?);
            let response = client
                .get_tenant(authed(v1::GetTenantRequest { name }, &token)?)
                .await
                .map_err(status_error)?;
            print_tenant(&response.into_inner().tenant.unwrap_or_default(), format);
        }
        Command::Tenant(TenantCommand::Update {
            name,
            settings,
            clear_cidrs,
        }) => {
            let token = token()?;
            let mut client = TenantsClient::new(connect(&addr).await?);
            let allowed_cidrs =
                (clear_cidrs || !settings.cidrs.is_empty()).then_some(v1::CidrList {
                    cidrs: settings.cidrs,
                });
            let request = v1::UpdateTenantRequest {
                name,
                allowed_cidrs,
                rate_limit: settings.rate_limit,
                default_max_versions: settings.max_versions,
                cas_required: settings.cas_required,
            };
            let response = client
                .update_tenant(authed(request, &token)?)
                .await
                .map_err(status_error)?;
            print_tenant(&response.into_inner().tenant.unwrap_or_default(), format);
        }
        Command::Tenant(TenantCommand::Delete { name }) => {
            let token = token()?;
            let mut client = TenantsClient::new(connect(&addr).await?);
            let response = client
                .delete_tenant(authed(
                    v1::DeleteTenantRequest { name: name.clone() },
                    &token,
                )?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(
                    &json!({ "name": name, "deleted": true, "shred_after": response.shred_after }),
                ),
                Format::Text => println!(
                    "Deleted tenant {name}; its tokens no longer work. Its keys will be destroyed \
                     after {} (`vault-cli tenant restore {name}` cancels until then).",
                    response.shred_after
                ),
            }
        }
        Command::Tenant(TenantCommand::List) => {
            let token = token()?;
            let mut client = TenantsClient::new(connect(&addr).await?);
            let response = client
                .list_tenants(authed(v1::ListTenantsRequest {}, &token)?)
                .await
                .map_err(status_error)?;
            let tenants = response.into_inner().tenants;
            match format {
                Format::Json => print_json(
                    &json!({ "tenants": tenants.iter().map(tenant_json).collect::<Vec<_>>() }),
                ),
                Format::Text => {
                    for tenant in tenants {
                        println!("{}", tenant.name);
                    }
                }
            }
        }
        Command::Put {
            tenant,
            path,
            fields,
            cas,
        } => {
            let data = read_fields(&fields)?;
            let token = token()?;
            let mut client = SecretsClient::new(connect(&addr).await?);
            let request = v1::PutRequest {
                tenant: tenant.tenant,
                path: path.clone(),
                data,
                cas,
            };
            let response = client
                .put(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(
                    &json!({ "path": path, "version": response.version, "created_time": response.created_time, "revision": response.revision }),
                ),
                Format::Text => println!("Wrote {path} version {}.", response.version),
            }
        }
        Command::Get {
            tenant,
            path,
            field,
            version,
        } => {
            let token = token()?;
            let mut client = SecretsClient::new(connect(&addr).await?);
            let request = v1::GetRequest {
                tenant: tenant.tenant,
                path,
                version,
            };
            let response = client
                .get(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            print_secret(&response, field.as_deref(), format)?;
        }
        Command::List {
            tenant,
            prefix,
            page_size,
            page_token,
            recursive,
        } => {
            let token = token()?;
            let mut client = SecretsClient::new(connect(&addr).await?);
            let request = v1::ListRequest {
                tenant: tenant.tenant,
                prefix,
                page_size,
                page_token,
                recursive,
            };
            let response = client
                .list(authed(request, &token)?)
                .await
                .map_err(status_error)?
                .into_inner();
            match format {
                Format::Json => print_json(
                    &json!({ "keys": response.keys, "next_page_token": response.next_page_token, "revision": response.revision }),
                ),
                Format::Text => {
                    for key in &response.keys {
                        println!("{key}");
                    }
                    if !response.next_page_token.is_empty() {
                        eprintln!("(more: --page-token {})", response.next_page_token);
                    }
                }
            }
        }
        Command::Delete {
            tenant,
            path,
            versions,
            all,
        } => {
            let op = if all {
                feed::VersionsOp::DeleteAll
            } else {
                feed::VersionsOp::Delete
            };
            feed::change_versions(&addr, tenant, path, versions.versions, op, format).await?
        }
        Command::Undelete {
            tenant,
            path,
            versions,
        } => {
            feed::change_versions(
                &addr,
                tenant,
                path,
                versions.versions,
                feed::VersionsOp::Undelete,
                format,
            )
            .await?
        }
        Command::Destroy {
            tenant,
            path,
            versions,
        } => {
            feed::change_versions(
                &addr,
                tenant,
                path,
                versions.versions,
                feed::VersionsOp::Destroy,
                format,
            )
            .await?
        }
        Command::History { tenant, path } => feed::history(&addr, tenant, path, format).await?,
        Command::Metadata {
            tenant,
            path,
            settings,
        } => feed::metadata(&addr, tenant, path, settings, format).await?,
        Command::Patch {
            tenant,
            path,
            fields,
            remove,
            cas,
        } => feed::patch(&addr, tenant, path, fields, remove, cas, format).await?,
        Command::Watch(args) => feed::watch(&addr, args, format).await?,
        Command::Webhook(command) => feed::webhook(&addr, command, format).await?,
        Command::Rotate { tenant, all } => crate::keys::rotate(&addr, tenant, all, format).await?,
        Command::Keys(command) => crate::keys::keys(&addr, command, format).await?,
        Command::Rekey(command) => crate::keys::rekey(&addr, command, format).await?,
        Command::Share(command) => crate::keys::share(&addr, command, format).await?,
        Command::Tenant(TenantCommand::Restore { name, id }) => {
            crate::keys::restore(&addr, name, id, format).await?
        }
        Command::Tenant(TenantCommand::Deleted) => crate::keys::deleted(&addr, format).await?,
        Command::Token(command) => crate::access::token_command(&addr, command, format).await?,
        Command::Policy(command) => crate::access::policy_command(&addr, command, format).await?,
        Command::Login(args) => crate::login::login(&addr, args, format).await?,
        Command::Approle(command) => crate::login::approle(&addr, command, format).await?,
        Command::Jwt(command) => crate::login::jwt(&addr, command, format).await?,
        Command::Mfa(command) => crate::login::mfa(&addr, command, format).await?,
        Command::Audit(command) => crate::audit::run(&addr, command, format).await?,
        Command::Bench(args) => bench::run(&addr, args, format).await?,
    }
    Ok(0)
}

fn tenant_json(tenant: &v1::Tenant) -> serde_json::Value {
    let settings = tenant.settings.clone().unwrap_or_default();
    json!({
        "name": tenant.name, "id": tenant.id, "created_time": tenant.created_time, "key_version": tenant.key_version,
        "allowed_cidrs": settings.allowed_cidrs, "rate_limit": settings.rate_limit,
        "default_max_versions": settings.default_max_versions,
        "cas_required": settings.cas_required,
    })
}

fn print_tenant(tenant: &v1::Tenant, format: Format) {
    let settings = tenant.settings.clone().unwrap_or_default();
    match format {
        Format::Json => print_json(&tenant_json(tenant)),
        Format::Text => print_rows(&[
            ("Name", tenant.name.clone()),
            ("Id", tenant.id.clone()),
            ("Created", tenant.created_time.clone()),
            ("Key version", tenant.key_version.to_string()),
            (
                "Networks",
                if settings.allowed_cidrs.is_empty() {
                    "any".into()
                } else {
                    settings.allowed_cidrs.join(", ")
                },
            ),
            (
                "Rate limit",
                match settings.rate_limit {
                    0 => "none".into(),
                    n => format!("{n} calls/s"),
                },
            ),
            (
                "Max versions",
                match settings.default_max_versions {
                    0 => "server default".into(),
                    n => n.to_string(),
                },
            ),
            ("Check-and-set required", settings.cas_required.to_string()),
        ]),
    }
}

fn print_init(response: &v1::InitResponse, format: Format) {
    match format {
        Format::Json => {
            // Built by hand into a zeroizing buffer rather than through a serde value.
            let mut out = Zeroizing::new(String::from("{\"shares\":["));
            for (index, share) in response.shares.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&json_string(share));
            }
            out.push_str("],\"root_token\":");
            out.push_str(&json_string(&response.root_token));
            out.push_str(&format!(
                ",\"threshold\":{},\"shares_encrypted\":{},\"root_token_encrypted\":{}}}",
                response.threshold, response.shares_encrypted, response.root_token_encrypted
            ));
            println!("{}", out.as_str());
        }
        Format::Text => {
            crate::keys::print_shares(&response.shares, response.shares_encrypted, "Unseal share");
            if response.root_token_encrypted {
                println!(
                    "Root token (encrypted to its recipient):\n{}",
                    response.root_token
                );
            } else {
                println!("Root token: {}", response.root_token);
            }
            println!();
            println!(
                "The vault is initialized and sealed. Give each share to a different operator; any {} of the {} \
                 shares unseal it (`vault-cli unseal`). They are shown only now.",
                response.threshold,
                response.shares.len()
            );
        }
    }
}

fn print_secret(response: &v1::GetResponse, field: Option<&str>, format: Format) -> CliResult<()> {
    if let Some(name) = field {
        let value = response.data.get(name).ok_or_else(|| {
            CliError::new(format!(
                "field {name:?} not found in {} version {}",
                response.path, response.version
            ))
        })?;
        return match format {
            Format::Json => {
                let (text, binary) = fields_json(&[(&name.to_owned(), value)]);
                print_json(
                    &json!({ "field": name, "value": text.get(name), "value_base64": binary.get(name) }),
                );
                Ok(())
            }
            Format::Text => write_raw(value)
                .map_err(|e| CliError::new(format!("cannot write to standard output: {e}"))),
        };
    }
    let mut fields: Vec<(&String, &Vec<u8>)> = response.data.iter().collect();
    fields.sort();
    match format {
        Format::Json => {
            let (text, binary) = fields_json(&fields);
            print_json(&json!({
                "path": response.path, "version": response.version, "created_time": response.created_time,
                "key_version": response.key_version, "data": text, "data_base64": binary,
            }));
        }
        Format::Text => {
            println!(
                "== {} (version {}, created {}) ==",
                response.path, response.version, response.created_time
            );
            let rows: Vec<(&str, String)> = fields
                .iter()
                .map(|(name, value)| (name.as_str(), field_text(value)))
                .collect();
            print_rows(&rows);
        }
    }
    Ok(())
}

/// True when the status says the object exists already (used by bench set-up).
pub fn already_exists(status: &tonic::Status) -> bool {
    status.code() == Code::AlreadyExists
}
