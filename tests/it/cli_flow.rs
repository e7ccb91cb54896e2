//! The operator's tour from the README, with the real binaries: init 5/3, unseal, two tenants,
//! put/get/list/delete, crash and restart, unseal with other shares, rotate, seal.

use vault_tests::{TestServer, init, unseal};

#[test]
fn init_unseal_use_restart_rotate_seal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]);

    let status = server
        .cli(None, &["status", "--format", "json"])
        .status_json();
    assert_eq!(status["initialized"], false);

    let (shares, token) = init(&server, 5, 3);
    let token = Some(token.as_str());
    assert_eq!(shares.len(), 5);
    let again = server.cli(None, &["init", "--shares", "5", "--threshold", "3"]);
    assert!(
        again.failed().contains("vault is already initialized"),
        "{}",
        again.stderr
    );

    // Sealed after init: data calls are refused with a hint.
    let sealed = server.cli(token, &["tenant", "list"]);
    assert!(
        sealed.failed().contains("vault is sealed"),
        "{}",
        sealed.stderr
    );
    assert!(
        sealed.stderr.contains("vault-cli unseal"),
        "{}",
        sealed.stderr
    );

    // Two shares: still sealed, progress 2/3; the same share again does not count.
    let progress = unseal(&server, &[&shares[0], &shares[1], &shares[1]]);
    assert_eq!(
        (progress["sealed"].as_bool(), progress["progress"].as_u64()),
        (Some(true), Some(2))
    );
    let text_status = server.cli(None, &["status"]);
    assert_eq!(text_status.code, 2, "sealed: status exits 2");
    let text_status = text_status.stdout;
    assert!(
        text_status.contains("Unseal progress  2/3"),
        "{text_status}"
    );
    // Reset (which takes one current share, so that a stranger cannot), then three shares
    // from a file, stdin and stdin.
    let stranger = server.cli_with_stdin(
        None,
        &["unseal", "--reset"],
        Some(b"AWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFh"),
    );
    assert!(
        stranger
            .failed()
            .contains("this share is not one of the current shares"),
        "{}",
        stranger.stderr
    );
    assert_eq!(
        server
            .cli_with_stdin(
                None,
                &["unseal", "--reset", "--format", "json"],
                Some(shares[4].as_bytes())
            )
            .json()["progress"],
        0
    );
    let share_file = dir.path().join("share.txt");
    std::fs::write(&share_file, format!("{}\n", shares[2])).expect("write share");
    server
        .cli(
            None,
            &[
                "unseal",
                "--share-file",
                share_file.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let done = unseal(&server, &[&shares[3], &shares[4]]);
    assert_eq!(done["sealed"], false);

    for tenant in ["acme", "globex"] {
        server.cli(token, &["tenant", "create", tenant]).ok();
    }
    let tenants = server
        .cli(token, &["tenant", "list", "--format", "json"])
        .json();
    let names: Vec<&str> = tenants["tenants"]
        .as_array()
        .expect("tenants")
        .iter()
        .map(|t| t["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["acme", "globex"]);

    // Fields from an argument, a file and stdin.
    let password_file = dir.path().join("pw.txt");
    std::fs::write(&password_file, "s3cr3t-from-file").expect("write pw");
    let at_file = format!("password=@{}", password_file.display());
    server
        .cli(
            token,
            &[
                "put",
                "--tenant",
                "acme",
                "db/primary",
                "user=app",
                &at_file,
            ],
        )
        .ok();
    server
        .cli_with_stdin(
            token,
            &["put", "--tenant", "acme", "db/replica", "password=-"],
            Some(b"from-stdin"),
        )
        .ok();
    server
        .cli(
            token,
            &["put", "--tenant", "acme", "api-key", "value=acme-key"],
        )
        .ok();
    server
        .cli(
            token,
            &[
                "put",
                "--tenant",
                "globex",
                "db/primary",
                "password=globex-pw",
            ],
        )
        .ok();

    let acme = server
        .cli(
            token,
            &["get", "--tenant", "acme", "db/primary", "--format", "json"],
        )
        .json();
    assert_eq!(acme["data"]["user"], "app");
    assert_eq!(acme["data"]["password"], "s3cr3t-from-file");
    assert_eq!(acme["version"], 1);
    let field = server.cli(
        token,
        &[
            "get",
            "--tenant",
            "acme",
            "db/replica",
            "--field",
            "password",
        ],
    );
    assert_eq!(field.ok(), "from-stdin");
    let globex = server.cli(
        token,
        &[
            "get",
            "--tenant",
            "globex",
            "db/primary",
            "--field",
            "password",
        ],
    );
    assert_eq!(globex.ok(), "globex-pw");
    let missing = server.cli(token, &["get", "--tenant", "globex", "api-key"]);
    assert!(
        missing.failed().contains("secret api-key not found"),
        "{}",
        missing.stderr
    );

    // VAULT_TENANT in place of --tenant, and one-level listing with pagination.
    let listed = server
        .cli_with_env(
            token,
            &["list", "--format", "json"],
            &[("VAULT_TENANT", "acme")],
        )
        .json();
    assert_eq!(listed["keys"], serde_json::json!(["api-key", "db/"]));
    let inside = server
        .cli(
            token,
            &["list", "--tenant", "acme", "db/", "--format", "json"],
        )
        .json();
    assert_eq!(inside["keys"], serde_json::json!(["primary", "replica"]));
    let first_page = server
        .cli(
            token,
            &[
                "list",
                "--tenant",
                "acme",
                "db/",
                "--page-size",
                "1",
                "--format",
                "json",
            ],
        )
        .json();
    assert_eq!(first_page["keys"], serde_json::json!(["primary"]));
    let next = first_page["next_page_token"]
        .as_str()
        .expect("token")
        .to_owned();
    let second_page = server
        .cli(
            token,
            &[
                "list",
                "--tenant",
                "acme",
                "db/",
                "--page-size",
                "1",
                "--page-token",
                &next,
                "--format",
                "json",
            ],
        )
        .json();
    assert_eq!(second_page["keys"], serde_json::json!(["replica"]));
    assert_eq!(second_page["next_page_token"], "");

    server
        .cli(token, &["delete", "--tenant", "acme", "api-key"])
        .ok();
    assert!(
        server
            .cli(token, &["get", "--tenant", "acme", "api-key"])
            .failed()
            .contains("not found")
    );

    // Crash (SIGKILL) and restart: sealed, and a different three shares bring everything back.
    server.kill();
    let server = TestServer::start(dir.path(), &[]);
    let status = server
        .cli(None, &["status", "--format", "json"])
        .status_json();
    assert_eq!(
        (status["initialized"].as_bool(), status["sealed"].as_bool()),
        (Some(true), Some(true))
    );
    unseal(&server, &[&shares[4], &shares[2], &shares[0]]);
    assert_eq!(
        server
            .cli(
                token,
                &[
                    "get",
                    "--tenant",
                    "acme",
                    "db/primary",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        "s3cr3t-from-file"
    );
    assert_eq!(
        server
            .cli(
                token,
                &[
                    "get",
                    "--tenant",
                    "acme",
                    "db/replica",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        "from-stdin"
    );
    assert_eq!(
        server
            .cli(
                token,
                &[
                    "get",
                    "--tenant",
                    "globex",
                    "db/primary",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        "globex-pw"
    );

    // Rotate: old data still readable under key version 1, new data sealed under version 2.
    let rotated = server
        .cli(token, &["rotate", "--tenant", "acme", "--format", "json"])
        .json();
    assert_eq!(rotated["key_version"], 2);
    server
        .cli(
            token,
            &["put", "--tenant", "acme", "db/new", "password=after-rotate"],
        )
        .ok();
    let old = server
        .cli(
            token,
            &["get", "--tenant", "acme", "db/primary", "--format", "json"],
        )
        .json();
    let new = server
        .cli(
            token,
            &["get", "--tenant", "acme", "db/new", "--format", "json"],
        )
        .json();
    assert_eq!(
        (
            old["key_version"].as_u64(),
            old["data"]["password"].as_str()
        ),
        (Some(1), Some("s3cr3t-from-file"))
    );
    assert_eq!(
        (
            new["key_version"].as_u64(),
            new["data"]["password"].as_str()
        ),
        (Some(2), Some("after-rotate"))
    );

    // Seal: every data call is refused.
    server.cli(token, &["seal"]).ok();
    for args in [
        &["get", "--tenant", "acme", "db/primary"][..],
        &["put", "--tenant", "acme", "db/x", "k=v"],
        &["list", "--tenant", "acme"],
        &["delete", "--tenant", "acme", "db/primary"],
        &["rotate", "--tenant", "acme"],
        &["tenant", "list"],
        &["tenant", "create", "initech"],
    ] {
        let refused = server.cli(token, args);
        assert!(
            refused.failed().contains("vault is sealed"),
            "{args:?}: {}",
            refused.stderr
        );
    }

    // A wrong share (from another vault) is refused with the documented message.
    let other_dir = tempfile::tempdir().expect("tempdir");
    let other = TestServer::start(other_dir.path(), &[]);
    let (foreign, _) = init(&other, 3, 2);
    // It is refused before it counts, and the operators' progress stays as it was.
    unseal(&server, &[&shares[0], &shares[1]]);
    let wrong = server.cli_with_stdin(None, &["unseal"], Some(foreign[2].as_bytes()));
    assert!(
        wrong
            .failed()
            .contains("invalid share: this share is not one of the current shares"),
        "{}",
        wrong.stderr
    );
    assert_eq!(
        server
            .cli(None, &["status", "--format", "json"])
            .status_json()["progress"],
        2
    );
    let garbage = server.cli_with_stdin(None, &["unseal"], Some(b"not-a-share"));
    assert!(
        garbage.failed().contains("invalid share"),
        "{}",
        garbage.stderr
    );
}

#[test]
fn cli_reports_usage_and_connection_errors_clearly() {
    let unreachable = vault_tests::run_cli("http://127.0.0.1:1", None, &["status"], None);
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable
            .stderr
            .starts_with("vault-cli: error: cannot connect to the vault at http://127.0.0.1:1"),
        "{}",
        unreachable.stderr
    );
    let no_token = vault_tests::run_cli("http://127.0.0.1:1", None, &["tenant", "list"], None);
    assert!(
        no_token.stderr.contains("VAULT_TOKEN"),
        "{}",
        no_token.stderr
    );
    let bad_field = vault_tests::run_cli(
        "http://127.0.0.1:1",
        Some("vt.x"),
        &["put", "--tenant", "a", "p", "novalue"],
        None,
    );
    assert_eq!(bad_field.code, 1);
    assert!(
        bad_field
            .stderr
            .contains("field argument 1 is not NAME=VALUE"),
        "{}",
        bad_field.stderr
    );
    assert!(
        !bad_field.stderr.contains("novalue"),
        "{}",
        bad_field.stderr
    );
    let usage = vault_tests::run_cli("http://127.0.0.1:1", None, &["put"], None);
    assert_eq!(usage.code, 2);
}

/// The KEK lifecycle group is `kek` (one letter from `key` was too close); `keys` still works
/// as a hidden alias for a release, and `tenant restore` is in the tenant group.
#[test]
fn the_kek_group_is_named_kek_and_keys_still_works() {
    let help = vault_tests::run_cli("http://127.0.0.1:1", None, &["--help"], None);
    let commands: Vec<&str> = help
        .ok()
        .lines()
        .filter_map(|line| line.strip_prefix("  ")?.split_whitespace().next())
        .collect();
    assert!(commands.contains(&"kek"), "{commands:?}");
    assert!(commands.contains(&"key"), "{commands:?}");
    assert!(
        !commands.contains(&"keys"),
        "the old name is hidden: {commands:?}"
    );
    for name in ["kek", "keys"] {
        let group = vault_tests::run_cli("http://127.0.0.1:1", None, &[name, "--help"], None);
        assert!(group.ok().contains("retire"), "{name}: {}", group.stdout);
    }
    let tenant = vault_tests::run_cli("http://127.0.0.1:1", None, &["tenant", "--help"], None);
    assert!(tenant.ok().contains("restore"), "{}", tenant.stdout);
}
