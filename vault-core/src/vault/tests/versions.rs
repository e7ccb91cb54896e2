//! Versioned secrets, the change feed, expiry and webhooks, on a controllable clock.

use std::sync::atomic::{AtomicI64, Ordering};

use super::*;
use crate::policy::PolicyName;

const START: i64 = 1_800_000_000_000_000_000;
const SECOND: i64 = 1_000_000_000;
const HOUR: i64 = 3_600 * SECOND;

struct Lab {
    fixture: Fixture,
    clock: Arc<AtomicI64>,
    root: Caller,
    config: VaultConfig,
}

impl Lab {
    fn vault(&self) -> &Vault {
        &self.fixture.vault
    }

    fn advance(&self, nanos: i64) {
        self.clock.fetch_add(nanos, Ordering::SeqCst);
    }

    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn put(&self, name: &str, value: &str) -> PutOutcome {
        self.vault()
            .secrets()
            .put(
                &self.root,
                &tenant("acme"),
                &path(name),
                data(&[("v", value)]),
            )
            .expect("put")
    }

    fn read(&self, name: &str, version: u64) -> Result<String> {
        self.vault()
            .secrets()
            .get(&self.root, &tenant("acme"), &path(name), version)
            .map(|found| {
                let (_, value) = found.data.expose_secret().next().expect("a field");
                String::from_utf8(value.to_vec()).expect("utf-8")
            })
    }

    /// The same stores opened again, as after a restart, unsealed.
    fn restart(&mut self) {
        let reading = Arc::clone(&self.clock);
        self.fixture.vault = Vault::open(
            DataStore::new(self.fixture.data.clone()),
            KeyStore::new(self.fixture.keys.clone()),
            self.config.clone(),
        )
        .expect("reopen")
        .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)));
        let share = unseal_share(self);
        unseal_with(&self.fixture.vault, &[&share]).expect("unseal");
        self.root = self.vault().authenticate(&self.root_token()).expect("root");
    }

    fn root_token(&self) -> Token {
        Token::from_presented(
            self.fixture
                .root
                .split('|')
                .nth(1)
                .expect("token")
                .to_owned(),
        )
        .expect("token")
    }

    /// A token of tenant acme holding one policy with `rules`.
    fn token(&self, name: &str, rules: &[(&str, &[&str])]) -> Caller {
        let policy = Policy::new(
            PolicyName::parse(name).expect("name"),
            rules
                .iter()
                .map(|(p, caps)| {
                    (
                        (*p).to_owned(),
                        caps.iter().map(|c| (*c).to_owned()).collect(),
                    )
                })
                .collect(),
        )
        .expect("policy");
        self.vault()
            .access()
            .write_policy(&self.root, &tenant("acme"), &policy)
            .expect("write policy");
        let created = self
            .vault()
            .access()
            .create_token(
                &self.root,
                TokenRequest {
                    tenant: Some(tenant("acme")),
                    policies: vec![PolicyName::parse(name).expect("name")],
                    system: false,
                    ttl: None,
                    display_name: name.into(),
                    cidrs: Vec::new(),
                    refresh_max_ttl: None,
                },
            )
            .expect("token");
        self.vault().authenticate(&created.token).expect("auth")
    }
}

fn lab_with(config: VaultConfig) -> Lab {
    let clock = Arc::new(AtomicI64::new(START));
    let reading = Arc::clone(&clock);
    let mut fixture = Fixture::new();
    fixture.vault = Vault::open(
        DataStore::new(fixture.data.clone()),
        KeyStore::new(fixture.keys.clone()),
        config.clone(),
    )
    .expect("open")
    .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)));
    let output = fixture
        .vault
        .seal()
        .init(1, 1, InitRecipients::default())
        .expect("init");
    let share = share_texts(&output).remove(0);
    unseal_with(&fixture.vault, &[&share]).expect("unseal");
    let root = fixture.vault.authenticate(root_of(&output)).expect("root");
    fixture
        .vault
        .tenants()
        .create_tenant(&root, &tenant("acme"), TenantSettings::default())
        .expect("tenant");
    // The share, then the root token: what a restart needs.
    fixture.root = format!("{share}|{}", root_of(&output).expose_secret());
    Lab {
        fixture,
        clock,
        root,
        config,
    }
}

fn lab() -> Lab {
    lab_with(VaultConfig::default())
}

fn unseal_share(lab: &Lab) -> String {
    lab.fixture
        .root
        .split('|')
        .next()
        .expect("share")
        .to_owned()
}

/// Every event of acme visible to `caller` after `from`, until caught up.
fn drain(vault: &Vault, caller: &Caller, prefix: &str, from: u64) -> Vec<Event> {
    let mut cursor = vault
        .changes()
        .watch_open(caller, &tenant("acme"), prefix, from, false)
        .expect("watch");
    let mut events = Vec::new();
    loop {
        let batch = vault
            .changes()
            .watch_next(caller, &mut cursor)
            .expect("next");
        if batch.is_empty() {
            return events;
        }
        events.extend(batch);
    }
}

fn kinds(events: &[Event]) -> Vec<(EventKind, &str, Vec<u64>)> {
    events
        .iter()
        .map(|e| (e.kind, e.path.as_str(), e.versions.clone()))
        .collect()
}

#[test]
fn versions_have_history_and_check_and_set_guards_writes() {
    let lab = lab();
    let vault = lab.vault();
    let acme = tenant("acme");
    for value in ["one", "two", "three"] {
        lab.advance(SECOND);
        lab.put("db/pw", value);
    }
    assert_eq!(lab.read("db/pw", 0).expect("current"), "three");
    assert_eq!(lab.read("db/pw", 1).expect("v1"), "one");
    assert!(matches!(lab.read("db/pw", 4), Err(Error::NotFound(_))));

    let meta = vault
        .secrets()
        .read_metadata(&lab.root, &acme, &path("db/pw"))
        .expect("metadata");
    assert_eq!((meta.current_version, meta.oldest_version), (3, 1));
    assert_eq!(meta.versions.len(), 3);
    assert_eq!(meta.versions[1].created_unix_nanos, START + 2 * SECOND);
    assert_eq!(meta.versions[2].author, lab.root.accessor());
    assert_eq!(meta.effective_max_versions, DEFAULT_MAX_VERSIONS);

    // Check-and-set: the expected version must be the current one; 0 only creates.
    let cas = |name: &str, expected| {
        vault.secrets().put_checked(
            &lab.root,
            &acme,
            &path(name),
            data(&[("v", "x")]),
            Some(expected),
        )
    };
    match cas("db/pw", 2) {
        Err(Error::CasMismatch {
            expected: 2,
            current: 3,
            ..
        }) => {}
        other => panic!("expected a mismatch, got {:?}", other.map(|o| o.version)),
    }
    assert!(matches!(
        cas("db/pw", 0),
        Err(Error::CasMismatch { current: 3, .. })
    ));
    assert_eq!(cas("db/pw", 3).expect("cas").version, 4);
    assert_eq!(cas("db/new", 0).expect("create").version, 1);
    assert_eq!(lab.read("db/pw", 0).expect("current"), "x");

    // Required per secret, then per tenant: a write without cas is refused naming the field.
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &path("db/pw"),
            MetadataUpdate {
                cas_required: Some(true),
                ..Default::default()
            },
        )
        .expect("metadata");
    let refused = vault
        .secrets()
        .put(&lab.root, &acme, &path("db/pw"), data(&[("v", "y")]));
    assert!(matches!(
        refused,
        Err(Error::InvalidArgument { field: "cas", .. })
    ));
    lab.put("db/other", "fine");
    vault
        .tenants()
        .update_tenant(
            &lab.root,
            &acme,
            TenantUpdate {
                cas_required: Some(true),
                ..Default::default()
            },
        )
        .expect("tenant");
    let refused = vault
        .secrets()
        .put(&lab.root, &acme, &path("db/other"), data(&[("v", "y")]));
    assert!(matches!(
        refused,
        Err(Error::InvalidArgument { field: "cas", .. })
    ));
    assert_eq!(cas("db/other", 1).expect("with cas").version, 2);
}

#[test]
fn concurrent_check_and_set_writers_exactly_one_wins() {
    let lab = lab();
    lab.put("race", "start");
    let outcomes: Vec<Result<PutOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let lab = &lab;
                scope.spawn(move || {
                    lab.vault().secrets().put_checked(
                        &lab.root,
                        &tenant("acme"),
                        &path("race"),
                        data(&[("v", &format!("writer {i}"))]),
                        Some(1),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    assert_eq!(won.len(), 1, "exactly one writer wins");
    assert_eq!(won[0].version, 2);
    for lost in outcomes.iter().filter(|o| o.is_err()) {
        assert!(matches!(
            lost,
            Err(Error::CasMismatch {
                expected: 1,
                current: 2,
                ..
            })
        ));
    }
    assert_eq!(
        lab.vault()
            .secrets()
            .read_metadata(&lab.root, &tenant("acme"), &path("race"))
            .expect("metadata")
            .current_version,
        2
    );
}

#[test]
fn soft_delete_undelete_destroy_and_delete_all() {
    let lab = lab();
    let vault = lab.vault();
    let acme = tenant("acme");
    let secret = path("app/key");
    for value in ["a", "b", "c"] {
        lab.put("app/key", value);
    }
    // Delete without versions: the current one.
    let change = vault
        .secrets()
        .delete_versions(&lab.root, &acme, &secret, &[])
        .expect("delete");
    assert_eq!(change.versions, [3]);
    match lab.read("app/key", 0) {
        Err(error @ Error::Gone { .. }) => {
            assert!(error.to_string().contains("deleted at"), "{error}")
        }
        other => panic!("expected deleted, got {other:?}"),
    }
    assert_eq!(lab.read("app/key", 2).expect("v2 still reads"), "b");
    // Undelete restores; repeating it changes nothing.
    let change = vault
        .secrets()
        .undelete_versions(&lab.root, &acme, &secret, &[3])
        .expect("undelete");
    assert_eq!(
        (change.versions.as_slice(), change.revision > 0),
        (&[3][..], true)
    );
    assert_eq!(lab.read("app/key", 0).expect("back"), "c");
    assert!(
        vault
            .secrets()
            .undelete_versions(&lab.root, &acme, &secret, &[3])
            .expect("again")
            .versions
            .is_empty()
    );
    // Destroy removes the ciphertext for good.
    let id = vault.tenant_id(&acme).expect("id");
    vault
        .secrets()
        .destroy_versions(&lab.root, &acme, &secret, &[1])
        .expect("destroy");
    assert!(
        fixture_get(&lab, &version_key(id, &secret, 1)).is_none(),
        "the destroyed version's record is gone"
    );
    match lab.read("app/key", 1) {
        Err(error @ Error::Gone { .. }) => assert!(error.to_string().contains("destroyed")),
        other => panic!("expected destroyed, got {other:?}"),
    }
    assert!(
        vault
            .secrets()
            .undelete_versions(&lab.root, &acme, &secret, &[1])
            .expect("no-op")
            .versions
            .is_empty(),
        "a destroyed version cannot come back"
    );
    let history = vault
        .secrets()
        .read_metadata(&lab.root, &acme, &secret)
        .expect("metadata");
    assert!(history.versions[0].destroyed);
    assert_eq!(history.versions[2].deleted_unix_nanos, 0);
    // Bad input names the field.
    assert!(matches!(
        vault
            .secrets()
            .destroy_versions(&lab.root, &acme, &secret, &[]),
        Err(Error::InvalidArgument {
            field: "versions",
            ..
        })
    ));
    assert!(matches!(
        vault
            .secrets()
            .delete_versions(&lab.root, &acme, &secret, &[0]),
        Err(Error::InvalidArgument {
            field: "versions",
            ..
        })
    ));
    assert!(matches!(
        vault
            .secrets()
            .delete_versions(&lab.root, &acme, &secret, &[9]),
        Err(Error::NotFound(_))
    ));
    // Delete everything: the next put starts at 1.
    let all = vault
        .secrets()
        .delete_metadata(&lab.root, &acme, &secret)
        .expect("delete all");
    assert_eq!(all.versions, [2, 3]);
    assert!(matches!(
        vault.secrets().read_metadata(&lab.root, &acme, &secret),
        Err(Error::NotFound(_))
    ));
    assert_eq!(lab.put("app/key", "fresh").version, 1);
}

fn fixture_get(lab: &Lab, key: &[u8]) -> Option<Vec<u8>> {
    lab.fixture.data.get(Space::Secrets, key).expect("get")
}

#[test]
fn max_versions_prunes_the_oldest_and_destroys_their_keys() {
    let lab = lab();
    let vault = lab.vault();
    let acme = tenant("acme");
    let secret = path("rotating");
    let id = vault.tenant_id(&acme).expect("id");
    lab.put("rotating", "v1");
    lab.put("rotating", "v2");
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &secret,
            MetadataUpdate {
                max_versions: Some(3),
                ..Default::default()
            },
        )
        .expect("metadata");
    let before = vault.committed_revision(id).expect("revision");
    for i in 3..=6 {
        lab.put("rotating", &format!("v{i}"));
    }
    let meta = vault
        .secrets()
        .read_metadata(&lab.root, &acme, &secret)
        .expect("metadata");
    let kept: Vec<u64> = meta.versions.iter().map(|v| v.version).collect();
    assert_eq!(kept, [4, 5, 6]);
    for gone in 1..=3 {
        assert!(
            fixture_get(&lab, &version_key(id, &secret, gone)).is_none(),
            "v{gone}"
        );
        assert!(matches!(
            lab.read("rotating", gone),
            Err(Error::Gone { .. })
        ));
    }
    assert_eq!(lab.read("rotating", 4).expect("v4"), "v4");
    // Each pruning is a destroyed event.
    let pruned: Vec<Vec<u64>> = drain(vault, &lab.root, "", before)
        .into_iter()
        .filter(|e| e.kind == EventKind::Destroyed)
        .map(|e| {
            assert_eq!(e.detail, "pruned past max_versions");
            e.versions
        })
        .collect();
    assert_eq!(pruned, [vec![1], vec![2], vec![3]]);
    // Lowering the limit prunes at once; the tenant default applies when the secret has none.
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &secret,
            MetadataUpdate {
                max_versions: Some(1),
                ..Default::default()
            },
        )
        .expect("metadata");
    assert!(fixture_get(&lab, &version_key(id, &secret, 5)).is_none());
    assert!(matches!(
        vault.secrets().update_metadata(
            &lab.root,
            &acme,
            &secret,
            MetadataUpdate {
                max_versions: Some(1_000_000),
                ..Default::default()
            },
        ),
        Err(Error::InvalidArgument {
            field: "max_versions",
            ..
        })
    ));
}

#[test]
fn patch_changes_some_fields_and_keeps_the_rest() {
    let lab = lab();
    let vault = lab.vault();
    let acme = tenant("acme");
    vault
        .secrets()
        .put(
            &lab.root,
            &acme,
            &path("db"),
            data(&[("user", "app"), ("password", "old"), ("host", "db1")]),
        )
        .expect("put");
    let patched = vault
        .secrets()
        .patch(
            &lab.root,
            &acme,
            &path("db"),
            data(&[("password", "new")]),
            &["host".to_owned()],
            Some(1),
        )
        .expect("patch");
    assert_eq!(patched.version, 2);
    let read = vault
        .secrets()
        .get(&lab.root, &acme, &path("db"), 0)
        .expect("get");
    let fields: Vec<(String, String)> = read
        .data
        .expose_secret()
        .map(|(k, v)| (k.to_owned(), String::from_utf8(v.to_vec()).expect("utf-8")))
        .collect();
    assert_eq!(
        fields,
        [
            ("password".to_owned(), "new".to_owned()),
            ("user".to_owned(), "app".to_owned())
        ]
    );
    assert!(matches!(
        vault
            .secrets()
            .patch(&lab.root, &acme, &path("db"), SecretData::new(), &[], None),
        Err(Error::InvalidArgument { field: "data", .. })
    ));
    assert!(matches!(
        vault.secrets().patch(
            &lab.root,
            &acme,
            &path("nothing"),
            data(&[("a", "b")]),
            &[],
            None
        ),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn listing_100000_secrets_reads_one_page_plus_one_per_page_and_returns_each_once_in_order() {
    let lab = lab();
    let vault = lab.vault();
    let acme = tenant("acme");
    let total = 100_000;
    for i in 0..total {
        lab.put(&format!("big/s{i:06}"), "x");
    }
    let prefix = FolderPrefix::parse("big/").expect("prefix");
    let page_size = 1000;
    let mut token = String::new();
    let mut seen = 0usize;
    let mut pages = 0;
    loop {
        let (page, read) = vault
            .list_counting(
                vault.tenant_id(&acme).expect("id"),
                &prefix,
                page_size,
                &token,
                false,
            )
            .expect("list");
        assert!(
            read <= page_size + 1,
            "page {pages} read {read} entries from storage"
        );
        for key in &page.keys {
            assert_eq!(key, &format!("s{seen:06}"), "in order, each once");
            seen += 1;
        }
        pages += 1;
        match page.next_page_token {
            Some(next) => token = next,
            None => break,
        }
    }
    assert_eq!((seen, pages), (total, total / page_size));
}

#[test]
fn revisions_are_per_tenant_monotonic_and_survive_a_restart() {
    let mut lab = lab();
    let globex = tenant("globex");
    lab.vault()
        .tenants()
        .create_tenant(&lab.root, &globex, TenantSettings::default())
        .expect("tenant");
    let first = lab.put("a", "1").revision;
    let second = lab.put("b", "1").revision;
    assert_eq!(second, first + 1);
    let other = lab
        .vault()
        .secrets()
        .put(&lab.root, &globex, &path("a"), data(&[("v", "1")]))
        .expect("put")
        .revision;
    assert_eq!(other, 1, "globex has its own feed");
    lab.put("a", "2");
    lab.vault()
        .secrets()
        .delete_versions(&lab.root, &tenant("acme"), &path("a"), &[1])
        .expect("delete");
    let before = drain(lab.vault(), &lab.root, "", 0);
    assert_eq!(
        kinds(&before),
        [
            (EventKind::Created, "a", vec![1]),
            (EventKind::Created, "b", vec![1]),
            (EventKind::Updated, "a", vec![2]),
            (EventKind::Deleted, "a", vec![1]),
        ]
    );
    let last = before.last().expect("events").revision;
    lab.restart();
    let next = lab.put("c", "1").revision;
    assert_eq!(next, last + 1, "a restart continues the revisions");
    let after = drain(lab.vault(), &lab.root, "", last);
    assert_eq!(kinds(&after), [(EventKind::Created, "c", vec![1])]);
    // Values never appear in an event.
    for name in ["acme", "globex"] {
        let prefix =
            crate::schema::events_prefix(lab.vault().tenant_id(&tenant(name)).expect("id"));
        let stored = lab
            .fixture
            .data
            .scan(Space::Secrets, &prefix, &prefix, usize::MAX)
            .expect("scan");
        assert!(!stored.is_empty(), "{name} has events");
        for (_, value) in stored {
            let text = String::from_utf8(value).expect("json");
            assert!(!text.contains("\"1\"") && !text.contains("\"2\""), "{text}");
        }
    }
}

#[test]
fn a_watch_sees_only_what_its_policies_allow_and_key_rotations_only_as_admin() {
    let lab = lab();
    let vault = lab.vault();
    let reader = lab.token("db-reader", &[("db/*", &["read"]), ("db/", &["list"])]);
    let admin = lab.token("admin", &[("*", &["admin", "list", "read"])]);
    lab.put("db/one", "x");
    lab.put("web/two", "x");
    vault
        .keks()
        .rotate(&lab.root, &tenant("acme"))
        .expect("rotate");
    lab.put("db/three", "x");

    let seen = drain(vault, &reader, "db/", 0);
    assert_eq!(
        kinds(&seen),
        [
            (EventKind::Created, "db/one", vec![1]),
            (EventKind::Created, "db/three", vec![1]),
        ]
    );
    // Watching where it may neither read nor list is refused.
    assert!(matches!(
        vault
            .changes()
            .watch_open(&reader, &tenant("acme"), "web/", 0, false),
        Err(Error::Denied { .. })
    ));
    let everything = drain(vault, &admin, "", 0);
    let rotated: Vec<&Event> = everything
        .iter()
        .filter(|e| e.kind == EventKind::KeyRotated)
        .collect();
    assert_eq!(rotated.len(), 1);
    assert_eq!(rotated[0].key_version, 2);
    assert_eq!(everything.len(), 4);
    // One secret's path works as a prefix too.
    assert_eq!(drain(vault, &admin, "web/two", 0).len(), 1);
    assert!(matches!(
        vault
            .changes()
            .watch_open(&admin, &tenant("acme"), "", 999, false),
        Err(Error::InvalidArgument {
            field: "from_revision",
            ..
        })
    ));
}

#[test]
fn concurrent_writers_never_let_a_watcher_skip_a_revision() {
    let lab = lab();
    let vault = lab.vault();
    let writers = 4;
    let each = 150;
    let done = std::sync::atomic::AtomicUsize::new(0);
    let seen = std::thread::scope(|scope| {
        for w in 0..writers {
            let lab = &lab;
            let done = &done;
            scope.spawn(move || {
                for i in 0..each {
                    lab.put(&format!("w{w}/s{i}"), "x");
                }
                done.fetch_add(1, Ordering::SeqCst);
            });
        }
        let mut cursor = vault
            .changes()
            .watch_open(&lab.root, &tenant("acme"), "", 0, false)
            .expect("watch");
        let mut seen = Vec::new();
        loop {
            let finished = done.load(Ordering::SeqCst) == writers;
            let batch = vault
                .changes()
                .watch_next(&lab.root, &mut cursor)
                .expect("next");
            let empty = batch.is_empty();
            seen.extend(batch.into_iter().map(|e| e.revision));
            if finished && empty {
                break seen;
            }
        }
    });
    let expected: Vec<u64> = (1..=(writers * each) as u64).collect();
    assert_eq!(seen, expected, "every revision once, in order");
}

#[test]
fn retention_prunes_old_events_and_resuming_before_them_is_out_of_range() {
    let mut config = VaultConfig::default();
    config.feed.retention_nanos = HOUR;
    let lab = lab_with(config);
    let vault = lab.vault();
    for i in 0..5 {
        lab.put(&format!("s{i}"), "x");
    }
    lab.advance(2 * HOUR);
    lab.put("late", "x");
    // Each task runs on its own: expiry prunes nothing, feed pruning does, once.
    let expiry = vault.run_task(Task::Expiry).expect("expiry");
    assert_eq!(
        (expiry.task, expiry.done.events_pruned, expiry.failed),
        (Task::Expiry, 0, 0)
    );
    let pruning = vault.run_task(Task::FeedPruning).expect("pruning");
    assert_eq!((pruning.done.events_pruned, pruning.failed), (5, 0));
    let report = vault.maintain().expect("maintain");
    assert_eq!(report.events_pruned, 0, "pruned already");
    match vault
        .changes()
        .watch_open(&lab.root, &tenant("acme"), "", 2, false)
    {
        Err(error @ Error::OutOfRange(_)) => {
            let text = error.to_string();
            assert!(text.contains("list the secrets again"), "{text}");
        }
        other => panic!("expected out of range, got {:?}", other.map(|c| c.revision)),
    }
    // Resuming from the last pruned revision (5) still works: nothing after it is missing.
    let events = drain(vault, &lab.root, "", 5);
    assert_eq!(kinds(&events), [(EventKind::Created, "late", vec![1])]);
    // A listing reports the revision to watch from.
    let page = vault
        .secrets()
        .list(
            &lab.root,
            &tenant("acme"),
            &FolderPrefix::parse("").expect("p"),
            0,
            "",
            false,
        )
        .expect("list");
    assert_eq!(page.revision, 6);
    let cursor = vault
        .changes()
        .watch_open(&lab.root, &tenant("acme"), "", 0, true)
        .expect("from now");
    assert_eq!(cursor.revision, 6);
}

#[test]
fn deadlines_send_expiring_then_expired_and_expired_secrets_do_not_read() {
    let mut config = VaultConfig::default();
    config.feed.expiry_lead_nanos = HOUR;
    let lab = lab_with(config);
    let vault = lab.vault();
    let acme = tenant("acme");
    lab.put("cert", "pem");
    lab.put("api", "key");
    let start = vault
        .committed_revision(vault.tenant_id(&acme).expect("id"))
        .expect("rev");
    let deadline = lab.now() + 3 * HOUR;
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &path("cert"),
            MetadataUpdate {
                expires_at_unix_nanos: Some(deadline),
                ..Default::default()
            },
        )
        .expect("metadata");
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &path("api"),
            MetadataUpdate {
                rotate_by_unix_nanos: Some(lab.now() + 10 * HOUR),
                ..Default::default()
            },
        )
        .expect("metadata");
    vault.maintain().expect("maintain");
    assert!(
        drain(vault, &lab.root, "", start).is_empty(),
        "nothing due yet"
    );

    lab.advance(2 * HOUR + SECOND);
    assert_eq!(vault.maintain().expect("maintain").expiry_events, 1);
    let events = drain(vault, &lab.root, "", start);
    assert_eq!(kinds(&events), [(EventKind::Expiring, "cert", vec![1])]);
    assert_eq!(events[0].deadline_unix_nanos, deadline);
    assert_eq!(events[0].detail, "expires_at");
    assert_eq!(lab.read("cert", 0).expect("still reads"), "pem");
    // A second round sends nothing new.
    assert_eq!(vault.maintain().expect("maintain").expiry_events, 0);

    lab.advance(HOUR);
    assert_eq!(vault.maintain().expect("maintain").expiry_events, 1);
    let events = drain(vault, &lab.root, "", start);
    assert_eq!(events.last().map(|e| e.kind), Some(EventKind::Expired));
    match lab.read("cert", 0) {
        Err(error @ Error::Gone { .. }) => assert!(error.to_string().contains("expired at")),
        other => panic!("expected expired, got {other:?}"),
    }
    // Changing the other deadline does not send the expired notice again.
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &path("cert"),
            MetadataUpdate {
                rotate_by_unix_nanos: Some(START + 1_000 * HOUR),
                ..Default::default()
            },
        )
        .expect("metadata");
    assert_eq!(vault.maintain().expect("maintain").expiry_events, 0);
    // Moving a deadline drops the pending notice: rotate_by moves from +10h to +100h.
    vault
        .secrets()
        .update_metadata(
            &lab.root,
            &acme,
            &path("api"),
            MetadataUpdate {
                rotate_by_unix_nanos: Some(START + 100 * HOUR),
                ..Default::default()
            },
        )
        .expect("metadata");
    lab.advance(20 * HOUR);
    assert_eq!(vault.maintain().expect("maintain").expiry_events, 0);
    lab.advance(80 * HOUR);
    // Both notices are due by now: one phase per round.
    assert_eq!(
        vault.maintain().expect("maintain").expiry_events,
        1,
        "expiring"
    );
    assert_eq!(
        vault.maintain().expect("maintain").expiry_events,
        1,
        "expired"
    );
    assert_eq!(vault.maintain().expect("maintain").expiry_events, 0);
    assert!(matches!(
        vault.secrets().update_metadata(
            &lab.root,
            &acme,
            &path("api"),
            MetadataUpdate {
                expires_at_unix_nanos: Some(-1),
                ..Default::default()
            },
        ),
        Err(Error::InvalidArgument {
            field: "expires_at",
            ..
        })
    ));
}

#[test]
fn webhooks_refuse_private_targets_retry_with_backoff_and_dead_letter() {
    let mut config = VaultConfig::default();
    config.webhooks.max_attempts = 3;
    config.webhooks.backoff_base_nanos = 10 * SECOND;
    let refusing = lab_with(config.clone());
    let spec = |url: &str| WebhookSpec {
        url: url.into(),
        paths: "db/*".into(),
        events: Vec::new(),
        secret: None,
    };
    let loopback: [std::net::SocketAddr; 1] = ["127.0.0.1:9".parse().expect("address")];
    match refusing.vault().webhooks().webhook_create(
        &refusing.root,
        &tenant("acme"),
        spec("http://127.0.0.1:9/hook"),
        &loopback,
    ) {
        Err(error @ Error::InvalidArgument { field: "url", .. }) => {
            // The caller learns that the host is refused, not what it resolved to.
            assert!(
                error
                    .to_string()
                    .contains("does not resolve to an address webhooks may reach"),
                "{error}"
            );
            assert!(!error.to_string().contains("127.0.0.1:9"), "{error}");
        }
        other => panic!("expected a refusal, got {:?}", other.map(|(w, _)| w.id)),
    }

    config.webhooks.allow = vec![crate::cidr::Cidr::parse("127.0.0.0/8").expect("cidr")];
    let lab = lab_with(config);
    let vault = lab.vault();
    let acme = tenant("acme");
    lab.put("db/early", "before the webhook");
    let (hook, secret) = vault
        .webhooks()
        .webhook_create(&lab.root, &acme, spec("http://127.0.0.1:9/hook"), &loopback)
        .expect("create");
    let secret = secret.expect("generated secret");
    lab.put("db/a", "x");
    lab.put("web/skipped", "x");
    assert_eq!(
        vault.webhooks().webhook_fanout().expect("fanout"),
        1,
        "only db/* after creation"
    );
    let (due, _) = vault
        .webhooks()
        .webhook_due(&DispatchState::default(), &DispatchLimits::default())
        .expect("due");
    assert_eq!(due.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&due[0].body).expect("json");
    assert_eq!(body["path"], "db/a");
    assert_eq!(body["type"], "created");
    assert!(
        !String::from_utf8_lossy(&due[0].body).contains("\"x\""),
        "no values"
    );
    verify_signature(
        secret.expose_secret(),
        &due[0].signature,
        &due[0].body,
        lab.now() / SECOND,
        300,
    )
    .expect("signature verifies with the secret");

    // Failures back off: 10 s, then 20 s; the third failure dead-letters it.
    vault
        .webhooks()
        .webhook_result(&due[0], Err("connection refused".into()))
        .expect("result");
    assert!(
        vault
            .webhooks()
            .webhook_due(&DispatchState::default(), &DispatchLimits::default())
            .expect("due")
            .0
            .is_empty(),
        "not due yet"
    );
    lab.advance(10 * SECOND);
    let (due, _) = vault
        .webhooks()
        .webhook_due(&DispatchState::default(), &DispatchLimits::default())
        .expect("due");
    assert_eq!(due[0].attempt, 2);
    vault
        .webhooks()
        .webhook_result(&due[0], Err("503".into()))
        .expect("result");
    lab.advance(19 * SECOND);
    assert!(
        vault
            .webhooks()
            .webhook_due(&DispatchState::default(), &DispatchLimits::default())
            .expect("due")
            .0
            .is_empty()
    );
    lab.advance(SECOND);
    let (due, _) = vault
        .webhooks()
        .webhook_due(&DispatchState::default(), &DispatchLimits::default())
        .expect("due");
    vault
        .webhooks()
        .webhook_result(&due[0], Err("503".into()))
        .expect("result");
    let status = vault
        .webhooks()
        .webhook_status(&lab.root, &acme, &hook.id)
        .expect("status");
    assert_eq!((status.pending_total, status.dead_total), (0, 1));
    assert_eq!(status.dead[0].attempts, 3);
    assert_eq!(status.dead[0].last_error, "503");

    // Replay puts it back; success clears it.
    assert_eq!(
        vault
            .webhooks()
            .webhook_replay(&lab.root, &acme, &hook.id, 0)
            .expect("replay"),
        1
    );
    let (due, _) = vault
        .webhooks()
        .webhook_due(&DispatchState::default(), &DispatchLimits::default())
        .expect("due");
    vault
        .webhooks()
        .webhook_result(&due[0], Ok(()))
        .expect("result");
    let status = vault
        .webhooks()
        .webhook_status(&lab.root, &acme, &hook.id)
        .expect("status");
    assert_eq!(
        (
            status.pending_total,
            status.dead_total,
            status.webhook.delivered
        ),
        (0, 0, 1)
    );
    // The signing secret is stored sealed: its bytes are nowhere in the data store.
    for (_, value) in lab
        .fixture
        .data
        .scan(Space::Secrets, b"", b"", usize::MAX)
        .expect("scan")
    {
        assert!(
            !value
                .windows(secret.len())
                .any(|w| w == secret.expose_secret()),
            "secret stored in clear"
        );
    }
    vault
        .webhooks()
        .webhook_delete(&lab.root, &acme, &hook.id)
        .expect("delete");
    assert!(
        vault
            .webhooks()
            .webhook_list(&lab.root, &acme)
            .expect("list")
            .is_empty()
    );
}

#[test]
fn retention_keeps_events_a_webhook_has_not_fanned_out() {
    let mut config = VaultConfig::default();
    config.feed.retention_nanos = HOUR;
    config.webhooks.allow = vec![crate::cidr::Cidr::parse("127.0.0.0/8").expect("cidr")];
    let lab = lab_with(config);
    let vault = lab.vault();
    vault
        .webhooks()
        .webhook_create(
            &lab.root,
            &tenant("acme"),
            WebhookSpec {
                url: "http://127.0.0.1:9/hook".into(),
                paths: String::new(),
                events: Vec::new(),
                secret: None,
            },
            &["127.0.0.1:9".parse().expect("address")],
        )
        .expect("webhook");
    for i in 0..3 {
        lab.put(&format!("s{i}"), "x");
    }
    lab.advance(2 * HOUR);
    assert_eq!(
        vault.maintain().expect("maintain").events_pruned,
        0,
        "not fanned out yet"
    );
    assert_eq!(vault.webhooks().webhook_fanout().expect("fanout"), 3);
    assert_eq!(vault.maintain().expect("maintain").events_pruned, 3);
}

/// A tenant token creating tokens of its own (from a policy granting `read` everywhere).
fn token_request(policy: &str, ttl: Option<std::time::Duration>) -> TokenRequest {
    TokenRequest {
        tenant: Some(tenant("acme")),
        policies: vec![PolicyName::parse(policy).expect("name")],
        system: false,
        ttl,
        display_name: String::new(),
        cidrs: Vec::new(),
        refresh_max_ttl: None,
    }
}

fn stored_tokens(lab: &Lab) -> usize {
    lab.fixture
        .data
        .scan(
            Space::Config,
            crate::schema::TOKEN_PREFIX,
            crate::schema::TOKEN_PREFIX,
            usize::MAX,
        )
        .expect("scan")
        .len()
}

#[test]
fn a_token_has_a_bounded_number_of_children_and_a_large_subtree_is_revoked_in_pages() {
    let lab = lab_with(VaultConfig {
        max_token_children: 1_600,
        ..VaultConfig::default()
    });
    let vault = lab.vault();
    let parent = lab.token("reader", &[("*", &["read"])]);
    for _ in 0..1_600 {
        vault
            .access()
            .create_token(&parent, token_request("reader", None))
            .expect("child");
    }
    match vault
        .access()
        .create_token(&parent, token_request("reader", None))
    {
        Err(Error::ResourceExhausted(message)) => {
            assert!(message.contains("1600 tokens"), "{message}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|c| c.info)),
    }
    // Root, the parent and its 1,600 children; revoking the parent takes them all, in pages
    // of REVOKE_PAGE, and none is left behind.
    assert_eq!(stored_tokens(&lab), 1_602);
    assert_eq!(
        vault
            .access()
            .revoke_token(&lab.root, Some(parent.accessor()))
            .expect("revoke"),
        1_601
    );
    assert_eq!(stored_tokens(&lab), 1);
    let children = lab
        .fixture
        .data
        .scan(
            Space::Config,
            crate::schema::CHILDREN_PREFIX,
            crate::schema::CHILDREN_PREFIX,
            usize::MAX,
        )
        .expect("scan");
    assert_eq!(children.len(), 0, "children index entries left");
}

#[test]
fn maintenance_purges_dead_tokens_and_runs_every_task_when_one_fails() {
    let lab = lab();
    let vault = lab.vault();
    let parent = lab.token("reader", &[("*", &["read"])]);
    let short = vault
        .access()
        .create_token(
            &parent,
            token_request("reader", Some(std::time::Duration::from_secs(60))),
        )
        .expect("short-lived token");
    let orphan = vault
        .access()
        .create_token(
            &vault.authenticate(&short.token).expect("auth"),
            token_request("reader", None),
        )
        .expect("its child");
    assert_eq!(stored_tokens(&lab), 4);
    // A broken lifecycle entry makes the key sweep and the re-wrap task fail for the tenant
    // every round (each failed unit is tried again a second later)...
    let id = vault.tenant_id(&tenant("acme")).expect("id");
    let mut batch = WriteBatch::new();
    batch.put(
        Space::Config,
        crate::schema::kek_state_key(id),
        b"not a lifecycle".to_vec(),
    );
    lab.fixture.keys.write(batch).expect("corrupt entry");
    lab.advance(2 * 60 * SECOND);
    // ...and the other tasks run all the same: the expired token and the child it leaves
    // behind (an orphan, refused already) are purged, over two rounds.
    let mut purged = 0;
    for _ in 0..2 {
        lab.advance(2 * SECOND);
        let report = vault.maintain().expect("a round never fails as a whole");
        assert!(report.failed >= 1, "{report:?}");
        purged += report.purged;
    }
    assert_eq!(purged, 2);
    assert_eq!(stored_tokens(&lab), 2, "root and the parent remain");
    assert!(vault.authenticate(&orphan.token).is_err());
}

#[test]
fn a_tenants_own_root_key_actions_are_rate_limited() {
    let lab = lab_with(VaultConfig {
        tenant_root_key_per_minute: 2,
        ..VaultConfig::default()
    });
    let vault = lab.vault();
    let rotator = lab.token("rotator", &[("*", &["rotate"])]);
    vault
        .keks()
        .rotate(&rotator, &tenant("acme"))
        .expect("first");
    vault
        .keks()
        .rotate(&rotator, &tenant("acme"))
        .expect("second");
    match vault.keks().rotate(&rotator, &tenant("acme")) {
        Err(Error::ResourceExhausted(message)) => {
            assert!(message.contains("use the root key"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The system scope is not limited, and other tenants have their own allowance.
    vault
        .keks()
        .rotate(&lab.root, &tenant("acme"))
        .expect("system scope");
    vault
        .tenants()
        .create_tenant(&lab.root, &tenant("globex"), TenantSettings::default())
        .expect("tenant");
    vault
        .keks()
        .rotate(&lab.root, &tenant("globex"))
        .expect("globex");
}

#[test]
fn a_tenant_whose_keys_were_destroyed_cannot_be_restored() {
    let lab = lab();
    let vault = lab.vault();
    let id = vault.tenant_id(&tenant("acme")).expect("id");
    vault
        .tenants()
        .delete_tenant(&lab.root, &tenant("acme"))
        .expect("delete");
    // Shredding got as far as destroying the keys (the tombstone is written) and has not yet
    // removed the deleted tenant's record: a restore now would bring back a tenant without
    // keys.
    let mut batch = WriteBatch::new();
    batch.put(
        Space::Config,
        crate::schema::shredded_key(id),
        to_json(&keys::ShredTombstone {
            name: "acme".into(),
            deleted_unix_nanos: lab.now(),
            shredded_unix_nanos: lab.now(),
            versions: vec![1],
        })
        .expect("json"),
    );
    lab.fixture.keys.write(batch).expect("tombstone");
    match vault
        .tenants()
        .restore_tenant(&lab.root, &tenant("acme"), None)
    {
        Err(Error::FailedPrecondition(message)) => {
            assert!(message.contains("crypto-shredded"), "{message}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|t| t.id)),
    }
}

#[test]
fn the_root_token_may_enrol_root_again_after_a_reset_and_nobody_else_may() {
    let lab = lab();
    let vault = lab.vault();
    vault
        .mfa()
        .enroll_totp(&lab.root, None)
        .expect("root enrols");
    vault.mfa().reset_mfa(&lab.root, "root").expect("reset");
    // A system token acts for root but was created by another token: it may not.
    let system = vault
        .access()
        .create_token(
            &lab.root,
            TokenRequest {
                tenant: None,
                policies: Vec::new(),
                system: true,
                ttl: None,
                display_name: String::new(),
                cidrs: Vec::new(),
                refresh_max_ttl: None,
            },
        )
        .expect("system token");
    let system = vault.authenticate(&system.token).expect("auth");
    assert!(matches!(
        vault.mfa().enroll_totp(&system, None),
        Err(Error::Denied { .. })
    ));
    vault
        .mfa()
        .enroll_totp(&lab.root, None)
        .expect("the root token itself");
}

#[test]
fn cached_token_records_and_policies_follow_every_write() {
    let mut lab = lab();
    let acme = tenant("acme");
    lab.put("a/x", "1");
    let reader = |lab: &Lab, rules: &[&str]| {
        let policy = Policy::new(
            PolicyName::parse("reader").expect("name"),
            rules
                .iter()
                .map(|p| ((*p).to_owned(), vec!["read".to_owned()]))
                .collect(),
        )
        .expect("policy");
        lab.vault()
            .access()
            .write_policy(&lab.root, &acme, &policy)
            .expect("write policy");
    };
    reader(&lab, &["a/*"]);
    let created = lab
        .vault()
        .access()
        .create_token(&lab.root, token_request("reader", None))
        .expect("token");
    let read = |lab: &Lab| {
        let caller = lab.vault().authenticate(&created.token)?;
        lab.vault()
            .secrets()
            .get(&caller, &acme, &path("a/x"), 0)
            .map(drop)
    };
    // The first calls read the token record, its index entry and the policy, and keep them.
    read(&lab).expect("read");
    read(&lab).expect("read again");
    assert!(lab.vault().data.hot_records() >= 3);
    // A policy written here applies to the very next call.
    reader(&lab, &["b/*"]);
    assert!(matches!(read(&lab), Err(Error::Denied { .. })));
    reader(&lab, &["a/*"]);
    read(&lab).expect("granted again");
    // A renewal is seen at once: the record read next is the one written.
    let renewed = lab
        .vault()
        .access()
        .create_token(
            &lab.root,
            token_request("reader", Some(std::time::Duration::from_secs(60))),
        )
        .expect("short token");
    lab.vault()
        .authenticate(&renewed.token)
        .expect("short token works");
    lab.advance(61 * SECOND);
    assert!(lab.vault().authenticate(&renewed.token).is_err(), "expired");

    // Another node (a second vault on the same stores) revokes the token: this node keeps its
    // copy until the change reaches it through its watch, then refuses the token.
    let other = Vault::open(
        DataStore::new(lab.fixture.data.clone()),
        KeyStore::new(lab.fixture.keys.clone()),
        lab.config.clone(),
    )
    .expect("second node");
    let share = unseal_share(&lab);
    unseal_with(&other, &[&share]).expect("unseal");
    let other_root = other.authenticate(&lab.root_token()).expect("root");
    other
        .access()
        .revoke_token(&other_root, Some(&created.info.accessor))
        .expect("revoke there");
    assert!(
        read(&lab).is_ok(),
        "the record is served from this node's cache until the change is followed"
    );
    lab.vault()
        .follow_change(
            crate::schema::Store::Data,
            Space::Config,
            &crate::schema::accessor_key(&created.info.accessor),
        )
        .expect("follow");
    assert!(matches!(read(&lab), Err(Error::Denied { .. })));

    // Secrets' metadata is kept as well: a put here is read at once...
    lab.put("m", "1");
    assert_eq!(lab.read("m", 0).expect("read"), "1");
    lab.put("m", "2");
    assert_eq!(lab.read("m", 0).expect("read"), "2");
    assert!(lab.vault().data.hot_metadata() >= 1);
    // ...and a put by the other node once its change is followed.
    other
        .secrets()
        .put(&other_root, &acme, &path("m"), data(&[("v", "3")]))
        .expect("put there");
    assert_eq!(lab.read("m", 0).expect("read"), "2", "until followed");
    let id = lab.vault().tenant_id(&acme).expect("id");
    lab.vault()
        .follow_change(
            crate::schema::Store::Data,
            Space::Secrets,
            &crate::schema::meta_key(id, &path("m")),
        )
        .expect("follow");
    assert_eq!(lab.read("m", 0).expect("read"), "3");

    // A revocation here is seen at once.
    let second = lab
        .vault()
        .access()
        .create_token(&lab.root, token_request("reader", None))
        .expect("token");
    let caller = lab.vault().authenticate(&second.token).expect("auth");
    lab.vault()
        .access()
        .revoke_token(&caller, None)
        .expect("revoke itself");
    assert!(lab.vault().authenticate(&second.token).is_err());
    // A restart starts with nothing cached.
    lab.restart();
    assert_eq!(
        lab.vault().data.hot_records(),
        2,
        "only the root token's record and index entry, just read"
    );
}

/// A store that counts the reads (gets and scans) that reach it.
struct CountingStorage {
    inner: crate::storage::MemoryStorage,
    reads: std::sync::atomic::AtomicU64,
}

impl CountingStorage {
    fn new() -> Self {
        CountingStorage {
            inner: crate::storage::MemoryStorage::new(),
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn reads(&self) -> u64 {
        self.reads.load(Ordering::SeqCst)
    }
}

impl Storage for CountingStorage {
    fn get(
        &self,
        space: Space,
        key: &[u8],
    ) -> std::result::Result<Option<Vec<u8>>, crate::storage::StorageError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.get(space, key)
    }

    fn scan(
        &self,
        space: Space,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> std::result::Result<Vec<crate::storage::Entry>, crate::storage::StorageError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.scan(space, prefix, start, limit)
    }

    fn write(&self, batch: WriteBatch) -> std::result::Result<(), crate::storage::StorageError> {
        self.inner.write(batch)
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[test]
fn an_idle_maintenance_round_reads_nothing_per_tenant() {
    let data_store = Arc::new(CountingStorage::new());
    let keys = Arc::new(CountingStorage::new());
    let mut config = VaultConfig::default();
    config.feed.retention_nanos = HOUR;
    config.keys.max_age_nanos = 24 * HOUR;
    let clock = Arc::new(AtomicI64::new(START));
    let reading = Arc::clone(&clock);
    let vault = Vault::open(
        DataStore::new(data_store.clone()),
        KeyStore::new(keys.clone()),
        config,
    )
    .expect("open")
    .with_clock(Arc::new(move || reading.load(Ordering::SeqCst)));
    let output = vault
        .seal()
        .init(1, 1, InitRecipients::default())
        .expect("init");
    let share = share_texts(&output).remove(0);
    unseal_with(&vault, &[&share]).expect("unseal");
    let root = vault.authenticate(root_of(&output)).expect("root");
    // More tenants than one discovery page, each with a secret (a feed event) and an alarm.
    let tenants = super::super::due::DISCOVERY_PAGE + 8;
    for i in 0..tenants {
        let name = tenant(&format!("t{i}"));
        vault
            .tenants()
            .create_tenant(&root, &name, TenantSettings::default())
            .expect("tenant");
        vault
            .secrets()
            .put(&root, &name, &path("s"), data(&[("v", "x")]))
            .expect("put");
    }
    let idle_round = || {
        let before = data_store.reads() + keys.reads();
        vault.maintain().expect("round");
        data_store.reads() + keys.reads() - before
    };
    // Discovery: two pages, then every tenant's units once.
    let discovering = idle_round() + idle_round();
    assert!(
        discovering >= tenants as u64,
        "discovery read {discovering} records for {tenants} tenants"
    );
    // From then on a round reads what is due (nothing per tenant): the purge's own page of
    // tokens and the global schedules.
    for _ in 0..3 {
        clock.fetch_add(SECOND, Ordering::SeqCst);
        let idle = idle_round();
        assert!(
            idle <= 12,
            "an idle round read {idle} records with {tenants} tenants"
        );
    }
    // A tenant made after discovery, and one deleted and restored, are maintained too.
    let late = tenant("late");
    vault
        .tenants()
        .create_tenant(&root, &late, TenantSettings::default())
        .expect("late tenant");
    vault
        .secrets()
        .put(&root, &late, &path("s"), data(&[("v", "x")]))
        .expect("put");
    let tenants = tenants + 1;
    // Work that comes due is done: every tenant's feed event passes the retention period, and
    // the sweep rotates every tenant's KEK by age; a tenant deleted meanwhile waits, and is
    // maintained once restored.
    vault
        .tenants()
        .delete_tenant(&root, &tenant("t0"))
        .expect("delete");
    clock.fetch_add(25 * HOUR, Ordering::SeqCst);
    let report = vault.maintain().expect("a round while t0 is deleted");
    let mut pruned = report.events_pruned;
    let mut rotated = report.rotated;
    assert_eq!(rotated, tenants as u64 - 1, "every live tenant rotated");
    vault
        .tenants()
        .restore_tenant(&root, &tenant("t0"), None)
        .expect("restore");
    for _ in 0..4 {
        let report = vault.maintain().expect("round");
        pruned += report.events_pruned;
        rotated += report.rotated;
    }
    assert_eq!(rotated, tenants as u64, "every tenant's KEK rotated by age");
    assert!(
        pruned >= tenants as u64,
        "every tenant's feed pruned: {pruned}"
    );
}
