//! Audit records: one JSON object per line, hash-chained, some of them signed.
//!
//! Invariant: a record holds names and outcomes only (tenant, path, method, accessor, request
//! id, source address, status code); never a value, token, share or key.

use base64::{Engine, engine::general_purpose::STANDARD};
use ring::{
    digest,
    signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey},
};
use serde::{Deserialize, Serialize};

/// The `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The one outcome of a call.
    Outcome,
    /// Written (durably) before a mutation; reconciled with its outcome on start-up.
    Intent,
    /// Signs the chain head: every record before it.
    Checkpoint,
    /// Something the vault did by itself (repair, reconciliation, background jobs).
    System,
    /// Segments were removed by retention; signed, names the chain position they ended at.
    Prune,
    /// A rule on suspicious access fired (denials, bulk reads, a new network): the detail
    /// names the rule, the principal and the counts.
    Alert,
}

/// One audit record. Field order is the serialization order; `prev` comes last.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub seq: u64,
    /// RFC 3339 with nanoseconds.
    pub time: String,
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub request_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tenant: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// A token accessor, or "vault" for the vault's own actions.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub principal: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    /// How the call arrived when not over gRPC: `http` (Vault's HTTP API). Absent: gRPC, or
    /// not a call.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub transport: String,
    /// ok, denied, error or crashed (outcome records).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub outcome: String,
    /// The gRPC status code name (outcome records).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
    /// Prune records: the last sequence number removed, and that record's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_through: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pruned_head: Option<String>,
    /// Checkpoint and prune records: Ed25519 over the record serialized without this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// Hex SHA-256 of the previous record's line.
    pub prev: String,
}

/// The fields a caller fills in; the log assigns `seq`, `time` and `prev`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    pub kind: Option<Kind>,
    pub request_id: String,
    pub method: String,
    pub tenant: String,
    pub path: String,
    pub principal: String,
    pub source: String,
    pub transport: String,
    pub outcome: String,
    pub code: String,
    pub detail: String,
    /// Not stored: the call's answer goes out even if this outcome record is written late
    /// (its intent, durable before the change, names the one-time credential it returns).
    pub answered_anyway: bool,
}

impl Record {
    pub fn is_signed_kind(&self) -> bool {
        matches!(self.kind, Kind::Checkpoint | Kind::Prune)
    }

    /// The line as stored (no newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing a struct of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The bytes a signature covers: the record serialized without its signature.
    fn signed_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        unsigned.signature = None;
        unsigned.to_line()
    }

    pub fn sign(&mut self, key: &Ed25519KeyPair) {
        self.signature = None;
        let signature = key.sign(&self.signed_bytes());
        self.signature = Some(STANDARD.encode(signature.as_ref()));
    }

    /// Checks the signature against a pinned public key.
    pub fn signature_valid(&self, public_key: &[u8; 32]) -> bool {
        let Some(encoded) = &self.signature else {
            return false;
        };
        let Ok(signature) = STANDARD.decode(encoded) else {
            return false;
        };
        UnparsedPublicKey::new(&signature::ED25519, public_key)
            .verify(&self.signed_bytes(), &signature)
            .is_ok()
    }
}

/// Hex SHA-256 of a stored line.
pub fn line_hash(line: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, line))
}

/// The raw public key of a signing key pair.
pub fn public_key_of(key: &Ed25519KeyPair) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(key.public_key().as_ref());
    out
}

/// Public keys travel as base64 of the 32 raw bytes, in files and over the API.
pub fn parse_public_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text.trim()).ok()?.try_into().ok()
}

pub fn format_public_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}
