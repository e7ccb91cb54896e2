//! `vault-cli key ...`: named keys (encryption as a service). Plaintexts and messages are read
//! from a file or standard input, never from an argument (arguments leak into shell history and
//! process lists); decrypted plaintexts go to standard output as raw bytes.

use std::{collections::HashMap, io::Read, path::PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Subcommand;
use serde_json::{Value, json};
use vault_proto::v1::{self, kms_client::KmsClient};
use zeroize::Zeroizing;

use crate::{
    Format, TenantArg,
    access::parse_duration,
    client::{CliError, CliResult, authed, connect, token},
    output::{print_json, print_rows, write_raw},
};

#[derive(clap::Args, Debug)]
pub struct ContextArgs {
    /// Encryption context NAME=VALUE, bound to the ciphertext: decrypt must give the same
    /// pairs (repeat for several). The value appears in the audit log.
    #[arg(long = "context", value_name = "NAME=VALUE")]
    context: Vec<String>,
    /// Like --context, but the value is kept out of the audit log.
    #[arg(long = "sensitive-context", value_name = "NAME=VALUE")]
    sensitive_context: Vec<String>,
}

impl ContextArgs {
    fn parse(self) -> CliResult<(HashMap<String, String>, Vec<String>)> {
        let mut entries = HashMap::new();
        let mut sensitive = Vec::new();
        for (flag, pairs, secret) in [
            ("--context", self.context, false),
            ("--sensitive-context", self.sensitive_context, true),
        ] {
            for pair in pairs {
                let (name, value) = pair.split_once('=').ok_or_else(|| {
                    // The pair is not echoed: a sensitive one may be all value.
                    CliError::new(format!("{flag}: expected NAME=VALUE"))
                })?;
                if entries.insert(name.to_owned(), value.to_owned()).is_some() {
                    return Err(CliError::new(format!(
                        "{flag}: the context name {name:?} is given twice"
                    )));
                }
                if secret {
                    sensitive.push(name.to_owned());
                }
            }
        }
        Ok((entries, sensitive))
    }
}

#[derive(clap::Args, Debug)]
pub struct InputArg {
    /// Read the plaintext (or message) from this file; without it, from standard input.
    #[arg(long = "in", value_name = "FILE")]
    input: Option<PathBuf>,
}

impl InputArg {
    fn read(&self) -> CliResult<Zeroizing<Vec<u8>>> {
        let mut bytes = Zeroizing::new(Vec::new());
        match &self.input {
            Some(path) => {
                let mut file = std::fs::File::open(path).map_err(|e| {
                    CliError::new(format!("--in: cannot read {}: {e}", path.display()))
                })?;
                file.read_to_end(&mut bytes)
            }
            None => std::io::stdin().read_to_end(&mut bytes),
        }
        .map_err(|e| CliError::new(format!("cannot read the input: {e}")))?;
        Ok(bytes)
    }
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Create a named key; its material is generated in the vault and never leaves it.
    Create {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        /// aes256-gcm (default), chacha20-poly1305, xchacha20-poly1305 (192-bit nonces: no
        /// per-version budget), ed25519, ecdsa-p256 or hmac-sha256.
        #[arg(long = "type", default_value = "aes256-gcm")]
        key_type: String,
        /// Encryptions per version before it rotates by itself (default: the server's
        /// --key-budget; at most 2^32).
        #[arg(long, default_value_t = 0)]
        budget: u64,
        /// Rotate once the latest version is this old (30m, 12h, 90d).
        #[arg(long, value_parser = parse_duration)]
        rotation_period: Option<std::time::Duration>,
        /// Allow `key delete` later.
        #[arg(long)]
        deletion_allowed: bool,
        /// Allow `key export` (refused unless the server allows exportable keys).
        #[arg(long)]
        exportable: bool,
    },
    /// A key's type, versions, use counts, minimum versions and public keys.
    Read {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// The tenant's key names.
    List {
        #[command(flatten)]
        tenant: TenantArg,
    },
    /// Change a key's minimum versions, deletability or rotation period.
    Config {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        /// Ciphertexts, signatures and MACs of older versions are refused.
        #[arg(long)]
        min_decryption_version: Option<u32>,
        /// Encrypting with an older version (--key-version) is refused; 0: any kept version.
        #[arg(long)]
        min_encryption_version: Option<u32>,
        #[arg(long)]
        deletion_allowed: Option<bool>,
        /// 0 stops scheduled rotation.
        #[arg(long, value_parser = parse_duration)]
        rotation_period: Option<std::time::Duration>,
    },
    /// Add a version; new ciphertexts use it, old ones still decrypt.
    Rotate {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Destroy every version below N (N may not exceed the minimum decryption version).
    Trim {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[arg(long, value_name = "N")]
        min_available_version: u32,
    },
    /// Schedule a deletable key for destruction after the server's waiting period (or cancel).
    Delete {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[arg(long)]
        cancel: bool,
    },
    /// Print the material of an exportable key (base64, one line per version).
    Export {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
    },
    /// Encrypt the input; prints vault:vN:... .
    Encrypt {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[command(flatten)]
        input: InputArg,
        #[command(flatten)]
        context: ContextArgs,
        /// Use this version instead of the latest.
        #[arg(long, default_value_t = 0)]
        key_version: u32,
    },
    /// Decrypt a ciphertext; the plaintext goes to standard output as it is.
    Decrypt {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        ciphertext: String,
        #[command(flatten)]
        context: ContextArgs,
    },
    /// Re-encrypt a ciphertext under the latest version (the plaintext is never shown).
    Rewrap {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        ciphertext: String,
        #[command(flatten)]
        context: ContextArgs,
    },
    /// Generate a data key: prints it (base64) and its ciphertext under the named key.
    Datakey {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[command(flatten)]
        context: ContextArgs,
        /// 128, 256 or 512.
        #[arg(long, default_value_t = 256)]
        bits: u32,
        /// Print only the ciphertext.
        #[arg(long)]
        wrapped_only: bool,
    },
    /// Sign the input (ed25519, ecdsa-p256); prints vault:vN:... .
    Sign {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[command(flatten)]
        input: InputArg,
        #[arg(long, default_value_t = 0)]
        key_version: u32,
    },
    /// Verify a signature of the input; exits 1 when it is not valid.
    Verify {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        signature: String,
        #[command(flatten)]
        input: InputArg,
    },
    /// HMAC-SHA256 of the input (hmac-sha256 keys); prints vault:vN:... .
    Hmac {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        #[command(flatten)]
        input: InputArg,
        #[arg(long, default_value_t = 0)]
        key_version: u32,
    },
    /// Verify an HMAC of the input; exits 1 when it is not valid.
    VerifyHmac {
        #[command(flatten)]
        tenant: TenantArg,
        name: String,
        hmac: String,
        #[command(flatten)]
        input: InputArg,
    },
}

fn key_json(key: &v1::NamedKey) -> Value {
    json!({
        "name": key.name,
        "type": key.r#type,
        "created_time": key.created_time,
        "latest_version": key.latest_version,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": key.min_encryption_version,
        "min_available_version": key.min_available_version,
        "deletion_allowed": key.deletion_allowed,
        "exportable": key.exportable,
        "budget": key.budget,
        "rotation_period_seconds": key.rotation_period_seconds,
        "delete_after": key.delete_after,
        "versions": key.versions.iter().map(|v| json!({
            "version": v.version,
            "created_time": v.created_time,
            "invocations": v.invocations,
            "remaining": v.remaining,
            "public_key": STANDARD.encode(&v.public_key),
            "public_key_pem": v.public_key_pem,
        })).collect::<Vec<_>>(),
    })
}

fn print_key(key: &v1::NamedKey, format: Format) {
    if format == Format::Json {
        return print_json(&key_json(key));
    }
    let mut rows = vec![
        ("name", key.name.clone()),
        ("type", key.r#type.clone()),
        ("created", key.created_time.clone()),
        ("latest version", key.latest_version.to_string()),
        ("min decryption", key.min_decryption_version.to_string()),
        ("min encryption", key.min_encryption_version.to_string()),
        ("min available", key.min_available_version.to_string()),
        ("deletion allowed", key.deletion_allowed.to_string()),
        ("exportable", key.exportable.to_string()),
    ];
    if key.budget > 0 {
        rows.push(("budget", key.budget.to_string()));
    }
    if key.rotation_period_seconds > 0 {
        rows.push((
            "rotation period",
            format!("{}s", key.rotation_period_seconds),
        ));
    }
    if !key.delete_after.is_empty() {
        rows.push(("destroyed at", key.delete_after.clone()));
    }
    print_rows(&rows);
    for v in &key.versions {
        let remaining = v
            .remaining
            .map_or_else(String::new, |r| format!(", {r} left"));
        println!(
            "version {}: created {}, {} encryptions{remaining}",
            v.version, v.created_time, v.invocations
        );
        if !v.public_key_pem.is_empty() {
            print!("{}", v.public_key_pem);
        }
    }
}

fn print_versioned(field: &str, text: &str, version: u32, format: Format) {
    match format {
        Format::Json => print_json(&json!({ field: text, "key_version": version })),
        Format::Text => println!("{text}"),
    }
}

fn seconds(duration: Option<std::time::Duration>) -> Option<u64> {
    duration.map(|d| d.as_secs())
}

/// Runs `vault-cli key ...`; returns the exit code (1 for a signature or MAC that is not valid).
pub async fn key(addr: &str, command: KeyCommand, format: Format) -> CliResult<u8> {
    let token = token()?;
    let mut client = KmsClient::new(connect(addr).await?);
    let failed = |status| CliError::from_status(status, addr);
    match command {
        KeyCommand::Create {
            tenant,
            name,
            key_type,
            budget,
            rotation_period,
            deletion_allowed,
            exportable,
        } => {
            let response = client
                .create_key(authed(
                    v1::CreateKeyRequest {
                        tenant: tenant.tenant,
                        name,
                        r#type: key_type,
                        exportable,
                        deletion_allowed,
                        budget,
                        rotation_period_seconds: seconds(rotation_period).unwrap_or(0),
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_key(&response.key.unwrap_or_default(), format);
        }
        KeyCommand::Read { tenant, name } => {
            let response = client
                .read_key(authed(
                    v1::ReadKeyRequest {
                        tenant: tenant.tenant,
                        name,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_key(&response.key.unwrap_or_default(), format);
        }
        KeyCommand::List { tenant } => {
            let mut names = Vec::new();
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_keys(authed(
                        v1::ListKeysRequest {
                            tenant: tenant.tenant.clone(),
                            page_size: 1000,
                            page_token,
                        },
                        &token,
                    )?)
                    .await
                    .map_err(failed)?
                    .into_inner();
                names.extend(page.names);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            match format {
                Format::Json => print_json(&json!({ "names": names })),
                Format::Text => names.iter().for_each(|name| println!("{name}")),
            }
        }
        KeyCommand::Config {
            tenant,
            name,
            min_decryption_version,
            min_encryption_version,
            deletion_allowed,
            rotation_period,
        } => {
            let response = client
                .update_key(authed(
                    v1::UpdateKeyRequest {
                        tenant: tenant.tenant,
                        name,
                        min_decryption_version,
                        min_encryption_version,
                        deletion_allowed,
                        rotation_period_seconds: seconds(rotation_period),
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_key(&response.key.unwrap_or_default(), format);
        }
        KeyCommand::Rotate { tenant, name } => {
            let version = client
                .rotate_key(authed(
                    v1::RotateKeyRequest {
                        tenant: tenant.tenant,
                        name: name.clone(),
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner()
                .version;
            match format {
                Format::Json => print_json(&json!({ "name": name, "version": version })),
                Format::Text => println!("Key {name} rotated to version {version}."),
            }
        }
        KeyCommand::Trim {
            tenant,
            name,
            min_available_version,
        } => {
            let destroyed = client
                .trim_key(authed(
                    v1::TrimKeyRequest {
                        tenant: tenant.tenant,
                        name: name.clone(),
                        min_available_version,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner()
                .destroyed_versions;
            match format {
                Format::Json => print_json(&json!({ "destroyed_versions": destroyed })),
                Format::Text => println!("Key {name}: versions destroyed: {destroyed:?}."),
            }
        }
        KeyCommand::Delete {
            tenant,
            name,
            cancel: true,
        } => {
            client
                .cancel_key_deletion(authed(
                    v1::CancelKeyDeletionRequest {
                        tenant: tenant.tenant,
                        name: name.clone(),
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?;
            match format {
                Format::Json => print_json(&json!({ "name": name, "cancelled": true })),
                Format::Text => println!("Deletion of key {name} cancelled."),
            }
        }
        KeyCommand::Delete {
            tenant,
            name,
            cancel: false,
        } => {
            let when = client
                .delete_key(authed(
                    v1::DeleteKeyRequest {
                        tenant: tenant.tenant,
                        name: name.clone(),
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner()
                .delete_after;
            match format {
                Format::Json => print_json(&json!({ "name": name, "delete_after": when })),
                Format::Text => println!(
                    "Key {name} is unusable now and will be destroyed at {when} \
                     (`vault-cli key delete --cancel` until then)."
                ),
            }
        }
        KeyCommand::Export { tenant, name } => {
            let response = client
                .export_key(authed(
                    v1::ExportKeyRequest {
                        tenant: tenant.tenant,
                        name,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            for version in &response.versions {
                let material = Zeroizing::new(STANDARD.encode(&version.material));
                match format {
                    Format::Json => println!(
                        "{{\"version\":{},\"type\":{},\"material\":\"{}\"}}",
                        version.version,
                        Value::from(response.r#type.as_str()),
                        material.as_str()
                    ),
                    Format::Text => println!("v{} {}", version.version, material.as_str()),
                }
            }
        }
        KeyCommand::Encrypt {
            tenant,
            name,
            input,
            context,
            key_version,
        } => {
            let (context, sensitive_context) = context.parse()?;
            let plaintext = input.read()?;
            let response = client
                .encrypt(authed(
                    v1::EncryptRequest {
                        tenant: tenant.tenant,
                        key: name,
                        plaintext: plaintext.to_vec(),
                        context,
                        sensitive_context,
                        key_version,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_versioned(
                "ciphertext",
                &response.ciphertext,
                response.key_version,
                format,
            );
        }
        KeyCommand::Decrypt {
            tenant,
            name,
            ciphertext,
            context,
        } => {
            let (context, sensitive_context) = context.parse()?;
            let response = client
                .decrypt(authed(
                    v1::DecryptRequest {
                        tenant: tenant.tenant,
                        key: name,
                        ciphertext,
                        context,
                        sensitive_context,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            let plaintext = Zeroizing::new(response.plaintext);
            match format {
                Format::Json => {
                    let encoded = Zeroizing::new(STANDARD.encode(plaintext.as_slice()));
                    println!(
                        "{{\"plaintext_base64\":\"{}\",\"key_version\":{}}}",
                        encoded.as_str(),
                        response.key_version
                    );
                }
                Format::Text => write_raw(&plaintext)
                    .map_err(|e| CliError::new(format!("cannot write the plaintext: {e}")))?,
            }
        }
        KeyCommand::Rewrap {
            tenant,
            name,
            ciphertext,
            context,
        } => {
            let (context, sensitive_context) = context.parse()?;
            let response = client
                .rewrap(authed(
                    v1::RewrapRequest {
                        tenant: tenant.tenant,
                        key: name,
                        ciphertext,
                        context,
                        sensitive_context,
                        key_version: 0,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_versioned(
                "ciphertext",
                &response.ciphertext,
                response.key_version,
                format,
            );
        }
        KeyCommand::Datakey {
            tenant,
            name,
            context,
            bits,
            wrapped_only,
        } => {
            let (context, sensitive_context) = context.parse()?;
            let response = client
                .generate_data_key(authed(
                    v1::GenerateDataKeyRequest {
                        tenant: tenant.tenant,
                        key: name,
                        context,
                        sensitive_context,
                        key_version: 0,
                        bits,
                        wrapped_only,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            let plaintext = Zeroizing::new(response.plaintext);
            let encoded = Zeroizing::new(STANDARD.encode(plaintext.as_slice()));
            match (format, wrapped_only) {
                (Format::Json, _) => println!(
                    "{{\"plaintext_base64\":\"{}\",\"ciphertext\":{},\"key_version\":{}}}",
                    encoded.as_str(),
                    Value::from(response.ciphertext.as_str()),
                    response.key_version
                ),
                (Format::Text, true) => println!("{}", response.ciphertext),
                (Format::Text, false) => {
                    println!("plaintext   {}", encoded.as_str());
                    println!("ciphertext  {}", response.ciphertext);
                }
            }
        }
        KeyCommand::Sign {
            tenant,
            name,
            input,
            key_version,
        } => {
            let message = input.read()?;
            let response = client
                .sign(authed(
                    v1::SignRequest {
                        tenant: tenant.tenant,
                        key: name,
                        message: message.to_vec(),
                        key_version,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_versioned(
                "signature",
                &response.signature,
                response.key_version,
                format,
            );
        }
        KeyCommand::Hmac {
            tenant,
            name,
            input,
            key_version,
        } => {
            let message = input.read()?;
            let response = client
                .hmac(authed(
                    v1::HmacRequest {
                        tenant: tenant.tenant,
                        key: name,
                        message: message.to_vec(),
                        key_version,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            print_versioned("hmac", &response.hmac, response.key_version, format);
        }
        KeyCommand::Verify {
            tenant,
            name,
            signature,
            input,
        } => {
            let message = input.read()?;
            let response = client
                .verify(authed(
                    v1::VerifyRequest {
                        tenant: tenant.tenant,
                        key: name,
                        message: message.to_vec(),
                        signature,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            return Ok(print_validity(response.valid, response.key_version, format));
        }
        KeyCommand::VerifyHmac {
            tenant,
            name,
            hmac,
            input,
        } => {
            let message = input.read()?;
            let response = client
                .verify_hmac(authed(
                    v1::VerifyHmacRequest {
                        tenant: tenant.tenant,
                        key: name,
                        message: message.to_vec(),
                        hmac,
                    },
                    &token,
                )?)
                .await
                .map_err(failed)?
                .into_inner();
            return Ok(print_validity(response.valid, response.key_version, format));
        }
    }
    Ok(0)
}

fn print_validity(valid: bool, version: u32, format: Format) -> u8 {
    match format {
        Format::Json => print_json(&json!({ "valid": valid, "key_version": version })),
        Format::Text if valid => println!("valid (key version {version})"),
        Format::Text => println!("NOT valid"),
    }
    u8::from(!valid)
}
