//! Every RPC of the `vault.v1` API, in one table: what kind of call it is (does it change
//! state, and does its answer carry a one-time credential) and what a caller needs for it.
//!
//! The table is the one list of RPCs besides the `.proto` files: the handler pipeline
//! ([`crate::serve::serve`]) takes from it whether a call writes its intent record before it
//! changes anything, a unit test below checks that it names exactly the methods of the
//! reflection descriptor set (a new RPC without a row fails the tests), and
//! `tests/it/access.rs` walks its rows to show that each RPC is denied without its capability
//! and allowed with it. ARCHITECTURE.md points here instead of repeating it.

/// Whether a call changes state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Changes nothing a later call could see (its outcome record is written after it).
    Read,
    /// Changes state: its intent record is durable before the change.
    Mutation,
    /// Changes state and its answer carries a one-time credential (shares, a TOTP secret, a
    /// generated webhook secret): the intent names what will be returned, and the answer is
    /// not withheld once the change has committed.
    CredentialMutation,
}

/// What a caller needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// A tenant token whose policy grants this capability (where: see the row's notes), or a
    /// system-scope token.
    Capability(&'static str),
    /// A system-scope token (the root token or a system token).
    System,
    /// Any valid token, acting on itself or on a token it created.
    OwnToken,
    /// The root token or a login's token, acting on its own entity.
    OwnEntity,
    /// No token: the request carries its credential (a share, a login's secret), or the
    /// answer is public.
    NoToken,
}

/// One RPC.
#[derive(Clone, Copy, Debug)]
pub struct Rpc {
    /// `Service/Method`, as in the gRPC path `/vault.v1.Service/Method`.
    pub method: &'static str,
    pub kind: Kind,
    pub access: Access,
    /// Where the capability applies, and what else is checked.
    pub notes: &'static str,
}

/// The row of a gRPC path (`/vault.v1.Secrets/Get`), if it is one of ours.
pub fn of_path(path: &str) -> Option<&'static Rpc> {
    let method = path.strip_prefix("/vault.v1.")?;
    RPCS.iter().find(|rpc| rpc.method == method)
}

/// Every RPC, by service in the order of the `.proto` files' services.
pub const RPCS: &[Rpc] = &[
    Rpc {
        method: "System/Init",
        kind: Kind::CredentialMutation,
        access: Access::NoToken,
        notes: "once; the shares and root token go out encrypted to their recipients when given",
    },
    Rpc {
        method: "System/Unseal",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "the share must be one of the current shares",
    },
    Rpc {
        method: "System/Seal",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "System/ClusterMembers",
        kind: Kind::Read,
        access: Access::System,
        notes: "answered by the node asked, from the membership records in etcd",
    },
    Rpc {
        method: "System/StepDown",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "forwarded to the active node, which gives up leadership",
    },
    Rpc {
        method: "System/Backup",
        kind: Kind::Read,
        access: Access::System,
        notes: "streams the data backup; the key backup stays in --key-backup-dir",
    },
    Rpc {
        method: "System/Status",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "",
    },
    Rpc {
        method: "System/Rotate",
        kind: Kind::Mutation,
        access: Access::Capability("rotate"),
        notes: "on the tenant root (`\"\"`, matched by `*`); `all: true` needs the system scope",
    },
    Rpc {
        method: "System/RekeyInit",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "System/RekeySubmit",
        kind: Kind::CredentialMutation,
        access: Access::NoToken,
        notes: "a current share; the last one stages the new shares",
    },
    Rpc {
        method: "System/RekeyVerify",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "a staged share; a threshold of them commits",
    },
    Rpc {
        method: "System/GenerateRootInit",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "one current share (the first submission); names the age recipient of the new root token; unsealed only",
    },
    Rpc {
        method: "System/GenerateRootSubmit",
        kind: Kind::CredentialMutation,
        access: Access::NoToken,
        notes: "a current share; the last one receives the root token encrypted to the recipient",
    },
    Rpc {
        method: "System/GenerateRootStatus",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "",
    },
    Rpc {
        method: "System/GenerateRootCancel",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "one current share",
    },
    Rpc {
        method: "System/ListAlerts",
        kind: Kind::Read,
        access: Access::System,
        notes: "this node's recent alerts",
    },
    Rpc {
        method: "System/SealMigrateInit",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "one current share (the first submission); unsealed only",
    },
    Rpc {
        method: "System/SealMigrateSubmit",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "a current share; the last one commits the new seal",
    },
    Rpc {
        method: "System/SealMigrateStatus",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "",
    },
    Rpc {
        method: "System/SealMigrateCancel",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "one current share",
    },
    Rpc {
        method: "System/RekeyCancel",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "System/RekeyStatus",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "",
    },
    Rpc {
        method: "System/VerifyShare",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "the share is checked against the commitments",
    },
    Rpc {
        method: "Secrets/Put",
        kind: Kind::Mutation,
        access: Access::Capability("write"),
        notes: "on the path",
    },
    Rpc {
        method: "Secrets/Get",
        kind: Kind::Read,
        access: Access::Capability("read"),
        notes: "on the path",
    },
    Rpc {
        method: "Secrets/List",
        kind: Kind::Read,
        access: Access::Capability("list"),
        notes: "on the prefix (e.g. `db/`)",
    },
    Rpc {
        method: "Secrets/Delete",
        kind: Kind::Mutation,
        access: Access::Capability("delete"),
        notes: "on the path; soft delete of versions",
    },
    Rpc {
        method: "Secrets/Undelete",
        kind: Kind::Mutation,
        access: Access::Capability("write"),
        notes: "on the path",
    },
    Rpc {
        method: "Secrets/Destroy",
        kind: Kind::Mutation,
        access: Access::Capability("delete"),
        notes: "on the path; irreversible",
    },
    Rpc {
        method: "Secrets/DeleteMetadata",
        kind: Kind::Mutation,
        access: Access::Capability("delete"),
        notes: "on the path; irreversible",
    },
    Rpc {
        method: "Secrets/Patch",
        kind: Kind::Mutation,
        access: Access::Capability("write"),
        notes: "on the path; setting `max_versions` also needs `delete`",
    },
    Rpc {
        method: "Secrets/ReadMetadata",
        kind: Kind::Read,
        access: Access::Capability("read"),
        notes: "on the path",
    },
    Rpc {
        method: "Secrets/UpdateMetadata",
        kind: Kind::Mutation,
        access: Access::Capability("write"),
        notes: "on the path; setting `max_versions` also needs `delete` (lowering it destroys versions)",
    },
    Rpc {
        method: "Tenants/CreateTenant",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Tenants/ListTenants",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Tenants/GetTenant",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Tenants/UpdateTenant",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "settings constrain a tenant, so only the system scope changes them",
    },
    Rpc {
        method: "Tenants/DeleteTenant",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "shredded after the delay unless restored",
    },
    Rpc {
        method: "Tenants/RestoreTenant",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Tenants/ListDeletedTenants",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Audit/PublicKey",
        kind: Kind::Read,
        access: Access::NoToken,
        notes: "the checkpoint key, to pin for offline verification",
    },
    Rpc {
        method: "Audit/Head",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Audit/Query",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Audit/Export",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Tokens/CreateToken",
        kind: Kind::Mutation,
        access: Access::OwnToken,
        notes: "its own tenant, a subset of its policies; `system: true` needs the system scope; the creator's MFA code for MFA-protected policies or a system token once its entity is enrolled",
    },
    Rpc {
        method: "Tokens/LookupToken",
        kind: Kind::Read,
        access: Access::OwnToken,
        notes: "the token itself or one it created; others look like \"not found\"",
    },
    Rpc {
        method: "Tokens/RenewToken",
        kind: Kind::Mutation,
        access: Access::OwnToken,
        notes: "the token itself or one it created; others look like \"not found\"",
    },
    Rpc {
        method: "Tokens/RevokeToken",
        kind: Kind::Mutation,
        access: Access::OwnToken,
        notes: "the token itself or one it created (others look like \"not found\"); its children go with it",
    },
    Rpc {
        method: "Policies/WritePolicy",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Policies/ReadPolicy",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Policies/ListPolicies",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Policies/DeletePolicy",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Keys/KeyStatus",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root; without a tenant: system scope",
    },
    Rpc {
        method: "Keys/RetireKeyVersion",
        kind: Kind::Mutation,
        access: Access::Capability("rotate"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Kms/CreateKey",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/ReadKey",
        kind: Kind::Read,
        access: Access::Capability("read"),
        notes: "on `keys/<name>`; configuration, counts, public keys, never material",
    },
    Rpc {
        method: "Kms/ListKeys",
        kind: Kind::Read,
        access: Access::Capability("list"),
        notes: "on `keys/`",
    },
    Rpc {
        method: "Kms/UpdateKey",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/RotateKey",
        kind: Kind::Mutation,
        access: Access::Capability("rotate"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/TrimKey",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/DeleteKey",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on `keys/<name>`; destroyed after the waiting period",
    },
    Rpc {
        method: "Kms/CancelKeyDeletion",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/ExportKey",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on `keys/<name>`; only keys created exportable",
    },
    Rpc {
        method: "Kms/Encrypt",
        kind: Kind::Read,
        access: Access::Capability("encrypt"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/Decrypt",
        kind: Kind::Read,
        access: Access::Capability("decrypt"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/BatchEncrypt",
        kind: Kind::Read,
        access: Access::Capability("encrypt"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/BatchDecrypt",
        kind: Kind::Read,
        access: Access::Capability("decrypt"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/Rewrap",
        kind: Kind::Read,
        access: Access::Capability("rewrap"),
        notes: "on `keys/<name>`; the plaintext never leaves the server",
    },
    Rpc {
        method: "Kms/GenerateDataKey",
        kind: Kind::Read,
        access: Access::Capability("datakey"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/Sign",
        kind: Kind::Read,
        access: Access::Capability("sign"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/Verify",
        kind: Kind::Read,
        access: Access::Capability("verify"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/Hmac",
        kind: Kind::Read,
        access: Access::Capability("sign"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Kms/VerifyHmac",
        kind: Kind::Read,
        access: Access::Capability("verify"),
        notes: "on `keys/<name>`",
    },
    Rpc {
        method: "Login/LoginAppRole",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "the role id and secret id are the credential",
    },
    Rpc {
        method: "Login/LoginJwt",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "the signed JWT is the credential",
    },
    Rpc {
        method: "Login/Refresh",
        kind: Kind::Mutation,
        access: Access::NoToken,
        notes: "the refresh token is the credential; good once",
    },
    Rpc {
        method: "AppRoles/WriteRole",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "AppRoles/ReadRole",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "AppRoles/DeleteRole",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "AppRoles/GenerateSecretId",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "JwtAuth/WriteJwtConfig",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "JwtAuth/ReadJwtConfig",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "JwtAuth/DeleteJwtConfig",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Mfa/EnrollTotp",
        kind: Kind::CredentialMutation,
        access: Access::OwnEntity,
        notes: "the root token or a login's token, for its own entity never enrolled before; re-enrolling needs a valid code; a created token enrols nothing",
    },
    Rpc {
        method: "Mfa/ResetMfa",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Mfa/SetSystemMfa",
        kind: Kind::Mutation,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Mfa/GetSystemMfa",
        kind: Kind::Read,
        access: Access::System,
        notes: "",
    },
    Rpc {
        method: "Watch/Watch",
        kind: Kind::Read,
        access: Access::Capability("list"),
        notes: "on a folder prefix (`read` on a secret path); each event then needs `read` or `list` on its path; `key_rotated` needs `admin` on the tenant root",
    },
    Rpc {
        method: "Webhooks/CreateWebhook",
        kind: Kind::CredentialMutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root; a generated secret is returned once",
    },
    Rpc {
        method: "Webhooks/ListWebhooks",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Webhooks/WebhookStatus",
        kind: Kind::Read,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Webhooks/DeleteWebhook",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
    Rpc {
        method: "Webhooks/ReplayWebhook",
        kind: Kind::Mutation,
        access: Access::Capability("admin"),
        notes: "on the tenant root",
    },
];

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]

    use std::collections::BTreeSet;

    use prost::Message;

    use super::*;

    /// The table names exactly the methods the reflection descriptor set serves, once each.
    #[test]
    fn the_table_has_one_row_for_every_method_the_server_serves() {
        let set = prost_types::FileDescriptorSet::decode(vault_proto::v1::FILE_DESCRIPTOR_SET)
            .expect("descriptor set");
        let served: BTreeSet<String> = set
            .file
            .iter()
            .filter(|file| file.package() == "vault.v1")
            .flat_map(|file| &file.service)
            .flat_map(|service| {
                service
                    .method
                    .iter()
                    .map(move |method| format!("{}/{}", service.name(), method.name()))
            })
            .collect();
        let rows: Vec<&str> = RPCS.iter().map(|rpc| rpc.method).collect();
        let listed: BTreeSet<String> = rows.iter().map(|method| (*method).to_owned()).collect();
        assert_eq!(listed.len(), rows.len(), "a method has two rows");
        let missing: Vec<_> = served.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&served).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "methods without a row: {missing:?}; rows without a method: {extra:?}"
        );
        assert!(of_path("/vault.v1.Secrets/Get").is_some());
        assert!(of_path("/grpc.health.v1.Health/Check").is_none());
    }
}
