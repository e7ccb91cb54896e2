//! Transit at `transit/`: named keys, encrypt/decrypt/rewrap, data keys, sign/verify, HMAC.
//!
//! Ciphertexts, signatures and HMACs keep the `vault:vN:` form, Vault's own. Vault's
//! `context` (base64) is bound here as the encryption context field `context`, marked
//! sensitive (the audit record shows a keyed hash of it, not the value). Key types are named
//! as Vault names them (`aes256-gcm96`, `chacha20-poly1305`, `ed25519`, `ecdsa-p256`,
//! `hmac`); this vault's own names are accepted too.

use std::collections::HashMap;

use base64::{Engine, engine::general_purpose::STANDARD};
use serde_json::{Map, Value, json};
use vault_proto::v1;

use super::{
    Gateway, Incoming,
    params::Params,
    reply::{Answer, Failure},
};

/// Vault's key type name → this vault's.
fn type_in(vault_type: &str) -> &str {
    match vault_type {
        "aes256-gcm96" => "aes256-gcm",
        "hmac" => "hmac-sha256",
        other => other,
    }
}

/// This vault's key type name → Vault's.
fn type_out(ours: &str) -> &str {
    match ours {
        "aes256-gcm" => "aes256-gcm96",
        "hmac-sha256" => "hmac",
        other => other,
    }
}

fn encrypts(ours: &str) -> bool {
    matches!(
        ours,
        "aes256-gcm" | "chacha20-poly1305" | "xchacha20-poly1305"
    )
}

fn signs(ours: &str) -> bool {
    matches!(ours, "ed25519" | "ecdsa-p256")
}

/// Vault's `context` (base64 text) as this vault's encryption context.
fn context_of(params: &Params) -> Result<(HashMap<String, String>, Vec<String>), Failure> {
    match params.str("context")? {
        Some(context) if !context.is_empty() => {
            STANDARD
                .decode(&context)
                .map_err(|_| Failure::field("context", "must be base64"))?;
            Ok((
                HashMap::from([("context".to_owned(), context)]),
                vec!["context".to_owned()],
            ))
        }
        _ => Ok((HashMap::new(), Vec::new())),
    }
}

/// A base64 field's bytes.
fn base64_field(params: &Params, name: &str) -> Result<Vec<u8>, Failure> {
    let text = params.str(name)?.unwrap_or_default();
    STANDARD
        .decode(text.trim())
        .map_err(|_| Failure::field(name, "must be base64"))
}

/// A base64 field that must be there.
fn required_base64(params: &Params, name: &str) -> Result<Vec<u8>, Failure> {
    if params.get(name).is_none() {
        return Err(Failure::field(name, "missing (base64)"));
    }
    base64_field(params, name)
}

/// Vault's key info from a named key.
fn key_data(key: &v1::NamedKey) -> Value {
    let ours = key.r#type.as_str();
    let keys: Map<String, Value> = key
        .versions
        .iter()
        .map(|v| {
            let created = vault_core::time::parse_rfc3339(&v.created_time).unwrap_or(0) / 1_000_000_000;
            let entry = if signs(ours) {
                let public_key = if v.public_key_pem.is_empty() || ours == "ed25519" {
                    STANDARD.encode(&v.public_key)
                } else {
                    v.public_key_pem.clone()
                };
                json!({"name": type_out(ours), "public_key": public_key, "creation_time": v.created_time})
            } else {
                json!(created)
            };
            (v.version.to_string(), entry)
        })
        .collect();
    json!({
        "name": key.name,
        "type": type_out(ours),
        "deletion_allowed": key.deletion_allowed,
        "derived": false,
        "exportable": key.exportable,
        "allow_plaintext_backup": false,
        "keys": keys,
        "latest_version": key.latest_version,
        "min_available_version": key.min_available_version,
        "min_decryption_version": key.min_decryption_version,
        "min_encryption_version": key.min_encryption_version,
        "supports_encryption": encrypts(ours),
        "supports_decryption": encrypts(ours),
        "supports_derivation": false,
        "supports_signing": signs(ours),
        "auto_rotate_period": key.rotation_period_seconds,
        "imported_key": false,
        "delete_after": key.delete_after,
    })
}

/// `POST transit/keys/<name>`: `type`, `exportable`, `auto_rotate_period`.
pub(crate) async fn create(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    params.unsupported("derived", "every key takes a context on each call instead")?;
    params.unsupported("convergent_encryption", "nonces are always random here")?;
    params.unsupported(
        "allow_plaintext_backup",
        "keys are not backed up in plaintext",
    )?;
    let kind = params.str("type")?.unwrap_or_default();
    let request = v1::CreateKeyRequest {
        tenant: gateway.tenant(incoming).await,
        name: name.to_owned(),
        r#type: type_in(&kind).to_owned(),
        exportable: params.bool("exportable")?.unwrap_or(false),
        deletion_allowed: params.bool("deletion_allowed")?.unwrap_or(false),
        budget: 0,
        rotation_period_seconds: params.seconds("auto_rotate_period")?.unwrap_or(0),
    };
    let called = gateway
        .unary::<_, v1::CreateKeyResponse>(incoming, "Kms/CreateKey", request)
        .await?;
    let data = called.message.key.as_ref().map_or(Value::Null, key_data);
    Ok(called.data(data))
}

pub(crate) async fn read(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let request = v1::ReadKeyRequest {
        tenant: gateway.tenant(incoming).await,
        name: name.to_owned(),
    };
    let called = gateway
        .unary::<_, v1::ReadKeyResponse>(incoming, "Kms/ReadKey", request)
        .await?;
    let data = called.message.key.as_ref().map_or(Value::Null, key_data);
    Ok(called.data(data))
}

/// `LIST transit/keys`: one page of at most 1000 names (`after`: the previous page's token).
pub(crate) async fn list(gateway: &Gateway, incoming: &Incoming) -> Result<Answer, Failure> {
    let request = v1::ListKeysRequest {
        tenant: gateway.tenant(incoming).await,
        page_size: incoming
            .params
            .u32("limit")?
            .unwrap_or(vault_core::vault::MAX_PAGE_SIZE as u32),
        page_token: incoming.params.str("after")?.unwrap_or_default(),
    };
    let called = gateway
        .unary::<_, v1::ListKeysResponse>(incoming, "Kms/ListKeys", request)
        .await?;
    let m = &called.message;
    super::reply::listed(&called.request_id, &m.names, &m.next_page_token, "no keys")
}

/// `DELETE transit/keys/<name>`: needs `deletion_allowed`; the material is destroyed after
/// the deletion delay (`delete_after`), until which `vault-cli key delete --cancel` restores it.
pub(crate) async fn delete(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let request = v1::DeleteKeyRequest {
        tenant: gateway.tenant(incoming).await,
        name: name.to_owned(),
    };
    let called = gateway
        .unary::<_, v1::DeleteKeyResponse>(incoming, "Kms/DeleteKey", request)
        .await?;
    let after = called.message.delete_after.clone();
    Ok(called.data(json!({ "delete_after": after })))
}

/// `POST transit/keys/<name>/config`.
pub(crate) async fn config(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let request = v1::UpdateKeyRequest {
        tenant: gateway.tenant(incoming).await,
        name: name.to_owned(),
        min_decryption_version: params.u32("min_decryption_version")?,
        min_encryption_version: params.u32("min_encryption_version")?,
        deletion_allowed: params.bool("deletion_allowed")?,
        rotation_period_seconds: params.seconds("auto_rotate_period")?,
    };
    let called = gateway
        .unary::<_, v1::UpdateKeyResponse>(incoming, "Kms/UpdateKey", request)
        .await?;
    let data = called.message.key.as_ref().map_or(Value::Null, key_data);
    Ok(called.data(data))
}

pub(crate) async fn rotate(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let request = v1::RotateKeyRequest {
        tenant: gateway.tenant(incoming).await,
        name: name.to_owned(),
    };
    let called = gateway
        .unary::<_, v1::RotateKeyResponse>(incoming, "Kms/RotateKey", request)
        .await?;
    let version = called.message.version;
    Ok(called.data(json!({ "name": name, "latest_version": version })))
}

/// `POST transit/keys/<name>/trim`: `min_available_version`.
pub(crate) async fn trim(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let min = incoming
        .params
        .u32("min_available_version")?
        .ok_or_else(|| Failure::field("min_available_version", "missing"))?;
    let request = v1::TrimKeyRequest {
        tenant: gateway.tenant(incoming).await,
        name: name.to_owned(),
        min_available_version: min,
    };
    let called = gateway
        .unary::<_, v1::TrimKeyResponse>(incoming, "Kms/TrimKey", request)
        .await?;
    let destroyed = called.message.destroyed_versions.clone();
    Ok(called.data(json!({ "destroyed_versions": destroyed })))
}

/// The items of `batch_input`, if given.
fn batch(params: &Params) -> Result<Option<Vec<Params>>, Failure> {
    let Some(items) = params.array("batch_input")? else {
        return Ok(None);
    };
    if items.is_empty() {
        return Err(Failure::field("batch_input", "is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| Params::item(item, i))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `POST transit/encrypt/<name>`: `plaintext` (base64), `context`, `key_version`, or
/// `batch_input` of those.
pub(crate) async fn encrypt(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let tenant = gateway.tenant(incoming).await;
    let key_version = params.u32("key_version")?.unwrap_or(0);
    if let Some(items) = batch(params)? {
        let items = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (context, sensitive_context) = context_of(item)?;
                Ok(v1::EncryptItem {
                    plaintext: required_base64(item, "plaintext").map_err(|f| {
                        Failure::field(&format!("batch_input[{i}].plaintext"), f.message())
                    })?,
                    context,
                    sensitive_context,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        let request = v1::BatchEncryptRequest {
            tenant,
            key: name.to_owned(),
            items,
            key_version,
        };
        let called = gateway
            .unary::<_, v1::BatchEncryptResponse>(incoming, "Kms/BatchEncrypt", request)
            .await?;
        let results: Vec<Value> = called
            .message
            .results
            .iter()
            .map(|r| json!({"ciphertext": r.ciphertext, "key_version": r.key_version}))
            .collect();
        return Ok(called.data(json!({ "batch_results": results })));
    }
    let (context, sensitive_context) = context_of(params)?;
    let request = v1::EncryptRequest {
        tenant,
        key: name.to_owned(),
        plaintext: required_base64(params, "plaintext")?,
        context,
        sensitive_context,
        key_version,
    };
    let called = gateway
        .unary::<_, v1::EncryptResponse>(incoming, "Kms/Encrypt", request)
        .await?;
    let m = &called.message;
    Ok(called.data(json!({"ciphertext": m.ciphertext, "key_version": m.key_version})))
}

/// `POST transit/decrypt/<name>`: `ciphertext`, `context`, or `batch_input` of those.
pub(crate) async fn decrypt(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    let tenant = gateway.tenant(incoming).await;
    if let Some(items) = batch(params)? {
        let items = items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let (context, sensitive_context) = context_of(item)?;
                Ok(v1::DecryptItem {
                    ciphertext: item.required("ciphertext").map_err(|_| {
                        Failure::field(&format!("batch_input[{i}].ciphertext"), "missing")
                    })?,
                    context,
                    sensitive_context,
                })
            })
            .collect::<Result<Vec<_>, Failure>>()?;
        let request = v1::BatchDecryptRequest {
            tenant,
            key: name.to_owned(),
            items,
        };
        let called = gateway
            .unary::<_, v1::BatchDecryptResponse>(incoming, "Kms/BatchDecrypt", request)
            .await?;
        let results: Vec<Value> = called
            .message
            .results
            .iter()
            .map(|r| {
                if r.error.is_empty() {
                    json!({"plaintext": STANDARD.encode(&r.plaintext), "key_version": r.key_version})
                } else {
                    json!({"error": r.error})
                }
            })
            .collect();
        return Ok(called.data(json!({ "batch_results": results })));
    }
    let (context, sensitive_context) = context_of(params)?;
    let request = v1::DecryptRequest {
        tenant,
        key: name.to_owned(),
        ciphertext: params.required("ciphertext")?,
        context,
        sensitive_context,
    };
    let called = gateway
        .unary::<_, v1::DecryptResponse>(incoming, "Kms/Decrypt", request)
        .await?;
    let plaintext = STANDARD.encode(&called.message.plaintext);
    Ok(called.data(json!({ "plaintext": plaintext })))
}

/// `POST transit/rewrap/<name>`: `ciphertext`, `context`, `key_version`.
pub(crate) async fn rewrap(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    params.unsupported("batch_input", "rewrap one ciphertext per call")?;
    let (context, sensitive_context) = context_of(params)?;
    let request = v1::RewrapRequest {
        tenant: gateway.tenant(incoming).await,
        key: name.to_owned(),
        ciphertext: params.required("ciphertext")?,
        context,
        sensitive_context,
        key_version: params.u32("key_version")?.unwrap_or(0),
    };
    let called = gateway
        .unary::<_, v1::RewrapResponse>(incoming, "Kms/Rewrap", request)
        .await?;
    let m = &called.message;
    Ok(called.data(json!({"ciphertext": m.ciphertext, "key_version": m.key_version})))
}

/// `POST transit/datakey/{plaintext,wrapped}/<name>`: `bits` (128, 256, 512), `context`.
pub(crate) async fn datakey(
    gateway: &Gateway,
    incoming: &Incoming,
    kind: &str,
    name: &str,
) -> Result<Answer, Failure> {
    let wrapped_only = match kind {
        "plaintext" => false,
        "wrapped" => true,
        other => {
            return Err(Failure::bad_request(format!(
                "data key type {other:?}: give plaintext or wrapped"
            )));
        }
    };
    let params = &incoming.params;
    let (context, sensitive_context) = context_of(params)?;
    let request = v1::GenerateDataKeyRequest {
        tenant: gateway.tenant(incoming).await,
        key: name.to_owned(),
        context,
        sensitive_context,
        key_version: params.u32("key_version")?.unwrap_or(0),
        bits: params.u32("bits")?.unwrap_or(0),
        wrapped_only,
    };
    let called = gateway
        .unary::<_, v1::GenerateDataKeyResponse>(incoming, "Kms/GenerateDataKey", request)
        .await?;
    let m = &called.message;
    let mut data = json!({"ciphertext": m.ciphertext, "key_version": m.key_version});
    if !wrapped_only && let Value::Object(fields) = &mut data {
        fields.insert("plaintext".into(), json!(STANDARD.encode(&m.plaintext)));
    }
    Ok(called.data(data))
}

/// The hash a sign, verify or HMAC call names (path or `hash_algorithm`): SHA-256 is the one
/// this vault uses.
fn check_hash(params: &Params, algorithm: &str) -> Result<(), Failure> {
    let named = if algorithm.is_empty() {
        match params.str("hash_algorithm")? {
            Some(named) => named,
            // hvac's HMAC names it `algorithm`.
            None => params.str("algorithm")?.unwrap_or_default(),
        }
    } else {
        algorithm.to_owned()
    };
    match named.as_str() {
        "" | "sha2-256" => Ok(()),
        other => Err(Failure::field(
            "hash_algorithm",
            format!("{other:?} is not supported: keys here sign and MAC with SHA-256 (sha2-256)"),
        )),
    }
}

/// What `sign` and `hmac` make.
#[derive(Clone, Copy)]
pub(crate) enum Tag {
    Signature,
    Hmac,
}

/// `POST transit/sign/<name>[/<hash>]` and `transit/hmac/<name>[/<hash>]`: `input` (base64),
/// `key_version`.
pub(crate) async fn tag(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
    algorithm: &str,
    tag: Tag,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    check_hash(params, algorithm)?;
    params.unsupported("prehashed", "the vault hashes the input itself")?;
    params.unsupported("batch_input", "one input per call")?;
    let tenant = gateway.tenant(incoming).await;
    let (key, message) = (name.to_owned(), required_base64(params, "input")?);
    let key_version = params.u32("key_version")?.unwrap_or(0);
    let (field, text, version, request_id) = match tag {
        Tag::Signature => {
            let request = v1::SignRequest {
                tenant,
                key,
                message,
                key_version,
            };
            let called = gateway
                .unary::<_, v1::SignResponse>(incoming, "Kms/Sign", request)
                .await?;
            let m = called.message;
            ("signature", m.signature, m.key_version, called.request_id)
        }
        Tag::Hmac => {
            let request = v1::HmacRequest {
                tenant,
                key,
                message,
                key_version,
            };
            let called = gateway
                .unary::<_, v1::HmacResponse>(incoming, "Kms/Hmac", request)
                .await?;
            let m = called.message;
            ("hmac", m.hmac, m.key_version, called.request_id)
        }
    };
    let mut data = Map::new();
    data.insert(field.into(), json!(text));
    data.insert("key_version".into(), json!(version));
    Ok(Answer::data(&request_id, Value::Object(data)))
}

/// `POST transit/verify/<name>[/<hash>]`: `input` and `signature` (or `hmac`).
pub(crate) async fn verify(
    gateway: &Gateway,
    incoming: &Incoming,
    name: &str,
    algorithm: &str,
) -> Result<Answer, Failure> {
    let params = &incoming.params;
    check_hash(params, algorithm)?;
    params.unsupported("batch_input", "verify one input per call")?;
    let tenant = gateway.tenant(incoming).await;
    let message = required_base64(params, "input")?;
    let valid = match (params.str("signature")?, params.str("hmac")?) {
        (Some(signature), None) => {
            let request = v1::VerifyRequest {
                tenant,
                key: name.to_owned(),
                message,
                signature,
            };
            let called = gateway
                .unary::<_, v1::VerifyResponse>(incoming, "Kms/Verify", request)
                .await?;
            (called.message.valid, called.request_id)
        }
        (None, Some(hmac)) => {
            let request = v1::VerifyHmacRequest {
                tenant,
                key: name.to_owned(),
                message,
                hmac,
            };
            let called = gateway
                .unary::<_, v1::VerifyHmacResponse>(incoming, "Kms/VerifyHmac", request)
                .await?;
            (called.message.valid, called.request_id)
        }
        _ => {
            return Err(Failure::field(
                "signature",
                "give signature or hmac (one of them)",
            ));
        }
    };
    Ok(Answer::data(&valid.1, json!({ "valid": valid.0 })))
}
