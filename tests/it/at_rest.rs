//! Confidentiality at rest: canary secrets, shares and the root token never appear in any file
//! under the data directory, raw, hex or base64; and a canary from every path that takes a
//! secret (fields, named keys, webhooks, TOTP, AppRole, tokens, shares, backups) is in no file,
//! no server log and no CLI output that is not there to show it.

use std::path::Path;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE},
};
use vault_tests::{CliOutput, TestServer, init, unseal};

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read_dir")
        .map_while(Result::ok)
    {
        let path = entry.path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// Every encoding a careless implementation might store `needle` in.
fn encodings(needle: &str) -> Vec<Vec<u8>> {
    byte_encodings(needle.as_bytes())
}

/// `encodings` of raw bytes (a data key, a TOTP secret): raw, hex in both cases, and the
/// stable middle of base64 (standard and URL-safe) at each alignment.
fn byte_encodings(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![
        bytes.to_vec(),
        hex::encode(bytes).into_bytes(),
        hex::encode_upper(bytes).into_bytes(),
    ];
    // Base64 depends on alignment: take the stable middle of the encoding at each offset.
    for offset in 0..3 {
        for engine in [&STANDARD, &URL_SAFE] {
            let encoded = engine.encode(&bytes[offset..]);
            let stable = &encoded[..encoded.len().saturating_sub(4)];
            forms.push(stable.as_bytes().to_vec());
        }
    }
    forms
}

#[test]
fn canaries_never_reach_the_disk_in_any_encoding() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]);
    let (shares, token) = init(&server, 3, 2);
    unseal(&server, &[&shares[0], &shares[1]]);
    let root_token = token.clone();
    let token = Some(token.as_str());
    server.cli(token, &["tenant", "create", "acme"]).ok();
    let canaries: Vec<String> = (0..5)
        .map(|i| format!("CANARY-{i}-d41d8cd98f00b204e9800998ecf8427e"))
        .collect();
    for (i, canary) in canaries.iter().enumerate() {
        let field = format!("password={canary}");
        server
            .cli(
                token,
                &["put", "--tenant", "acme", &format!("canaries/c{i}"), &field],
            )
            .ok();
        server
            .cli(
                token,
                &[
                    "put",
                    "--tenant",
                    "acme",
                    &format!("canaries/c{i}"),
                    &field,
                    "note=second version",
                ],
            )
            .ok();
    }
    server.cli(token, &["rotate", "--tenant", "acme"]).ok();
    // Read one back so the test would notice if the canaries were not stored at all.
    assert_eq!(
        server
            .cli(
                token,
                &[
                    "get",
                    "--tenant",
                    "acme",
                    "canaries/c0",
                    "--field",
                    "password"
                ]
            )
            .ok(),
        canaries[0]
    );
    server.kill();
    // Restart and stop once more so RocksDB has flushed and compacted what it will.
    let restarted = TestServer::start(dir.path(), &[]);
    restarted.kill();

    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(all.len() > 5, "expected RocksDB files, found {all:?}");
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    for secret in canaries
        .iter()
        .chain(shares.iter())
        .chain(std::iter::once(&root_token))
    {
        for form in encodings(secret) {
            needles.push((secret.chars().take(12).collect(), form));
        }
    }
    let mut hits = Vec::new();
    for file in &all {
        let contents = std::fs::read(file).expect("read file");
        for (label, needle) in &needles {
            if contents
                .windows(needle.len())
                .any(|window| window == needle.as_slice())
            {
                hits.push(format!("{label}… in {}", file.display()));
            }
        }
    }
    assert!(hits.is_empty(), "secrets found at rest: {hits:#?}");
}

/// The name of `byte_encodings(..)[index]`, for failure messages.
fn encoding_name(index: usize) -> String {
    match index {
        0 => "raw".to_owned(),
        1 => "hex".to_owned(),
        2 => "upper-case hex".to_owned(),
        n => {
            let engine = ["standard", "URL-safe"][(n - 3) % 2];
            format!("{engine} base64 at offset {}", (n - 3) / 2)
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// RFC 4648 base32 (upper case; padding ignored), as `mfa enroll` prints the TOTP secret.
fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in text.bytes().filter(|&c| c != b'=') {
        let value = alphabet.iter().position(|&a| a == c).expect("base32") as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

/// What vault-cli printed, kept for the scan: every command's stderr, and the stdout of the
/// commands whose job is not to show a secret.
#[derive(Default)]
struct Printed(Vec<(String, String)>);

impl Printed {
    /// A command that shows no secret: its stdout and stderr are scanned.
    fn quiet(&mut self, what: &str, output: CliOutput) -> CliOutput {
        self.0
            .push((format!("vault-cli {what}: stdout"), output.stdout.clone()));
        self.shows_secret(what, output)
    }

    /// A command whose job is to show a secret (once, on stdout): only its stderr is scanned.
    fn shows_secret(&mut self, what: &str, output: CliOutput) -> CliOutput {
        self.0
            .push((format!("vault-cli {what}: stderr"), output.stderr.clone()));
        output
    }
}

const READER_POLICY: &str = "[[rule]]\npath = \"db/*\"\ncapabilities = [\"read\", \"list\"]\n";

#[test]
fn canaries_from_every_path_that_takes_a_secret_are_in_no_file_and_no_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The files vault-cli reads secrets from (NAME=@FILE, --in, --share-file, --secret-file)
    // hold them by design: they live outside the scanned directory.
    let inputs = tempfile::tempdir().expect("tempdir");
    let input = |name: &str, contents: &str| {
        let path = inputs.path().join(name);
        std::fs::write(&path, contents).expect("write input file");
        path.to_str().expect("utf-8").to_owned()
    };
    let data = dir.path().join("data");
    let key_backups = dir.path().join("key-backups");
    let flags = [
        "--key-backup-dir",
        key_backups.to_str().expect("utf-8"),
        // The webhooks post to loopback (port 9, where nothing listens).
        "--webhook-allow-network",
        "127.0.0.1/32",
    ];
    let canary = |what: &str| format!("CANARY-{what}-7f3a9c21b8d04e65");
    let mut printed = Printed::default();

    // Everything the server logs, at every level, is scanned too.
    let server = TestServer::start_with_env(&data, &flags, &[("VAULT_LOG", "trace")]);
    let (shares, root) = init(&server, 3, 2);
    // Unseal: one share on standard input, one from --share-file.
    printed
        .quiet(
            "unseal (standard input)",
            server.cli_with_stdin(
                None,
                &["unseal", "--format", "json"],
                Some(shares[0].as_bytes()),
            ),
        )
        .json();
    let share_file = input("share", &shares[1]);
    let unsealed = printed
        .quiet(
            "unseal --share-file",
            server.cli(
                None,
                &["unseal", "--share-file", &share_file, "--format", "json"],
            ),
        )
        .json();
    assert_eq!(unsealed["sealed"], false, "{unsealed}");
    let token = Some(root.as_str());
    let cli = |args: &[&str]| server.cli(token, args);
    printed
        .quiet("tenant create", cli(&["tenant", "create", "acme"]))
        .ok();
    let policy = input("reader.toml", READER_POLICY);
    printed
        .quiet(
            "policy write",
            cli(&["policy", "write", "--tenant", "acme", "reader", &policy]),
        )
        .ok();

    // Webhooks (before the writes, so deliveries are queued and signed): a signing secret the
    // vault generates and prints once, and one read from --secret-file (never echoed).
    let hook = printed
        .shows_secret(
            "webhook create",
            cli(&[
                "webhook",
                "create",
                "--tenant",
                "acme",
                "--url",
                "http://127.0.0.1:9/hook",
                "--format",
                "json",
            ]),
        )
        .json();
    let signing_secret = hook["secret"]
        .as_str()
        .expect("a generated signing secret")
        .to_owned();
    let given_signing_secret = canary("webhook-secret-file");
    let secret_file = input("hook-secret", &given_signing_secret);
    let given = printed
        .quiet(
            "webhook create --secret-file",
            cli(&[
                "webhook",
                "create",
                "--tenant",
                "acme",
                "--url",
                "http://127.0.0.1:9/given",
                "--secret-file",
                &secret_file,
                "--format",
                "json",
            ]),
        )
        .json();
    assert!(given.get("secret").is_none(), "{given}");

    // Secret fields: NAME=VALUE, a second version, NAME=- (standard input), NAME=@FILE, patch.
    let by_argument = canary("put-argument");
    printed
        .quiet(
            "put NAME=VALUE",
            cli(&[
                "put",
                "--tenant",
                "acme",
                "db/argument",
                &format!("password={by_argument}"),
            ]),
        )
        .ok();
    let second_version = canary("put-second-version");
    printed
        .quiet(
            "put (second version)",
            cli(&[
                "put",
                "--tenant",
                "acme",
                "db/argument",
                &format!("password={second_version}"),
                "note=not a secret",
            ]),
        )
        .ok();
    let by_stdin = canary("put-stdin");
    printed
        .quiet(
            "put NAME=-",
            server.cli_with_stdin(
                token,
                &["put", "--tenant", "acme", "db/stdin", "password=-"],
                Some(by_stdin.as_bytes()),
            ),
        )
        .ok();
    let by_file = canary("put-file");
    let value_file = input("value", &by_file);
    printed
        .quiet(
            "put NAME=@FILE",
            cli(&[
                "put",
                "--tenant",
                "acme",
                "db/file",
                &format!("password=@{value_file}"),
            ]),
        )
        .ok();
    let patched = canary("patch");
    printed
        .quiet(
            "patch",
            cli(&[
                "patch",
                "--tenant",
                "acme",
                "db/argument",
                &format!("api_key={patched}"),
            ]),
        )
        .ok();
    // Read back, so the test would notice if nothing was stored.
    for (path, field, version, expected) in [
        ("db/argument", "password", "1", &by_argument),
        ("db/argument", "password", "0", &second_version),
        ("db/argument", "api_key", "0", &patched),
        ("db/stdin", "password", "0", &by_stdin),
        ("db/file", "password", "0", &by_file),
    ] {
        let read = printed.shows_secret(
            "get --field",
            cli(&[
                "get",
                "--tenant",
                "acme",
                path,
                "--field",
                field,
                "--version",
                version,
            ]),
        );
        assert_eq!(read.ok(), expected.as_str(), "{path} {field} v{version}");
    }

    // A named key: plaintext on standard input with a sensitive context value, plaintext from
    // --in, and a data key (its plaintext is a secret the vault prints once).
    printed
        .quiet(
            "key create",
            cli(&["key", "create", "--tenant", "acme", "orders"]),
        )
        .ok();
    let plaintext = canary("key-encrypt-stdin");
    let sensitive = format!("ssn={}", canary("sensitive-context"));
    let ciphertext = printed
        .quiet(
            "key encrypt (standard input)",
            server.cli_with_stdin(
                token,
                &[
                    "key",
                    "encrypt",
                    "--tenant",
                    "acme",
                    "orders",
                    "--sensitive-context",
                    &sensitive,
                ],
                Some(plaintext.as_bytes()),
            ),
        )
        .ok()
        .trim()
        .to_owned();
    assert!(ciphertext.starts_with("vault:v1:"), "{ciphertext}");
    let decrypted = printed
        .shows_secret(
            "key decrypt",
            cli(&[
                "key",
                "decrypt",
                "--tenant",
                "acme",
                "orders",
                &ciphertext,
                "--sensitive-context",
                &sensitive,
            ]),
        )
        .ok()
        .to_owned();
    assert_eq!(decrypted, plaintext);
    let from_file = canary("key-encrypt-in");
    let plaintext_file = input("plaintext", &from_file);
    printed
        .quiet(
            "key encrypt --in",
            cli(&[
                "key",
                "encrypt",
                "--tenant",
                "acme",
                "orders",
                "--in",
                &plaintext_file,
            ]),
        )
        .ok();
    let data_key = printed
        .shows_secret(
            "key datakey",
            cli(&[
                "key", "datakey", "--tenant", "acme", "orders", "--format", "json",
            ]),
        )
        .json();
    let data_key = STANDARD
        .decode(
            data_key["plaintext_base64"]
                .as_str()
                .expect("the data key's plaintext"),
        )
        .expect("base64");
    assert_eq!(data_key.len(), 32);

    // TOTP: the root token enrols another entity; the secret is printed once.
    let enrolled = printed
        .shows_secret(
            "mfa enroll",
            cli(&[
                "mfa",
                "enroll",
                "--entity",
                "ops:canary-operator",
                "--format",
                "json",
            ]),
        )
        .json();
    let totp_secret = enrolled["secret"]
        .as_str()
        .expect("the TOTP secret")
        .to_owned();
    let totp_bytes = base32_decode(&totp_secret);
    assert_eq!(totp_bytes.len(), vault_core::totp::SECRET_LEN, "{enrolled}");

    // AppRole: a role, a secret id (printed once), and a login with it on standard input.
    let role = printed
        .quiet(
            "approle write",
            cli(&[
                "approle",
                "write",
                "--tenant",
                "acme",
                "app",
                "--policy",
                "reader",
                "--refresh-max-ttl",
                "2h",
                "--format",
                "json",
            ]),
        )
        .json();
    let role_id = role["role_id"].as_str().expect("role id").to_owned();
    let secret_id = printed
        .shows_secret(
            "approle secret-id",
            cli(&[
                "approle",
                "secret-id",
                "--tenant",
                "acme",
                "app",
                "--format",
                "json",
            ]),
        )
        .json()["secret_id"]
        .as_str()
        .expect("secret id")
        .to_owned();
    let login = printed
        .shows_secret(
            "login --method approle",
            server.cli_with_stdin(
                None,
                &[
                    "login",
                    "--method",
                    "approle",
                    "--tenant",
                    "acme",
                    "--role-id",
                    &role_id,
                    "--no-store",
                    "--format",
                    "json",
                ],
                Some(secret_id.as_bytes()),
            ),
        )
        .json();
    let login_token = login["token"].as_str().expect("token").to_owned();
    let login_refresh = login["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let read = printed.shows_secret(
        "get (AppRole token)",
        server.cli(
            Some(&login_token),
            &["get", "--tenant", "acme", "db/stdin", "--field", "password"],
        ),
    );
    assert_eq!(read.ok(), by_stdin);

    // Tokens: one created with a refresh token (printed once); a lookup shows neither.
    let created = printed
        .shows_secret(
            "token create",
            cli(&[
                "token",
                "create",
                "--tenant",
                "acme",
                "--policy",
                "reader",
                "--refresh-max-ttl",
                "2h",
                "--format",
                "json",
            ]),
        )
        .json();
    let created_token = created["token"].as_str().expect("token").to_owned();
    let created_refresh = created["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    printed
        .quiet(
            "token lookup",
            server.cli(
                Some(&created_token),
                &["token", "lookup", "--format", "json"],
            ),
        )
        .json();

    // A new KEK version, then a backup: the data backup to --out, the key backup beside the
    // server's others.
    printed
        .quiet("rotate", cli(&["rotate", "--tenant", "acme"]))
        .ok();
    // A rekey: the old shares go in on standard input, the new ones come out once (and are
    // needles from here on); the verification reads two of the new ones back in.
    let started = printed
        .quiet(
            "rekey init",
            cli(&[
                "rekey",
                "init",
                "--shares",
                "3",
                "--threshold",
                "2",
                "--format",
                "json",
            ]),
        )
        .json();
    let nonce = started["nonce"].as_str().expect("rekey nonce").to_owned();
    let mut staged = serde_json::Value::Null;
    for share in [&shares[0], &shares[1]] {
        staged = printed
            .shows_secret(
                "rekey submit",
                server.cli_with_stdin(
                    None,
                    &["rekey", "submit", "--nonce", &nonce, "--format", "json"],
                    Some(share.as_bytes()),
                ),
            )
            .json();
    }
    let new_shares: Vec<String> = staged["shares"]
        .as_array()
        .expect("the new shares")
        .iter()
        .map(|s| s.as_str().expect("a share").to_owned())
        .collect();
    let verification = staged["verification_nonce"]
        .as_str()
        .expect("verification nonce")
        .to_owned();
    for share in &new_shares[..2] {
        printed.quiet(
            "rekey verify",
            server.cli_with_stdin(
                None,
                &[
                    "rekey",
                    "verify",
                    "--nonce",
                    &verification,
                    "--format",
                    "json",
                ],
                Some(share.as_bytes()),
            ),
        );
    }
    let backup = dir.path().join("vault.vbk");
    printed
        .quiet(
            "backup create",
            cli(&[
                "backup",
                "create",
                "--out",
                backup.to_str().expect("utf-8"),
                "--format",
                "json",
            ]),
        )
        .json();
    assert!(backup.exists(), "no backup at {}", backup.display());
    let mut key_backup_files = Vec::new();
    files(&key_backups, &mut key_backup_files);
    assert!(
        !key_backup_files.is_empty(),
        "no key backup in {}",
        key_backups.display()
    );

    // Stopped the graceful way (its memory tables flushed to table files), its log read
    // once it has exited.
    let banner = server.banner.join("\n");
    let log = server.log_handle();
    server.terminate();
    let mut logs = vec![
        ("the server's stdout".to_owned(), banner),
        (
            "the server's stderr".to_owned(),
            vault_tests::lines_after_exit(&log),
        ),
    ];
    // Restarted, unsealed and stopped once more, so RocksDB has opened, replayed and flushed
    // what it will.
    let restarted = TestServer::start_with_env(&data, &flags, &[("VAULT_LOG", "trace")]);
    unseal(&restarted, &[&new_shares[0], &new_shares[2]]);
    let banner = restarted.banner.join("\n");
    let log = restarted.log_handle();
    restarted.terminate();
    logs.push(("the restarted server's stdout".to_owned(), banner));
    logs.push((
        "the restarted server's stderr".to_owned(),
        vault_tests::lines_after_exit(&log),
    ));

    let mut secrets: Vec<(String, Vec<u8>)> = shares
        .iter()
        .enumerate()
        .map(|(i, share)| (format!("unseal share {i}"), share.as_bytes().to_vec()))
        .chain(new_shares.iter().enumerate().map(|(i, share)| {
            (
                format!("rekeyed unseal share {i}"),
                share.as_bytes().to_vec(),
            )
        }))
        .collect();
    for (what, value) in [
        ("the root token", &root),
        ("a put field (argument)", &by_argument),
        ("a put field (second version)", &second_version),
        ("a put field (standard input)", &by_stdin),
        ("a put field (@FILE)", &by_file),
        ("a patched field", &patched),
        ("a key encrypt plaintext (standard input)", &plaintext),
        ("a sensitive context pair", &sensitive),
        ("a key encrypt plaintext (--in)", &from_file),
        ("a generated webhook signing secret", &signing_secret),
        (
            "a webhook signing secret (--secret-file)",
            &given_signing_secret,
        ),
        ("the TOTP secret (base32)", &totp_secret),
        ("the AppRole secret id", &secret_id),
        ("the AppRole login's token", &login_token),
        ("the AppRole login's refresh token", &login_refresh),
        ("a created token", &created_token),
        ("a created token's refresh token", &created_refresh),
    ] {
        secrets.push((what.to_owned(), value.as_bytes().to_vec()));
    }
    // The sensitive context value alone, not only the NAME=VALUE pair.
    secrets.push((
        "a sensitive context value".to_owned(),
        canary("sensitive-context").into_bytes(),
    ));
    secrets.push(("the data key's plaintext (bytes)".to_owned(), data_key));
    secrets.push(("the TOTP secret (bytes)".to_owned(), totp_bytes));
    let needles: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .flat_map(|(what, bytes)| {
            byte_encodings(bytes)
                .into_iter()
                .enumerate()
                .map(move |(i, form)| (format!("{what} ({})", encoding_name(i)), form))
        })
        .collect();

    let mut all = Vec::new();
    files(dir.path(), &mut all);
    let audit = data.join("audit");
    for (what, place) in [
        ("the audit log", &audit),
        ("a key backup", &key_backups),
        ("a data backup", &backup),
    ] {
        assert!(
            all.iter().any(|file| file.starts_with(place)),
            "{what} is scanned: {all:#?}"
        );
    }
    let mut hits = Vec::new();
    for file in &all {
        let contents = std::fs::read(file).expect("read file");
        for (what, needle) in &needles {
            if contains(&contents, needle) {
                hits.push(format!("{what} in {}", file.display()));
            }
        }
    }
    for (whose, text) in logs.iter().chain(&printed.0) {
        for (what, needle) in &needles {
            if contains(text.as_bytes(), needle) {
                hits.push(format!("{what} in {whose}"));
            }
        }
    }
    assert!(
        hits.is_empty(),
        "secrets found at rest or in output: {hits:#?}"
    );
}
