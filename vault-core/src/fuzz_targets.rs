//! Fuzz targets (`vault-fuzz`) for vault-core's parsers of outside input: names and paths,
//! policies, JWTs and JWKS, TOTP codes, the `vault:vN:` ciphertext form, CIDRs, and audit
//! lines as `verify` reads them. Each never panics, whatever the bytes. Without
//! `FUZZ_SECONDS` they replay the corpus and a few thousand mutations (the suite); RELIABILITY.md
//! says how to run one for an hour.

use std::net::IpAddr;

use vault_fuzz::{arbitrary::Unstructured, run, text};
use zeroize::Zeroizing;

use crate::{
    cidr::Cidr,
    kms::{KeyName, KeyType, parse_versioned},
    names::{FolderPrefix, SecretPath, TenantName},
    policy::{Capability, Policy, PolicyName, decide},
};

const HERE: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn fuzz_names() {
    run(
        HERE,
        "names",
        &[b"acme", b"db/primary", b"db/", b"a/../b", b"keys/k1"],
        |bytes| {
            let mut u = Unstructured::new(bytes);
            let raw = String::from_utf8_lossy(bytes);
            for candidate in [text(&mut u), raw.into_owned()] {
                if let Ok(name) = TenantName::parse(&candidate) {
                    assert_eq!(name.as_str(), candidate, "a tenant name is kept as given");
                }
                if let Ok(path) = SecretPath::parse(&candidate) {
                    assert!(!path.as_str().is_empty());
                    assert!(!path.as_str().split('/').any(|part| part == ".."));
                }
                let _ = FolderPrefix::parse(&candidate);
                let _ = PolicyName::parse(&candidate);
                let _ = KeyName::parse(&candidate);
                let _ = KeyType::parse(&candidate);
                let _ = Capability::parse(&candidate);
            }
        },
    );
}

#[test]
fn fuzz_policy() {
    run(HERE, "policy", &[b"db/*\0read\0list", b"\0deny"], |bytes| {
        let mut u = Unstructured::new(bytes);
        let mut rules = Vec::new();
        for _ in 0..u.int_in_range(0..=6u8).unwrap_or(0) {
            let capabilities = (0..u.int_in_range(0..=4u8).unwrap_or(0))
                .map(|_| text(&mut u))
                .collect();
            rules.push((text(&mut u), capabilities));
        }
        let name = PolicyName::parse("fuzzed").expect("a fixed name");
        if let Ok(policy) = Policy::new(name, rules) {
            let path = text(&mut u);
            for capability in ["read", "write", "list", "delete", "deny"] {
                if let Ok(capability) = Capability::parse(capability) {
                    let _ = decide(std::slice::from_ref(&policy), &path, capability);
                }
            }
        }
    });
}

#[test]
fn fuzz_jwt() {
    let jwks = br#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
    run(
        HERE,
        "jwt",
        &[
            jwks,
            b"eyJhbGciOiJFUzI1NiIsImtpZCI6ImsifQ.eyJpc3MiOiJpIn0.AAAA",
        ],
        |bytes| {
            // The JWKS parser on the raw bytes; the token check against the fixed key set and
            // against whatever set the bytes parse to.
            let parsed = crate::jwt::Jwks::parse(bytes);
            let fixed = crate::jwt::Jwks::parse(jwks).expect("the fixed key set");
            let mut u = Unstructured::new(bytes);
            let token = if bytes.first().is_some_and(|b| b % 2 == 0) {
                text(&mut u)
            } else {
                String::from_utf8_lossy(bytes).into_owned()
            };
            let audiences = vec!["vault".to_owned()];
            let expect = crate::jwt::Expectations {
                issuer: "i",
                audiences: &audiences,
                now_unix: 1_800_000_000,
                leeway_seconds: 60,
            };
            let _ = crate::jwt::verify(&token, &fixed, &expect);
            if let Ok(set) = parsed {
                let _ = crate::jwt::verify(&token, &set, &expect);
            }
        },
    );
}

#[test]
fn fuzz_totp() {
    let secret = crate::totp::TotpSecret::from_bytes(Zeroizing::new(vec![7u8; 20]))
        .expect("a 20-byte secret");
    run(HERE, "totp", &[b"123456", b"000000", b"12345"], |bytes| {
        let mut u = Unstructured::new(bytes);
        let code = String::from_utf8_lossy(bytes).into_owned();
        let now: i64 = u.arbitrary().unwrap_or(0);
        let last: Option<u64> = u.arbitrary().unwrap_or(None);
        let _ = crate::totp::check(&secret, &code, now, last);
        let _ = crate::totp::check(&secret, &text(&mut u), 1_800_000_000, None);
    });
}

#[test]
fn fuzz_ciphertext() {
    run(
        HERE,
        "ciphertext",
        &[b"vault:v1:AAAA", b"vault:v4294967295:", b"vault:v01:AA=="],
        |bytes| {
            let mut u = Unstructured::new(bytes);
            for candidate in [String::from_utf8_lossy(bytes).into_owned(), text(&mut u)] {
                if let Ok((version, _)) = parse_versioned("ciphertext", &candidate) {
                    assert!(version > 0, "version 0 is never a version");
                }
            }
        },
    );
}

#[test]
fn fuzz_cidr() {
    run(
        HERE,
        "cidr",
        &[b"10.0.0.0/8", b"::1/128", b"0.0.0.0/0", b"192.168.1.1"],
        |bytes| {
            let mut u = Unstructured::new(bytes);
            let candidate = String::from_utf8_lossy(bytes).into_owned();
            let parsed = Cidr::parse(&candidate);
            let address: Option<IpAddr> = u.arbitrary::<[u8; 16]>().ok().map(IpAddr::from);
            if let Ok(cidr) = &parsed
                && let Some(address) = address
            {
                let _ = cidr.contains(address);
            }
            let _ = Cidr::allows(&[candidate, text(&mut u)], address);
        },
    );
}

#[test]
fn fuzz_audit_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = br#"{"seq":1,"time":"2026-01-01T00:00:00.000000000Z","kind":"outcome","method":"/vault.v1.Secrets/Get","outcome":"ok","prev":"0000000000000000000000000000000000000000000000000000000000000000"}"#;
    run(HERE, "audit-line", &[good], |bytes| {
        // A line as `verify` reads it, and a whole segment of such lines through the scan.
        if let Ok(record) = serde_json::from_slice::<crate::audit::record::Record>(bytes) {
            let line = record.to_line();
            let again: crate::audit::record::Record =
                serde_json::from_slice(&line).expect("a line the vault writes reads back");
            assert_eq!(again.to_line(), line);
            let _ = record.signature_valid(&[0u8; 32]);
        }
        let segment = dir.path().join("audit-00000001.jsonl");
        let mut contents = good.to_vec();
        contents.push(b'\n');
        contents.extend_from_slice(bytes);
        if std::fs::write(&segment, &contents).is_ok() {
            let _ = crate::audit::verify::scan(dir.path(), Some(&[0u8; 32]), |_, _| {});
        }
    });
}
