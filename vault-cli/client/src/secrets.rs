//! Reading (and writing) secrets. Values are held in [`SecretValue`]s, which zeroize on drop.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq;
use vault_proto::v1::{self, secrets_client::SecretsClient};
use zeroize::Zeroizing;

use crate::{Client, Error, Result};

/// One field's value. No Debug, Display or Clone; zeroized on drop; compared in constant time.
pub struct SecretValue(Zeroizing<Vec<u8>>);

impl SecretValue {
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(Zeroizing::new(bytes))
    }

    /// The bytes. Keep the borrow short; do not copy them into types that are not zeroized.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The value as text.
    pub fn as_str(&self) -> Result<&str> {
        std::str::from_utf8(&self.0).map_err(|_| Error::NotUtf8)
    }
}

impl PartialEq for SecretValue {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// One version of a secret: its fields, sealed together.
pub struct Secret {
    path: String,
    version: u64,
    created_time: String,
    fields: BTreeMap<String, SecretValue>,
}

impl Secret {
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// When this version was written (RFC 3339).
    pub fn created_time(&self) -> &str {
        &self.created_time
    }

    /// A field's value; [`Error::NotFound`] names the field and the ones the secret has.
    pub fn field(&self, name: &str) -> Result<&SecretValue> {
        self.fields.get(name).ok_or_else(|| self.missing(name))
    }

    /// Takes a field's value out of the secret.
    pub fn take_field(&mut self, name: &str) -> Result<SecretValue> {
        match self.fields.remove(name) {
            Some(value) => Ok(value),
            None => Err(self.missing(name)),
        }
    }

    fn missing(&self, name: &str) -> Error {
        let names: Vec<&str> = self.field_names().collect();
        Error::not_found(format!(
            "secret {} (version {}) has no field {name:?}; its fields are: {}",
            self.path,
            self.version,
            names.join(", ")
        ))
    }

    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.keys().map(String::as_str)
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.fields
            .iter()
            .map(|(name, value)| (name.as_str(), value))
    }
}

impl Client {
    /// The current version of a secret.
    pub async fn get(&self, tenant: &str, path: &str) -> Result<Secret> {
        self.get_version(tenant, path, 0).await
    }

    /// One version of a secret (0: the current one).
    pub async fn get_version(&self, tenant: &str, path: &str, version: u64) -> Result<Secret> {
        let request = self.request(v1::GetRequest {
            tenant: tenant.to_owned(),
            path: path.to_owned(),
            version,
        })?;
        let v1::GetResponse {
            path,
            version,
            data,
            created_time,
            ..
        } = SecretsClient::new(self.channel())
            .get(request)
            .await?
            .into_inner();
        Ok(Secret {
            path,
            version,
            created_time,
            fields: data
                .into_iter()
                .map(|(name, value)| (name, SecretValue::new(value)))
                .collect(),
        })
    }

    /// One field of the current version of a secret.
    pub async fn get_field(&self, tenant: &str, path: &str, field: &str) -> Result<SecretValue> {
        self.get(tenant, path).await?.take_field(field)
    }

    /// Writes a new version of a secret with these fields; returns its version number.
    pub async fn put(
        &self,
        tenant: &str,
        path: &str,
        fields: BTreeMap<String, SecretValue>,
    ) -> Result<u64> {
        let data = fields
            .into_iter()
            .map(|(name, value)| (name, value.expose().to_vec()))
            .collect();
        let request = self.request(v1::PutRequest {
            tenant: tenant.to_owned(),
            path: path.to_owned(),
            data,
            ..Default::default()
        })?;
        let response = SecretsClient::new(self.channel()).put(request).await?;
        Ok(response.into_inner().version)
    }
}
