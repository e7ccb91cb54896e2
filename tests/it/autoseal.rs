//! Auto-unseal end to end: a vault whose unseal key is wrapped by another vault's named key
//! (the transit seal, over TLS) or by a file key (`--danger-seal-key-file`); recovery shares
//! for rekey, generate-root and seal migration; migration from Shamir and back.

use std::path::{Path, PathBuf};

use vault_tests::{TestServer, audit_records, eventually};

use crate::tls::{https, pki, text};

fn status(server: &TestServer) -> serde_json::Value {
    server
        .cli(None, &["status", "--format", "json"])
        .status_json()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Init through the CLI; returns (shares, root token, seal type).
fn init(server: &TestServer, shares: &str, threshold: &str) -> (Vec<String>, String, String) {
    let json = server
        .cli(
            None,
            &[
                "init",
                "--shares",
                shares,
                "--threshold",
                threshold,
                "--format",
                "json",
            ],
        )
        .json();
    (
        strings(&json["shares"]),
        json["root_token"].as_str().expect("token").to_owned(),
        json["seal_type"].as_str().expect("seal type").to_owned(),
    )
}

fn get(server: &TestServer, root: &str) -> String {
    server
        .cli(
            Some(root),
            &[
                "get",
                "--tenant",
                "acme",
                "db/primary",
                "--field",
                "password",
            ],
        )
        .ok()
        .to_owned()
}

fn seed_secret(server: &TestServer, root: &str) {
    server.cli(Some(root), &["tenant", "create", "acme"]).ok();
    server
        .cli(
            Some(root),
            &["put", "--tenant", "acme", "db/primary", "password=p1"],
        )
        .ok();
}

/// A vault with TLS holding the named key `acme/unseal`, and a file with a token that may
/// only encrypt and decrypt with it.
struct Provider {
    server: TestServer,
    data: PathBuf,
    share: String,
    listen: String,
    args: Vec<String>,
}

impl Provider {
    fn start(dir: &Path) -> (Provider, PathBuf, PathBuf) {
        let pki = pki(dir);
        let data = dir.join("provider");
        let args = vec![
            "--tls-cert".to_owned(),
            text(&pki.server_cert).to_owned(),
            "--tls-key".to_owned(),
            text(&pki.server_key).to_owned(),
        ];
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = TestServer::start(&data, &argv);
        let cli = |token: Option<&str>, words: &[&str]| {
            let mut full = vec!["--ca-cert", text(&pki.ca)];
            full.extend_from_slice(words);
            vault_tests::run_cli(&https(&server), token, &full, None)
        };
        let json = cli(
            None,
            &[
                "init",
                "--shares",
                "1",
                "--threshold",
                "1",
                "--format",
                "json",
            ],
        )
        .json();
        let share = strings(&json["shares"]).remove(0);
        let root = json["root_token"].as_str().expect("token").to_owned();
        let unseal = |share: &str| {
            let mut full = vec!["--ca-cert", text(&pki.ca), "unseal"];
            full.push("--format");
            full.push("json");
            vault_tests::run_cli(&https(&server), None, &full, Some(share.as_bytes()))
                .ok()
                .to_owned()
        };
        unseal(&share);
        cli(Some(&root), &["tenant", "create", "acme"]).ok();
        cli(
            Some(&root),
            &["key", "create", "--tenant", "acme", "unseal"],
        )
        .ok();
        let policy = dir.join("seal-policy.toml");
        std::fs::write(
            &policy,
            "[[rule]]\npath = \"keys/unseal\"\ncapabilities = [\"encrypt\", \"decrypt\"]\n",
        )
        .expect("policy");
        cli(
            Some(&root),
            &["policy", "write", "--tenant", "acme", "seal", text(&policy)],
        )
        .ok();
        let token = cli(
            Some(&root),
            &[
                "token", "create", "--tenant", "acme", "--policy", "seal", "--format", "json",
            ],
        )
        .json()["token"]
            .as_str()
            .expect("token")
            .to_owned();
        let token_file = dir.join("seal-token");
        std::fs::write(&token_file, format!("{token}\n")).expect("token file");
        // And one that may encrypt only: a seal that could wrap but never unwrap.
        let policy = dir.join("encrypt-only.toml");
        std::fs::write(
            &policy,
            "[[rule]]\npath = \"keys/unseal\"\ncapabilities = [\"encrypt\"]\n",
        )
        .expect("policy");
        cli(
            Some(&root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "encrypt-only",
                text(&policy),
            ],
        )
        .ok();
        let encrypt_only = cli(
            Some(&root),
            &[
                "token",
                "create",
                "--tenant",
                "acme",
                "--policy",
                "encrypt-only",
                "--format",
                "json",
            ],
        )
        .json()["token"]
            .as_str()
            .expect("token")
            .to_owned();
        std::fs::write(dir.join("encrypt-only-token"), format!("{encrypt_only}\n"))
            .expect("token file");
        let listen = server.addr.trim_start_matches("http://").to_owned();
        (
            Provider {
                server,
                data,
                share,
                listen,
                args,
            },
            token_file,
            pki.ca,
        )
    }

    fn restart(self) -> Provider {
        let Provider {
            server,
            data,
            share,
            listen,
            args,
        } = self;
        server.terminate();
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        // Restarted sealed, on the address the sealed vault knows.
        let server = TestServer::start_on(&listen, &data, &argv);
        Provider {
            server,
            data,
            share,
            listen,
            args,
        }
    }
}

#[test]
fn a_transit_sealed_vault_unseals_itself_and_waits_for_its_provider() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (provider, token_file, ca) = Provider::start(dir.path());
    let seal_args = [
        "--seal".to_owned(),
        "transit".to_owned(),
        "--seal-addr".to_owned(),
        https(&provider.server),
        "--seal-key".to_owned(),
        "acme/unseal".to_owned(),
        "--seal-token-file".to_owned(),
        text(&token_file).to_owned(),
        "--seal-ca-file".to_owned(),
        text(&ca).to_owned(),
    ];
    let seal_args: Vec<&str> = seal_args.iter().map(String::as_str).collect();
    // A seal that can wrap but not unwrap is refused at init, before anything is written.
    let encrypt_only = dir.path().join("encrypt-only-token");
    let mut lame_args = seal_args.clone();
    let at = lame_args
        .iter()
        .position(|a| *a == "--seal-token-file")
        .expect("flag");
    lame_args[at + 1] = text(&encrypt_only);
    let lame = TestServer::start(&dir.path().join("lame"), &lame_args);
    let refused = lame.cli(None, &["init", "--shares", "1", "--threshold", "1"]);
    assert!(
        refused.failed().contains("cannot unwrap it again"),
        "{}",
        refused.stderr
    );
    assert_eq!(status(&lame)["initialized"], false);
    drop(lame);
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &seal_args);
    assert_eq!(status(&server)["seal_type"], "transit");

    // Init wraps the unseal key with the provider's key and unseals at once; the shares are
    // recovery shares.
    let (shares, root, seal_type) = init(&server, "3", "2");
    assert_eq!(seal_type, "transit");
    assert_eq!(shares.len(), 3);
    assert_eq!(status(&server)["sealed"], false);
    seed_secret(&server, &root);
    // Sealed by an operator, it stays sealed (no auto unseal) until a threshold of recovery
    // shares asks for it, as with Vault; a share that is not one of them counts for nothing.
    server.cli(Some(&root), &["seal"]).ok();
    assert_eq!(status(&server)["sealed"], true);
    let first = submit_all(&server, &["unseal"], &shares[1..2]);
    assert_eq!(first["progress"], 1, "{first}");
    let stranger = server.cli_with_stdin(
        None,
        &["unseal"],
        Some(b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"),
    );
    assert_ne!(stranger.code, 0, "{}", stranger.stdout);
    assert_eq!(status(&server)["progress"], 1, "the stranger wiped nothing");
    let unsealed = submit_all(&server, &["unseal"], &shares[2..]);
    assert_eq!(unsealed["sealed"], false, "{unsealed}");
    // The provider audited the wrap, by the seal's token.
    assert!(
        audit_records(&provider.server.audit_dir())
            .iter()
            .any(|r| r["method"] == "/vault.v1.Kms/Encrypt" && r["kind"] == "outcome"),
        "the provider has no record of the wrap"
    );

    // A restart unseals itself.
    server.terminate();
    let server = TestServer::start(&data, &seal_args);
    eventually("the vault unseals itself after a restart", || {
        status(&server)["sealed"] == false
    });
    assert_eq!(get(&server, &root), "p1");

    // With its provider down, a restarted vault stays sealed and says why; once the provider
    // is back (and unsealed), it unseals by itself.
    server.terminate();
    let provider_share = provider.share.clone();
    let provider_listen = provider.listen.clone();
    let provider = provider.restart();
    // The provider is sealed now: the seal cannot unwrap.
    let server = TestServer::start(&data, &seal_args);
    eventually("status names the seal's failure", || {
        let now = status(&server);
        now["sealed"] == true
            && now["seal_error"]
                .as_str()
                .is_some_and(|e| e.contains("transit seal") && e.contains("acme/unseal"))
    });
    let text_status = server.cli(None, &["status"]);
    assert_eq!(text_status.code, 2);
    assert!(
        text_status
            .stdout
            .contains("Seal error: seal unavailable: transit seal"),
        "{}",
        text_status.stdout
    );
    assert_ne!(
        server.cli(Some(&root), &["tenant", "list"]).code,
        0,
        "a sealed vault answers nothing"
    );
    vault_tests::run_cli(
        &format!("https://{provider_listen}"),
        None,
        &["--ca-cert", text(&ca), "unseal", "--format", "json"],
        Some(provider_share.as_bytes()),
    )
    .ok();
    eventually("the vault unseals once its provider is back", || {
        status(&server)["sealed"] == false
    });
    assert_eq!(get(&server, &root), "p1");
    assert!(
        audit_records(&server.audit_dir())
            .iter()
            .any(|r| r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("unsealed with the transit auto seal"))),
        "the auto unseal is in the audit log"
    );
    drop(provider);
}

fn file_key(dir: &Path, name: &str, byte: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", byte.repeat(32))).expect("key file");
    path
}

fn submit_all(server: &TestServer, words: &[&str], shares: &[String]) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for share in shares {
        let mut args = words.to_vec();
        args.extend(["--format", "json"]);
        last = server
            .cli_with_stdin(None, &args, Some(share.as_bytes()))
            .json();
    }
    last
}

#[test]
fn recovery_shares_authorize_rekey_and_generate_root_and_unseal_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = file_key(dir.path(), "seal.key", "ab");
    let seal_args = ["--danger-seal-key-file", text(&key)];
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &seal_args);
    let (shares, root, seal_type) = init(&server, "3", "2");
    assert_eq!(seal_type, "danger-file");
    assert_eq!(status(&server)["sealed"], false);
    seed_secret(&server, &root);

    // A backup of an auto-sealed vault verifies with its seal (and not with shares).
    let pinned = dir.path().join("audit.pub");
    server
        .cli(
            Some(&root),
            &["audit", "public-key", "--out", text(&pinned)],
        )
        .ok();
    let backup = dir.path().join("backup.vbk");
    server
        .cli(Some(&root), &["backup", "create", "--out", text(&backup)])
        .ok();
    let key_backup = std::fs::read_dir(data.join("key-backups"))
        .expect("key backups")
        .map_while(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "vkb"))
        .expect("a key backup");
    let verify = |extra: &[&str], scratch: &str| {
        let scratch = dir.path().join(scratch);
        let mut args = vec![
            "backup",
            "verify",
            text(&backup),
            "--key-backup",
            text(&key_backup),
            "--public-key",
            text(&pinned),
            "--scratch",
            text(&scratch),
            "--format",
            "json",
        ];
        args.extend_from_slice(extra);
        vault_tests::run_cli(&server.addr, None, &args, Some(b""))
    };
    let verified = verify(&["--danger-seal-key-file", text(&key)], "scratch-1").json();
    assert_eq!(verified["ok"], true, "{verified}");
    assert_eq!(verified["secret_versions"], 1, "{verified}");
    let share_file = dir.path().join("share-0");
    std::fs::write(&share_file, &shares[0]).expect("share file");
    let without = verify(&["--share-file", text(&share_file)], "scratch-2");
    assert!(without.failed().contains("--seal"), "{}", without.stderr);

    // Rekey the recovery shares: the old ones stop counting, the new ones do.
    let started = server
        .cli(
            Some(&root),
            &[
                "rekey",
                "init",
                "--shares",
                "2",
                "--threshold",
                "2",
                "--format",
                "json",
            ],
        )
        .json();
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    let staged = submit_all(
        &server,
        &["rekey", "submit", "--nonce", &nonce],
        &shares[..2],
    );
    assert_eq!(staged["staged"], true, "{staged}");
    let new = strings(&staged["shares"]);
    let verification = staged["verification_nonce"]
        .as_str()
        .expect("nonce")
        .to_owned();
    let verified = submit_all(
        &server,
        &["rekey", "verify", "--nonce", &verification],
        &new,
    );
    assert_eq!(verified["complete"], true, "{verified}");
    // `share verify` exits non-zero for a share that is not current, after printing it.
    let check = |share: &str| {
        let output = server.cli_with_stdin(
            None,
            &["share", "verify", "--format", "json"],
            Some(share.as_bytes()),
        );
        let json: serde_json::Value = serde_json::from_str(&output.stdout).expect("json");
        json["result"].as_str().expect("result").to_owned()
    };
    assert_eq!(check(&shares[0]), "not-current");
    assert_eq!(check(&new[0]), "current");

    // generate-root with the new recovery shares.
    let identity = dir.path().join("operator.age-identity");
    let recipient = server
        .cli(None, &["share", "keygen", "--out", text(&identity)])
        .ok()
        .trim()
        .to_owned();
    let started = server
        .cli_with_stdin(
            None,
            &[
                "generate-root",
                "init",
                "--recipient",
                &recipient,
                "--format",
                "json",
            ],
            Some(new[0].as_bytes()),
        )
        .json();
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    let done = server
        .cli_with_stdin(
            None,
            &[
                "generate-root",
                "submit",
                "--nonce",
                &nonce,
                "--recipient",
                &recipient,
                "--format",
                "json",
            ],
            Some(new[1].as_bytes()),
        )
        .json();
    assert_eq!(done["complete"], true, "{done}");
    let new_root = server
        .cli_with_stdin(
            None,
            &["share", "decrypt", "--identity", text(&identity)],
            Some(
                done["encrypted_root_token"]
                    .as_str()
                    .expect("token")
                    .as_bytes(),
            ),
        )
        .ok()
        .trim()
        .to_owned();
    assert_eq!(get(&server, &new_root), "p1");

    // Another file key does not open it: the server stays sealed and says whose seal it is.
    server.terminate();
    let other = file_key(dir.path(), "other.key", "cd");
    let server = TestServer::start(&data, &["--danger-seal-key-file", text(&other)]);
    eventually("status names the wrong seal", || {
        status(&server)["seal_error"]
            .as_str()
            .is_some_and(|e| e.contains("sealed by danger-file"))
    });
    assert_eq!(status(&server)["sealed"], true);
    // Without any seal, shares cannot open it either; status says what to do.
    server.terminate();
    let server = TestServer::start(&data, &[]);
    let refused = server.cli_with_stdin(None, &["unseal"], Some(new[0].as_bytes()));
    assert!(refused.failed().contains("--seal"), "{}", refused.stderr);
    assert_eq!(status(&server)["seal_type"], "danger-file");
}

#[test]
fn seal_migrate_moves_a_vault_from_shamir_to_the_auto_seal_and_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = file_key(dir.path(), "seal.key", "ef");
    let seal_args = ["--danger-seal-key-file", text(&key)];
    let data = dir.path().join("data");

    // A Shamir vault, started with a seal to migrate to: it does not unseal itself.
    let server = TestServer::start(&data, &[]);
    let (shares, root, seal_type) = init(&server, "3", "2");
    assert_eq!(seal_type, "shamir");
    server.terminate();
    let server = TestServer::start(&data, &seal_args);
    let before = status(&server);
    assert_eq!(before["seal_type"], "shamir");
    assert_eq!(before["sealed"], true);
    assert_eq!(
        before["seal_error"], "",
        "a Shamir vault is not the seal's to open"
    );
    let unsealed = submit_all(&server, &["unseal"], &shares[..2]);
    assert_eq!(unsealed["sealed"], false);
    seed_secret(&server, &root);

    // A share that is not one of them cannot start or cancel a migration.
    let stranger = server.cli_with_stdin(
        None,
        &["seal-migrate", "init", "--to", "transit"],
        Some(b"AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAh"),
    );
    assert_ne!(stranger.code, 0, "{}", stranger.stdout);
    let started = server
        .cli_with_stdin(
            None,
            &[
                "seal-migrate",
                "init",
                "--to",
                "transit",
                "--format",
                "json",
            ],
            Some(shares[2].as_bytes()),
        )
        .json();
    assert_eq!(started["progress"], 1);
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    // No rekey meanwhile.
    let rekey = server.cli(
        Some(&root),
        &["rekey", "init", "--shares", "3", "--threshold", "2"],
    );
    assert!(
        rekey.failed().contains("seal migration"),
        "{}",
        rekey.stderr
    );
    let done = submit_all(
        &server,
        &["seal-migrate", "submit", "--nonce", &nonce],
        &shares[..1],
    );
    assert_eq!(done["complete"], true, "{done}");
    assert_eq!(status(&server)["seal_type"], "danger-file");
    assert!(
        audit_records(&server.audit_dir())
            .iter()
            .any(|r| r["method"] == "seal-migrate"
                && r["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("recovery shares"))),
        "the migration is in the audit log"
    );

    // Now it unseals itself, and the same shares are recovery shares.
    server.terminate();
    let server = TestServer::start(&data, &seal_args);
    eventually("the migrated vault unseals itself", || {
        status(&server)["sealed"] == false
    });
    assert_eq!(get(&server, &root), "p1");

    // And back to Shamir with the recovery shares: they unseal it again, without the seal.
    let started = server
        .cli_with_stdin(
            None,
            &["seal-migrate", "init", "--to", "shamir", "--format", "json"],
            Some(shares[1].as_bytes()),
        )
        .json();
    let nonce = started["nonce"].as_str().expect("nonce").to_owned();
    let done = submit_all(
        &server,
        &["seal-migrate", "submit", "--nonce", &nonce],
        &shares[2..],
    );
    assert_eq!(done["complete"], true, "{done}");
    server.terminate();
    let server = TestServer::start(&data, &[]);
    assert_eq!(status(&server)["seal_type"], "shamir");
    let unsealed = submit_all(&server, &["unseal"], &shares[..2]);
    assert_eq!(unsealed["sealed"], false, "{unsealed}");
    assert_eq!(get(&server, &root), "p1");
}
