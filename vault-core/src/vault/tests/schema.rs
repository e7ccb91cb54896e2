//! The storage layout (`crate::schema`): a tenant's ranges and global records cover everything
//! it owns, and after crypto-shredding and a maintenance round nothing of it is left but its
//! tombstone.
//!
//! What a tenant owns is found here without the schema: a key or value that holds the tenant's
//! id, and then every record that holds a handle (token hash or accessor, family id, ...) of
//! one of those.

use std::{
    collections::BTreeSet,
    sync::atomic::{AtomicI64, Ordering},
    time::Duration,
};

use super::*;
use crate::{
    kms::{EncryptionContext, KeyName},
    policy::PolicyName,
    schema::{GLOBAL_RECORDS, Store, tenant_ranges},
};

const START: i64 = 1_800_000_000_000_000_000;
const MINUTE: i64 = 60_000_000_000;
const DAY: Duration = Duration::from_secs(86_400);

type Entry = (Store, Space, Vec<u8>, Vec<u8>);

struct World {
    data: Arc<MemoryStorage>,
    keys: Arc<MemoryStorage>,
    vault: Vault,
    clock: Arc<AtomicI64>,
    root: Caller,
}

fn world() -> World {
    let data = Arc::new(MemoryStorage::new());
    let keys = Arc::new(MemoryStorage::new());
    let clock = Arc::new(AtomicI64::new(START));
    let reading = Arc::clone(&clock);
    let mut config = VaultConfig::default();
    config.keys.shred_delay_nanos = MINUTE;
    config.webhooks.allow = vec![crate::cidr::Cidr::parse("127.0.0.0/8").expect("cidr")];
    let vault = Vault::open(
        DataStore::new(data.clone()),
        KeyStore::new(keys.clone()),
        config,
    )
    .expect("open")
    .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)));
    let output = vault
        .seal()
        .init(1, 1, InitRecipients::default())
        .expect("init");
    unseal_with(&vault, &[&share_texts(&output)[0]]).expect("unseal");
    let root = vault.authenticate(root_of(&output)).expect("root");
    World {
        data,
        keys,
        vault,
        clock,
        root,
    }
}

fn policy_named(name: &str) -> PolicyName {
    PolicyName::parse(name).expect("policy name")
}

fn key_named(name: &str) -> KeyName {
    KeyName::parse(name).expect("key name")
}

/// A long-lived token of `tenant` with policy `app`, created by `creator`.
fn token(w: &World, creator: &Caller, tenant_name: &str, refresh: bool) -> CreatedToken {
    w.vault
        .access()
        .create_token(
            creator,
            TokenRequest {
                tenant: Some(tenant(tenant_name)),
                policies: vec![policy_named("app")],
                system: false,
                ttl: Some(DAY),
                display_name: String::new(),
                cidrs: Vec::new(),
                refresh_max_ttl: refresh.then_some(2 * DAY),
            },
        )
        .expect("token")
}

/// A tenant with a secret, a policy, a token and a named key (used once).
fn populate(w: &World, name: &str) {
    let vault = &w.vault;
    let root = &w.root;
    let tenant_name = tenant(name);
    vault
        .tenants()
        .create_tenant(root, &tenant_name, TenantSettings::default())
        .expect("tenant");
    let app = Policy::new(
        policy_named("app"),
        vec![("*".to_owned(), vec!["read".to_owned(), "write".to_owned()])],
    )
    .expect("policy");
    vault
        .access()
        .write_policy(root, &tenant_name, &app)
        .expect("write policy");
    for value in ["one", "two"] {
        vault
            .secrets()
            .put(
                root,
                &tenant_name,
                &path("db/primary"),
                data(&[("v", value)]),
            )
            .expect("put");
    }
    token(w, root, name, false);
    vault
        .kms()
        .create_key(
            root,
            &tenant_name,
            &key_named("orders"),
            KeySpec {
                key_type: "aes256-gcm".into(),
                rotation_period_nanos: 30 * 86_400 * 1_000_000_000,
                ..KeySpec::default()
            },
        )
        .expect("named key");
    vault
        .kms()
        .encrypt(
            root,
            &tenant_name,
            &key_named("orders"),
            0,
            vec![EncryptItem {
                plaintext: SecretBytes::new(b"row".to_vec()),
                context: EncryptionContext::default(),
            }],
            false,
        )
        .expect("encrypt");
}

/// One of everything else a tenant can own, on top of [`populate`].
fn populate_fully(w: &World, name: &str) {
    let vault = &w.vault;
    let root = &w.root;
    let tenant_name = tenant(name);
    // A second KEK version, with the first scheduled for retirement (the lifecycle record).
    vault.keks().rotate(root, &tenant_name).expect("rotate kek");
    vault
        .keks()
        .retire_key_version(root, &tenant_name, 1)
        .expect("retire");
    vault
        .kms()
        .rotate_key(root, &tenant_name, &key_named("orders"))
        .expect("rotate named key");
    vault
        .secrets()
        .update_metadata(
            root,
            &tenant_name,
            &path("db/primary"),
            MetadataUpdate {
                expires_at_unix_nanos: Some(START + 10 * 86_400 * 1_000_000_000),
                ..Default::default()
            },
        )
        .expect("expiry alarm");
    // A refreshable token and a token it created.
    let parent = token(w, root, name, true);
    let parent = vault.authenticate(&parent.token).expect("parent");
    token(w, &parent, name, false);
    // An AppRole, a secret id, a login with it and the MFA enrolment of its entity.
    let role = vault
        .logins()
        .write_approle(
            root,
            &tenant_name,
            AppRoleSpec {
                name: "deployer".into(),
                policies: vec![policy_named("app")],
                ..AppRoleSpec::default()
            },
        )
        .expect("approle");
    let (secret_id, _) = vault
        .logins()
        .generate_secret_id(root, &tenant_name, "deployer", SecretIdSpec::default())
        .expect("secret id");
    let login = vault
        .logins()
        .login_approle(&tenant_name, &role.role_id, &secret_id, None)
        .expect("login");
    let machine = vault.authenticate(&login.token).expect("machine");
    vault.mfa().enroll_totp(&machine, None).expect("enrol");
    // A webhook with a pending delivery.
    vault
        .webhooks()
        .webhook_create(
            root,
            &tenant_name,
            WebhookSpec {
                url: "http://127.0.0.1:9/hook".into(),
                paths: String::new(),
                events: Vec::new(),
                secret: None,
            },
            &["127.0.0.1:9".parse().expect("address")],
        )
        .expect("webhook");
    vault
        .secrets()
        .put(root, &tenant_name, &path("db/other"), data(&[("v", "x")]))
        .expect("put");
    assert_eq!(vault.webhooks().webhook_fanout().expect("fan-out"), 1);
}

/// Every entry of both stores, both spaces.
fn everything(w: &World) -> Vec<Entry> {
    let mut all = Vec::new();
    for (store, storage) in [(Store::Data, &w.data), (Store::Keys, &w.keys)] {
        for space in Space::ALL {
            for (key, value) in storage.scan(space, b"", b"", usize::MAX).expect("scan") {
                all.push((store, space, key, value));
            }
        }
    }
    all
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The entries of the tenant with id `hex`: its id in the key or value (its name entry holds
/// the id), or a handle of one of those (`handles` gathers them: accessors, hashes and ids in
/// the JSON values) in the key or value.
fn owned<'a>(all: &'a [Entry], hex: &str, handles: &mut BTreeSet<String>) -> Vec<&'a Entry> {
    let direct = |entry: &Entry| holds(&entry.2, hex) || holds(&entry.3, hex);
    for entry in all.iter().filter(|entry| direct(entry)) {
        if let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(&entry.3) {
            for field in ["accessor", "hash", "id"] {
                if let Some(serde_json::Value::String(handle)) = fields.get(field)
                    && !handle.is_empty()
                {
                    handles.insert(handle.clone());
                }
            }
        }
    }
    all.iter()
        .filter(|entry| {
            direct(entry)
                || handles
                    .iter()
                    .any(|handle| holds(&entry.2, handle) || holds(&entry.3, handle))
        })
        .collect()
}

fn shown(entry: &Entry) -> String {
    format!(
        "{:?}/{} {}",
        entry.0,
        entry.1.name(),
        String::from_utf8_lossy(&entry.2)
    )
}

fn in_ranges(id: TenantId, entry: &Entry) -> bool {
    tenant_ranges(id)
        .iter()
        .any(|range| range.contains(entry.0, entry.1, &entry.2))
}

fn global_record(entry: &Entry) -> Option<&'static [u8]> {
    GLOBAL_RECORDS
        .iter()
        .find(|g| g.store == entry.0 && g.space == entry.1 && entry.2.starts_with(g.prefix))
        .map(|g| g.prefix)
}

#[test]
fn a_tenants_ranges_and_global_records_hold_all_it_owns_and_shredding_leaves_only_its_tombstone() {
    let w = world();
    populate(&w, "acme");
    populate_fully(&w, "acme");
    populate(&w, "globex");
    let acme = w.vault.tenant_id(&tenant("acme")).expect("acme");
    let globex = w.vault.tenant_id(&tenant("globex")).expect("globex");
    let mut acme_handles = BTreeSet::new();
    let before = everything(&w);
    let owned_before = owned(&before, &acme.to_hex(), &mut acme_handles);

    let strays: Vec<String> = owned_before
        .iter()
        .filter(|entry| !in_ranges(acme, entry) && global_record(entry).is_none())
        .map(|entry| shown(entry))
        .collect();
    assert!(
        strays.is_empty(),
        "keys of the tenant in no range and no global record: {strays:#?}"
    );
    // The fixture has one of everything: no range and no global record kind is empty (but
    // the deleted tenant's record, which deletion writes).
    let empty_ranges: Vec<String> = tenant_ranges(acme)
        .into_iter()
        .filter(|range| {
            !owned_before
                .iter()
                .any(|entry| range.contains(entry.0, entry.1, &entry.2))
        })
        .map(|range| String::from_utf8_lossy(&range.prefix).into_owned())
        .collect();
    assert!(empty_ranges.is_empty(), "nothing in {empty_ranges:?}");
    let kinds: BTreeSet<&[u8]> = owned_before
        .iter()
        .filter_map(|entry| global_record(entry))
        .collect();
    let missing: Vec<String> = GLOBAL_RECORDS
        .iter()
        .filter(|g| !kinds.contains(g.prefix) && g.prefix != crate::schema::DELETED_TENANT_PREFIX)
        .map(|g| String::from_utf8_lossy(g.prefix).into_owned())
        .collect();
    assert!(missing.is_empty(), "no global record under {missing:?}");

    let globex_before: Vec<Entry> = owned(&before, &globex.to_hex(), &mut BTreeSet::new())
        .into_iter()
        .cloned()
        .collect();
    assert!(!globex_before.is_empty());
    w.vault
        .tenants()
        .delete_tenant(&w.root, &tenant("acme"))
        .expect("delete");
    w.clock.fetch_add(MINUTE, Ordering::SeqCst);
    let report = w.vault.maintain().expect("maintain");
    assert_eq!((report.shredded, report.failed), (1, 0), "{report:?}");

    let after = everything(&w);
    let left: Vec<String> = owned(&after, &acme.to_hex(), &mut acme_handles)
        .into_iter()
        .map(shown)
        .collect();
    assert_eq!(
        left,
        [format!(
            "Keys/config {}",
            String::from_utf8_lossy(&crate::schema::shredded_key(acme))
        )],
        "only the tombstone is left of the shredded tenant"
    );
    let globex_after: Vec<Entry> = owned(&after, &globex.to_hex(), &mut BTreeSet::new())
        .into_iter()
        .cloned()
        .collect();
    assert!(
        globex_after == globex_before,
        "the other tenant is untouched"
    );
}

/// The purge removes a shredded tenant's MFA enrolment only when the tenant is certain: the
/// entity's name carries it and the record confirms it, or the entity is an AppRole one. A
/// record whose name is ambiguous (a legacy JWT entity, whose user claim may start like a
/// tenant id and which tokens of several tenants may share) or whose stamp disagrees with its
/// name stays, so shredding one tenant cannot lift another's enrolment.
#[test]
fn the_purge_removes_an_mfa_enrolment_only_when_its_tenant_is_certain() {
    let w = world();
    let acme = w
        .vault
        .tenants()
        .create_tenant(&w.root, &tenant("acme"), TenantSettings::default())
        .expect("acme")
        .id;
    let other = w
        .vault
        .tenants()
        .create_tenant(&w.root, &tenant("other"), TenantSettings::default())
        .expect("other")
        .id;
    let (a, o) = (acme.to_hex(), other.to_hex());
    let records = [
        (format!("jwt:okta:{a}:alice"), String::new(), true),
        (format!("jwt:okta:{a}:bob"), o.clone(), true),
        (format!("approle:{a}:deployer"), String::new(), false),
        (format!("jwt:okta:{a}:carol"), a.clone(), false),
    ];
    let mut batch = WriteBatch::new();
    for (entity, stamp, _) in &records {
        let value = serde_json::json!({ "sealed": "", "enrolled_unix_nanos": 0, "tenant": stamp });
        batch.put(
            Space::Config,
            crate::schema::mfa_key(entity),
            value.to_string().into_bytes(),
        );
    }
    w.data.write(batch).expect("write");
    w.vault
        .tenants()
        .delete_tenant(&w.root, &tenant("acme"))
        .expect("delete");
    w.clock.fetch_add(MINUTE, Ordering::SeqCst);
    let report = w.vault.maintain().expect("maintain");
    assert_eq!((report.shredded, report.failed), (1, 0), "{report:?}");
    for (entity, stamp, kept) in &records {
        let found = w
            .data
            .get(Space::Config, &crate::schema::mfa_key(entity))
            .expect("get")
            .is_some();
        assert_eq!(found, *kept, "mfa/{entity} stamped {stamp:?}");
    }
}
