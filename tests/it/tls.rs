//! TLS and mutual TLS end to end, with certificates generated here.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use vault_tests::{TestServer, audit_records, run_cli};

pub(crate) struct Pki {
    pub(crate) ca: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
    pub(crate) other_ca: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let pem = params.self_signed(&key).expect("self-signed").pem();
    (params, key, pem)
}

pub(crate) fn pki(dir: &Path) -> Pki {
    let write = |name: &str, contents: String| {
        let path = dir.join(name);
        std::fs::write(&path, contents).expect("write pem");
        path
    };
    let (ca_params, ca_key, ca_pem) = ca("vault test CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().expect("key");
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&server_key, &issuer)
        .expect("sign");
    let client_key = KeyPair::generate().expect("key");
    let mut client_params =
        CertificateParams::new(vec!["vault-client".to_owned()]).expect("params");
    client_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "vault-client");
    let client = client_params.signed_by(&client_key, &issuer).expect("sign");
    let (_, _, other_pem) = ca("some other CA");
    Pki {
        ca: write("ca.pem", ca_pem),
        server_cert: write("server.pem", server.pem()),
        server_key: write("server.key", server_key.serialize_pem()),
        client_cert: write("client.pem", client.pem()),
        client_key: write("client.key", client_key.serialize_pem()),
        other_ca: write("other-ca.pem", other_pem),
    }
}

pub(crate) fn https(server: &TestServer) -> String {
    server.addr.replacen("http://", "https://", 1)
}

pub(crate) fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

#[test]
fn tls_serves_clients_that_trust_the_ca_and_only_them() {
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
    let trusted = run_cli(
        &addr,
        None,
        &["--ca-cert", text(&pki.ca), "status", "--format", "json"],
        None,
    )
    .status_json();
    assert_eq!(trusted["initialized"], false);
    let no_ca = run_cli(&addr, None, &["status"], None);
    assert!(
        no_ca.failed().contains("no CA certificate is given"),
        "{}",
        no_ca.stderr
    );
    let wrong_ca = run_cli(
        &addr,
        None,
        &["--ca-cert", text(&pki.other_ca), "status"],
        None,
    );
    assert!(
        wrong_ca.failed().contains("cannot connect to the vault"),
        "{}",
        wrong_ca.stderr
    );
    let plaintext = run_cli(&server.addr, None, &["status"], None);
    assert_eq!(
        plaintext.code, 1,
        "plaintext must not reach a TLS listener: {}",
        plaintext.stdout
    );
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki(dir.path());
    let server = TestServer::start(
        &dir.path().join("data"),
        &[
            "--tls-cert",
            text(&pki.server_cert),
            "--tls-key",
            text(&pki.server_key),
            "--tls-client-ca",
            text(&pki.ca),
        ],
    );
    let addr = https(&server);
    let anonymous = run_cli(&addr, None, &["--ca-cert", text(&pki.ca), "status"], None);
    // Refused: exit 1 with an error (2 would be a sealed vault's answer).
    assert_eq!(
        anonymous.code, 1,
        "a client without a certificate was served: {}",
        anonymous.stdout
    );
    let with_cert = run_cli(
        &addr,
        None,
        &[
            "--ca-cert",
            text(&pki.ca),
            "--client-cert",
            text(&pki.client_cert),
            "--client-key",
            text(&pki.client_key),
            "status",
            "--format",
            "json",
        ],
        None,
    );
    assert_eq!(with_cert.status_json()["sealed"], true);
    // The audit record still names the source address under TLS.
    let records = audit_records(&server.audit_dir());
    let status = records
        .iter()
        .rev()
        .find(|r| r["method"] == "/vault.v1.System/Status")
        .expect("status record");
    assert!(
        status["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:")),
        "{status}"
    );
}

#[test]
fn sighup_reloads_the_tls_certificate_and_keeps_it_when_the_new_one_is_bad() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    std::fs::create_dir_all(&first).expect("dir");
    std::fs::create_dir_all(&second).expect("dir");
    let (old, new) = (pki(&first), pki(&second));
    let (cert, key) = (dir.path().join("tls.pem"), dir.path().join("tls.key"));
    let install = |pki: &Pki| {
        std::fs::copy(&pki.server_cert, &cert).expect("copy");
        std::fs::copy(&pki.server_key, &key).expect("copy");
    };
    install(&old);
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--tls-cert", text(&cert), "--tls-key", text(&key)],
    );
    let addr = https(&server);
    let status = |ca: &Path| {
        run_cli(
            &addr,
            None,
            &["--ca-cert", text(ca), "status", "--format", "json"],
            None,
        )
    };
    status(&old.ca).status_json();
    // A key that is not the certificate's: the reload is refused, the old pair stays.
    std::fs::copy(&new.server_cert, &cert).expect("copy");
    server.signal("HUP");
    let audit = server.audit_dir();
    vault_tests::eventually("the refused reload is audited", || {
        audit_records(&audit).iter().any(|r| {
            r["detail"]
                .as_str()
                .is_some_and(|d| d.contains("does not match"))
        })
    });
    status(&old.ca).status_json();
    install(&new);
    server.signal("HUP");
    // `status` exits 2 for a sealed vault: an answer is JSON on stdout.
    let answered =
        |ca: &Path| serde_json::from_str::<serde_json::Value>(&status(ca).stdout).is_ok();
    vault_tests::eventually("new connections get the new certificate", || {
        answered(&new.ca)
    });
    assert!(
        status(&old.ca)
            .failed()
            .contains("cannot connect to the vault"),
        "the old certificate is still served"
    );
    let reloads: Vec<String> = audit_records(&audit)
        .iter()
        .filter_map(|r| r["detail"].as_str().map(str::to_owned))
        .filter(|d| d.contains("configuration reloaded on SIGHUP"))
        .collect();
    assert!(
        reloads
            .iter()
            .any(|d| d.contains("applied TLS certificate (now sha256 ")),
        "{reloads:?}"
    );
}
