//! Fuzz target (`vault-fuzz`) for every protobuf request the server decodes: the bytes as each
//! request message (what tonic's decoder does with a request body), and, structure-aware, a
//! Put and a Get built field by field from the bytes, encoded, decoded and parsed as the
//! handlers parse them. Never a panic. RELIABILITY.md says how to run it for an hour.

use prost::Message;
use vault_fuzz::{arbitrary::Unstructured, run, text};
use vault_proto::v1::*;

macro_rules! decode_each {
    ($bytes:expr; $($message:ident),* $(,)?) => {
        $(
            if let Ok(decoded) = $message::decode($bytes) {
                // What decodes encodes again, and to something that decodes the same.
                let again = $message::decode(decoded.encode_to_vec().as_slice())
                    .expect("a re-encoded message decodes");
                assert_eq!(again, decoded, stringify!($message));
            }
        )*
    };
}

#[test]
fn fuzz_requests() {
    run(
        env!("CARGO_MANIFEST_DIR"),
        "requests",
        &[
            b"\n\x04acme\x12\x02db",
            b"\x1a\x05\n\x01v\x12\x00",
            b"\x08\x01",
        ],
        |bytes| {
            decode_each!(bytes; AuditExportRequest, AuditHeadRequest, AuditPublicKeyRequest, AuditQueryRequest, BackupRequest, BatchDecryptRequest, BatchEncryptRequest, CancelKeyDeletionRequest, ClusterMembersRequest, CreateKeyRequest, CreateTenantRequest, CreateTokenRequest, CreateWebhookRequest, DecryptRequest, DeleteJwtConfigRequest, DeleteKeyRequest, DeleteMetadataRequest, DeletePolicyRequest, DeleteRequest, DeleteRoleRequest, DeleteTenantRequest, DeleteWebhookRequest, DestroyRequest, EncryptRequest, EnrollTotpRequest, ExportKeyRequest, GenerateDataKeyRequest, GenerateRootCancelRequest, GenerateRootInitRequest, GenerateRootStatusRequest, GenerateRootSubmitRequest, GenerateSecretIdRequest, GetRequest, GetSystemMfaRequest, GetTenantRequest, HmacRequest, InitRequest, KeyStatusRequest, ListAlertsRequest, ListDeletedTenantsRequest, ListKeysRequest, ListPoliciesRequest, ListRequest, ListTenantsRequest, ListWebhooksRequest, LoginAppRoleRequest, LoginJwtRequest, LookupTokenRequest, PatchRequest, PutRequest, ReadJwtConfigRequest, ReadKeyRequest, ReadMetadataRequest, ReadPolicyRequest, ReadRoleRequest, RefreshRequest, RekeyCancelRequest, RekeyInitRequest, RekeyStatusRequest, RekeySubmitRequest, RekeyVerifyRequest, RenewTokenRequest, ReplayWebhookRequest, ResetMfaRequest, RestoreTenantRequest, RetireKeyVersionRequest, RevokeTokenRequest, RewrapRequest, RotateKeyRequest, RotateRequest, SealMigrateCancelRequest, SealMigrateInitRequest, SealMigrateStatusRequest, SealMigrateSubmitRequest, SealRequest, SetSystemMfaRequest, SignRequest, StatusRequest, StepDownRequest, TrimKeyRequest, UndeleteRequest, UnsealRequest, UpdateKeyRequest, UpdateMetadataRequest, UpdateTenantRequest, VerifyHmacRequest, VerifyRequest, VerifyShareRequest, WatchRequest, WebhookStatusRequest, WriteJwtConfigRequest, WritePolicyRequest, WriteRoleRequest);
            let mut u = Unstructured::new(bytes);
            let mut put = PutRequest {
                tenant: text(&mut u),
                path: text(&mut u),
                ..PutRequest::default()
            };
            for _ in 0..u.int_in_range(0..=4u8).unwrap_or(0) {
                let value: Vec<u8> = u.arbitrary().unwrap_or_default();
                put.data.insert(text(&mut u), value);
            }
            put.cas = u.arbitrary().unwrap_or(None);
            let decoded = PutRequest::decode(put.encode_to_vec().as_slice()).expect("decodes");
            let _ = crate::secrets::secret(&decoded.tenant, &decoded.path);
            let fields = crate::secrets::sealed_fields(decoded.data);
            assert!(fields.len() <= 4);
            let get = GetRequest {
                tenant: text(&mut u),
                path: text(&mut u),
                version: u.arbitrary().unwrap_or(0),
            };
            let decoded = GetRequest::decode(get.encode_to_vec().as_slice()).expect("decodes");
            let _ = crate::secrets::secret(&decoded.tenant, &decoded.path);
        },
    );
}
