//! `crash-test [CYCLES] [SEED]`: the crash loop of `vault_tests::crash` against the debug
//! binaries beside this one (`scripts/crash-test` builds them). Prints the seed first, a line
//! per cycle and the totals; exits 1 on any violation.

#![forbid(unsafe_code)]
#![allow(clippy::expect_used)]

use std::time::Instant;

use vault_tests::crash::{Config, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let cycles: usize = args
        .next()
        .map(|a| a.parse().expect("CYCLES: a number"))
        .unwrap_or(200);
    let seed: u64 = args
        .next()
        .map(|a| a.parse().expect("SEED: a number"))
        .unwrap_or_else(|| {
            let mut bytes = [0u8; 8];
            getrandom_seed(&mut bytes);
            u64::from_le_bytes(bytes)
        });
    println!(
        "crash-test: {cycles} cycles, seed {seed} (replay: scripts/crash-test {cycles} {seed})"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let config = Config {
        cycles,
        seed,
        writers: 4,
        kill_after_ms: (200, 1500),
    };
    let report = run(config, dir.path(), &mut |line| println!("{line}"));
    println!(
        "crash-test: {} in {:.0} s (seed {seed})",
        report.summary(),
        started.elapsed().as_secs_f64()
    );
    for violation in &report.violations {
        println!("VIOLATION {violation}");
    }
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    if report.acknowledged_total() == 0 {
        println!("crash-test: nothing was acknowledged, so nothing was checked");
        std::process::exit(1);
    }
}

/// A seed from the clock and the process id (the seed is printed; nothing secret rests on it).
fn getrandom_seed(bytes: &mut [u8; 8]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    *bytes = (nanos ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
}
