//! Kms service: named keys (encryption as a service). Parses requests into domain types, calls
//! the core, and writes what the audit record may know into the call's detail: the key, the
//! version used and the encryption context without the values its caller marked sensitive;
//! never a plaintext, ciphertext, signature, MAC or message.

use std::{collections::HashMap, sync::Arc};

use tonic::{Request, Response, Status};
use vault_core::{
    Error,
    kms::{EncryptionContext, KeyName, public_key_pem},
    names::TenantName,
    secret::SecretBytes,
    time::rfc3339,
    vault::{DecryptItem, EncryptItem, KeySpec, KeyUpdate, NamedKeyInfo, Versioned},
};
use vault_proto::v1::{self, kms_server::Kms};

use crate::{
    Shared,
    call::Call,
    serve::{at, serve, under},
};

pub struct KmsService {
    shared: Arc<Shared>,
}

impl KmsService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        KmsService { shared }
    }
}

fn names(tenant: &str, key: &str) -> Result<(TenantName, KeyName), Error> {
    Ok((TenantName::parse(tenant)?, KeyName::parse(key)?))
}

fn context(
    field: &str,
    entries: HashMap<String, String>,
    sensitive: Vec<String>,
) -> Result<EncryptionContext, Error> {
    EncryptionContext::new(field, entries, sensitive)
}

/// The audit detail of a call that used a key: its name, the version, and the context's
/// names with the values that are not sensitive.
fn used(call: &Call, key: &KeyName, version: u32, context: Option<&EncryptionContext>) {
    match context.filter(|c| !c.is_empty()) {
        Some(context) => call.note(format!(
            "key {key} version {version}; context {}",
            context.audit_summary()
        )),
        None => call.note(format!("key {key} version {version}")),
    }
}

fn seconds(nanos: i64) -> u64 {
    u64::try_from(nanos / 1_000_000_000).unwrap_or(0)
}

fn nanos(field: &'static str, seconds: u64) -> Result<i64, Error> {
    seconds
        .checked_mul(1_000_000_000)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| Error::InvalidArgument {
            field,
            reason: "too large".into(),
        })
}

fn key_message(info: NamedKeyInfo) -> v1::NamedKey {
    v1::NamedKey {
        name: info.name.to_string(),
        r#type: info.key_type.as_str().into(),
        created_time: rfc3339(info.created_unix_nanos),
        latest_version: info.latest_version,
        min_decryption_version: info.min_decryption_version,
        min_encryption_version: info.min_encryption_version,
        min_available_version: info.min_available_version,
        deletion_allowed: info.deletion_allowed,
        exportable: info.exportable,
        budget: info.budget.unwrap_or(0),
        rotation_period_seconds: seconds(info.rotation_period_nanos),
        delete_after: info
            .delete_after_unix_nanos
            .map(rfc3339)
            .unwrap_or_default(),
        versions: info
            .versions
            .into_iter()
            .map(|v| v1::NamedKeyVersion {
                version: v.version,
                created_time: rfc3339(v.created_unix_nanos),
                invocations: v.invocations,
                remaining: v.remaining,
                public_key_pem: v
                    .public_key
                    .as_deref()
                    .and_then(|raw| public_key_pem(info.key_type, raw))
                    .unwrap_or_default(),
                public_key: v.public_key.unwrap_or_default(),
            })
            .collect(),
    }
}

fn encrypted(result: Versioned) -> v1::EncryptResponse {
    v1::EncryptResponse {
        ciphertext: result.text,
        key_version: result.version,
    }
}

#[tonic::async_trait]
impl Kms for KmsService {
    async fn create_key(
        &self,
        request: Request<v1::CreateKeyRequest>,
    ) -> Result<Response<v1::CreateKeyResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| {
                let (tenant, name) = names(&r.tenant, &r.name)?;
                let spec = KeySpec {
                    key_type: r.r#type,
                    exportable: r.exportable,
                    deletion_allowed: r.deletion_allowed,
                    budget: r.budget,
                    rotation_period_nanos: nanos(
                        "rotation_period_seconds",
                        r.rotation_period_seconds,
                    )?,
                };
                Ok((tenant, name, spec))
            },
            |step, (tenant, name, spec)| {
                let exportable = spec.exportable;
                let info = step
                    .vault
                    .kms()
                    .create_key(step.caller()?, &tenant, &name, spec)?;
                step.call.note(format!(
                    "key {name} created: type {}, exportable {exportable}",
                    info.key_type.as_str()
                ));
                Ok(info)
            },
        )
        .await?;
        Ok(Response::new(v1::CreateKeyResponse {
            key: Some(key_message(info)),
        }))
    }

    async fn read_key(
        &self,
        request: Request<v1::ReadKeyRequest>,
    ) -> Result<Response<v1::ReadKeyResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| names(&r.tenant, &r.name),
            |step, (tenant, name)| step.vault.kms().read_key(step.caller()?, &tenant, &name),
        )
        .await?;
        Ok(Response::new(v1::ReadKeyResponse {
            key: Some(key_message(info)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<v1::ListKeysRequest>,
    ) -> Result<Response<v1::ListKeysResponse>, Status> {
        let (names, more) = serve(
            &self.shared.vault,
            request,
            |r| at(&r.tenant, "keys/"),
            |r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let size = match r.page_size {
                    0 => vault_core::vault::DEFAULT_PAGE_SIZE,
                    n => n as usize,
                };
                Ok((tenant, r.page_token, size))
            },
            |step, (tenant, page_token, size)| {
                step.vault
                    .kms()
                    .list_keys(step.caller()?, &tenant, &page_token, size)
            },
        )
        .await?;
        let names: Vec<String> = names.iter().map(ToString::to_string).collect();
        let next_page_token = if more {
            names.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListKeysResponse {
            names,
            next_page_token,
        }))
    }

    async fn update_key(
        &self,
        request: Request<v1::UpdateKeyRequest>,
    ) -> Result<Response<v1::UpdateKeyResponse>, Status> {
        let info = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| {
                let (tenant, name) = names(&r.tenant, &r.name)?;
                let update = KeyUpdate {
                    min_decryption_version: r.min_decryption_version,
                    min_encryption_version: r.min_encryption_version,
                    deletion_allowed: r.deletion_allowed,
                    rotation_period_nanos: r
                        .rotation_period_seconds
                        .map(|s| nanos("rotation_period_seconds", s))
                        .transpose()?,
                };
                Ok((tenant, name, update))
            },
            |step, (tenant, name, update)| {
                step.vault
                    .kms()
                    .update_key(step.caller()?, &tenant, &name, update)
            },
        )
        .await?;
        Ok(Response::new(v1::UpdateKeyResponse {
            key: Some(key_message(info)),
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<v1::RotateKeyRequest>,
    ) -> Result<Response<v1::RotateKeyResponse>, Status> {
        let version = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| names(&r.tenant, &r.name),
            |step, (tenant, name)| {
                let version = step
                    .vault
                    .kms()
                    .rotate_key(step.caller()?, &tenant, &name)?;
                step.call
                    .note(format!("key {name} rotated to version {version}"));
                Ok(version)
            },
        )
        .await?;
        Ok(Response::new(v1::RotateKeyResponse { version }))
    }

    async fn trim_key(
        &self,
        request: Request<v1::TrimKeyRequest>,
    ) -> Result<Response<v1::TrimKeyResponse>, Status> {
        let destroyed = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| Ok((names(&r.tenant, &r.name)?, r.min_available_version)),
            |step, ((tenant, name), min_available_version)| {
                let destroyed = step.vault.kms().trim_key(
                    step.caller()?,
                    &tenant,
                    &name,
                    min_available_version,
                )?;
                step.call
                    .note(format!("key {name}: versions {destroyed:?} destroyed"));
                Ok(destroyed)
            },
        )
        .await?;
        Ok(Response::new(v1::TrimKeyResponse {
            destroyed_versions: destroyed,
        }))
    }

    async fn delete_key(
        &self,
        request: Request<v1::DeleteKeyRequest>,
    ) -> Result<Response<v1::DeleteKeyResponse>, Status> {
        let when = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| names(&r.tenant, &r.name),
            |step, (tenant, name)| {
                let when = step
                    .vault
                    .kms()
                    .delete_key(step.caller()?, &tenant, &name)?;
                step.call
                    .note(format!("key {name} is destroyed at {}", rfc3339(when)));
                Ok(when)
            },
        )
        .await?;
        Ok(Response::new(v1::DeleteKeyResponse {
            delete_after: rfc3339(when),
        }))
    }

    async fn cancel_key_deletion(
        &self,
        request: Request<v1::CancelKeyDeletionRequest>,
    ) -> Result<Response<v1::CancelKeyDeletionResponse>, Status> {
        serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| names(&r.tenant, &r.name),
            |step, (tenant, name)| {
                step.vault
                    .kms()
                    .cancel_key_deletion(step.caller()?, &tenant, &name)
            },
        )
        .await?;
        Ok(Response::new(v1::CancelKeyDeletionResponse {}))
    }

    async fn export_key(
        &self,
        request: Request<v1::ExportKeyRequest>,
    ) -> Result<Response<v1::ExportKeyResponse>, Status> {
        let (key_type, versions) = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.name),
            |r| names(&r.tenant, &r.name),
            |step, (tenant, name)| {
                let exported = step
                    .vault
                    .kms()
                    .export_key(step.caller()?, &tenant, &name)?;
                let listed: Vec<u32> = exported.1.iter().map(|(v, _)| *v).collect();
                step.call.note(format!(
                    "key {name}: material of versions {listed:?} exported"
                ));
                Ok(exported)
            },
        )
        .await?;
        Ok(Response::new(v1::ExportKeyResponse {
            r#type: key_type.as_str().into(),
            versions: versions
                .into_iter()
                .map(|(version, material)| v1::ExportedKeyVersion {
                    version,
                    material: material.expose_secret().to_vec(),
                })
                .collect(),
        }))
    }

    async fn encrypt(
        &self,
        request: Request<v1::EncryptRequest>,
    ) -> Result<Response<v1::EncryptResponse>, Status> {
        // The plaintext moves into a buffer that zeroizes, before anything else is checked.
        let request = request.map(|mut r| (SecretBytes::new(std::mem::take(&mut r.plaintext)), r));
        let result = serve(
            &self.shared.vault,
            request,
            |(_, r)| under(&r.tenant, "keys/", &r.key),
            |(plaintext, r)| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, plaintext, context, r.key_version))
            },
            |step, (tenant, key, plaintext, context, key_version)| {
                let item = EncryptItem {
                    plaintext,
                    context: context.clone(),
                };
                let mut results = step.vault.kms().encrypt(
                    step.caller()?,
                    &tenant,
                    &key,
                    key_version,
                    vec![item],
                    false,
                )?;
                let result = results
                    .pop()
                    .ok_or_else(|| Error::Integrity("an encryption result".into()))?;
                used(step.call, &key, result.version, Some(&context));
                Ok(result)
            },
        )
        .await?;
        Ok(Response::new(encrypted(result)))
    }

    async fn decrypt(
        &self,
        request: Request<v1::DecryptRequest>,
    ) -> Result<Response<v1::DecryptResponse>, Status> {
        let (plaintext, key_version) = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.key),
            |r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, r.ciphertext, context))
            },
            |step, (tenant, key, ciphertext, context)| {
                let item = DecryptItem {
                    ciphertext,
                    context: context.clone(),
                };
                let result = step
                    .vault
                    .kms()
                    .decrypt(step.caller()?, &tenant, &key, vec![item], false)?
                    .pop()
                    .ok_or_else(|| Error::Integrity("a decryption result".into()))??;
                used(step.call, &key, result.1, Some(&context));
                Ok(result)
            },
        )
        .await?;
        Ok(Response::new(v1::DecryptResponse {
            plaintext: plaintext.expose_secret().to_vec(),
            key_version,
        }))
    }

    async fn batch_encrypt(
        &self,
        request: Request<v1::BatchEncryptRequest>,
    ) -> Result<Response<v1::BatchEncryptResponse>, Status> {
        let results = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.key),
            |r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let mut parsed = Vec::with_capacity(r.items.len());
                let mut contexts = Vec::new();
                for (index, item) in r.items.into_iter().enumerate() {
                    let context = context(
                        &format!("items[{index}].context"),
                        item.context,
                        item.sensitive_context,
                    )?;
                    if !context.is_empty() {
                        contexts.push(format!("[{index}] {}", context.audit_summary()));
                    }
                    parsed.push(EncryptItem {
                        plaintext: SecretBytes::new(item.plaintext),
                        context,
                    });
                }
                Ok((tenant, key, parsed, contexts, r.key_version))
            },
            |step, (tenant, key, parsed, contexts, key_version)| {
                let count = parsed.len();
                let results = step.vault.kms().encrypt(
                    step.caller()?,
                    &tenant,
                    &key,
                    key_version,
                    parsed,
                    true,
                )?;
                step.call.note(batch_detail(
                    &key,
                    count,
                    &results_versions(&results),
                    0,
                    &contexts,
                ));
                Ok(results)
            },
        )
        .await?;
        Ok(Response::new(v1::BatchEncryptResponse {
            results: results.into_iter().map(encrypted).collect(),
        }))
    }

    async fn batch_decrypt(
        &self,
        request: Request<v1::BatchDecryptRequest>,
    ) -> Result<Response<v1::BatchDecryptResponse>, Status> {
        let results = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.key),
            |r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let mut parsed = Vec::with_capacity(r.items.len());
                let mut contexts = Vec::new();
                for (index, item) in r.items.into_iter().enumerate() {
                    let context = context(
                        &format!("items[{index}].context"),
                        item.context,
                        item.sensitive_context,
                    )?;
                    if !context.is_empty() {
                        contexts.push(format!("[{index}] {}", context.audit_summary()));
                    }
                    parsed.push(DecryptItem {
                        ciphertext: item.ciphertext,
                        context,
                    });
                }
                Ok((tenant, key, parsed, contexts))
            },
            |step, (tenant, key, parsed, contexts)| {
                let count = parsed.len();
                let results =
                    step.vault
                        .kms()
                        .decrypt(step.caller()?, &tenant, &key, parsed, true)?;
                let mut versions: Vec<u32> = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok().map(|(_, v)| *v))
                    .collect();
                versions.sort_unstable();
                versions.dedup();
                let failed = results.iter().filter(|r| r.is_err()).count();
                step.call
                    .note(batch_detail(&key, count, &versions, failed, &contexts));
                Ok(results)
            },
        )
        .await?;
        Ok(Response::new(v1::BatchDecryptResponse {
            results: results
                .into_iter()
                .map(|result| match result {
                    Ok((plaintext, key_version)) => v1::DecryptResult {
                        plaintext: plaintext.expose_secret().to_vec(),
                        key_version,
                        error: String::new(),
                    },
                    Err(error) => v1::DecryptResult {
                        error: error.to_string(),
                        ..Default::default()
                    },
                })
                .collect(),
        }))
    }

    async fn rewrap(
        &self,
        request: Request<v1::RewrapRequest>,
    ) -> Result<Response<v1::RewrapResponse>, Status> {
        let (previous, result) = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.key),
            |r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, r.ciphertext, context, r.key_version))
            },
            |step, (tenant, key, ciphertext, context, key_version)| {
                let (previous, result) = step.vault.kms().rewrap(
                    step.caller()?,
                    &tenant,
                    &key,
                    &ciphertext,
                    &context,
                    key_version,
                )?;
                step.call
                    .note(format!("re-wrapped from version {previous}"));
                used(step.call, &key, result.version, Some(&context));
                Ok((previous, result))
            },
        )
        .await?;
        Ok(Response::new(v1::RewrapResponse {
            ciphertext: result.text,
            key_version: result.version,
            previous_version: previous,
        }))
    }

    async fn generate_data_key(
        &self,
        request: Request<v1::GenerateDataKeyRequest>,
    ) -> Result<Response<v1::GenerateDataKeyResponse>, Status> {
        let generated = serve(
            &self.shared.vault,
            request,
            |r| under(&r.tenant, "keys/", &r.key),
            |r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, context, r.key_version, r.bits, r.wrapped_only))
            },
            |step, (tenant, key, context, key_version, bits, wrapped_only)| {
                let generated = step.vault.kms().datakey(
                    step.caller()?,
                    &tenant,
                    &key,
                    &context,
                    key_version,
                    bits,
                    !wrapped_only,
                )?;
                step.call.note(if wrapped_only {
                    "data key (wrapped only)".to_owned()
                } else {
                    "data key (plaintext and wrapped)".to_owned()
                });
                used(step.call, &key, generated.wrapped.version, Some(&context));
                Ok(generated)
            },
        )
        .await?;
        Ok(Response::new(v1::GenerateDataKeyResponse {
            plaintext: generated
                .plaintext
                .map(|p| p.expose_secret().to_vec())
                .unwrap_or_default(),
            ciphertext: generated.wrapped.text,
            key_version: generated.wrapped.version,
        }))
    }

    async fn sign(
        &self,
        request: Request<v1::SignRequest>,
    ) -> Result<Response<v1::SignResponse>, Status> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let request = request.map(|mut r| (SecretBytes::new(std::mem::take(&mut r.message)), r));
        let result = serve(
            &self.shared.vault,
            request,
            |(_, r)| under(&r.tenant, "keys/", &r.key),
            |(message, r)| Ok((names(&r.tenant, &r.key)?, message, r.key_version)),
            |step, ((tenant, key), message, key_version)| {
                let result = step.vault.kms().sign(
                    step.caller()?,
                    &tenant,
                    &key,
                    message.expose_secret(),
                    key_version,
                    false,
                )?;
                used(step.call, &key, result.version, None);
                Ok(result)
            },
        )
        .await?;
        Ok(Response::new(v1::SignResponse {
            signature: result.text,
            key_version: result.version,
        }))
    }

    async fn verify(
        &self,
        request: Request<v1::VerifyRequest>,
    ) -> Result<Response<v1::VerifyResponse>, Status> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let request = request.map(|mut r| (SecretBytes::new(std::mem::take(&mut r.message)), r));
        let (valid, key_version) = serve(
            &self.shared.vault,
            request,
            |(_, r)| under(&r.tenant, "keys/", &r.key),
            |(message, r)| Ok((names(&r.tenant, &r.key)?, message, r.signature)),
            |step, ((tenant, key), message, signature)| {
                let (valid, version) = step.vault.kms().verify(
                    step.caller()?,
                    &tenant,
                    &key,
                    message.expose_secret(),
                    &signature,
                    false,
                )?;
                used(step.call, &key, version, None);
                step.call.note(format!("valid: {valid}"));
                Ok((valid, version))
            },
        )
        .await?;
        Ok(Response::new(v1::VerifyResponse { valid, key_version }))
    }

    async fn hmac(
        &self,
        request: Request<v1::HmacRequest>,
    ) -> Result<Response<v1::HmacResponse>, Status> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let request = request.map(|mut r| (SecretBytes::new(std::mem::take(&mut r.message)), r));
        let result = serve(
            &self.shared.vault,
            request,
            |(_, r)| under(&r.tenant, "keys/", &r.key),
            |(message, r)| Ok((names(&r.tenant, &r.key)?, message, r.key_version)),
            |step, ((tenant, key), message, key_version)| {
                let result = step.vault.kms().sign(
                    step.caller()?,
                    &tenant,
                    &key,
                    message.expose_secret(),
                    key_version,
                    true,
                )?;
                used(step.call, &key, result.version, None);
                Ok(result)
            },
        )
        .await?;
        Ok(Response::new(v1::HmacResponse {
            hmac: result.text,
            key_version: result.version,
        }))
    }

    async fn verify_hmac(
        &self,
        request: Request<v1::VerifyHmacRequest>,
    ) -> Result<Response<v1::VerifyHmacResponse>, Status> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let request = request.map(|mut r| (SecretBytes::new(std::mem::take(&mut r.message)), r));
        let (valid, key_version) = serve(
            &self.shared.vault,
            request,
            |(_, r)| under(&r.tenant, "keys/", &r.key),
            |(message, r)| Ok((names(&r.tenant, &r.key)?, message, r.hmac)),
            |step, ((tenant, key), message, hmac)| {
                let (valid, version) = step.vault.kms().verify(
                    step.caller()?,
                    &tenant,
                    &key,
                    message.expose_secret(),
                    &hmac,
                    true,
                )?;
                used(step.call, &key, version, None);
                step.call.note(format!("valid: {valid}"));
                Ok((valid, version))
            },
        )
        .await?;
        Ok(Response::new(v1::VerifyHmacResponse { valid, key_version }))
    }
}

fn results_versions(results: &[Versioned]) -> Vec<u32> {
    let mut versions: Vec<u32> = results.iter().map(|r| r.version).collect();
    versions.sort_unstable();
    versions.dedup();
    versions
}

fn batch_detail(
    key: &KeyName,
    items: usize,
    versions: &[u32],
    failed: usize,
    contexts: &[String],
) -> String {
    let mut detail = format!("key {key}: {items} items, versions {versions:?}");
    if failed > 0 {
        detail.push_str(&format!(", {failed} failed"));
    }
    if !contexts.is_empty() {
        detail.push_str(&format!("; contexts {}", contexts.join("; ")));
    }
    detail
}
