//! The vault.v1 gRPC API, generated from `vault/v1/*.proto`.
//!
//! Messages that carry shares, tokens or secret values have a Debug that prints field names
//! and sizes only, so a stray `{:?}` cannot leak them.

use std::fmt;

pub mod vault {
    pub mod v1 {
        tonic::include_proto!("vault.v1");

        /// The encoded file descriptor set, for gRPC server reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            tonic::include_file_descriptor_set!("vault_descriptor");
    }
}

pub use vault::v1;

pub mod reason;

impl fmt::Debug for v1::InitResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InitResponse")
            .field("shares", &format_args!("<{} redacted>", self.shares.len()))
            .field("root_token", &"<redacted>")
            .field("threshold", &self.threshold)
            .field("shares_encrypted", &self.shares_encrypted)
            .field("root_token_encrypted", &self.root_token_encrypted)
            .finish()
    }
}

impl fmt::Debug for v1::UnsealRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnsealRequest")
            .field("share", &"<redacted>")
            .field("reset", &self.reset)
            .finish()
    }
}

impl fmt::Debug for v1::RekeySubmitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeySubmitRequest")
            .field("nonce", &self.nonce)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::GenerateRootInitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRootInitRequest")
            .field("recipient", &self.recipient)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::GenerateRootSubmitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRootSubmitRequest")
            .field("nonce", &self.nonce)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::GenerateRootCancelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRootCancelRequest")
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::SealMigrateInitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealMigrateInitRequest")
            .field("to", &self.to)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::SealMigrateSubmitRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealMigrateSubmitRequest")
            .field("nonce", &self.nonce)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::SealMigrateCancelRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealMigrateCancelRequest")
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::GenerateRootSubmitResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateRootSubmitResponse")
            .field("complete", &self.complete)
            .field("progress", &self.progress)
            .field("required", &self.required)
            .field("encrypted_root_token", &"<redacted>")
            .field("accessor", &self.accessor)
            .finish()
    }
}

impl fmt::Debug for v1::RekeySubmitResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeySubmitResponse")
            .field("complete", &self.complete)
            .field("progress", &self.progress)
            .field("required", &self.required)
            .field("shares", &format_args!("<{} redacted>", self.shares.len()))
            .field("threshold", &self.threshold)
            .field("shares_encrypted", &self.shares_encrypted)
            .field("verification_nonce", &self.verification_nonce)
            .finish()
    }
}

impl fmt::Debug for v1::RekeyVerifyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RekeyVerifyRequest")
            .field("nonce", &self.nonce)
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::VerifyShareRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyShareRequest")
            .field("share", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::PatchRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatchRequest")
            .field("tenant", &self.tenant)
            .field("path", &self.path)
            .field("data", &RedactedFields(self.data.keys()))
            .field("remove", &self.remove)
            .field("cas", &self.cas)
            .finish()
    }
}

impl fmt::Debug for v1::CreateWebhookRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateWebhookRequest")
            .field("tenant", &self.tenant)
            .field("url", &self.url)
            .field("paths", &self.paths)
            .field("events", &self.events)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::CreateWebhookResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateWebhookResponse")
            .field("webhook", &self.webhook)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::PutRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutRequest")
            .field("tenant", &self.tenant)
            .field("path", &self.path)
            .field("data", &RedactedFields(self.data.keys()))
            .finish()
    }
}

impl fmt::Debug for v1::GetResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResponse")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("data", &RedactedFields(self.data.keys()))
            .field("created_time", &self.created_time)
            .field("key_version", &self.key_version)
            .finish()
    }
}

impl fmt::Debug for v1::CreateTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateTokenResponse")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::LoginResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginResponse")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::LoginAppRoleRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginAppRoleRequest")
            .field("tenant", &self.tenant)
            .field("role_id", &self.role_id)
            .field("secret_id", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::LoginJwtRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginJwtRequest")
            .field("config", &self.config)
            .field("jwt", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::LookupTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupTokenRequest")
            .field("accessor", &self.accessor)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::RevokeTokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RevokeTokenRequest")
            .field("accessor", &self.accessor)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::RefreshRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RefreshRequest")
            .field("refresh_token", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for v1::GenerateSecretIdResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GenerateSecretIdResponse")
            .field("secret_id", &"<redacted>")
            .field("accessor", &self.accessor)
            .finish()
    }
}

impl fmt::Debug for v1::EnrollTotpResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollTotpResponse")
            .field("entity", &self.entity)
            .field("secret", &"<redacted>")
            .field("otpauth_uri", &"<redacted>")
            .finish()
    }
}

/// Prints the field names of a secret, never the values.
struct RedactedFields<'a, I: Iterator<Item = &'a String> + Clone>(I);

impl<'a, I: Iterator<Item = &'a String> + Clone> fmt::Debug for RedactedFields<'a, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.clone().map(|name| (name, "<redacted>")))
            .finish()
    }
}

/// Debug for messages of the named keys that carry plaintexts, key material, messages or
/// encryption contexts: it prints the listed fields (names, versions, counts) and `..` for the
/// rest.
macro_rules! shows_only {
    ($($message:ident { $($field:ident),* $(,)? }),* $(,)?) => {$(
        impl fmt::Debug for v1::$message {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($message))
                    $(.field(stringify!($field), &self.$field))*
                    .finish_non_exhaustive()
            }
        }
    )*};
}

shows_only! {
    EncryptRequest { tenant, key, key_version },
    DecryptRequest { tenant, key },
    DecryptResponse { key_version },
    EncryptItem {},
    BatchEncryptRequest { tenant, key, key_version },
    DecryptItem {},
    BatchDecryptRequest { tenant, key },
    DecryptResult { key_version, error },
    BatchDecryptResponse {},
    RewrapRequest { tenant, key, key_version },
    GenerateDataKeyRequest { tenant, key, key_version, bits, wrapped_only },
    GenerateDataKeyResponse { ciphertext, key_version },
    SignRequest { tenant, key, key_version },
    VerifyRequest { tenant, key, signature },
    HmacRequest { tenant, key, key_version },
    VerifyHmacRequest { tenant, key, hmac },
    ExportedKeyVersion { version },
    ExportKeyResponse { r#type },
}

#[cfg(test)]
mod tests {
    use super::v1;

    #[test]
    fn debug_of_secret_bearing_messages_hides_values() {
        let mut put = v1::PutRequest {
            tenant: "acme".into(),
            path: "db/primary".into(),
            ..Default::default()
        };
        put.data
            .insert("password".into(), b"hunter2-canary".to_vec());
        let init = v1::InitResponse {
            shares: vec!["share-canary".into()],
            root_token: "token-canary".into(),
            threshold: 1,
            ..Default::default()
        };
        let unseal = v1::UnsealRequest {
            share: "share-canary".into(),
            reset: false,
        };
        let rekey = v1::RekeySubmitRequest {
            nonce: "n".into(),
            share: "share-canary".into(),
        };
        let generate = v1::GenerateRootSubmitRequest {
            nonce: "n".into(),
            share: "share-canary".into(),
        };
        let cancel = v1::GenerateRootCancelRequest {
            share: "share-canary".into(),
        };
        let generated = v1::GenerateRootSubmitResponse {
            encrypted_root_token: "token-canary".into(),
            ..Default::default()
        };
        let started = v1::GenerateRootInitRequest {
            recipient: "age1x".into(),
            share: "share-canary".into(),
        };
        let migrate = [
            format!(
                "{:?}",
                v1::SealMigrateInitRequest {
                    to: "auto".into(),
                    share: "share-canary".into(),
                }
            ),
            format!(
                "{:?}",
                v1::SealMigrateSubmitRequest {
                    nonce: "n".into(),
                    share: "share-canary".into(),
                }
            ),
            format!(
                "{:?}",
                v1::SealMigrateCancelRequest {
                    share: "share-canary".into(),
                }
            ),
        ];
        for shown in migrate {
            assert!(!shown.contains("canary"), "{shown}");
        }
        for shown in [
            format!("{started:?}"),
            format!("{generate:?}"),
            format!("{cancel:?}"),
            format!("{generated:?}"),
        ] {
            assert!(!shown.contains("canary"), "{shown}");
        }
        let rekeyed = v1::RekeySubmitResponse {
            shares: vec!["share-canary".into()],
            ..Default::default()
        };
        let check = v1::VerifyShareRequest {
            share: "share-canary".into(),
        };
        let hook = v1::CreateWebhookRequest {
            secret: b"hunter2".to_vec(),
            ..Default::default()
        };
        let hooked = v1::CreateWebhookResponse {
            secret: "token-canary".into(),
            ..Default::default()
        };
        let mut patch = v1::PatchRequest::default();
        patch.data.insert("password".into(), b"hunter2".to_vec());
        let mut encrypt = v1::EncryptRequest {
            key: "orders".into(),
            plaintext: b"hunter2".to_vec(),
            ..Default::default()
        };
        encrypt.context.insert("user".into(), "token-canary".into());
        let exported = v1::ExportKeyResponse {
            r#type: "aes256-gcm".into(),
            versions: vec![v1::ExportedKeyVersion {
                version: 1,
                material: b"hunter2".to_vec(),
            }],
        };
        let decrypted = v1::BatchDecryptResponse {
            results: vec![v1::DecryptResult {
                plaintext: b"hunter2".to_vec(),
                ..Default::default()
            }],
        };
        let printed = format!(
            "{put:?} {init:?} {unseal:?} {rekey:?} {rekeyed:?} {check:?} {hook:?} {hooked:?} {patch:?} {encrypt:?} {exported:?} {decrypted:?}"
        );
        assert!(
            printed.contains("orders") && printed.contains("aes256-gcm"),
            "{printed}"
        );
        assert!(printed.contains("password"), "{printed}");
        for canary in ["hunter2", "share-canary", "token-canary"] {
            assert!(!printed.contains(canary), "{printed}");
        }
    }
}
