use super::*;
use crate::{
    names::FolderPrefix,
    secret::SecretBytes,
    storage::{MemoryStorage, Storage},
    stores::{DataStore, KeyStore},
};

mod lifecycle;
mod named;
mod schema;
mod versions;

struct Fixture {
    data: Arc<MemoryStorage>,
    keys: Arc<MemoryStorage>,
    vault: Vault,
    /// The root token, once init has run.
    root: String,
}

impl Fixture {
    fn new() -> Fixture {
        let data = Arc::new(MemoryStorage::new());
        let keys = Arc::new(MemoryStorage::new());
        let vault = Vault::open(
            DataStore::new(data.clone()),
            KeyStore::new(keys.clone()),
            VaultConfig::default(),
        )
        .expect("open");
        Fixture {
            data,
            keys,
            vault,
            root: String::new(),
        }
    }

    /// The same stores opened again, as after a restart.
    fn restart(&self) -> Vault {
        Vault::open(
            DataStore::new(self.data.clone()),
            KeyStore::new(self.keys.clone()),
            VaultConfig::default(),
        )
        .expect("reopen")
    }
}

fn share_texts(output: &InitOutput) -> Vec<String> {
    plain_shares(&output.shares)
}

/// Shares handed out in the clear, as text.
fn plain_shares(shares: &[crate::recipient::Handout<UnsealShare>]) -> Vec<String> {
    shares
        .iter()
        .map(|s| {
            s.as_plain()
                .expect("a share in the clear")
                .expose_secret()
                .to_string()
        })
        .collect()
}

/// The root token init handed out in the clear.
fn root_of(output: &InitOutput) -> &Token {
    output
        .root_token
        .as_plain()
        .expect("a root token in the clear")
}

fn unseal_with(vault: &Vault, shares: &[&String]) -> Result<SealStatus> {
    let mut status = vault.seal().status();
    for share in shares {
        status = vault.seal().unseal(UnsealShare::parse(share)?)?;
    }
    Ok(status)
}

fn data(fields: &[(&str, &str)]) -> SecretData {
    let mut data = SecretData::new();
    for (name, value) in fields {
        data.insert(
            (*name).to_owned(),
            SecretBytes::new(value.as_bytes().to_vec()),
        );
    }
    data
}

fn fields(version: &SecretVersion) -> Vec<(String, String)> {
    version
        .data
        .expose_secret()
        .map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned()))
        .collect()
}

fn tenant(name: &str) -> TenantName {
    TenantName::parse(name).expect("tenant name")
}

fn path(text: &str) -> SecretPath {
    SecretPath::parse(text).expect("path")
}

/// An initialized, unsealed vault with tenant "acme", its shares and root caller.
fn unsealed() -> (Fixture, Vec<String>, Caller) {
    let mut fixture = Fixture::new();
    let output = fixture
        .vault
        .seal()
        .init(5, 3, InitRecipients::default())
        .expect("init");
    fixture.root = root_of(&output).expose_secret().to_owned();
    let shares = share_texts(&output);
    unseal_with(&fixture.vault, &[&shares[0], &shares[1], &shares[2]]).expect("unseal");
    let caller = fixture
        .vault
        .authenticate(root_of(&output))
        .expect("root token");
    fixture
        .vault
        .tenants()
        .create_tenant(&caller, &tenant("acme"), TenantSettings::default())
        .expect("tenant");
    (fixture, shares, caller)
}

#[test]
fn init_unseal_threshold_and_progress() {
    let fixture = Fixture::new();
    assert_eq!(
        fixture.vault.seal().status(),
        SealStatus {
            initialized: false,
            sealed: true,
            threshold: 0,
            shares: 0,
            progress: 0,
            seal_type: "shamir".into(),
        }
    );
    let output = fixture
        .vault
        .seal()
        .init(5, 3, InitRecipients::default())
        .expect("init");
    assert!(matches!(
        fixture.vault.seal().init(5, 3, InitRecipients::default()),
        Err(Error::AlreadyInitialized)
    ));
    let shares = share_texts(&output);
    assert_eq!(shares.len(), 5);
    let status = unseal_with(&fixture.vault, &[&shares[4], &shares[1]]).expect("two shares");
    assert_eq!(
        status,
        SealStatus {
            initialized: true,
            sealed: true,
            threshold: 3,
            shares: 5,
            progress: 2,
            seal_type: "shamir".into(),
        }
    );
    // A repeated share does not count twice.
    let status = unseal_with(&fixture.vault, &[&shares[1]]).expect("repeat");
    assert_eq!(status.progress, 2);
    assert!(status.sealed);
    // The token cannot be checked while sealed.
    assert!(matches!(
        fixture.vault.authenticate(root_of(&output)),
        Err(Error::Sealed)
    ));
    let status = unseal_with(&fixture.vault, &[&shares[2]]).expect("third");
    assert!(!status.sealed);
    assert_eq!(status.progress, 0);
    fixture
        .vault
        .authenticate(root_of(&output))
        .expect("root token works");
}

#[test]
fn a_share_that_is_not_current_is_refused_and_leaves_the_progress_as_it_was() {
    let fixture = Fixture::new();
    let output = fixture
        .vault
        .seal()
        .init(3, 2, InitRecipients::default())
        .expect("init");
    let shares = share_texts(&output);
    let other = Fixture::new();
    let foreign = share_texts(
        &other
            .vault
            .seal()
            .init(3, 2, InitRecipients::default())
            .expect("init"),
    );
    unseal_with(&fixture.vault, &[&shares[0]]).expect("one");
    let error = unseal_with(&fixture.vault, &[&foreign[1]]).expect_err("must fail");
    assert_eq!(
        error.to_string(),
        "invalid share: this share is not one of the current shares"
    );
    assert_eq!(fixture.vault.seal().status().progress, 1);
    assert!(fixture.vault.seal().status().sealed);
    // Nor can a stranger reset the progress with it.
    let stranger = UnsealShare::parse(&foreign[0]).expect("share");
    assert!(fixture.vault.seal().reset_unseal(&stranger).is_err());
    assert_eq!(fixture.vault.seal().status().progress, 1);
    // And the right shares still work afterwards.
    assert!(
        !unseal_with(&fixture.vault, &[&shares[2], &shares[0]])
            .expect("unseal")
            .sealed
    );
}

#[test]
fn reset_forgets_progress() {
    let fixture = Fixture::new();
    let shares = share_texts(
        &fixture
            .vault
            .seal()
            .init(3, 2, InitRecipients::default())
            .expect("init"),
    );
    unseal_with(&fixture.vault, &[&shares[0]]).expect("one");
    let proof = UnsealShare::parse(&shares[2]).expect("share");
    assert_eq!(
        fixture
            .vault
            .seal()
            .reset_unseal(&proof)
            .expect("reset")
            .progress,
        0
    );
}

#[test]
fn unknown_and_malformed_tokens_are_denied() {
    let (fixture, _, _) = unsealed();
    let stranger = Token::generate().expect("rng");
    assert!(matches!(
        fixture.vault.authenticate(&stranger),
        Err(Error::PermissionDenied)
    ));
}

#[test]
fn put_get_versions_and_fields() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    let acme = tenant("acme");
    let first = vault
        .secrets()
        .put(
            &caller,
            &acme,
            &path("db/primary"),
            data(&[("user", "app"), ("password", "s3cret")]),
        )
        .expect("put");
    assert_eq!(first.version, 1);
    let second = vault
        .secrets()
        .put(
            &caller,
            &acme,
            &path("db/primary"),
            data(&[("password", "n3w")]),
        )
        .expect("put");
    assert_eq!(second.version, 2);
    let current = vault
        .secrets()
        .get(&caller, &acme, &path("db/primary"), 0)
        .expect("get");
    assert_eq!(current.version, 2);
    assert_eq!(
        fields(&current),
        [("password".to_owned(), "n3w".to_owned())]
    );
    let old = vault
        .secrets()
        .get(&caller, &acme, &path("db/primary"), 1)
        .expect("get v1");
    assert_eq!(
        fields(&old),
        [
            ("password".to_owned(), "s3cret".to_owned()),
            ("user".to_owned(), "app".to_owned())
        ]
    );
    assert!(matches!(
        vault.secrets().get(&caller, &acme, &path("db/primary"), 3),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        vault.secrets().get(&caller, &acme, &path("db/other"), 0),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn tenants_are_isolated() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    vault
        .tenants()
        .create_tenant(&caller, &tenant("globex"), TenantSettings::default())
        .expect("tenant");
    assert!(matches!(
        vault
            .tenants()
            .create_tenant(&caller, &tenant("globex"), TenantSettings::default()),
        Err(Error::AlreadyExists(_))
    ));
    vault
        .secrets()
        .put(
            &caller,
            &tenant("acme"),
            &path("shared/name"),
            data(&[("v", "acme")]),
        )
        .expect("put");
    vault
        .secrets()
        .put(
            &caller,
            &tenant("globex"),
            &path("shared/name"),
            data(&[("v", "globex")]),
        )
        .expect("put");
    let acme = vault
        .secrets()
        .get(&caller, &tenant("acme"), &path("shared/name"), 0)
        .expect("get");
    let globex = vault
        .secrets()
        .get(&caller, &tenant("globex"), &path("shared/name"), 0)
        .expect("get");
    assert_eq!(fields(&acme)[0].1, "acme");
    assert_eq!(fields(&globex)[0].1, "globex");
    vault
        .secrets()
        .put(
            &caller,
            &tenant("acme"),
            &path("only/acme"),
            data(&[("v", "x")]),
        )
        .expect("put");
    assert!(matches!(
        vault
            .secrets()
            .get(&caller, &tenant("globex"), &path("only/acme"), 0),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        vault
            .secrets()
            .get(&caller, &tenant("initech"), &path("only/acme"), 0),
        Err(Error::NotFound(_))
    ));
    let names: Vec<String> = vault
        .tenants()
        .list_tenants(&caller, &PageRequest::default())
        .expect("list")
        .0
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(names, ["acme", "globex"]);
}

#[test]
fn stored_version_moved_to_another_path_or_tenant_fails() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    vault
        .tenants()
        .create_tenant(&caller, &tenant("globex"), TenantSettings::default())
        .expect("tenant");
    vault
        .secrets()
        .put(&caller, &tenant("acme"), &path("a"), data(&[("v", "1")]))
        .expect("put");
    vault
        .secrets()
        .put(&caller, &tenant("acme"), &path("b"), data(&[("v", "2")]))
        .expect("put");
    vault
        .secrets()
        .put(&caller, &tenant("globex"), &path("a"), data(&[("v", "3")]))
        .expect("put");
    let acme = vault.tenant_id(&tenant("acme")).expect("id");
    let globex = vault.tenant_id(&tenant("globex")).expect("id");
    let stored_a = fixture
        .data
        .get(Space::Secrets, &version_key(acme, &path("a"), 1))
        .expect("get")
        .expect("present");
    // Copy acme's "a" over acme's "b", and over globex's "a".
    for (target_tenant, target) in [(acme, "b"), (globex, "a")] {
        let mut batch = WriteBatch::new();
        batch.put(
            Space::Secrets,
            version_key(target_tenant, &path(target), 1),
            stored_a.clone(),
        );
        fixture.data.write(batch).expect("write");
    }
    assert!(matches!(
        vault.secrets().get(&caller, &tenant("acme"), &path("b"), 0),
        Err(Error::Integrity(_))
    ));
    assert!(matches!(
        vault
            .secrets()
            .get(&caller, &tenant("globex"), &path("a"), 0),
        Err(Error::Integrity(_))
    ));
    // And version 1 moved to version 2 of the same path.
    vault
        .secrets()
        .put(&caller, &tenant("acme"), &path("a"), data(&[("v", "new")]))
        .expect("put");
    let mut batch = WriteBatch::new();
    batch.put(Space::Secrets, version_key(acme, &path("a"), 2), stored_a);
    fixture.data.write(batch).expect("write");
    assert!(matches!(
        vault.secrets().get(&caller, &tenant("acme"), &path("a"), 2),
        Err(Error::Integrity(_))
    ));
}

#[test]
fn every_bit_flip_of_a_stored_version_is_rejected() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    vault
        .secrets()
        .put(
            &caller,
            &tenant("acme"),
            &path("p"),
            data(&[("k", "value")]),
        )
        .expect("put");
    let id = vault.tenant_id(&tenant("acme")).expect("id");
    let key = version_key(id, &path("p"), 1);
    let stored = fixture
        .data
        .get(Space::Secrets, &key)
        .expect("get")
        .expect("present");
    let mut tampered_variants: Vec<Vec<u8>> = Vec::new();
    // The 8 bytes of created time are metadata, not sealed; every other byte is covered.
    for byte in 8..stored.len() {
        for bit in 0..8 {
            let mut tampered = stored.clone();
            tampered[byte] ^= 1 << bit;
            tampered_variants.push(tampered);
        }
    }
    for length in 0..stored.len() {
        tampered_variants.push(stored[..length].to_vec());
    }
    for tampered in tampered_variants {
        let mut batch = WriteBatch::new();
        batch.put(Space::Secrets, key.clone(), tampered);
        fixture.data.write(batch).expect("write");
        assert!(
            vault
                .secrets()
                .get(&caller, &tenant("acme"), &path("p"), 1)
                .is_err()
        );
    }
}

#[test]
fn rotate_keeps_old_data_readable_and_seals_new_data_under_the_new_version() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    let acme = tenant("acme");
    vault
        .secrets()
        .put(&caller, &acme, &path("old"), data(&[("v", "before")]))
        .expect("put");
    assert_eq!(vault.keks().rotate(&caller, &acme).expect("rotate"), 2);
    vault
        .secrets()
        .put(&caller, &acme, &path("new"), data(&[("v", "after")]))
        .expect("put");
    let old = vault
        .secrets()
        .get(&caller, &acme, &path("old"), 0)
        .expect("get");
    let new = vault
        .secrets()
        .get(&caller, &acme, &path("new"), 0)
        .expect("get");
    assert_eq!((old.key_version, fields(&old)[0].1.as_str()), (1, "before"));
    assert_eq!((new.key_version, fields(&new)[0].1.as_str()), (2, "after"));
    assert_eq!(
        vault
            .tenants()
            .list_tenants(&caller, &PageRequest::default())
            .expect("list")
            .0[0]
            .key_version,
        2
    );
}

#[test]
fn restart_is_sealed_and_any_threshold_subset_brings_everything_back() {
    let (fixture, shares, caller) = unsealed();
    fixture
        .vault
        .secrets()
        .put(
            &caller,
            &tenant("acme"),
            &path("db/primary"),
            data(&[("password", "p")]),
        )
        .expect("put");
    fixture
        .vault
        .keks()
        .rotate(&caller, &tenant("acme"))
        .expect("rotate");
    fixture
        .vault
        .secrets()
        .put(
            &caller,
            &tenant("acme"),
            &path("db/replica"),
            data(&[("password", "r")]),
        )
        .expect("put");
    let restarted = fixture.restart();
    assert!(restarted.seal().status().sealed);
    assert!(restarted.seal().status().initialized);
    assert!(matches!(restarted.keyring(), Err(Error::Sealed)));
    unseal_with(&restarted, &[&shares[4], &shares[3], &shares[1]]).expect("unseal");
    drop(caller);
    let caller2 = restarted
        .authenticate(&Token::from_presented(fixture.root.clone()).expect("token"))
        .expect("root token after restart");
    let primary = restarted
        .secrets()
        .get(&caller2, &tenant("acme"), &path("db/primary"), 0)
        .expect("get");
    let replica = restarted
        .secrets()
        .get(&caller2, &tenant("acme"), &path("db/replica"), 0)
        .expect("get");
    assert_eq!(fields(&primary)[0].1, "p");
    assert_eq!(fields(&replica)[0].1, "r");
}

#[test]
fn sealed_vault_refuses_data_calls() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    vault.seal().seal(&caller).expect("seal");
    let acme = tenant("acme");
    assert!(matches!(
        vault.secrets().get(&caller, &acme, &path("x"), 0),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault
            .secrets()
            .put(&caller, &acme, &path("x"), data(&[("k", "v")])),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault.secrets().list(
            &caller,
            &acme,
            &FolderPrefix::parse("").expect("prefix"),
            0,
            "",
            false
        ),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault.secrets().delete(&caller, &acme, &path("x")),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault.keks().rotate(&caller, &acme),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault
            .tenants()
            .create_tenant(&caller, &tenant("new"), TenantSettings::default()),
        Err(Error::Sealed)
    ));
    assert!(matches!(
        vault
            .tenants()
            .list_tenants(&caller, &PageRequest::default()),
        Err(Error::Sealed)
    ));
}

#[test]
fn listing_is_one_level_paginated_and_bounded() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    let acme = tenant("acme");
    for name in ["a", "a-b", "a/x", "a/y/z", "b", "c/d", "c/e", "d"] {
        vault
            .secrets()
            .put(&caller, &acme, &path(name), data(&[("k", "v")]))
            .expect("put");
    }
    let top = FolderPrefix::parse("").expect("prefix");
    let all = vault
        .secrets()
        .list(&caller, &acme, &top, 0, "", false)
        .expect("list");
    assert_eq!(all.keys, ["a", "a-b", "a/", "b", "c/", "d"]);
    assert_eq!(all.next_page_token, None);
    let inside = vault
        .secrets()
        .list(
            &caller,
            &acme,
            &FolderPrefix::parse("a").expect("prefix"),
            0,
            "",
            false,
        )
        .expect("list");
    assert_eq!(inside.keys, ["x", "y/"]);
    let recursive = vault
        .secrets()
        .list(
            &caller,
            &acme,
            &FolderPrefix::parse("a/").expect("prefix"),
            0,
            "",
            true,
        )
        .expect("list");
    assert_eq!(recursive.keys, ["x", "y/z"]);
    // Pages of two walk the same listing.
    let mut walked = Vec::new();
    let mut token = String::new();
    loop {
        let page = vault
            .secrets()
            .list(&caller, &acme, &top, 2, &token, false)
            .expect("page");
        assert!(page.keys.len() <= 2);
        walked.extend(page.keys);
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(walked, all.keys);
    assert!(matches!(
        vault.secrets().list(&caller, &acme, &top, 5000, "", false),
        Err(Error::InvalidArgument {
            field: "page_size",
            ..
        })
    ));
    assert!(matches!(
        vault.secrets().list(&caller, &acme, &top, 1, "!!", false),
        Err(Error::InvalidArgument {
            field: "page_token",
            ..
        })
    ));
}

#[test]
fn delete_removes_every_version_atomically() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    let acme = tenant("acme");
    for _ in 0..3 {
        vault
            .secrets()
            .put(&caller, &acme, &path("gone"), data(&[("k", "v")]))
            .expect("put");
    }
    vault
        .secrets()
        .put(&caller, &acme, &path("gone-not"), data(&[("k", "v")]))
        .expect("put");
    vault
        .secrets()
        .delete_metadata(&caller, &acme, &path("gone"))
        .expect("delete");
    assert!(matches!(
        vault.secrets().get(&caller, &acme, &path("gone"), 0),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        vault
            .secrets()
            .delete_metadata(&caller, &acme, &path("gone")),
        Err(Error::NotFound(_))
    ));
    let id = vault.tenant_id(&acme).expect("id");
    let prefix = crate::schema::tenant_data_prefix(id);
    let left: Vec<Vec<u8>> = fixture
        .data
        .scan(Space::Secrets, &prefix, &prefix, 100)
        .expect("scan")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with(&crate::schema::events_prefix(id)))
        .collect();
    assert_eq!(left.len(), 2, "only gone-not's metadata and version remain");
    // A fresh put after delete starts again at version 1.
    assert_eq!(
        vault
            .secrets()
            .put(&caller, &acme, &path("gone"), data(&[("k", "v")]))
            .expect("put")
            .version,
        1
    );
}

#[test]
fn bad_secret_data_is_refused_naming_the_field() {
    let fixture = Fixture::new();
    let vault = Vault::open(
        DataStore::new(fixture.data.clone()),
        KeyStore::new(fixture.keys.clone()),
        VaultConfig {
            max_value_bytes: 16,
            ..VaultConfig::default()
        },
    )
    .expect("open");
    assert!(matches!(
        vault.check_data(&SecretData::new()),
        Err(Error::InvalidArgument { field: "data", .. })
    ));
    let too_big = vault
        .check_data(&data(&[("password", "0123456789abcdefX")]))
        .expect_err("too big");
    assert_eq!(
        too_big.to_string(),
        "data[\"password\"] is 17 bytes, over the limit of 16 bytes"
    );
    let too_big_total = vault
        .check_data(&data(&[("a", "01234567"), ("b", "01234567")]))
        .expect_err("too big");
    assert_eq!(
        too_big_total.to_string(),
        "data is 18 bytes, over the limit of 16 bytes"
    );
    assert!(matches!(
        vault.check_data(&data(&[("", "v")])),
        Err(Error::InvalidArgument { field: "data", .. })
    ));
}

#[test]
fn nothing_secret_reaches_storage_in_the_clear() {
    let (fixture, shares, caller) = unsealed();
    let canary = "canary-7f3a9c-secret-value";
    fixture
        .vault
        .secrets()
        .put(
            &caller,
            &tenant("acme"),
            &path("canary"),
            data(&[("password", canary)]),
        )
        .expect("put");
    let mut stored = Vec::new();
    for storage in [&fixture.data, &fixture.keys] {
        for space in Space::ALL {
            for (key, value) in storage.scan(space, b"", b"", usize::MAX).expect("scan") {
                stored.push(key);
                stored.push(value);
            }
        }
    }
    let needles: Vec<Vec<u8>> = std::iter::once(canary.as_bytes().to_vec())
        .chain(shares.iter().map(|s| s.as_bytes().to_vec()))
        .collect();
    for needle in needles {
        assert!(
            !stored
                .iter()
                .any(|blob| blob.windows(needle.len()).any(|w| w == needle.as_slice()))
        );
    }
}

#[test]
fn listing_reads_a_bounded_number_of_entries() {
    let (fixture, _, caller) = unsealed();
    let vault = &fixture.vault;
    let acme = tenant("acme");
    for i in 0..300 {
        vault
            .secrets()
            .put(
                &caller,
                &acme,
                &path(&format!("flat/s{i:04}")),
                data(&[("k", "v")]),
            )
            .expect("put");
    }
    for folder in 0..30 {
        for i in 0..20 {
            vault
                .secrets()
                .put(
                    &caller,
                    &acme,
                    &path(&format!("deep/f{folder:02}/s{i:02}")),
                    data(&[("k", "v")]),
                )
                .expect("put");
        }
        vault
            .secrets()
            .put(
                &caller,
                &acme,
                &path(&format!("deep/g{folder:02}")),
                data(&[("k", "v")]),
            )
            .expect("put");
    }
    let flat = FolderPrefix::parse("flat/").expect("prefix");
    let (page, read) = vault
        .list_counting(vault.tenant_id(&acme).expect("id"), &flat, 100, "", false)
        .expect("list");
    assert_eq!((page.keys.len(), read), (100, 101));
    let token = page.next_page_token.expect("more");
    let (page, read) = vault
        .list_counting(
            vault.tenant_id(&acme).expect("id"),
            &flat,
            100,
            &token,
            false,
        )
        .expect("list");
    assert_eq!(
        (page.keys.first().map(String::as_str), read),
        (Some("s0100"), 101)
    );
    // 30 folders of 20 secrets and 30 plain secrets: every page stays near its own size.
    let deep = FolderPrefix::parse("deep/").expect("prefix");
    let mut token = String::new();
    let mut listed = Vec::new();
    loop {
        let (page, read) = vault
            .list_counting(
                vault.tenant_id(&acme).expect("id"),
                &deep,
                10,
                &token,
                false,
            )
            .expect("list");
        assert!(
            read <= 2 * page.keys.len() + 2,
            "read {read} entries for a page of {}",
            page.keys.len()
        );
        listed.extend(page.keys);
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!(listed.len(), 60);
    assert_eq!(&listed[..3], ["f00/", "f01/", "f02/"]);
}

#[test]
fn a_conflicting_share_is_refused_without_losing_progress() {
    let fixture = Fixture::new();
    let shares = share_texts(
        &fixture
            .vault
            .seal()
            .init(5, 3, InitRecipients::default())
            .expect("init"),
    );
    let foreign = share_texts(
        &Fixture::new()
            .vault
            .seal()
            .init(5, 3, InitRecipients::default())
            .expect("init"),
    );
    unseal_with(&fixture.vault, &[&shares[0], &shares[1]]).expect("two");
    let conflicting = foreign.iter().find(|f| {
        UnsealShare::parse(f).map(|s| s.identifier()).ok()
            == UnsealShare::parse(&shares[0]).map(|s| s.identifier()).ok()
    });
    let error =
        unseal_with(&fixture.vault, &[conflicting.expect("same identifier")]).expect_err("refused");
    assert!(
        matches!(error, Error::InvalidArgument { field: "share", .. }),
        "{error}"
    );
    assert_eq!(fixture.vault.seal().status().progress, 2);
    assert!(
        !unseal_with(&fixture.vault, &[&shares[2]])
            .expect("third")
            .sealed
    );
}

mod access {
    use std::{
        sync::atomic::{AtomicI64, Ordering},
        time::Duration,
    };

    use super::*;
    use crate::policy::{Policy, PolicyName};

    fn policy(name: &str, rules: &[(&str, &[&str])]) -> Policy {
        let rules = rules
            .iter()
            .map(|(p, c)| ((*p).to_owned(), c.iter().map(|s| (*s).to_owned()).collect()))
            .collect();
        Policy::new(PolicyName::parse(name).expect("name"), rules).expect("policy")
    }

    fn names(list: &[&str]) -> Vec<PolicyName> {
        list.iter()
            .map(|n| PolicyName::parse(n).expect("name"))
            .collect()
    }

    /// An unsealed vault on a controllable clock, with tenants acme and globex, a policy
    /// `app` in acme, and an acme token holding it.
    struct World {
        fixture: Fixture,
        clock: Arc<AtomicI64>,
        root: Caller,
        app: Caller,
        app_accessor: String,
    }

    fn world() -> World {
        let clock = Arc::new(AtomicI64::new(1_800_000_000_000_000_000));
        let reading = Arc::clone(&clock);
        let mut fixture = Fixture::new();
        fixture.vault = Vault::open(
            DataStore::new(fixture.data.clone()),
            KeyStore::new(fixture.keys.clone()),
            VaultConfig::default(),
        )
        .expect("open")
        .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)));
        let output = fixture
            .vault
            .seal()
            .init(1, 1, InitRecipients::default())
            .expect("init");
        unseal_with(&fixture.vault, &[&share_texts(&output)[0]]).expect("unseal");
        let root = fixture.vault.authenticate(root_of(&output)).expect("root");
        for name in ["acme", "globex"] {
            fixture
                .vault
                .tenants()
                .create_tenant(&root, &tenant(name), TenantSettings::default())
                .expect("tenant");
        }
        let app = policy(
            "app",
            &[
                ("db/*", &["read", "list", "write"]),
                ("db/admin/*", &["deny"]),
                ("", &["rotate"]),
            ],
        );
        fixture
            .vault
            .access()
            .write_policy(&root, &tenant("acme"), &app)
            .expect("policy");
        fixture
            .vault
            .access()
            .write_policy(
                &root,
                &tenant("acme"),
                &policy("narrow", &[("db/narrow", &["read"])]),
            )
            .expect("policy");
        fixture
            .vault
            .secrets()
            .put(
                &root,
                &tenant("acme"),
                &path("db/admin/key"),
                data(&[("k", "v")]),
            )
            .expect("put");
        fixture
            .vault
            .secrets()
            .put(
                &root,
                &tenant("globex"),
                &path("db/x"),
                data(&[("k", "globex")]),
            )
            .expect("put");
        let request = TokenRequest {
            tenant: Some(tenant("acme")),
            system: false,
            refresh_max_ttl: None,
            policies: names(&["app", "narrow"]),
            ttl: None,
            display_name: "app".into(),
            cidrs: Vec::new(),
        };
        let created = fixture
            .vault
            .access()
            .create_token(&root, request)
            .expect("token");
        let app_accessor = created.info.accessor.clone();
        let app = fixture
            .vault
            .authenticate(&created.token)
            .expect("app token");
        World {
            fixture,
            clock,
            root,
            app,
            app_accessor,
        }
    }

    /// A get in a no-wait attempt (`vault_storage::nowait`) gives way to a writer holding a
    /// lock it needs, rather than waiting on it; run again, it takes no second rate-limit token.
    #[test]
    fn a_no_wait_get_gives_way_to_a_held_lock_and_its_second_run_is_admitted_once() {
        let w = world();
        let vault = &w.fixture.vault;
        let acme = tenant("acme");
        vault
            .secrets()
            .put(&w.root, &acme, &path("db/x"), data(&[("k", "acme")]))
            .expect("put");
        vault
            .tenants()
            .update_tenant(
                &w.root,
                &acme,
                TenantUpdate {
                    rate_limit: Some(1),
                    ..TenantUpdate::default()
                },
            )
            .expect("one call a second");
        let request = TokenRequest {
            tenant: Some(acme.clone()),
            system: false,
            refresh_max_ttl: None,
            policies: names(&["app"]),
            ttl: None,
            display_name: "limited".into(),
            cidrs: Vec::new(),
        };
        let created = vault
            .access()
            .create_token(&w.root, request)
            .expect("token");
        let get = || {
            let caller = vault.authenticate(&created.token)?;
            vault.secrets().get(&caller, &acme, &path("db/x"), 0)
        };
        let keyring = vault.keyring().expect("unsealed");
        let mut attempt = vault_storage::nowait::Attempt::new();
        std::thread::scope(|scope| {
            // A KEK change holds the tenants' key cache for writing.
            let held = write(&keyring.tenants);
            let (sender, receiver) = std::sync::mpsc::channel();
            let attempt = &mut attempt;
            let trying = scope.spawn(move || {
                let result = attempt.now(get);
                let _ = sender.send(matches!(result, Err(Error::WouldWait)));
            });
            let answered = receiver.recv_timeout(Duration::from_secs(10));
            drop(held);
            trying.join().expect("the attempt");
            assert_eq!(
                answered,
                Ok(true),
                "the no-wait get must answer WouldWait while the lock is held"
            );
        });
        let found = attempt.run(get).expect("the second run is admitted");
        assert_eq!(fields(&found), vec![("k".to_owned(), "acme".to_owned())]);
        // The limit is real: a new call within the second is refused.
        let third = vault_storage::nowait::Attempt::new().run(get);
        assert!(
            matches!(third, Err(Error::ResourceExhausted(_))),
            "{:?}",
            third.err()
        );
    }

    fn refreshable(w: &World, max: Duration) -> CreatedToken {
        let request = TokenRequest {
            tenant: Some(tenant("acme")),
            system: false,
            refresh_max_ttl: Some(max),
            policies: names(&["narrow"]),
            ttl: Some(Duration::from_secs(600)),
            display_name: "refreshing".into(),
            cidrs: Vec::new(),
        };
        w.fixture
            .vault
            .access()
            .create_token(&w.app, request)
            .expect("refreshable token")
    }

    fn advance(w: &World, by: Duration) {
        w.clock.fetch_add(by.as_nanos() as i64, Ordering::SeqCst);
    }

    #[test]
    fn a_refresh_token_reused_after_the_grace_window_revokes_its_family() {
        let w = world();
        let vault = &w.fixture.vault;
        let first = refreshable(&w, Duration::from_secs(3600));
        let refresh = first.refresh_token.as_ref().expect("refresh token");
        let second = vault.logins().refresh(refresh, None).expect("refresh");
        assert_eq!(
            second.info.entity, first.info.entity,
            "the entity outlives rotation"
        );
        advance(&w, REFRESH_GRACE + Duration::from_secs(1));
        let reuse = vault
            .logins()
            .refresh(refresh, None)
            .map(drop)
            .expect_err("reuse after grace");
        assert!(reuse.audit_detail().contains("reused"), "{reuse}");
        assert!(
            vault.authenticate(&second.token).is_err(),
            "the family's live token goes"
        );
        let next = second.refresh_token.as_ref().expect("refresh token");
        assert!(
            vault.logins().refresh(next, None).is_err(),
            "the family is revoked"
        );
    }

    #[test]
    fn a_family_ends_at_its_maximum_lifetime_and_with_its_creator() {
        let w = world();
        let vault = &w.fixture.vault;
        let first = refreshable(&w, Duration::from_secs(900));
        assert!(
            first.info.max_expires_unix_nanos <= first.info.created_unix_nanos + 900_000_000_000
        );
        advance(&w, Duration::from_secs(901));
        let ended = vault
            .logins()
            .refresh(first.refresh_token.as_ref().expect("refresh"), None)
            .map(drop)
            .expect_err("past the family's lifetime");
        assert!(ended.audit_detail().contains("maximum lifetime"), "{ended}");
        // Revoking the creator ends the families it started.
        let w = world();
        let vault = &w.fixture.vault;
        let first = refreshable(&w, Duration::from_secs(3600));
        vault
            .access()
            .revoke_token(&w.root, Some(&w.app_accessor))
            .expect("revoke the creator");
        let orphaned = vault
            .logins()
            .refresh(first.refresh_token.as_ref().expect("refresh"), None)
            .map(drop)
            .expect_err("creator revoked");
        // The cascade reached the family's access token, and with it the family.
        assert!(
            orphaned.audit_detail().contains("is revoked"),
            "{}",
            orphaned.audit_detail()
        );
    }

    #[test]
    fn deleting_a_tenant_stops_its_tokens_and_frees_its_name() {
        let w = world();
        let vault = &w.fixture.vault;
        let acme = tenant("acme");
        let token = refreshable(&w, Duration::from_secs(3600));
        vault.authenticate(&token.token).expect("alive");
        vault
            .tenants()
            .delete_tenant(&w.app, &acme)
            .map(drop)
            .expect_err("tenant tokens cannot delete tenants");
        vault
            .tenants()
            .delete_tenant(&w.root, &acme)
            .expect("delete");
        let refused = vault
            .authenticate(&token.token)
            .map(drop)
            .expect_err("tenant deleted");
        assert!(
            refused.audit_detail().contains("deleted tenant"),
            "{refused}"
        );
        assert!(
            vault
                .logins()
                .refresh(token.refresh_token.as_ref().expect("refresh"), None)
                .is_err()
        );
        // A caller authenticated before the deletion is stopped at its next operation.
        assert!(matches!(
            vault.secrets().get(&w.app, &acme, &path("db/x"), 0),
            Err(Error::Denied { .. })
        ));
        vault
            .tenants()
            .create_tenant(&w.root, &acme, TenantSettings::default())
            .expect("the name is free again");
        assert!(
            matches!(
                vault
                    .secrets()
                    .get(&w.root, &acme, &path("db/admin/key"), 0),
                Err(Error::NotFound(_))
            ),
            "the new tenant starts empty"
        );
        assert!(vault.authenticate(&token.token).is_err());
        assert!(matches!(
            vault.secrets().get(&w.app, &acme, &path("db/x"), 0),
            Err(Error::Denied { .. })
        ));
    }

    #[test]
    fn policies_decide_what_a_tenant_token_may_do() {
        let w = world();
        let vault = &w.fixture.vault;
        let acme = tenant("acme");
        vault
            .secrets()
            .put(&w.app, &acme, &path("db/app"), data(&[("k", "v")]))
            .expect("write allowed");
        vault
            .secrets()
            .get(&w.app, &acme, &path("db/app"), 0)
            .expect("read allowed");
        vault
            .secrets()
            .list(
                &w.app,
                &acme,
                &FolderPrefix::parse("db/").expect("prefix"),
                0,
                "",
                false,
            )
            .expect("list allowed");
        assert_eq!(
            vault.keks().rotate(&w.app, &acme).expect("rotate allowed"),
            2
        );
        let denied = |result: Result<()>| match result {
            Err(Error::Denied { reason }) => reason,
            other => panic!("expected a denial, got {:?}", other.err()),
        };
        let reason = denied(vault.secrets().delete(&w.app, &acme, &path("db/app")));
        assert!(reason.contains("no policy grants delete"), "{reason}");
        let reason = denied(
            vault
                .secrets()
                .get(&w.app, &acme, &path("db/admin/key"), 0)
                .map(drop),
        );
        assert!(reason.contains("denies"), "{reason}");
        denied(
            vault
                .secrets()
                .put(&w.app, &acme, &path("web/x"), data(&[("k", "v")]))
                .map(drop),
        );
        denied(
            vault
                .tenants()
                .create_tenant(&w.app, &tenant("initech"), TenantSettings::default())
                .map(drop),
        );
        denied(
            vault
                .tenants()
                .list_tenants(&w.app, &PageRequest::default())
                .map(drop),
        );
        denied(vault.seal().seal(&w.app));
        denied(
            vault
                .access()
                .write_policy(&w.app, &acme, &policy("mine", &[("*", &["admin"])])),
        );
    }

    #[test]
    fn another_tenant_and_a_missing_tenant_look_the_same() {
        let w = world();
        let vault = &w.fixture.vault;
        let existing = vault
            .secrets()
            .get(&w.app, &tenant("globex"), &path("db/x"), 0)
            .map(drop)
            .expect_err("denied");
        let missing = vault
            .secrets()
            .get(&w.app, &tenant("initech"), &path("db/x"), 0)
            .map(drop)
            .expect_err("denied");
        assert_eq!(existing.to_string(), missing.to_string());
        assert!(matches!(existing, Error::Denied { .. }));
        assert!(matches!(missing, Error::Denied { .. }));
    }

    #[test]
    fn child_tokens_take_a_subset_of_policies_and_never_outlive_their_parent() {
        let w = world();
        let vault = &w.fixture.vault;
        let ask = |policies: &[&str], tenant_name: &str| TokenRequest {
            tenant: Some(tenant(tenant_name)),
            system: false,
            refresh_max_ttl: None,
            policies: names(policies),
            ttl: Some(Duration::from_secs(10 * 3600)),
            display_name: "child".into(),
            cidrs: Vec::new(),
        };
        let child = vault
            .access()
            .create_token(&w.app, ask(&["narrow"], "acme"))
            .expect("subset");
        assert_eq!(
            child.info.expires_unix_nanos, w.app.record.expires_unix_nanos,
            "capped at the parent's expiry"
        );
        assert!(matches!(
            vault
                .access()
                .create_token(&w.app, ask(&["admin-all"], "acme")),
            Err(Error::Denied { .. })
        ));
        assert!(matches!(
            vault
                .access()
                .create_token(&w.app, ask(&["narrow"], "globex")),
            Err(Error::Denied { .. })
        ));
        assert!(matches!(
            vault
                .access()
                .create_token(&w.root, ask(&["missing"], "acme")),
            Err(Error::InvalidArgument {
                field: "policies",
                ..
            })
        ));
    }

    #[test]
    fn tokens_expire_renew_up_to_their_maximum_and_revoke_with_their_children() {
        let w = world();
        let vault = &w.fixture.vault;
        let child = vault
            .access()
            .create_token(
                &w.app,
                TokenRequest {
                    tenant: Some(tenant("acme")),
                    system: false,
                    refresh_max_ttl: None,
                    policies: names(&["narrow"]),
                    ttl: Some(Duration::from_secs(60)),
                    display_name: "child".into(),
                    cidrs: Vec::new(),
                },
            )
            .expect("child");
        let grandchild = vault
            .access()
            .create_token(
                &vault.authenticate(&child.token).expect("child"),
                TokenRequest {
                    tenant: Some(tenant("acme")),
                    system: false,
                    refresh_max_ttl: None,
                    policies: names(&["narrow"]),
                    ttl: None,
                    display_name: "grandchild".into(),
                    cidrs: Vec::new(),
                },
            )
            .expect("grandchild");
        // The parent sees its descendants; a sibling tenant token would not.
        assert_eq!(
            vault
                .access()
                .lookup_token(&w.app, Some(&grandchild.info.accessor))
                .expect("lookup")
                .display_name,
            "grandchild"
        );
        // Time passes: the 60 s child expires, renewal brings it back only while it lives.
        w.clock.fetch_add(30 * 1_000_000_000, Ordering::SeqCst);
        let renewed = vault
            .access()
            .renew_token(&w.app, Some(&child.info.accessor), None)
            .expect("renew");
        assert!(renewed.expires_unix_nanos > child.info.expires_unix_nanos);
        w.clock.fetch_add(61 * 1_000_000_000, Ordering::SeqCst);
        assert!(
            matches!(vault.authenticate(&child.token), Err(Error::Denied { reason }) if reason.contains("expired"))
        );
        // Revoking the parent revokes everything below it.
        assert_eq!(
            vault
                .access()
                .revoke_token(&w.root, Some(&w.app_accessor))
                .expect("revoke"),
            3
        );
        assert!(matches!(
            vault.authenticate(&grandchild.token),
            Err(Error::PermissionDenied)
        ));
        // The root token can be revoked too (generate-root makes a new one), and the tokens
        // it created go with it.
        assert!(
            vault
                .access()
                .revoke_token(&w.root, None)
                .expect("revoke root")
                >= 1
        );
        // It is revoked: a second revocation by it is refused.
        let again = vault.access().revoke_token(&w.root, None);
        assert!(matches!(again, Err(Error::Denied { .. })), "{again:?}");
    }

    #[test]
    fn children_die_with_their_parent_and_renew_no_further_than_it() {
        let w = world();
        let vault = &w.fixture.vault;
        let ask = |ttl: u64| TokenRequest {
            tenant: Some(tenant("acme")),
            system: false,
            refresh_max_ttl: None,
            policies: names(&["narrow"]),
            ttl: Some(Duration::from_secs(ttl)),
            display_name: "child".into(),
            cidrs: Vec::new(),
        };
        // app lives 1 h; its child asks for 10 h and gets app's expiry.
        let child = vault
            .access()
            .create_token(&w.app, ask(36_000))
            .expect("child");
        let child_caller = vault.authenticate(&child.token).expect("child");
        let renewed = vault
            .access()
            .renew_token(&child_caller, None, Some(Duration::from_secs(36_000)))
            .expect("renew");
        assert_eq!(
            renewed.expires_unix_nanos, w.app.record.expires_unix_nanos,
            "never past the parent"
        );
        // The parent expires: the child goes with it, and cannot be renewed back.
        w.clock.fetch_add(3601 * 1_000_000_000, Ordering::SeqCst);
        let error = vault.authenticate(&child.token).expect_err("dead");
        assert!(
            matches!(&error, Error::Denied { reason } if reason.contains("expired")),
            "{error:?}"
        );
        assert!(
            vault
                .access()
                .renew_token(&w.root, Some(&child.info.accessor), None)
                .is_err()
        );
    }

    #[test]
    fn a_recursive_listing_hides_names_under_denied_paths() {
        let w = world();
        let vault = &w.fixture.vault;
        vault
            .secrets()
            .put(
                &w.root,
                &tenant("acme"),
                &path("db/app/x"),
                data(&[("k", "v")]),
            )
            .expect("put");
        let listed = vault
            .secrets()
            .list(
                &w.app,
                &tenant("acme"),
                &FolderPrefix::parse("db/").expect("prefix"),
                0,
                "",
                true,
            )
            .expect("list");
        assert_eq!(listed.keys, ["app/x"]);
        let top = vault
            .secrets()
            .list(
                &w.app,
                &tenant("acme"),
                &FolderPrefix::parse("db/").expect("prefix"),
                0,
                "",
                false,
            )
            .expect("list");
        assert_eq!(top.keys, ["app/"]);
        let all = vault
            .secrets()
            .list(
                &w.root,
                &tenant("acme"),
                &FolderPrefix::parse("db/").expect("prefix"),
                0,
                "",
                true,
            )
            .expect("list");
        assert_eq!(all.keys, ["admin/key", "app/x"]);
    }

    #[test]
    fn display_names_are_bounded_and_printable() {
        let w = world();
        let request = |name: &str| TokenRequest {
            tenant: Some(tenant("acme")),
            system: false,
            refresh_max_ttl: None,
            policies: names(&["narrow"]),
            ttl: None,
            display_name: name.into(),
            cidrs: Vec::new(),
        };
        for bad in ["a\u{1b}[31mred".to_owned(), "x".repeat(129)] {
            assert!(matches!(
                w.fixture
                    .vault
                    .access()
                    .create_token(&w.root, request(&bad)),
                Err(Error::InvalidArgument {
                    field: "display_name",
                    ..
                })
            ));
        }
    }

    #[test]
    fn network_bound_tokens_work_only_from_their_networks_and_so_do_their_children() {
        use crate::cidr::Cidr;
        let w = world();
        let vault = &w.fixture.vault;
        let bound = vault
            .access()
            .create_token(
                &w.root,
                TokenRequest {
                    tenant: Some(tenant("acme")),
                    system: false,
                    refresh_max_ttl: None,
                    policies: names(&["narrow"]),
                    ttl: None,
                    display_name: "office".into(),
                    cidrs: vec![Cidr::parse("10.0.0.0/8").expect("cidr")],
                },
            )
            .expect("token");
        let inside = "10.1.2.3".parse().ok();
        let outside = "192.168.1.1".parse().ok();
        let caller = vault
            .authenticate_from(&bound.token, inside)
            .expect("from inside");
        let refused = vault
            .authenticate_from(&bound.token, outside)
            .expect_err("from outside");
        assert!(
            matches!(&refused, Error::Denied { reason } if reason.contains("may not be used from 192.168.1.1")),
            "{refused:?}"
        );
        assert!(
            matches!(vault.authenticate(&bound.token), Err(Error::Denied { .. })),
            "unknown source"
        );
        // A child without restrictions of its own still carries its parent's.
        let child = vault
            .access()
            .create_token(
                &caller,
                TokenRequest {
                    tenant: Some(tenant("acme")),
                    system: false,
                    refresh_max_ttl: None,
                    policies: names(&["narrow"]),
                    ttl: None,
                    display_name: "child".into(),
                    cidrs: Vec::new(),
                },
            )
            .expect("child");
        vault
            .authenticate_from(&child.token, inside)
            .expect("child inside");
        assert!(matches!(
            vault.authenticate_from(&child.token, outside),
            Err(Error::Denied { .. })
        ));
    }
}

/// With an auto seal: init unseals, the shares are recovery shares that unseal nothing, a
/// rekey with root rotation replaces them and re-wraps the new root key's unseal key, and the
/// vault unseals itself again after a restart with the seal (and not without it).
#[test]
fn an_auto_sealed_vault_rekeys_its_recovery_shares_with_root_rotation_and_unseals_itself() {
    use crate::autoseal::{AutoSeal, FileSeal};
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("seal.key");
    std::fs::write(&key_file, "11".repeat(32)).expect("key file");
    let seal: Arc<dyn AutoSeal> = Arc::new(FileSeal::from_file(&key_file).expect("seal"));
    let fixture = Fixture::new();
    let vault = fixture.restart().with_auto_seal(Arc::clone(&seal));
    let output = vault
        .seal()
        .init(3, 2, InitRecipients::default())
        .expect("init");
    assert_eq!(output.seal_type, "danger-file");
    let status = vault.seal().status();
    assert!(!status.sealed, "init unseals with an auto seal");
    let caller = vault.authenticate(root_of(&output)).expect("root");
    let acme = tenant("acme");
    vault
        .tenants()
        .create_tenant(&caller, &acme, TenantSettings::default())
        .expect("tenant");
    vault
        .secrets()
        .put(
            &caller,
            &acme,
            &path("db/primary"),
            data(&[("password", "p1")]),
        )
        .expect("put");
    let shares = share_texts(&output);
    let share = |text: &String| UnsealShare::parse(text).expect("share");

    let started = vault
        .seal()
        .rekey_init(&caller, 2, 2, true, Vec::new())
        .expect("rekey init");
    vault
        .seal()
        .rekey_submit(&started.nonce, share(&shares[0]))
        .expect("first");
    let staged = vault
        .seal()
        .rekey_submit(&started.nonce, share(&shares[2]))
        .expect("second");
    let new = plain_shares(&staged.new_shares);
    for fresh in &new {
        vault
            .seal()
            .rekey_verify(&staged.verification_nonce, share(fresh))
            .expect("verify");
    }
    let root_status = vault
        .keks()
        .key_status(&caller, None, &PageRequest::default())
        .expect("status")
        .root
        .expect("root");
    assert_eq!(root_status.version, 2);
    assert_eq!(
        vault
            .seal()
            .verify_share(&share(&shares[0]))
            .expect("check"),
        ShareCheck::NotCurrent
    );
    assert_eq!(
        vault.seal().verify_share(&share(&new[0])).expect("check"),
        ShareCheck::Current
    );

    let again = fixture.restart().with_auto_seal(Arc::clone(&seal));
    assert!(!again.seal().unseal_auto().expect("auto unseal").sealed);
    let caller = again.authenticate(root_of(&output)).expect("root");
    let read = again
        .secrets()
        .get(&caller, &acme, &path("db/primary"), 0)
        .expect("get");
    assert_eq!(fields(&read), [("password".to_owned(), "p1".to_owned())]);
    let without = fixture.restart();
    assert!(matches!(
        without.seal().unseal_auto(),
        Err(Error::FailedPrecondition(_))
    ));
    // Without the seal, recovery shares open nothing either.
    assert!(matches!(
        without.seal().unseal(share(&new[0])),
        Err(Error::FailedPrecondition(_))
    ));
}

/// An auto seal that holds its first wrap until the test lets it go.
struct GatedSeal {
    inner: crate::autoseal::FileSeal,
    entered: Mutex<std::sync::mpsc::Sender<()>>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl crate::autoseal::AutoSeal for GatedSeal {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
    fn id(&self) -> String {
        self.inner.id()
    }
    fn wrap(&self, key: &SecretKey, version: u32) -> Result<String> {
        let _ = lock(&self.entered).send(());
        let _ = lock(&self.release).recv();
        self.inner.wrap(key, version)
    }
    fn unwrap(&self, wrapped: &str, version: u32) -> Result<SecretKey> {
        self.inner.unwrap(wrapped, version)
    }
}

/// A migration whose final submission is waiting on the seal is not cancelled by a share
/// holder, and one sealed meanwhile does not commit: the vault stays Shamir-sealed, and
/// nothing deadlocks while the seal is asked.
#[test]
fn a_migration_waiting_on_its_seal_cannot_be_cancelled_and_does_not_commit_after_a_seal() {
    let (fixture, shares, _) = unsealed();
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("seal.key");
    std::fs::write(&key_file, "22".repeat(32)).expect("key file");
    let (entered_tx, entered) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let seal = Arc::new(GatedSeal {
        inner: crate::autoseal::FileSeal::from_file(&key_file).expect("seal"),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    });
    let vault = fixture.restart().with_auto_seal(seal);
    unseal_with(&vault, &[&shares[0], &shares[1], &shares[2]]).expect("unseal");
    let share = |text: &String| UnsealShare::parse(text).expect("share");
    let started = vault
        .seal()
        .seal_migrate_init(SealTarget::Auto, share(&shares[0]))
        .expect("init");
    vault
        .seal()
        .seal_migrate_submit(&started.nonce, share(&shares[1]))
        .expect("second");
    std::thread::scope(|scope| {
        let last = scope.spawn(|| {
            vault
                .seal()
                .seal_migrate_submit(&started.nonce, share(&shares[2]))
        });
        entered.recv().expect("the wrap started");
        // Meanwhile the vault answers: status, the share check, a cancel (refused).
        assert!(!vault.seal().status().sealed);
        assert!(matches!(
            vault.seal().seal_migrate_cancel(&share(&shares[3])),
            Err(Error::FailedPrecondition(_))
        ));
        let root = vault
            .authenticate(&Token::from_presented(fixture.root.clone()).expect("token"))
            .expect("root");
        vault.seal().seal(&root).expect("seal");
        release.send(()).expect("release");
        let outcome = last.join().expect("no panic");
        assert!(
            matches!(&outcome, Err(Error::FailedPrecondition(m)) if m.contains("cancelled")),
            "{:?}",
            outcome.map(|p| p.complete)
        );
    });
    assert_eq!(vault.seal().status().seal_type, "shamir");
}
