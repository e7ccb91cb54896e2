//! Credentials for applications, scripts and webhooks, end to end: the Rust client library,
//! `vault-cli run` and `vault-cli render`, and every example in examples/ against a real server.

use std::{
    io::{Read, Write},
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime},
};

use ring::digest;
use serde_json::json;
use vault_client::{Client, Credentials, Error, EventKind, Start};
use vault_tests::{Process, TestServer, binary, cli_command, init, reader_token, runtime, unseal};

use crate::{
    logins::{ISSUER, jwks, now, sign_rs256},
    tls::{https, pki, text},
};

const READER_POLICY: &str = "[[rule]]\npath = \"db/*\"\ncapabilities = [\"read\", \"list\"]\n";
const FIRST: &str = "first-password-Qm3v";
const SECOND: &str = "second-password-Zr8k";

/// A server with tenant acme, a `reader` policy (db/*) and db/primary (user=app, FIRST).
fn ready(dir: &Path, extra: &[&str]) -> (TestServer, String) {
    let server = TestServer::start(&dir.join("data"), extra);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    let token = Some(root.as_str());
    server.cli(token, &["tenant", "create", "acme"]).ok();
    let policy = dir.join("reader.toml");
    std::fs::write(&policy, READER_POLICY).expect("policy");
    server
        .cli(
            token,
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "reader",
                text(&policy),
            ],
        )
        .ok();
    put(&server, &root, "db/primary", FIRST);
    (server, root)
}

fn put(server: &TestServer, root: &str, path: &str, password: &str) {
    server
        .cli_with_stdin(
            Some(root),
            &["put", "--tenant", "acme", path, "user=app", "password=-"],
            Some(password.as_bytes()),
        )
        .ok();
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_owned()
}

fn sha256_hex(value: &str, chars: usize) -> String {
    hex::encode(digest::digest(&digest::SHA256, value.as_bytes()).as_ref())[..chars].to_owned()
}

/// Every regular file below `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .is_ok_and(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
            {
                found.push(path);
            }
        }
    }
    found
}

/// An AppRole role of acme with the reader policy; returns (role id, secret id).
fn approle(server: &TestServer, root: &str, name: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec![
        "approle", "write", "--tenant", "acme", name, "--policy", "reader", "--format", "json",
    ];
    args.extend_from_slice(extra);
    let role = server.cli(Some(root), &args).json();
    let issued = server
        .cli(
            Some(root),
            &[
                "approle",
                "secret-id",
                "--tenant",
                "acme",
                name,
                "--format",
                "json",
            ],
        )
        .json();
    (
        role["role_id"].as_str().expect("role id").to_owned(),
        issued["secret_id"].as_str().expect("secret id").to_owned(),
    )
}

#[test]
fn run_puts_secrets_in_the_child_environment_only_and_mirrors_its_exit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let script = dir.path().join("child.sh");
    std::fs::write(
        &script,
        "echo \"env=$DB_PASSWORD user=$DB_USER\"\n\
         echo \"token=${VAULT_TOKEN:-none}\"\n\
         echo \"argv=$(tr '\\0' ' ' < /proc/$$/cmdline)\"\n\
         echo \"parent-argv=$(tr '\\0' ' ' < /proc/$PPID/cmdline)\"\n\
         tr '\\0' '\\n' < /proc/$PPID/environ | sed 's/^/parent-env: /'\n\
         exit 7\n",
    )
    .expect("script");
    let map = dir.path().join("map.env");
    std::fs::write(&map, "# the user\nDB_USER=db/primary#user\n\n").expect("map");
    let mut command = cli_command(
        &server.addr,
        &root,
        &[
            "run",
            "--tenant",
            "acme",
            "--env-file",
            text(&map),
            "--env",
            "DB_PASSWORD=db/primary#password",
            "--",
            "sh",
            text(&script),
        ],
    );
    command.current_dir(dir.path()).env("HOME", &home);
    let output = command.output().expect("vault-cli run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(7), "{stdout}");
    assert!(
        stdout.contains(&format!("env={FIRST} user=app")),
        "{stdout}"
    );
    assert!(
        stdout.contains("token=none"),
        "the child gets no vault token: {stdout}"
    );
    let lines = |prefix: &str| -> Vec<String> {
        stdout
            .lines()
            .filter(|line| line.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    };
    let argv = lines("argv=");
    assert!(
        argv[0].contains("child.sh") && !argv[0].contains(FIRST),
        "{argv:?}"
    );
    let parent_argv = lines("parent-argv=");
    assert!(
        parent_argv[0].contains("vault-cli run") && !parent_argv[0].contains(FIRST),
        "{parent_argv:?}"
    );
    // /proc/PID/environ is the environment vault-cli was started with: the variables are not
    // passed to it. (A set_var inside vault-cli would not show there; the code has none, and
    // the child gets its variables from Command::env only.)
    let parent_env = lines("parent-env: ");
    assert!(
        parent_env.iter().any(|line| line.contains("VAULT_ADDR=")),
        "the parent's environment was read: {parent_env:?}"
    );
    assert!(
        parent_env.iter().all(|line| !line.contains(FIRST)),
        "the value is in vault-cli's environment: {parent_env:?}"
    );
    // Not on disk: nowhere under the test's directory (home, working directory, the server's
    // data and audit log).
    assert_eq!(
        files_containing(dir.path(), FIRST.as_bytes()),
        Vec::<PathBuf>::new()
    );

    // A child killed by a signal: 128 + the signal, as a shell reports it.
    let killed = cli_command(
        &server.addr,
        &root,
        &[
            "run",
            "--tenant",
            "acme",
            "--env",
            "P=db/primary#password",
            "--",
            "sh",
            "-c",
            "kill -KILL $$",
        ],
    )
    .output()
    .expect("run");
    assert_eq!(killed.status.code(), Some(137));

    // Bad references fail before anything starts, naming the variable and the field.
    let marker = dir.path().join("started");
    let missing = cli_command(
        &server.addr,
        &root,
        &[
            "run",
            "--tenant",
            "acme",
            "--env",
            "P=db/primary#nope",
            "--",
            "touch",
            text(&marker),
        ],
    )
    .output()
    .expect("run");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr.contains("P (--env): db/primary#nope") && stderr.contains("no field \"nope\""),
        "{stderr}"
    );
    assert!(!marker.exists());
    let malformed = cli_command(
        &server.addr,
        &root,
        &[
            "run",
            "--tenant",
            "acme",
            "--env",
            "P=db/primary",
            "--",
            "true",
        ],
    )
    .output()
    .expect("run");
    assert!(
        String::from_utf8_lossy(&malformed.stderr).contains("is not NAME=PATH#FIELD"),
        "{malformed:?}"
    );
}

#[test]
fn run_forwards_sigterm_to_the_child_and_exits_with_its_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let mut run = Process::spawn(cli_command(
        &server.addr,
        &root,
        &[
            "run",
            "--tenant",
            "acme",
            "--env",
            "P=db/primary#password",
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; echo ready; while :; do sleep 0.05; done",
        ],
    ));
    run.line("ready", |line| line == "ready");
    run.signal("TERM");
    run.line("the forwarded TERM", |line| line == "got-term");
    assert_eq!(run.wait().code(), Some(42));
}

#[test]
fn run_watch_restarts_the_child_with_the_new_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    // The child notes TERM but keeps running, so the restart has to kill it after the grace.
    let mut run = Process::spawn(cli_command(
        &server.addr,
        &root,
        &[
            "run",
            "--tenant",
            "acme",
            "--watch",
            "--grace",
            "1s",
            "--env",
            "P=db/primary#password",
            "--",
            "sh",
            "-c",
            "echo \"value=$P\"; trap 'echo term-noted' TERM; while :; do sleep 0.05; done",
        ],
    ));
    run.line("the first value", |line| line == format!("value={FIRST}"));
    put(&server, &root, "db/primary", SECOND);
    run.line("the restart signal", |line| line == "term-noted");
    run.line("the new value", |line| line == format!("value={SECOND}"));
    assert!(
        run.stderr()
            .iter()
            .any(|line| line.contains("did not exit within 1 s")),
        "{:?}",
        run.stderr()
    );
    // A forwarded USR1 ends the child (default action); run mirrors it as 128 + 10.
    run.signal("USR1");
    let status = run.wait();
    assert_eq!(status.code(), Some(138), "{status:?}");
    assert_eq!(
        run.seen()
            .iter()
            .filter(|line| line.starts_with("value="))
            .count(),
        2,
        "{:?}",
        run.seen()
    );
}

#[test]
fn render_writes_0600_atomically_rerenders_on_change_and_refuses_missing_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).expect("out dir");
    let out = out_dir.join("db.env");
    let entries = || {
        let mut names: Vec<String> = std::fs::read_dir(&out_dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let render = |template: &Path| {
        cli_command(
            &server.addr,
            &root,
            &[
                "render",
                "--tenant",
                "acme",
                text(template),
                "--out",
                text(&out),
            ],
        )
        .output()
        .expect("render")
    };

    // A missing field or secret: a clear error, and no file at all.
    let bad = dir.path().join("bad.tpl");
    std::fs::write(
        &bad,
        "ok={{ secret \"db/primary\" \"user\" }}\nx={{ secret \"db/primary\" \"nope\" }}\n",
    )
    .expect("template");
    let failed = render(&bad);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        stderr.contains("bad.tpl:2:3: db/primary#nope")
            && stderr.contains("has no field \"nope\"; its fields are: password, user"),
        "{stderr}"
    );
    assert!(entries().is_empty(), "{:?}", entries());
    std::fs::write(&bad, "{{ secret \"db/missing\" \"password\" }}").expect("template");
    let failed = render(&bad);
    assert!(
        String::from_utf8_lossy(&failed.stderr)
            .contains("db/missing#password: secret db/missing not found"),
        "{failed:?}"
    );
    assert!(entries().is_empty(), "{:?}", entries());

    // A good template: mode 0600, exactly the values.
    let template = dir.path().join("db.tpl");
    std::fs::write(
        &template,
        "DB_USER={{ secret \"db/primary\" \"user\" }}\nDB_PASSWORD={{ secret \"db/primary\" \"password\" }}\n",
    )
    .expect("template");
    let rendered = render(&template);
    assert!(rendered.status.success(), "{rendered:?}");
    let mode = |path: &Path| {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&out), 0o600);
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        format!("DB_USER=app\nDB_PASSWORD={FIRST}\n")
    );
    // A later failure leaves the rendered file as it was.
    std::fs::write(&bad, "{{ secret \"db/primary\" \"nope\" }}").expect("template");
    assert_eq!(render(&bad).status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        format!("DB_USER=app\nDB_PASSWORD={FIRST}\n")
    );
    assert_eq!(entries(), vec!["db.env".to_owned()]);

    // --watch: a change renders again (a new file renamed into place) and runs the hook.
    let hook_log = dir.path().join("hook.log");
    let hook = format!("echo changed >> {}", text(&hook_log));
    let mut watch = Process::spawn(cli_command(
        &server.addr,
        &root,
        &[
            "render",
            "--tenant",
            "acme",
            text(&template),
            "--out",
            text(&out),
            "--watch",
            "--on-change",
            &hook,
        ],
    ));
    watch.line("the first rendering", |line| line.starts_with("wrote "));
    let inode = std::fs::metadata(&out).expect("metadata").ino();
    put(&server, &root, "db/primary", SECOND);
    watch.line("the second rendering", |line| line.starts_with("wrote "));
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        format!("DB_USER=app\nDB_PASSWORD={SECOND}\n")
    );
    assert_ne!(std::fs::metadata(&out).expect("metadata").ino(), inode);
    assert_eq!(mode(&out), 0o600);
    vault_tests::eventually("the hook", || {
        std::fs::read_to_string(&hook_log).is_ok_and(|log| log == "changed\n")
    });
    // A change that removes a referenced field keeps the last rendering.
    server
        .cli(
            Some(&root),
            &[
                "patch",
                "--tenant",
                "acme",
                "db/primary",
                "--remove",
                "password",
            ],
        )
        .ok();
    vault_tests::eventually("the warning", || {
        watch
            .stderr()
            .iter()
            .any(|line| line.contains("keeps its last rendering"))
    });
    assert_eq!(
        std::fs::read_to_string(&out).expect("read"),
        format!("DB_USER=app\nDB_PASSWORD={SECOND}\n")
    );
    assert_eq!(entries(), vec!["db.env".to_owned()]);
    assert_eq!(
        std::fs::read_to_string(&hook_log).expect("log"),
        "changed\n"
    );
}

/// Polls an async condition every 20 ms (the client's renewal task runs meanwhile); fails the
/// test after a minute.
async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn client_library_logs_in_three_ways_and_its_errors_say_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let (role_id, secret_id) = approle(&server, &root, "app", &[]);
    // A JWT configuration whose tokens get the reader policy.
    let (rsa, jwks_file) = jwks(dir.path());
    let config = dir.path().join("corp.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"{ISSUER}\"\njwks_file = \"{}\"\naudiences = [\"vault\"]\ntenant = \"acme\"\n\
             policies = [\"reader\"]\n",
            jwks_file.display()
        ),
    )
    .expect("config");
    server
        .cli(Some(&root), &["jwt", "write", "corp", text(&config)])
        .ok();
    let jwt = sign_rs256(
        &rsa,
        &json!({"alg": "RS256", "typ": "JWT", "kid": "k1"}),
        &json!({"iss": ISSUER, "aud": "vault", "sub": "svc", "iat": now(), "exp": now() + 300}),
    );
    runtime().block_on(async {
        let connect = |credentials: Credentials| {
            Client::builder(server.addr.clone())
                .renew_in_background(false)
                .connect(credentials)
        };
        for (how, credentials) in [
            ("token", Credentials::token(root.as_str())),
            (
                "approle",
                Credentials::approle("acme", &role_id, &secret_id),
            ),
            ("jwt", Credentials::jwt("corp", &jwt)),
        ] {
            let client = connect(credentials)
                .await
                .unwrap_or_else(|e| panic!("{how} login: {e}"));
            let secret = client.get("acme", "db/primary").await.expect("get");
            assert_eq!(secret.version(), 1);
            assert_eq!(
                secret
                    .field("password")
                    .expect("field")
                    .as_str()
                    .expect("utf-8"),
                FIRST
            );
            assert_eq!(
                client
                    .get_field("acme", "db/primary", "user")
                    .await
                    .expect("field")
                    .expose(),
                b"app"
            );
            if how != "token" {
                assert_eq!(
                    client.token_status().policies,
                    vec!["reader".to_owned()],
                    "{how}"
                );
                assert!(client.token_status().expires_at.is_some(), "{how}");
            }
        }

        let reader = connect(Credentials::approle("acme", &role_id, &secret_id))
            .await
            .expect("login");
        let error = reader
            .get("acme", "db/missing")
            .await
            .err()
            .expect("missing");
        assert!(matches!(error, Error::NotFound { .. }), "{error}");
        let error = reader
            .get_field("acme", "db/primary", "nope")
            .await
            .err()
            .expect("field");
        assert!(
            error
                .to_string()
                .contains("has no field \"nope\"; its fields are: password, user"),
            "{error}"
        );
        let error = reader.get("acme", "web/other").await.err().expect("denied");
        assert!(matches!(error, Error::Denied { .. }), "{error}");
        assert!(
            error.to_string().contains("ask a tenant administrator"),
            "{error}"
        );
        assert!(!error.is_retryable());
        let error = connect(Credentials::token("vt.not-a-real-token"))
            .await
            .err()
            .expect("bad token");
        assert!(matches!(error, Error::Unauthenticated { .. }), "{error}");
        assert!(error.to_string().contains("log in again"), "{error}");
        let error = Client::builder("http://127.0.0.1:1")
            .connect(Credentials::token("vt.x"))
            .await
            .err()
            .expect("nobody listens");
        assert!(matches!(error, Error::Connect { .. }), "{error}");

        server.cli(Some(&root), &["seal"]).ok();
        let error = reader
            .get("acme", "db/primary")
            .await
            .err()
            .expect("sealed");
        assert!(matches!(error, Error::Sealed), "{error}");
        assert!(error.is_retryable());
        assert!(error.to_string().contains("vault-cli unseal"), "{error}");
    });
}

#[test]
fn client_library_speaks_tls_and_reports_an_uninitialized_vault() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            text(&pki.server_cert),
            "--tls-key",
            text(&pki.server_key),
        ],
    );
    let addr = https(&server);
    runtime().block_on(async {
        let error = Client::builder(addr.clone())
            .ca_certificate_file(&pki.ca)
            .expect("ca")
            .connect(Credentials::token("vt.x"))
            .await
            .err()
            .expect("not initialized");
        assert!(matches!(error, Error::NotInitialized), "{error}");
        assert!(error.to_string().contains("vault-cli init"), "{error}");
        let error = Client::builder(addr.clone())
            .channel()
            .await
            .expect_err("no CA");
        assert!(
            matches!(error, Error::Config { .. }) && error.to_string().contains("VAULT_CACERT"),
            "{error}"
        );
        let error = Client::builder(addr.clone())
            .ca_certificate_file(&pki.other_ca)
            .expect("ca")
            .channel()
            .await
            .expect_err("untrusted");
        assert!(matches!(error, Error::Connect { .. }), "{error}");
        let error = Client::builder(addr.clone())
            .ca_certificate_file(dir.path().join("missing.pem"))
            .err()
            .expect("missing file");
        assert!(error.to_string().contains("ca certificate"), "{error}");
    });
}

#[test]
fn client_library_renews_in_the_background_and_logs_in_again_past_the_max_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    // Tokens live 2 s; their refresh family at most 3 s, so renewal soon stops extending them.
    let (role_id, secret_id) = approle(
        &server,
        &root,
        "short",
        &["--token-ttl", "2s", "--refresh-max-ttl", "3s"],
    );
    runtime().block_on(async {
        let client = Client::builder(server.addr.clone())
            .connect(Credentials::approle("acme", &role_id, &secret_id))
            .await
            .expect("login");
        let first = client.token_status();
        let first_expiry = first.expires_at.expect("expires");
        until("a renewal", || {
            let status = client.token_status();
            status.accessor == first.accessor
                && status.expires_at.is_some_and(|at| at > first_expiry)
        })
        .await;
        until("a new login after the first token's expiry", || {
            let status = client.token_status();
            status.accessor != first.accessor && SystemTime::now() > first_expiry
        })
        .await;
        let secret = client.get("acme", "db/primary").await.expect("still reads");
        assert_eq!(
            secret.field("password").expect("field").expose(),
            FIRST.as_bytes()
        );
        assert!(client.token_status().renewal_problem.is_none());
    });
}

#[test]
fn client_library_watch_resumes_exactly_across_a_server_crash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let server = TestServer::start(&data, &[]);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let listen = server.addr.trim_start_matches("http://").to_owned();
    runtime().block_on(async {
        let client = Client::builder(server.addr.clone())
            .connect(Credentials::token(root.as_str()))
            .await
            .expect("connect");
        let mut watch = client
            .watch("acme", "db/", Start::Now)
            .await
            .expect("watch");
        put(&server, &root, "db/a", FIRST);
        let first = watch.next().await.expect("first event");
        assert_eq!(
            (first.kind, first.path.as_str()),
            (EventKind::Created, "db/a")
        );
        server.kill();
        // The same port, the same data: sealed until the share comes back.
        let server = TestServer::start_on(&listen, &data, &[]);
        unseal(&server, &[&shares[0]]);
        put(&server, &root, "db/b", FIRST);
        put(&server, &root, "db/a", SECOND);
        let after: Vec<(u64, EventKind, String)> = [watch.next().await, watch.next().await]
            .into_iter()
            .map(|event| event.expect("event after the restart"))
            .map(|event| (event.revision, event.kind, event.path))
            .collect();
        assert_eq!(
            after,
            vec![
                (first.revision + 1, EventKind::Created, "db/b".to_owned()),
                (first.revision + 2, EventKind::Updated, "db/a".to_owned()),
            ]
        );
        assert_eq!(watch.revision(), first.revision + 2);
    });
}

#[test]
fn examples_rust_app_logs_in_with_approle_and_follows_a_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let (role_id, secret_id) = approle(&server, &root, "app", &[]);
    let secret_file = dir.path().join("secret-id");
    std::fs::write(&secret_file, format!("{secret_id}\n")).expect("secret id");
    let mut command = Command::new(binary("vault-example-app"));
    command
        .args(["--tenant", "acme", "--path", "db/primary", "--follow", "1"])
        .env("VAULT_ADDR", &server.addr)
        .env("VAULT_ROLE_ID", &role_id)
        .env("VAULT_SECRET_ID_FILE", &secret_file)
        .env_remove("VAULT_TOKEN");
    let mut app = Process::spawn(command);
    app.line("the login", |line| line.starts_with("logged in as "));
    let first = format!(
        "db/primary version 1: user=app password-sha256={}",
        sha256_hex(FIRST, 16)
    );
    app.line("the first version", |line| line == first);
    app.line("the watch", |line| line == "waiting for a change");
    put(&server, &root, "db/primary", SECOND);
    app.line("the event", |line| line.ends_with(": Updated db/primary"));
    let second = format!(
        "db/primary version 2: user=app password-sha256={}",
        sha256_hex(SECOND, 16)
    );
    app.line("the second version", |line| line == second);
    assert!(app.wait().success(), "{:?}", app.stderr());
    assert!(
        app.seen()
            .iter()
            .all(|line| !line.contains(FIRST) && !line.contains(SECOND))
    );
}

#[test]
fn examples_shell_script_reads_the_password_through_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let examples = repo().join("examples/shell");
    let output = cli_command(
        &server.addr,
        &reader_token(&server, &root),
        &[
            "run",
            "--tenant",
            "acme",
            "--env-file",
            text(&examples.join("db.env")),
            "--",
            text(&examples.join("migrate.sh")),
        ],
    )
    .output()
    .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout,
        format!(
            "migrating as app (password-sha256={})\nmigration done\n",
            sha256_hex(FIRST, 16)
        )
    );
    // Run directly, the script says how it is meant to be run.
    let direct = Command::new(examples.join("migrate.sh"))
        .env_remove("DB_USER")
        .env_remove("DB_PASSWORD")
        .output()
        .expect("script");
    assert!(!direct.status.success());
    assert!(String::from_utf8_lossy(&direct.stderr).contains("run me through vault-cli run"));
}

/// Generates the Python stubs from proto/ into `out` with the example's script.
fn python_stubs(out: &Path) {
    let generated = Command::new("sh")
        .arg(repo().join("examples/python/generate.sh"))
        .arg(out)
        .output()
        .expect("generate.sh");
    assert!(
        generated.status.success(),
        "generating Python stubs failed (scripts/setup installs grpcio-tools): {}",
        String::from_utf8_lossy(&generated.stderr)
    );
}

#[test]
fn examples_python_client_reads_a_secret_with_generated_stubs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(dir.path(), &[]);
    let stubs = dir.path().join("stubs");
    python_stubs(&stubs);
    let reader = reader_token(&server, &root);
    let get = |path: &str| {
        Command::new("python3")
            .arg(repo().join("examples/python/get_secret.py"))
            .args(["--tenant", "acme", path, "--field", "password", "--stubs"])
            .arg(&stubs)
            .env("VAULT_ADDR", &server.addr)
            .env("VAULT_TOKEN", &reader)
            .output()
            .expect("python3")
    };
    let output = get("db/primary");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        stdout,
        format!(
            "vault initialized=True sealed=False\ndb/primary version 1 fields: password, user\n\
             password-sha256={}\n",
            sha256_hex(FIRST, 16)
        )
    );
    let denied = get("web/other");
    assert_eq!(denied.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("vault error: PERMISSION_DENIED"),
        "{denied:?}"
    );
}

/// Posts `body` to the receiver with a signature header; returns the status line.
fn post(port: u16, signature: &str, body: &str) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         x-vault-signature: {signature}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    answer.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn examples_webhook_receiver_verifies_then_reads_with_its_own_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (server, root) = ready(
        dir.path(),
        &[
            "--webhook-allow-network",
            "127.0.0.1/32",
            "--webhook-backoff-ms",
            "50",
        ],
    );
    let stubs = dir.path().join("stubs");
    python_stubs(&stubs);
    let secret_file = dir.path().join("hook-secret");
    std::fs::write(&secret_file, "receiver-signing-secret-0123456789\n").expect("secret");
    let mut command = Command::new("python3");
    command
        .arg(repo().join("examples/webhook-receiver/receiver.py"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--secret-file",
            text(&secret_file),
            "--stubs",
        ])
        .arg(&stubs)
        .env("VAULT_ADDR", &server.addr)
        .env("VAULT_TOKEN", reader_token(&server, &root));
    let mut receiver = Process::spawn(command);
    let listening = receiver.line("the listening line", |line| {
        line.starts_with("listening on ")
    });
    let url = format!("{}hook", listening.trim_start_matches("listening on "));
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split('/').next())
        .and_then(|port| port.parse().ok())
        .expect("port");
    server
        .cli(
            Some(&root),
            &[
                "webhook",
                "create",
                "--tenant",
                "acme",
                "--url",
                &url,
                "--paths",
                "db/*",
                "--events",
                "created,updated",
                "--secret-file",
                text(&secret_file),
            ],
        )
        .ok();
    put(&server, &root, "db/primary", SECOND);
    let expected = format!(
        "updated db/primary -> read version 2 password-sha256={}",
        sha256_hex(SECOND, 16)
    );
    receiver.line("the verified delivery", |line| line.ends_with(&expected));

    // A forged notification (wrong key) and a replayed old one are refused and not acted on.
    let body = r#"{"id":"forged","tenant":"acme","type":"updated","path":"db/primary"}"#;
    let forged = vault_core::vault::sign(b"not-the-secret", now(), body.as_bytes());
    assert!(post(port, &forged, body).contains(" 401"), "forged");
    receiver.line("the forged one refused", |line| {
        line == "rejected: signature does not match"
    });
    let stale = vault_core::vault::sign(
        b"receiver-signing-secret-0123456789",
        now() - 3600,
        body.as_bytes(),
    );
    assert!(post(port, &stale, body).contains(" 401"), "stale");
    receiver.line("the stale one refused", |line| {
        line == "rejected: timestamp outside the tolerance"
    });
    assert!(
        receiver
            .seen()
            .iter()
            .all(|line| !line.contains("delivery forged"))
    );
}
