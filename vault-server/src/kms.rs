//! Kms service: named keys (encryption as a service). Parses requests into domain types, calls
//! the core, and writes what the audit record may know into the call's detail: the key, the
//! version used and the encryption context without the values its caller marked sensitive;
//! never a plaintext, ciphertext, signature, MAC or message.

use std::collections::HashMap;

use tonic::Request;
use vault_core::{
    Error,
    kms::{EncryptionContext, KeyName, public_key_pem},
    names::TenantName,
    secret::SecretBytes,
    time::rfc3339,
    vault::{
        Caller, DecryptItem, EncryptItem, KeySpec, KeyUpdate, Kms as KmsView, NamedKeyInfo,
        Versioned,
    },
};
use vault_proto::v1::{
    self, BatchDecryptRequest, BatchDecryptResponse, BatchEncryptRequest, BatchEncryptResponse,
    CancelKeyDeletionRequest, CancelKeyDeletionResponse, CreateKeyRequest, CreateKeyResponse,
    DecryptRequest, DecryptResponse, DeleteKeyRequest, DeleteKeyResponse, EncryptRequest,
    EncryptResponse, ExportKeyRequest, ExportKeyResponse, GenerateDataKeyRequest,
    GenerateDataKeyResponse, HmacRequest, HmacResponse, ListKeysRequest, ListKeysResponse,
    ReadKeyRequest, ReadKeyResponse, RewrapRequest, RewrapResponse, RotateKeyRequest,
    RotateKeyResponse, SignRequest, SignResponse, TrimKeyRequest, TrimKeyResponse,
    UpdateKeyRequest, UpdateKeyResponse, VerifyHmacRequest, VerifyHmacResponse, VerifyRequest,
    VerifyResponse, kms_server::Kms,
};

use crate::{
    call::Call,
    serve::{Handlers, Reply, at, under},
};

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

fn encrypted(result: Versioned) -> EncryptResponse {
    EncryptResponse {
        ciphertext: result.text,
        key_version: result.version,
    }
}

/// A sign, verify or HMAC request, its message already in a buffer that zeroizes: the tenant
/// and key it names as sent, and what else it carries (`with`: the key version to sign with,
/// or the signature or HMAC to check).
struct Keyed<T> {
    tenant: String,
    key: String,
    message: SecretBytes,
    with: T,
}

fn keyed<T>(tenant: String, key: String, message: Vec<u8>, with: T) -> Keyed<T> {
    Keyed {
        tenant,
        key,
        message: SecretBytes::new(message),
        with,
    }
}

/// `Kms::sign` or `Kms::hmac`: a tag made of a message.
type MakeTag =
    fn(&KmsView<'_>, &Caller, &TenantName, &KeyName, &[u8], u32) -> Result<Versioned, Error>;
/// `Kms::verify` or `Kms::verify_hmac`: whether a tag is a message's, and its key version.
type CheckTag =
    fn(&KmsView<'_>, &Caller, &TenantName, &KeyName, &[u8], &str) -> Result<(bool, u32), Error>;

impl Handlers {
    /// The one handler behind `sign` and `hmac` (`make` tells which).
    async fn kms_sign<Resp>(
        &self,
        r: Request<Keyed<u32>>,
        make: MakeTag,
        respond: impl FnOnce(Versioned) -> Resp,
    ) -> Reply<Resp> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| Ok((names(&r.tenant, &r.key)?, r.message, r.with)))
            .run(move |step, ((tenant, key), message, key_version)| {
                let result = make(
                    &step.vault.kms(),
                    step.caller()?,
                    &tenant,
                    &key,
                    message.expose_secret(),
                    key_version,
                )?;
                used(step.call, &key, result.version, None);
                Ok(result)
            })
            .answer(respond)
            .await
    }

    /// The one handler behind `verify` and `verify_hmac` (`check` tells which): the step's
    /// answer is whether the signature or HMAC is valid, and the key version that checked it.
    async fn kms_verify<Resp>(
        &self,
        r: Request<Keyed<String>>,
        check: CheckTag,
        respond: impl FnOnce((bool, u32)) -> Resp,
    ) -> Reply<Resp> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| Ok((names(&r.tenant, &r.key)?, r.message, r.with)))
            .run(move |step, ((tenant, key), message, signature)| {
                let (valid, version) = check(
                    &step.vault.kms(),
                    step.caller()?,
                    &tenant,
                    &key,
                    message.expose_secret(),
                    &signature,
                )?;
                used(step.call, &key, version, None);
                step.call.note(format!("valid: {valid}"));
                Ok((valid, version))
            })
            .answer(respond)
            .await
    }
}

#[tonic::async_trait]
impl Kms for Handlers {
    async fn create_key(&self, r: Request<CreateKeyRequest>) -> Reply<CreateKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| {
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
            })
            .run(|step, (tenant, name, spec)| {
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
            })
            .answer(|info| CreateKeyResponse {
                key: Some(key_message(info)),
            })
            .await
    }

    async fn read_key(&self, r: Request<ReadKeyRequest>) -> Reply<ReadKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| names(&r.tenant, &r.name))
            .run(|step, (tenant, name)| step.vault.kms().read_key(step.caller()?, &tenant, &name))
            .answer(|info| ReadKeyResponse {
                key: Some(key_message(info)),
            })
            .await
    }

    async fn list_keys(&self, r: Request<ListKeysRequest>) -> Reply<ListKeysResponse> {
        self.rpc(r)
            .target(|r| at(&r.tenant, "keys/"))
            .parse(|r| {
                let tenant = TenantName::parse(&r.tenant)?;
                let size = match r.page_size {
                    0 => vault_core::vault::DEFAULT_PAGE_SIZE,
                    n => n as usize,
                };
                Ok((tenant, r.page_token, size))
            })
            .run(|step, (tenant, page_token, size)| {
                step.vault
                    .kms()
                    .list_keys(step.caller()?, &tenant, &page_token, size)
            })
            .answer(|(names, more)| {
                let names: Vec<String> = names.iter().map(ToString::to_string).collect();
                let next_page_token = if more {
                    names.last().cloned().unwrap_or_default()
                } else {
                    String::new()
                };
                ListKeysResponse {
                    names,
                    next_page_token,
                }
            })
            .await
    }

    async fn update_key(&self, r: Request<UpdateKeyRequest>) -> Reply<UpdateKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| {
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
            })
            .run(|step, (tenant, name, update)| {
                step.vault
                    .kms()
                    .update_key(step.caller()?, &tenant, &name, update)
            })
            .answer(|info| UpdateKeyResponse {
                key: Some(key_message(info)),
            })
            .await
    }

    async fn rotate_key(&self, r: Request<RotateKeyRequest>) -> Reply<RotateKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| names(&r.tenant, &r.name))
            .run(|step, (tenant, name)| {
                let version = step
                    .vault
                    .kms()
                    .rotate_key(step.caller()?, &tenant, &name)?;
                step.call
                    .note(format!("key {name} rotated to version {version}"));
                Ok(version)
            })
            .answer(|version| RotateKeyResponse { version })
            .await
    }

    async fn trim_key(&self, r: Request<TrimKeyRequest>) -> Reply<TrimKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| Ok((names(&r.tenant, &r.name)?, r.min_available_version)))
            .run(|step, ((tenant, name), min_available_version)| {
                let destroyed = step.vault.kms().trim_key(
                    step.caller()?,
                    &tenant,
                    &name,
                    min_available_version,
                )?;
                step.call
                    .note(format!("key {name}: versions {destroyed:?} destroyed"));
                Ok(destroyed)
            })
            .answer(|destroyed| TrimKeyResponse {
                destroyed_versions: destroyed,
            })
            .await
    }

    async fn delete_key(&self, r: Request<DeleteKeyRequest>) -> Reply<DeleteKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| names(&r.tenant, &r.name))
            .run(|step, (tenant, name)| {
                let when = step
                    .vault
                    .kms()
                    .delete_key(step.caller()?, &tenant, &name)?;
                step.call
                    .note(format!("key {name} is destroyed at {}", rfc3339(when)));
                Ok(when)
            })
            .answer(|when| DeleteKeyResponse {
                delete_after: rfc3339(when),
            })
            .await
    }

    async fn cancel_key_deletion(
        &self,
        r: Request<CancelKeyDeletionRequest>,
    ) -> Reply<CancelKeyDeletionResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| names(&r.tenant, &r.name))
            .run(|step, (tenant, name)| {
                step.vault
                    .kms()
                    .cancel_key_deletion(step.caller()?, &tenant, &name)
            })
            .answer(|()| CancelKeyDeletionResponse {})
            .await
    }

    async fn export_key(&self, r: Request<ExportKeyRequest>) -> Reply<ExportKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.name))
            .parse(|r| names(&r.tenant, &r.name))
            .run(|step, (tenant, name)| {
                let exported = step
                    .vault
                    .kms()
                    .export_key(step.caller()?, &tenant, &name)?;
                let listed: Vec<u32> = exported.1.iter().map(|(v, _)| *v).collect();
                step.call.note(format!(
                    "key {name}: material of versions {listed:?} exported"
                ));
                Ok(exported)
            })
            .answer(|(key_type, versions)| ExportKeyResponse {
                r#type: key_type.as_str().into(),
                versions: versions
                    .into_iter()
                    .map(|(version, material)| v1::ExportedKeyVersion {
                        version,
                        material: material.expose_secret().to_vec(),
                    })
                    .collect(),
            })
            .await
    }

    async fn encrypt(&self, r: Request<EncryptRequest>) -> Reply<EncryptResponse> {
        // The plaintext moves into a buffer that zeroizes, before anything else is checked.
        let r = r.map(|mut r| (SecretBytes::new(std::mem::take(&mut r.plaintext)), r));
        self.rpc(r)
            .target(|(_, r)| under(&r.tenant, "keys/", &r.key))
            .parse(|(plaintext, r)| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, plaintext, context, r.key_version))
            })
            .run(|step, (tenant, key, plaintext, context, key_version)| {
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
            })
            .answer(encrypted)
            .await
    }

    async fn decrypt(&self, r: Request<DecryptRequest>) -> Reply<DecryptResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, r.ciphertext, context))
            })
            .run(|step, (tenant, key, ciphertext, context)| {
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
            })
            .answer(|(plaintext, key_version)| DecryptResponse {
                plaintext: plaintext.expose_secret().to_vec(),
                key_version,
            })
            .await
    }

    async fn batch_encrypt(&self, r: Request<BatchEncryptRequest>) -> Reply<BatchEncryptResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let (parsed, contexts) = batch_items(
                    r.items,
                    |item: v1::EncryptItem| (item.context, item.sensitive_context, item.plaintext),
                    |plaintext: Vec<u8>, context| EncryptItem {
                        plaintext: SecretBytes::new(plaintext),
                        context,
                    },
                )?;
                Ok((tenant, key, parsed, contexts, r.key_version))
            })
            .run(|step, (tenant, key, parsed, contexts, key_version)| {
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
            })
            .answer(|results| BatchEncryptResponse {
                results: results.into_iter().map(encrypted).collect(),
            })
            .await
    }

    async fn batch_decrypt(&self, r: Request<BatchDecryptRequest>) -> Reply<BatchDecryptResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let (parsed, contexts) = batch_items(
                    r.items,
                    |item: v1::DecryptItem| (item.context, item.sensitive_context, item.ciphertext),
                    |ciphertext: String, context| DecryptItem {
                        ciphertext,
                        context,
                    },
                )?;
                Ok((tenant, key, parsed, contexts))
            })
            .run(|step, (tenant, key, parsed, contexts)| {
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
            })
            .answer(|results| BatchDecryptResponse {
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
            })
            .await
    }

    async fn rewrap(&self, r: Request<RewrapRequest>) -> Reply<RewrapResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, r.ciphertext, context, r.key_version))
            })
            .run(|step, (tenant, key, ciphertext, context, key_version)| {
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
            })
            .answer(|(previous, result)| RewrapResponse {
                ciphertext: result.text,
                key_version: result.version,
                previous_version: previous,
            })
            .await
    }

    async fn generate_data_key(
        &self,
        r: Request<GenerateDataKeyRequest>,
    ) -> Reply<GenerateDataKeyResponse> {
        self.rpc(r)
            .target(|r| under(&r.tenant, "keys/", &r.key))
            .parse(|r| {
                let (tenant, key) = names(&r.tenant, &r.key)?;
                let context = context("context", r.context, r.sensitive_context)?;
                Ok((tenant, key, context, r.key_version, r.bits, r.wrapped_only))
            })
            .run(
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
            .answer(|generated| GenerateDataKeyResponse {
                plaintext: generated
                    .plaintext
                    .map(|p| p.expose_secret().to_vec())
                    .unwrap_or_default(),
                ciphertext: generated.wrapped.text,
                key_version: generated.wrapped.version,
            })
            .await
    }

    async fn sign(&self, r: Request<SignRequest>) -> Reply<SignResponse> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let r = r.map(|r| keyed(r.tenant, r.key, r.message, r.key_version));
        self.kms_sign(
            r,
            |k, c, t, n, m, v| k.sign(c, t, n, m, v),
            |result| SignResponse {
                signature: result.text,
                key_version: result.version,
            },
        )
        .await
    }

    async fn verify(&self, r: Request<VerifyRequest>) -> Reply<VerifyResponse> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let r = r.map(|r| keyed(r.tenant, r.key, r.message, r.signature));
        self.kms_verify(
            r,
            |k, c, t, n, m, s| k.verify(c, t, n, m, s),
            |(valid, key_version)| VerifyResponse { valid, key_version },
        )
        .await
    }

    async fn hmac(&self, r: Request<HmacRequest>) -> Reply<HmacResponse> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let r = r.map(|r| keyed(r.tenant, r.key, r.message, r.key_version));
        self.kms_sign(
            r,
            |k, c, t, n, m, v| k.hmac(c, t, n, m, v),
            |result| HmacResponse {
                hmac: result.text,
                key_version: result.version,
            },
        )
        .await
    }

    async fn verify_hmac(&self, r: Request<VerifyHmacRequest>) -> Reply<VerifyHmacResponse> {
        // The message moves into a buffer that zeroizes, before anything else is checked.
        let r = r.map(|r| keyed(r.tenant, r.key, r.message, r.hmac));
        self.kms_verify(
            r,
            |k, c, t, n, m, s| k.verify_hmac(c, t, n, m, s),
            |(valid, key_version)| VerifyHmacResponse { valid, key_version },
        )
        .await
    }
}

/// A batch's items parsed, in order: each item's context (named in errors by the item's
/// index) split off by `split` and joined again with the rest by `item`, and the audit
/// summaries of the contexts that are not empty, each marked with its item's index.
fn batch_items<I, R, T>(
    items: Vec<I>,
    split: impl Fn(I) -> (HashMap<String, String>, Vec<String>, R),
    item: impl Fn(R, EncryptionContext) -> T,
) -> Result<(Vec<T>, Vec<String>), Error> {
    let mut parsed = Vec::with_capacity(items.len());
    let mut contexts = Vec::new();
    for (index, raw) in items.into_iter().enumerate() {
        let (entries, sensitive, rest) = split(raw);
        let context = context(&format!("items[{index}].context"), entries, sensitive)?;
        if !context.is_empty() {
            contexts.push(format!("[{index}] {}", context.audit_summary()));
        }
        parsed.push(item(rest, context));
    }
    Ok((parsed, contexts))
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
