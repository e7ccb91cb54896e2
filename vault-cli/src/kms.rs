//! `vault-cli key ...`: named keys (encryption as a service). Plaintexts and messages are read
//! from a file or standard input, never from an argument (arguments leak into shell history and
//! process lists); decrypted plaintexts go to standard output as raw bytes.

use std::{collections::HashMap, io::Read, path::PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use clap::Subcommand;
use serde::Serialize;
use vault_proto::v1::{self, kms_client::KmsClient};
use zeroize::Zeroizing;

use crate::{
    Format,
    client::{CliError, CliResult, Ctx, token},
    input::parse_duration,
    output::{Done, Field, Show, rows_text, show, write_raw},
    secrets::{NamedArg, TenantArg},
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

// The arguments of `decrypt` and `rewrap` (plain comments on these structs: clap would take a
// doc comment for the description of the commands).
#[derive(clap::Args, Debug)]
pub struct CiphertextArgs {
    #[command(flatten)]
    key: NamedArg,
    ciphertext: String,
    #[command(flatten)]
    context: ContextArgs,
}

// The arguments of `sign` and `hmac`.
#[derive(clap::Args, Debug)]
pub struct MessageArgs {
    #[command(flatten)]
    key: NamedArg,
    #[command(flatten)]
    input: InputArg,
    #[arg(long, default_value_t = 0)]
    key_version: u32,
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
    Read(NamedArg),
    /// The tenant's key names.
    List(TenantArg),
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
    Rotate(NamedArg),
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
    Export(NamedArg),
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
    Decrypt(CiphertextArgs),
    /// Re-encrypt a ciphertext under the latest version (the plaintext is never shown).
    Rewrap(CiphertextArgs),
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
    Sign(MessageArgs),
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
    Hmac(MessageArgs),
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

/// A named key as `create`, `read` and `config` print it.
#[derive(Serialize)]
struct Key {
    name: String,
    #[serde(rename = "type")]
    key_type: String,
    created_time: String,
    latest_version: u32,
    min_decryption_version: u32,
    min_encryption_version: u32,
    min_available_version: u32,
    deletion_allowed: bool,
    exportable: bool,
    budget: u64,
    rotation_period_seconds: u64,
    delete_after: String,
    versions: Vec<KeyVersion>,
}

#[derive(Serialize)]
struct KeyVersion {
    version: u32,
    created_time: String,
    invocations: u64,
    remaining: Option<u64>,
    /// Base64.
    public_key: String,
    public_key_pem: String,
}

impl From<Option<v1::NamedKey>> for Key {
    fn from(key: Option<v1::NamedKey>) -> Self {
        let key = key.unwrap_or_default();
        Key {
            name: key.name,
            key_type: key.r#type,
            created_time: key.created_time,
            latest_version: key.latest_version,
            min_decryption_version: key.min_decryption_version,
            min_encryption_version: key.min_encryption_version,
            min_available_version: key.min_available_version,
            deletion_allowed: key.deletion_allowed,
            exportable: key.exportable,
            budget: key.budget,
            rotation_period_seconds: key.rotation_period_seconds,
            delete_after: key.delete_after,
            versions: key
                .versions
                .into_iter()
                .map(|v| KeyVersion {
                    version: v.version,
                    created_time: v.created_time,
                    invocations: v.invocations,
                    remaining: v.remaining,
                    public_key: STANDARD.encode(&v.public_key),
                    public_key_pem: v.public_key_pem,
                })
                .collect(),
        }
    }
}

impl Show for Key {
    fn text(&self) -> String {
        let mut rows = vec![
            ("name", self.name.clone()),
            ("type", self.key_type.clone()),
            ("created", self.created_time.clone()),
            ("latest version", self.latest_version.to_string()),
            ("min decryption", self.min_decryption_version.to_string()),
            ("min encryption", self.min_encryption_version.to_string()),
            ("min available", self.min_available_version.to_string()),
            ("deletion allowed", self.deletion_allowed.to_string()),
            ("exportable", self.exportable.to_string()),
        ];
        if self.budget > 0 {
            rows.push(("budget", self.budget.to_string()));
        }
        if self.rotation_period_seconds > 0 {
            rows.push((
                "rotation period",
                format!("{}s", self.rotation_period_seconds),
            ));
        }
        if !self.delete_after.is_empty() {
            rows.push(("destroyed at", self.delete_after.clone()));
        }
        let mut out = rows_text(&rows);
        for v in &self.versions {
            let remaining = v
                .remaining
                .map_or_else(String::new, |r| format!(", {r} left"));
            out.push_str(&format!(
                "version {}: created {}, {} encryptions{remaining}\n",
                v.version, v.created_time, v.invocations
            ));
            out.push_str(&v.public_key_pem);
        }
        out
    }
}

#[derive(Serialize)]
struct Rotated {
    name: String,
    version: u32,
}

impl Show for Rotated {
    fn text(&self) -> String {
        format!("Key {} rotated to version {}.\n", self.name, self.version)
    }
}

#[derive(Serialize)]
struct Deleted {
    name: String,
    delete_after: String,
}

impl Show for Deleted {
    fn text(&self) -> String {
        format!(
            "Key {} is unusable now and will be destroyed at {} \
             (`vault-cli key delete --cancel` until then).\n",
            self.name, self.delete_after
        )
    }
}

/// One version of `export`, printed on a line of its own.
#[derive(Serialize)]
struct Exported<'a> {
    version: u32,
    #[serde(rename = "type")]
    key_type: &'a str,
    /// Base64.
    material: &'a str,
}

impl Show for Exported<'_> {
    fn text(&self) -> String {
        format!("v{} {}\n", self.version, self.material)
    }
}

/// What encrypt, rewrap, sign and hmac make: JSON names it by kind, text prints it alone.
#[derive(Serialize)]
#[serde(rename_all = "lowercase")]
enum Made {
    Ciphertext(String),
    Signature(String),
    Hmac(String),
}

#[derive(Serialize)]
struct Versioned {
    #[serde(flatten)]
    made: Made,
    key_version: u32,
}

impl Show for Versioned {
    fn text(&self) -> String {
        let (Made::Ciphertext(text) | Made::Signature(text) | Made::Hmac(text)) = &self.made;
        format!("{text}\n")
    }
}

/// `decrypt --format json` (as text, the plaintext is written raw).
#[derive(Serialize)]
struct Decrypted<'a> {
    plaintext_base64: &'a str,
    key_version: u32,
}

impl Show for Decrypted<'_> {
    fn text(&self) -> String {
        String::new()
    }
}

#[derive(Serialize)]
struct DataKey<'a> {
    plaintext_base64: &'a str,
    ciphertext: &'a str,
    key_version: u32,
    #[serde(skip)]
    wrapped_only: bool,
}

impl Show for DataKey<'_> {
    fn text(&self) -> String {
        if self.wrapped_only {
            return format!("{}\n", self.ciphertext);
        }
        let mut out = Zeroizing::new(String::from("plaintext   "));
        out.push_str(self.plaintext_base64);
        out.push_str("\nciphertext  ");
        out.push_str(self.ciphertext);
        out.push('\n');
        std::mem::take(&mut *out)
    }
}

#[derive(Serialize)]
struct Validity {
    valid: bool,
    key_version: u32,
}

impl Show for Validity {
    fn text(&self) -> String {
        if self.valid {
            format!("valid (key version {})\n", self.key_version)
        } else {
            "NOT valid\n".to_owned()
        }
    }
}

fn seconds(duration: Option<std::time::Duration>) -> Option<u64> {
    duration.map(|d| d.as_secs())
}

/// Runs `vault-cli key ...`; returns the exit code (1 for a signature or MAC that is not valid).
pub async fn key(ctx: &Ctx, command: KeyCommand, format: Format) -> CliResult<u8> {
    let new = KmsClient::new;
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
            let request = v1::CreateKeyRequest {
                tenant: tenant.tenant,
                name,
                r#type: key_type,
                exportable,
                deletion_allowed,
                budget,
                rotation_period_seconds: seconds(rotation_period).unwrap_or(0),
            };
            let response = call!(ctx, new, create_key, request).await?;
            show(&Key::from(response.key), format)?;
        }
        KeyCommand::Read(key) => {
            let request = v1::ReadKeyRequest {
                tenant: key.tenant.tenant,
                name: key.name,
            };
            let response = call!(ctx, new, read_key, request).await?;
            show(&Key::from(response.key), format)?;
        }
        KeyCommand::List(tenant) => {
            // Every page on one connection.
            let token = token()?;
            let mut client = new(ctx.connect().await?);
            let mut names = Vec::new();
            let mut page_token = String::new();
            loop {
                let request = v1::ListKeysRequest {
                    tenant: tenant.tenant.clone(),
                    page_size: 1000,
                    page_token,
                };
                let page = ctx.answer(client.list_keys(ctx.authed(request, &token)?).await)?;
                names.extend(page.names);
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            show(&Field::lines("names", names), format)?;
        }
        KeyCommand::Config {
            tenant,
            name,
            min_decryption_version,
            min_encryption_version,
            deletion_allowed,
            rotation_period,
        } => {
            let request = v1::UpdateKeyRequest {
                tenant: tenant.tenant,
                name,
                min_decryption_version,
                min_encryption_version,
                deletion_allowed,
                rotation_period_seconds: seconds(rotation_period),
            };
            let response = call!(ctx, new, update_key, request).await?;
            show(&Key::from(response.key), format)?;
        }
        KeyCommand::Rotate(key) => {
            let request = v1::RotateKeyRequest {
                tenant: key.tenant.tenant,
                name: key.name.clone(),
            };
            let version = call!(ctx, new, rotate_key, request).await?.version;
            let rotated = Rotated {
                name: key.name,
                version,
            };
            show(&rotated, format)?;
        }
        KeyCommand::Trim {
            tenant,
            name,
            min_available_version,
        } => {
            let request = v1::TrimKeyRequest {
                tenant: tenant.tenant,
                name: name.clone(),
                min_available_version,
            };
            let destroyed = call!(ctx, new, trim_key, request).await?.destroyed_versions;
            let text = format!("Key {name}: versions destroyed: {destroyed:?}.\n");
            show(&Field::new("destroyed_versions", destroyed, text), format)?;
        }
        KeyCommand::Delete {
            tenant,
            name,
            cancel: true,
        } => {
            let request = v1::CancelKeyDeletionRequest {
                tenant: tenant.tenant,
                name: name.clone(),
            };
            call!(ctx, new, cancel_key_deletion, request).await?;
            let text = format!("Deletion of key {name} cancelled.");
            show(&Done::new("name", name, "cancelled", text), format)?;
        }
        KeyCommand::Delete {
            tenant,
            name,
            cancel: false,
        } => {
            let request = v1::DeleteKeyRequest {
                tenant: tenant.tenant,
                name: name.clone(),
            };
            let delete_after = call!(ctx, new, delete_key, request).await?.delete_after;
            show(&Deleted { name, delete_after }, format)?;
        }
        KeyCommand::Export(key) => {
            let request = v1::ExportKeyRequest {
                tenant: key.tenant.tenant,
                name: key.name,
            };
            let response = call!(ctx, new, export_key, request).await?;
            for version in &response.versions {
                let material = Zeroizing::new(STANDARD.encode(&version.material));
                let exported = Exported {
                    version: version.version,
                    key_type: &response.r#type,
                    material: &material,
                };
                show(&exported, format)?;
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
            let request = v1::EncryptRequest {
                tenant: tenant.tenant,
                key: name,
                plaintext: plaintext.to_vec(),
                context,
                sensitive_context,
                key_version,
            };
            let response = call!(ctx, new, encrypt, request).await?;
            let made = Made::Ciphertext(response.ciphertext);
            show_versioned(made, response.key_version, format)?;
        }
        KeyCommand::Decrypt(args) => {
            let (context, sensitive_context) = args.context.parse()?;
            let request = v1::DecryptRequest {
                tenant: args.key.tenant.tenant,
                key: args.key.name,
                ciphertext: args.ciphertext,
                context,
                sensitive_context,
            };
            let response = call!(ctx, new, decrypt, request).await?;
            let plaintext = Zeroizing::new(response.plaintext);
            match format {
                Format::Json => {
                    let encoded = Zeroizing::new(STANDARD.encode(plaintext.as_slice()));
                    let decrypted = Decrypted {
                        plaintext_base64: &encoded,
                        key_version: response.key_version,
                    };
                    show(&decrypted, format)?;
                }
                Format::Text => write_raw(&plaintext)
                    .map_err(|e| CliError::new(format!("cannot write the plaintext: {e}")))?,
            }
        }
        KeyCommand::Rewrap(args) => {
            let (context, sensitive_context) = args.context.parse()?;
            let request = v1::RewrapRequest {
                tenant: args.key.tenant.tenant,
                key: args.key.name,
                ciphertext: args.ciphertext,
                context,
                sensitive_context,
                key_version: 0,
            };
            let response = call!(ctx, new, rewrap, request).await?;
            let made = Made::Ciphertext(response.ciphertext);
            show_versioned(made, response.key_version, format)?;
        }
        KeyCommand::Datakey {
            tenant,
            name,
            context,
            bits,
            wrapped_only,
        } => {
            let (context, sensitive_context) = context.parse()?;
            let request = v1::GenerateDataKeyRequest {
                tenant: tenant.tenant,
                key: name,
                context,
                sensitive_context,
                key_version: 0,
                bits,
                wrapped_only,
            };
            let response = call!(ctx, new, generate_data_key, request).await?;
            let plaintext = Zeroizing::new(response.plaintext);
            let encoded = Zeroizing::new(STANDARD.encode(plaintext.as_slice()));
            let data_key = DataKey {
                plaintext_base64: &encoded,
                ciphertext: &response.ciphertext,
                key_version: response.key_version,
                wrapped_only,
            };
            show(&data_key, format)?;
        }
        KeyCommand::Sign(args) => {
            let message = args.input.read()?;
            let request = v1::SignRequest {
                tenant: args.key.tenant.tenant,
                key: args.key.name,
                message: message.to_vec(),
                key_version: args.key_version,
            };
            let response = call!(ctx, new, sign, request).await?;
            let made = Made::Signature(response.signature);
            show_versioned(made, response.key_version, format)?;
        }
        KeyCommand::Hmac(args) => {
            let message = args.input.read()?;
            let request = v1::HmacRequest {
                tenant: args.key.tenant.tenant,
                key: args.key.name,
                message: message.to_vec(),
                key_version: args.key_version,
            };
            let response = call!(ctx, new, hmac, request).await?;
            show_versioned(Made::Hmac(response.hmac), response.key_version, format)?;
        }
        KeyCommand::Verify {
            tenant,
            name,
            signature,
            input,
        } => {
            let message = input.read()?;
            let request = v1::VerifyRequest {
                tenant: tenant.tenant,
                key: name,
                message: message.to_vec(),
                signature,
            };
            let response = call!(ctx, new, verify, request).await?;
            return show_validity(response.valid, response.key_version, format);
        }
        KeyCommand::VerifyHmac {
            tenant,
            name,
            hmac,
            input,
        } => {
            let message = input.read()?;
            let request = v1::VerifyHmacRequest {
                tenant: tenant.tenant,
                key: name,
                message: message.to_vec(),
                hmac,
            };
            let response = call!(ctx, new, verify_hmac, request).await?;
            return show_validity(response.valid, response.key_version, format);
        }
    }
    Ok(0)
}

fn show_versioned(made: Made, key_version: u32, format: Format) -> CliResult<()> {
    show(&Versioned { made, key_version }, format)
}

/// Prints whether a signature or MAC is valid; the exit code is 1 when it is not.
fn show_validity(valid: bool, key_version: u32, format: Format) -> CliResult<u8> {
    show(&Validity { valid, key_version }, format)?;
    Ok(u8::from(!valid))
}
