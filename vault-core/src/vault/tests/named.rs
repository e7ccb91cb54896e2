//! Named keys (encryption as a service): exact budgets, rotation by hand and by schedule,
//! minimum versions and trimming, deletion with a waiting period, and how named keys live
//! through KEK retirement, restarts and crypto-shredding.

use std::sync::atomic::Ordering;

use super::lifecycle::{HOUR, Lab, lab, open_with, policy, settle};
use super::*;
use crate::kms::{EncryptionContext, KeyName};

fn name(text: &str) -> KeyName {
    KeyName::parse(text).expect("key name")
}

fn create(lab: &Lab, key: &str, key_type: &str, budget: u64) -> NamedKeyInfo {
    lab.vault
        .kms()
        .create_key(
            &lab.root,
            &tenant("acme"),
            &name(key),
            KeySpec {
                key_type: key_type.into(),
                budget,
                ..KeySpec::default()
            },
        )
        .expect("create key")
}

fn items(count: usize) -> Vec<EncryptItem> {
    (0..count)
        .map(|i| EncryptItem {
            plaintext: SecretBytes::new(format!("row {i}").into_bytes()),
            context: EncryptionContext::default(),
        })
        .collect()
}

fn encrypt(lab: &Lab, key: &str, plaintext: &str) -> Versioned {
    lab.vault
        .kms()
        .encrypt(
            &lab.root,
            &tenant("acme"),
            &name(key),
            0,
            vec![EncryptItem {
                plaintext: SecretBytes::new(plaintext.as_bytes().to_vec()),
                context: EncryptionContext::default(),
            }],
            false,
        )
        .expect("encrypt")
        .remove(0)
}

fn decrypt(vault: &Vault, caller: &Caller, key: &str, ciphertext: &str) -> Result<String> {
    vault
        .kms()
        .decrypt(
            caller,
            &tenant("acme"),
            &name(key),
            vec![DecryptItem {
                ciphertext: ciphertext.to_owned(),
                context: EncryptionContext::default(),
            }],
            false,
        )?
        .remove(0)
        .map(|(plaintext, _)| String::from_utf8_lossy(plaintext.expose_secret()).into_owned())
}

fn stored_named_records(keys: &MemoryStorage, id: TenantId) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    for prefix in [
        crate::schema::named_config_prefix(id),
        crate::schema::named_versions_prefix(id, None),
        crate::schema::named_counts_prefix(id, None),
    ] {
        for (key, _) in keys
            .scan(Space::Config, &prefix, &prefix, usize::MAX)
            .expect("scan")
        {
            found.push(key);
        }
    }
    found
}

#[test]
fn aes_and_chacha_versions_rotate_exactly_on_budget_and_xchacha_needs_none() {
    let lab = lab(policy(1 << 20, 0), 1, 1);
    for (key, key_type) in [("a", "aes256-gcm"), ("c", "chacha20-poly1305")] {
        create(&lab, key, key_type, 3);
        let versions: Vec<u32> = lab
            .vault
            .kms()
            .encrypt(&lab.root, &tenant("acme"), &name(key), 0, items(7), true)
            .expect("batch")
            .iter()
            .map(|c| c.version)
            .collect();
        assert_eq!(versions, [1, 1, 1, 2, 2, 2, 3], "{key_type}");
        let info = lab
            .vault
            .kms()
            .read_key(&lab.root, &tenant("acme"), &name(key))
            .expect("read");
        let counts: Vec<(u32, u64, Option<u64>)> = info
            .versions
            .iter()
            .map(|v| (v.version, v.invocations, v.remaining))
            .collect();
        assert_eq!(
            counts,
            [(1, 3, Some(0)), (2, 3, Some(0)), (3, 1, Some(2))],
            "{key_type}"
        );
        // A version asked for by number does not rotate at its budget: it refuses.
        assert!(matches!(
            lab.vault
                .kms()
                .encrypt(&lab.root, &tenant("acme"), &name(key), 1, items(1), false),
            Err(Error::FailedPrecondition(_))
        ));
    }
    create(&lab, "x", "xchacha20-poly1305", 3);
    let versions: Vec<u32> = lab
        .vault
        .kms()
        .encrypt(&lab.root, &tenant("acme"), &name("x"), 0, items(7), true)
        .expect("batch")
        .iter()
        .map(|c| c.version)
        .collect();
    assert_eq!(versions, [1; 7]);
}

#[test]
fn rotation_minimum_versions_rewrap_and_trimming() {
    let lab = lab(policy(1 << 20, 0), 1, 1);
    create(&lab, "orders", "", 0);
    let v1 = encrypt(&lab, "orders", "one");
    assert!(v1.text.starts_with("vault:v1:"));
    assert_eq!(
        lab.vault
            .kms()
            .rotate_key(&lab.root, &tenant("acme"), &name("orders"))
            .expect("rotate"),
        2
    );
    let v2 = encrypt(&lab, "orders", "two");
    assert_eq!(v2.version, 2);
    assert_eq!(
        decrypt(&lab.vault, &lab.root, "orders", &v1.text).expect("old"),
        "one"
    );
    let (old, rewrapped) = lab
        .vault
        .kms()
        .rewrap(
            &lab.root,
            &tenant("acme"),
            &name("orders"),
            &v1.text,
            &EncryptionContext::default(),
            0,
        )
        .expect("rewrap");
    assert_eq!((old, rewrapped.version), (1, 2));
    let update = |min_decryption_version| KeyUpdate {
        min_decryption_version: Some(min_decryption_version),
        ..KeyUpdate::default()
    };
    assert!(matches!(
        lab.vault
            .kms()
            .update_key(&lab.root, &tenant("acme"), &name("orders"), update(3)),
        Err(Error::InvalidArgument {
            field: "min_decryption_version",
            ..
        })
    ));
    // Trimming may not pass the minimum decryption version.
    assert!(matches!(
        lab.vault
            .kms()
            .trim_key(&lab.root, &tenant("acme"), &name("orders"), 2),
        Err(Error::InvalidArgument {
            field: "min_available_version",
            ..
        })
    ));
    lab.vault
        .kms()
        .update_key(&lab.root, &tenant("acme"), &name("orders"), update(2))
        .expect("min decryption 2");
    assert!(matches!(
        decrypt(&lab.vault, &lab.root, "orders", &v1.text),
        Err(Error::FailedPrecondition(_))
    ));
    assert_eq!(
        decrypt(&lab.vault, &lab.root, "orders", &rewrapped.text).expect("rewrapped"),
        "one"
    );
    let id = lab.vault.tenant_id(&tenant("acme")).expect("tenant id");
    let stored_versions = || {
        let prefix = crate::schema::named_versions_prefix(id, Some(&name("orders")));
        lab.keys
            .scan(Space::Config, &prefix, &prefix, usize::MAX)
            .expect("scan")
            .len()
    };
    assert_eq!(stored_versions(), 2);
    assert_eq!(
        lab.vault
            .kms()
            .trim_key(&lab.root, &tenant("acme"), &name("orders"), 2)
            .expect("trim"),
        [1]
    );
    assert_eq!(stored_versions(), 1);
    let info = lab
        .vault
        .kms()
        .read_key(&lab.root, &tenant("acme"), &name("orders"))
        .expect("read");
    assert_eq!((info.min_available_version, info.versions.len()), (2, 1));
    // Lowering the minimum below what was trimmed is refused.
    assert!(
        lab.vault
            .kms()
            .update_key(&lab.root, &tenant("acme"), &name("orders"), update(1))
            .is_err()
    );
}

#[test]
fn scheduled_rotation_and_deletion_after_the_waiting_period() {
    let lab = lab(policy(1 << 20, 0), 1, 1);
    lab.vault
        .kms()
        .create_key(
            &lab.root,
            &tenant("acme"),
            &name("daily"),
            KeySpec {
                rotation_period_nanos: 24 * HOUR,
                ..KeySpec::default()
            },
        )
        .expect("create");
    lab.clock.fetch_add(23 * HOUR, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").keys_rotated, 0);
    lab.clock.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").keys_rotated, 1);
    assert_eq!(encrypt(&lab, "daily", "x").version, 2);

    assert!(matches!(
        lab.vault
            .kms()
            .delete_key(&lab.root, &tenant("acme"), &name("daily")),
        Err(Error::FailedPrecondition(_))
    ));
    lab.vault
        .kms()
        .update_key(
            &lab.root,
            &tenant("acme"),
            &name("daily"),
            KeyUpdate {
                deletion_allowed: Some(true),
                ..KeyUpdate::default()
            },
        )
        .expect("deletable");
    lab.vault
        .kms()
        .delete_key(&lab.root, &tenant("acme"), &name("daily"))
        .expect("delete");
    assert!(matches!(
        lab.vault.kms().encrypt(
            &lab.root,
            &tenant("acme"),
            &name("daily"),
            0,
            items(1),
            false
        ),
        Err(Error::FailedPrecondition(_))
    ));
    lab.vault
        .kms()
        .cancel_key_deletion(&lab.root, &tenant("acme"), &name("daily"))
        .expect("cancel");
    encrypt(&lab, "daily", "still usable");
    let when = lab
        .vault
        .kms()
        .delete_key(&lab.root, &tenant("acme"), &name("daily"))
        .expect("delete again");
    lab.clock.store(when - 1, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").keys_destroyed, 0);
    lab.clock.store(when, Ordering::SeqCst);
    assert_eq!(lab.vault.maintain().expect("round").keys_destroyed, 1);
    assert!(matches!(
        lab.vault
            .kms()
            .read_key(&lab.root, &tenant("acme"), &name("daily")),
        Err(Error::NotFound(_))
    ));
    let id = lab.vault.tenant_id(&tenant("acme")).expect("tenant id");
    assert!(stored_named_records(&lab.keys, id).is_empty());
}

#[test]
fn named_keys_survive_kek_retirement_and_a_restart_and_die_with_the_tenant() {
    let mut keys = policy(1 << 20, 0);
    keys.shred_delay_nanos = HOUR;
    let lab = lab(keys.clone(), 1, 1);
    create(&lab, "orders", "aes256-gcm", 0);
    create(&lab, "signer", "ed25519", 0);
    let ciphertext = encrypt(&lab, "orders", "kept");
    let signature = lab
        .vault
        .kms()
        .sign(&lab.root, &tenant("acme"), &name("signer"), b"m", 0)
        .expect("sign");
    // The tenant's KEK version 1, which wraps both keys' material, is retired.
    lab.vault
        .keks()
        .rotate(&lab.root, &tenant("acme"))
        .expect("rotate kek");
    lab.vault
        .keks()
        .retire_key_version(&lab.root, &tenant("acme"), 1)
        .expect("retire");
    let report = settle(&lab);
    assert_eq!((report.retired, report.rewrapped), (1, 2));

    // A restart: the cache is gone, so the material is unwrapped under KEK version 2.
    let vault = open_with(&lab.data, &lab.keys, &keys, &lab.clock);
    unseal_with(&vault, &[&lab.shares[0]]).expect("unseal");
    let root = vault.authenticate(&lab.root_token).expect("root");
    assert_eq!(
        decrypt(&vault, &root, "orders", &ciphertext.text).expect("decrypt"),
        "kept"
    );
    assert_eq!(
        vault
            .kms()
            .verify(
                &root,
                &tenant("acme"),
                &name("signer"),
                b"m",
                &signature.text
            )
            .expect("verify"),
        (true, 1)
    );

    let id = vault.tenant_id(&tenant("acme")).expect("tenant id");
    vault
        .tenants()
        .delete_tenant(&root, &tenant("acme"))
        .expect("delete tenant");
    lab.clock.fetch_add(2 * HOUR, Ordering::SeqCst);
    assert_eq!(vault.maintain().expect("round").shredded, 1);
    assert!(stored_named_records(&lab.keys, id).is_empty());
}

#[test]
fn a_key_of_another_tenant_with_the_same_name_does_not_decrypt() {
    let lab = lab(policy(1 << 20, 0), 1, 1);
    lab.vault
        .tenants()
        .create_tenant(&lab.root, &tenant("globex"), TenantSettings::default())
        .expect("globex");
    create(&lab, "orders", "", 0);
    lab.vault
        .kms()
        .create_key(
            &lab.root,
            &tenant("globex"),
            &name("orders"),
            KeySpec::default(),
        )
        .expect("globex key");
    let ciphertext = encrypt(&lab, "orders", "acme only");
    let result = lab
        .vault
        .kms()
        .decrypt(
            &lab.root,
            &tenant("globex"),
            &name("orders"),
            vec![DecryptItem {
                ciphertext: ciphertext.text,
                context: EncryptionContext::default(),
            }],
            false,
        )
        .expect("call")
        .remove(0);
    assert!(matches!(
        result,
        Err(Error::InvalidArgument {
            field: "ciphertext",
            ..
        })
    ));
}
