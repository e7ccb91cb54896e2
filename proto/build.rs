//! Generates the vault.v1 code with protox, so building needs no system protoc.

use std::{env, fs, io, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "vault/v1/system.proto",
    "vault/v1/secrets.proto",
    "vault/v1/tenants.proto",
    "vault/v1/audit.proto",
    "vault/v1/auth.proto",
    "vault/v1/login.proto",
    "vault/v1/keys.proto",
    "vault/v1/watch.proto",
    "vault/v1/webhooks.proto",
    "vault/v1/kms.proto",
];

/// Messages that carry shares, tokens or secret values: their generated Debug would print them,
/// so lib.rs implements a redacting one instead.
const SECRET_BEARING: &[&str] = &[
    "vault.v1.InitResponse",
    "vault.v1.UnsealRequest",
    "vault.v1.PutRequest",
    "vault.v1.GetResponse",
    "vault.v1.CreateTokenResponse",
    "vault.v1.LoginAppRoleRequest",
    "vault.v1.LoginJwtRequest",
    "vault.v1.RefreshRequest",
    // A lookup or revocation may name the token itself.
    "vault.v1.LookupTokenRequest",
    "vault.v1.RevokeTokenRequest",
    "vault.v1.LoginResponse",
    "vault.v1.GenerateSecretIdResponse",
    "vault.v1.EnrollTotpResponse",
    "vault.v1.RekeySubmitRequest",
    "vault.v1.GenerateRootInitRequest",
    "vault.v1.GenerateRootSubmitRequest",
    "vault.v1.GenerateRootCancelRequest",
    "vault.v1.SealMigrateInitRequest",
    "vault.v1.SealMigrateSubmitRequest",
    "vault.v1.SealMigrateCancelRequest",
    "vault.v1.GenerateRootSubmitResponse",
    "vault.v1.RekeySubmitResponse",
    "vault.v1.RekeyVerifyRequest",
    "vault.v1.VerifyShareRequest",
    "vault.v1.PatchRequest",
    "vault.v1.CreateWebhookRequest",
    "vault.v1.CreateWebhookResponse",
    // Named keys: plaintexts, data keys, exported material, messages and encryption contexts
    // (whose values a caller may mark sensitive).
    "vault.v1.EncryptRequest",
    "vault.v1.DecryptRequest",
    "vault.v1.DecryptResponse",
    "vault.v1.EncryptItem",
    "vault.v1.BatchEncryptRequest",
    "vault.v1.DecryptItem",
    "vault.v1.BatchDecryptRequest",
    "vault.v1.DecryptResult",
    "vault.v1.BatchDecryptResponse",
    "vault.v1.RewrapRequest",
    "vault.v1.GenerateDataKeyRequest",
    "vault.v1.GenerateDataKeyResponse",
    "vault.v1.SignRequest",
    "vault.v1.VerifyRequest",
    "vault.v1.HmacRequest",
    "vault.v1.VerifyHmacRequest",
    "vault.v1.ExportedKeyVersion",
    "vault.v1.ExportKeyResponse",
];

fn main() -> io::Result<()> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."]).map_err(|e| io::Error::other(e.to_string()))?;
    let out_dir = PathBuf::from(
        env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR is not set"))?,
    );
    fs::write(out_dir.join("vault_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .skip_debug(SECRET_BEARING.iter().copied())
        .compile_fds(fds)
}
