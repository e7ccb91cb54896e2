//! `vault-server --dev`: initialises with one share, unseals itself, prints the share and root
//! token; restarted on the same directory it unseals itself again.

use vault_tests::TestServer;

fn banner_value(server: &TestServer, label: &str) -> String {
    server
        .banner
        .iter()
        .find_map(|line| {
            line.trim()
                .strip_prefix(label)
                .map(|rest| rest.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no {label:?} line in {:#?}", server.banner))
}

#[test]
fn dev_server_unseals_itself_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &["--dev"]);
    assert!(
        server.banner.iter().any(|line| line.contains("DEV MODE")),
        "{:#?}",
        server.banner
    );
    let token = banner_value(&server, "Root token:");
    assert!(token.starts_with("vt."));
    assert!(!banner_value(&server, "Unseal share:").is_empty());
    let status = server.cli(None, &["status", "--format", "json"]).json();
    assert_eq!(
        (status["initialized"].as_bool(), status["sealed"].as_bool()),
        (Some(true), Some(false))
    );
    server.cli(Some(&token), &["tenant", "create", "dev"]).ok();
    server
        .cli(
            Some(&token),
            &["put", "--tenant", "dev", "hello", "greeting=world"],
        )
        .ok();
    server.kill();

    let restarted = TestServer::start(dir.path(), &["--dev"]);
    assert!(
        !restarted.banner.iter().any(|line| line.contains(&token)),
        "the token is printed once: {:#?}",
        restarted.banner
    );
    let credentials =
        std::fs::read_to_string(dir.path().join("dev-credentials.json")).expect("credentials file");
    assert!(credentials.contains(&token));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("dev-credentials.json"))
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(
        restarted
            .cli(
                Some(&token),
                &["get", "--tenant", "dev", "hello", "--field", "greeting"]
            )
            .ok(),
        "world"
    );
}
