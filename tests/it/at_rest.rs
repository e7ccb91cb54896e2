//! Confidentiality at rest: canary secrets, shares and the root token never appear in any file
//! under the data directory, raw, hex or base64.

use std::path::Path;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE},
};
use vault_tests::{TestServer, init, unseal};

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
    let bytes = needle.as_bytes();
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
