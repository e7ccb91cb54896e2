//! Day-one operations (issue 20), against the real server: the Prometheus endpoint, scraped
//! with a real HTTP client and parsed by Prometheus's own Python text parser; the process
//! hardening (no core dumps, `--mlock`, and a refused start when memory cannot be locked).

use std::{fs, path::Path, process::Command};

use tonic::Code;
use vault_proto::v1::{self, secrets_client::SecretsClient};
use vault_tests::{TestServer, channel, eventually, init, runtime, unseal, with_token};

/// One scrape, as prometheus_client's parser read it.
struct Scraped {
    samples: Vec<(String, serde_json::Map<String, serde_json::Value>, f64)>,
    families: serde_json::Map<String, serde_json::Value>,
    text: String,
}

impl Scraped {
    /// The value of the sample `name` whose labels include every pair of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(sample, have, _)| {
                sample == name
                    && labels
                        .iter()
                        .all(|(key, value)| have.get(*key).and_then(|v| v.as_str()) == Some(value))
            })
            .map(|(_, _, value)| *value)
    }

    fn must(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.value(name, labels).unwrap_or_else(|| {
            panic!(
                "no sample {name} with {labels:?} in the scrape:\n{}",
                self.text
            )
        })
    }
}

/// Scrapes `url` with urllib and parses it with prometheus_client (tests/fixtures).
fn scrape(url: &str) -> Scraped {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/scrape_metrics.py");
    let output = Command::new("python3")
        .arg(&script)
        .arg(url)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the scrape did not parse\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the script prints JSON");
    let samples = parsed["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .map(|sample| {
            (
                sample[0].as_str().expect("name").to_owned(),
                sample[1].as_object().expect("labels").clone(),
                sample[2].as_f64().expect("value"),
            )
        })
        .collect();
    Scraped {
        samples,
        families: parsed["families"].as_object().expect("families").clone(),
        text: parsed["text"].as_str().expect("text").to_owned(),
    }
}

fn get(path: &str) -> v1::GetRequest {
    v1::GetRequest {
        tenant: "acme".into(),
        path: path.into(),
        version: 0,
    }
}

#[test]
fn metrics_are_served_in_prometheus_text_and_count_what_happens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let fault = dir.path().join("audit-fault");
    let fault_flag = fault.to_str().expect("utf-8");
    let server = TestServer::start(
        &data,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--danger-audit-fault-file",
            fault_flag,
            "--source-rate-limit",
            "20",
        ],
    );
    let url = server.metrics_url();
    let sealed = scrape(&url);
    assert_eq!(sealed.must("vault_initialized", &[]), 0.0);
    assert_eq!(sealed.must("vault_sealed", &[]), 1.0);
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(
            Some(&root),
            &["put", "--tenant", "acme", "pathq7", "password=s3cret"],
        )
        .ok();
    runtime().block_on(async {
        let mut secrets = SecretsClient::new(channel(&server).await);
        for _ in 0..5 {
            secrets
                .get(with_token(get("pathq7"), &root))
                .await
                .expect("a get");
        }
        let denied = secrets
            .get(with_token(get("pathq7"), "vt.not-a-token"))
            .await
            .expect_err("an unknown token");
        assert_eq!(denied.code(), Code::PermissionDenied);
        // The audit log fails: the call fails with it, and the writer's failure is counted.
        fs::write(&fault, b"").expect("inject the fault");
        let unavailable = secrets
            .get(with_token(get("pathq7"), &root))
            .await
            .expect_err("no audit, no answer");
        assert_eq!(unavailable.code(), Code::Unavailable);
        fs::remove_file(&fault).expect("clear the fault");
        // A flood past the source's rate (20/s, bursts of 40).
        let mut refused = 0;
        for _ in 0..120 {
            if let Err(status) = secrets.get(with_token(get("pathq7"), &root)).await
                && status.code() == Code::ResourceExhausted
            {
                refused += 1;
            }
        }
        assert!(refused > 0, "the flood was never refused");
    });
    let mut scraped = scrape(&url);
    eventually("the refusals and the write failure are counted", || {
        scraped = scrape(&url);
        scraped
            .value("vault_refusals_total", &[("limit", "source-rate")])
            .is_some()
            && scraped
                .value("vault_audit_write_failures_total", &[])
                .is_some_and(|v| v >= 1.0)
    });
    let ok = [
        ("method", "Secrets/Get"),
        ("code", "OK"),
        ("transport", "grpc"),
    ];
    assert!(scraped.must("vault_calls_total", &ok) >= 5.0);
    assert!(
        scraped.must(
            "vault_calls_total",
            &[("method", "Secrets/Get"), ("code", "PERMISSION_DENIED")]
        ) >= 1.0
    );
    assert!(
        scraped.must(
            "vault_calls_total",
            &[("method", "Secrets/Get"), ("code", "UNAVAILABLE")]
        ) >= 1.0
    );
    assert!(
        scraped.must(
            "vault_call_duration_seconds_count",
            &[("method", "Secrets/Get")]
        ) >= 7.0
    );
    assert_eq!(
        scraped.families.get("vault_call_duration_seconds"),
        Some(&serde_json::json!("histogram"))
    );
    assert!(scraped.must("vault_calls_total", &[("method", "Secrets/Put")]) >= 1.0);
    assert!(scraped.must("vault_refusals_total", &[("limit", "source-rate")]) >= 1.0);
    assert!(scraped.must("vault_audit_batch_records_count", &[]) >= 1.0);
    assert!(scraped.must("vault_audit_sync_seconds_count", &[]) >= 1.0);
    assert!(scraped.value("vault_audit_queue_depth", &[]).is_some());
    assert_eq!(scraped.must("vault_sealed", &[]), 0.0);
    assert_eq!(scraped.must("vault_active", &[]), 1.0);
    assert_eq!(scraped.must("vault_tenants", &[]), 1.0);
    assert_eq!(
        scraped.must("vault_kek_versions", &[("state", "current")]),
        1.0
    );
    let budget = scraped.must("vault_key_budget", &[]);
    let least = scraped.must("vault_kek_uses_remaining_min", &[("state", "current")]);
    assert!(
        least < budget,
        "the put used the tenant's KEK: {least} of {budget}"
    );
    assert!(scraped.must("vault_root_key_uses_remaining", &[]) < budget);
    assert!(scraped.must("vault_task_runs_total", &[("task", "key_sweep")]) >= 1.0);
    assert_eq!(
        scraped.must("vault_task_failures_total", &[("task", "key_sweep")]),
        0.0
    );
    assert!(scraped.must("vault_store_keys", &[("store", "data")]) >= 1.0);
    assert!(
        scraped
            .value("vault_store_table_bytes", &[("store", "keys")])
            .is_some()
    );
    assert_eq!(scraped.must("vault_webhook_deliveries_dead", &[]), 0.0);
    assert_eq!(scraped.must("vault_process_dumpable", &[]), 0.0);
    assert_eq!(scraped.must("vault_process_core_limit_zero", &[]), 1.0);
    // No tenant name, path, token or value is a label without --metrics-tenant-labels.
    for absent in ["acme", "pathq7", "s3cret", root.as_str()] {
        assert!(!scraped.text.contains(absent), "{absent} is in the scrape");
    }
    // Every metric the alert rules and the dashboard name is one the server serves.
    let monitoring = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/monitoring");
    for file in ["vault-alerts.yml", "vault-dashboard.json"] {
        let text = fs::read_to_string(monitoring.join(file)).expect("monitoring file");
        let mut named = 0;
        for (at, _) in text.match_indices("vault_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let family = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            if family == "vault_" || name.starts_with("vault_dashboard") {
                continue;
            }
            named += 1;
            assert!(
                scraped.families.contains_key(family),
                "{file} names {name}, which the server does not serve"
            );
        }
        assert!(named > 10, "{file} names {named} metrics");
    }
    // Only GET /metrics.
    let other = Command::new("python3")
        .args([
            "-c",
            "import sys, urllib.request, urllib.error\n\
             try:\n    urllib.request.urlopen(sys.argv[1])\nexcept urllib.error.HTTPError as e:\n    print(e.code)",
            &url.replace("/metrics", "/other"),
        ])
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&other.stdout).trim(), "404");
    assert!(server.terminate().success());

    // With tenant labels, each tenant's KEK versions are their own series.
    let server = TestServer::start(
        &data,
        &["--metrics-listen", "127.0.0.1:0", "--metrics-tenant-labels"],
    );
    unseal(&server, &[&shares[0]]);
    let labelled = scrape(&server.metrics_url());
    let remaining = labelled.must(
        "vault_kek_uses_remaining",
        &[("tenant", "acme"), ("version", "1"), ("state", "current")],
    );
    assert!(remaining < budget);
    assert_eq!(
        labelled.must(
            "vault_webhook_deliveries_pending_by_tenant",
            &[("tenant", "acme")]
        ),
        0.0
    );
}

#[test]
fn metrics_refuse_a_plaintext_address_off_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = TestServer::try_start(dir.path(), &["--metrics-listen", "0.0.0.0:0"])
        .err()
        .expect("refused");
    assert!(
        refused.contains("refusing --metrics-listen 0.0.0.0:0 without TLS"),
        "{refused}"
    );
}

/// A line of /proc/PID/<file> starting with `key`, the rest of it.
fn proc_line(pid: u32, file: &str, key: &str) -> String {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).expect("read /proc");
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/{file}"))
        .trim()
        .to_owned()
}

#[test]
fn the_server_disables_core_dumps_and_mlock_locks_its_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = TestServer::start(&dir.path().join("plain"), &[]);
    let limits = proc_line(plain.pid(), "limits", "Max core file size");
    assert!(
        limits.starts_with("0 ") && limits.split_whitespace().nth(1) == Some("0"),
        "core dumps still possible: {limits}"
    );
    assert_eq!(proc_line(plain.pid(), "status", "VmLck:"), "0 kB");
    assert!(plain.terminate().success());

    let locked = TestServer::start(
        &dir.path().join("locked"),
        &["--mlock", "--metrics-listen", "127.0.0.1:0"],
    );
    let kib: u64 = proc_line(locked.pid(), "status", "VmLck:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmLck in kB");
    let rss: u64 = proc_line(locked.pid(), "status", "VmRSS:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmRSS in kB");
    assert!(kib >= rss, "--mlock locked {kib} kB of {rss} kB resident");
    let scraped = scrape(&locked.metrics_url());
    assert!(scraped.must("vault_process_locked_bytes", &[]) >= (rss * 1024) as f64);
    assert_eq!(scraped.must("vault_process_dumpable", &[]), 0.0);
}

#[test]
fn mlock_that_cannot_lock_refuses_to_start_and_says_why() {
    // Without CAP_IPC_LOCK (dropped from the bounding set) and with a 64 KiB locked-memory
    // limit, mlockall fails.
    let dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new("prlimit")
        .arg("--memlock=65536:65536")
        .args(["setpriv", "--bounding-set=-ipc_lock", "--"])
        .arg(vault_tests::binary("vault-server"))
        .args(["--mlock", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("prlimit and setpriv run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "it started: {stderr}");
    assert!(
        stderr.contains("--mlock: cannot lock the server's memory")
            && stderr.contains("CAP_IPC_LOCK"),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("listening"),
        "it listened"
    );
    assert!(
        fs::read_dir(dir.path()).expect("dir").next().is_none(),
        "it wrote to the data directory before refusing"
    );
}

#[test]
fn the_systemd_unit_is_hardened_and_scores_under_two() {
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd/vault-server.service");
    let text = fs::read_to_string(&unit).expect("the unit");
    for directive in [
        "User=vault",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=\n",
        "LimitCORE=0",
        "MemoryDenyWriteExecute=yes",
        "ReadWritePaths=/var/lib/vault /var/log/vault-audit",
        "--mlock",
    ] {
        assert!(text.contains(directive), "the unit lacks {directive:?}");
    }
    // systemd's own scoring (exposure 0.0 to 10.0; --threshold is in tenths): at most 2.0.
    let output = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze runs (Debian's systemd package)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "exposure above 2.0:\n{report}");
    assert!(report.contains("Overall exposure level"), "{report}");
}

/// The details of the audit log's system records that contain `needle`.
fn system_details(dir: &Path, needle: &str) -> Vec<String> {
    vault_tests::audit_records(dir)
        .into_iter()
        .filter(|r| r["kind"] == "system")
        .filter_map(|r| r["detail"].as_str().map(str::to_owned))
        .filter(|detail| detail.contains(needle))
        .collect()
}

/// Gets as fast as they go; how many were refused for the source's rate.
fn flood(server: &TestServer, token: &str, calls: usize) -> usize {
    runtime().block_on(async {
        let mut secrets = SecretsClient::new(channel(server).await);
        let mut refused = 0;
        for _ in 0..calls {
            if let Err(status) = secrets.get(with_token(get("pathq7"), token)).await {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                refused += 1;
            }
        }
        refused
    })
}

#[test]
fn a_config_file_sets_the_server_up_and_sighup_reloads_what_can_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vault.toml");
    let settings = |rate: u32, checkpoint_ms: u32| {
        format!(
            "# vault-server settings\nmetrics_listen = \"127.0.0.1:0\"\n\
             source_rate_limit = {rate}\nnode_id = \"from-file\"\n\
             audit_checkpoint_ms = {checkpoint_ms}\nlog_level = \"warn\"\n"
        )
    };
    fs::write(&config, settings(1000, 1000)).expect("config");
    let server = TestServer::start_with_env(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
        &[("VAULT_NODE_ID", "from-env")],
    );
    // The file's metrics_listen is in force; the variable beats the file's node_id.
    let _ = scrape(&server.metrics_url());
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    server
        .cli(Some(&root), &["put", "--tenant", "acme", "pathq7", "k=v"])
        .ok();
    let records = vault_tests::audit_records(&server.audit_dir());
    assert!(!records.is_empty());
    assert!(
        records.iter().all(|r| r["node"] == "from-env"),
        "node ids: {:?}",
        records
            .iter()
            .map(|r| r["node"].clone())
            .collect::<Vec<_>>()
    );
    assert_eq!(flood(&server, &root, 60), 0, "1000 calls/s refused 60");

    // A lower rate and a setting that needs a restart; SIGHUP applies the first, names the
    // second, and audits the reload.
    fs::write(&config, settings(5, 2000)).expect("config");
    server.signal("HUP");
    let audit = server.audit_dir();
    eventually("the reload is audited", || {
        !system_details(&audit, "configuration reloaded on SIGHUP").is_empty()
    });
    let reloaded = system_details(&audit, "configuration reloaded on SIGHUP");
    assert!(
        reloaded[0].contains("applied source_rate_limit")
            && reloaded[0].contains("needs a restart: audit_checkpoint_ms")
            && reloaded[0].contains(config.to_str().expect("utf-8")),
        "{reloaded:?}"
    );
    assert!(
        flood(&server, &root, 60) > 0,
        "the reloaded rate of 5/s refused nothing"
    );

    // A file with a mistake: the reload is refused and audited, the settings in force stay.
    fs::write(
        &config,
        format!("{}source_rate_limt = 1\n", settings(1000, 1000)),
    )
    .expect("config");
    server.signal("HUP");
    eventually("the refused reload is audited", || {
        !system_details(&audit, "reload on SIGHUP refused").is_empty()
    });
    let refused = system_details(&audit, "reload on SIGHUP refused");
    assert!(
        refused[0]
            .contains("line 7: unknown key `source_rate_limt` (did you mean `source_rate_limit`?)"),
        "{refused:?}"
    );
    // Still 5/s: a burst of 60 is refused in part.
    assert!(
        flood(&server, &root, 60) > 0,
        "the refused reload changed the rate"
    );
    // The server is alive and serving.
    eventually("a get is served again", || flood(&server, &root, 1) == 0);
}

#[test]
fn a_bad_config_file_stops_the_start_naming_the_line_and_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vault.toml");
    fs::write(
        &config,
        "listen = \"127.0.0.1:0\"\n\nmax_value_bytes = \"big\"\n",
    )
    .expect("config");
    let refused = TestServer::try_start(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    )
    .err()
    .expect("refused");
    assert!(
        refused.contains("line 3: bad value for `max_value_bytes`"),
        "{refused}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "it created the data directory"
    );
}

#[test]
fn the_config_reference_is_the_servers_own_output() {
    let output = Command::new(vault_tests::binary("vault-server"))
        .arg("--config-reference")
        .output()
        .expect("vault-server runs");
    assert!(output.status.success());
    let committed =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../vault-server/CONFIG.md"))
            .expect("vault-server/CONFIG.md");
    assert!(
        String::from_utf8_lossy(&output.stdout) == committed,
        "vault-server/CONFIG.md is stale: run `vault-server --config-reference > vault-server/CONFIG.md`"
    );
}

fn get_as(path: &str, token: &str, forwarded_for: Option<&str>) -> tonic::Request<v1::GetRequest> {
    let mut request = with_token(get(path), token);
    if let Some(address) = forwarded_for {
        request.metadata_mut().insert(
            "x-forwarded-for",
            tonic::metadata::MetadataValue::try_from(address).expect("ascii"),
        );
    }
    request
}

#[test]
fn alert_rules_fire_on_denials_bulk_reads_and_a_new_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("vault.toml");
    fs::write(
        &config,
        "alert_denials_per_minute = 3\nalert_distinct_reads_per_minute = 3\n\
         alert_new_network = true\ntrusted_proxy = [\"127.0.0.1/32\"]\n\
         metrics_listen = \"127.0.0.1:0\"\nwebhook_allow_network = [\"127.0.0.0/8\"]\n",
    )
    .expect("config");
    let server = TestServer::start(
        &dir.path().join("data"),
        &["--config", config.to_str().expect("utf-8")],
    );
    let (shares, root) = init(&server, 1, 1);
    unseal(&server, &[&shares[0]]);
    server.cli(Some(&root), &["tenant", "create", "acme"]).ok();
    for i in 0..5 {
        server
            .cli(
                Some(&root),
                &["put", "--tenant", "acme", &format!("s{i}"), "v=1"],
            )
            .ok();
    }
    let policy = dir.path().join("reader.toml");
    fs::write(
        &policy,
        "[[rule]]\npath = \"s*\"\ncapabilities = [\"read\"]\n",
    )
    .expect("policy");
    server
        .cli(
            Some(&root),
            &[
                "policy",
                "write",
                "--tenant",
                "acme",
                "reader",
                policy.to_str().expect("utf-8"),
            ],
        )
        .ok();
    let created = server
        .cli(
            Some(&root),
            &[
                "token", "create", "--tenant", "acme", "--policy", "reader", "--format", "json",
            ],
        )
        .json();
    let reader = created["token"].as_str().expect("token").to_owned();
    let accessor = created["info"]["accessor"]
        .as_str()
        .expect("accessor")
        .to_owned();
    let alerts = || {
        server
            .cli(Some(&root), &["alerts", "list", "--format", "json"])
            .json()["alerts"]
            .as_array()
            .expect("alerts")
            .clone()
    };
    let fired = |rule: &str| {
        alerts()
            .iter()
            .filter(|a| a["rule"] == rule && a["principal"] == accessor.as_str())
            .count()
    };
    runtime().block_on(async {
        let mut secrets = SecretsClient::new(channel(&server).await);
        // Three distinct reads are within the limit; the fourth fires.
        for i in 0..3 {
            secrets
                .get(get_as(&format!("s{i}"), &reader, None))
                .await
                .expect("a read");
        }
        // The same secret again is not a new one.
        secrets
            .get(get_as("s0", &reader, None))
            .await
            .expect("a read");
        assert_eq!(fired("bulk_reads"), 0);
        secrets
            .get(get_as("s3", &reader, None))
            .await
            .expect("a read");
        assert_eq!(fired("bulk_reads"), 1);
        // Denials: three are within the limit, the fourth fires, once a minute.
        for round in 0..5 {
            let denied = secrets
                .get(get_as("elsewhere", &reader, None))
                .await
                .expect_err("no policy on it");
            assert_eq!(denied.code(), Code::PermissionDenied);
            let expected = usize::from(round >= 3);
            assert_eq!(fired("denials"), expected, "after {} denials", round + 1);
        }
        // The token's first call from another network fires; the same network again does not.
        assert_eq!(fired("new_network"), 0);
        secrets
            .get(get_as("s0", &reader, Some("10.1.2.3")))
            .await
            .expect("a read through the proxy");
        assert_eq!(fired("new_network"), 1);
        secrets
            .get(get_as("s0", &reader, Some("10.1.2.77")))
            .await
            .expect("the same /24");
        assert_eq!(fired("new_network"), 1);
    });
    // Each alert is an audit record of kind alert, naming the rule; no value is in it.
    let records: Vec<_> = vault_tests::audit_records(&server.audit_dir())
        .into_iter()
        .filter(|r| r["kind"] == "alert")
        .collect();
    let rules: Vec<&str> = records
        .iter()
        .filter_map(|r| r["method"].as_str())
        .collect();
    assert_eq!(
        rules,
        ["alert/bulk_reads", "alert/denials", "alert/new_network"],
        "{records:?}"
    );
    assert!(records.iter().all(|r| r["principal"] == accessor.as_str()));
    assert!(
        !format!("{records:?}").contains(&reader),
        "an alert names the accessor, never the token"
    );
    // A metric per rule.
    let scraped = scrape(&server.metrics_url());
    for rule in ["bulk_reads", "denials", "new_network"] {
        assert_eq!(
            scraped.must("vault_security_alerts_total", &[("rule", rule)]),
            1.0,
            "{rule}"
        );
    }
    // And a security_alert event in the tenant's feed, which webhooks can subscribe to.
    runtime().block_on(async {
        let mut watch = vault_proto::v1::watch_client::WatchClient::new(channel(&server).await)
            .watch(with_token(
                v1::WatchRequest {
                    tenant: "acme".into(),
                    prefix: String::new(),
                    from_revision: 0,
                    from_now: false,
                },
                &root,
            ))
            .await
            .expect("watch")
            .into_inner();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let event = tokio::time::timeout(std::time::Duration::from_secs(30), watch.message())
                .await
                .expect("an event within 30 s")
                .expect("stream")
                .expect("not ended");
            if event.r#type == v1::EventType::SecurityAlert as i32 {
                seen.push(event.detail);
            }
        }
        assert!(seen.iter().any(|d| d.starts_with("denials:")), "{seen:?}");
    });
    // A webhook can subscribe to them.
    server
        .cli(
            Some(&root),
            &[
                "webhook",
                "create",
                "--tenant",
                "acme",
                "--url",
                "http://127.0.0.1:9/vault-alerts",
                "--events",
                "security_alert",
            ],
        )
        .ok();
}
