//! `vault-server`: the vault's gRPC server.
//!
//! tokio's blocking pool gets room for `--max-concurrent-calls` plus 256 threads, so the call
//! limit, not the pool, is what refuses; watch reads and webhook host lookups have their own
//! bounds on it (64 and 32 at once, 4 per tenant each).

#![forbid(unsafe_code)]

use std::process::ExitCode;

/// jemalloc for every allocation, Rust's and RocksDB's: after a million-secret load glibc's
/// per-thread arenas held about 50 MB more, and gets ran slower (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Crash points armed by FAILPOINTS (the failure-injection tests' builds only).
    #[cfg(feature = "failpoints")]
    let _failpoints = {
        eprintln!(
            "vault-server: WARNING: this build has the failure-injection tests' crash points \
             (feature failpoints; FAILPOINTS in the environment arms them): not for production"
        );
        fail::FailScenario::setup()
    };
    // The command line over the VAULT_* variables over --config's file (config.rs).
    let loaded = match vault_server::config::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        Err(vault_server::config::LoadError::Clap(e)) => e.exit(),
        Err(vault_server::config::LoadError::Config(e)) => {
            eprintln!("vault-server: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if loaded.args.config_reference {
        print!("{}", vault_server::config::reference());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = vault_server::init_logging(loaded.args.log_level.as_deref()) {
        eprintln!("vault-server: error: {e}");
        return ExitCode::FAILURE;
    }
    // Before any key exists and before the runtime starts its threads, so --mlock covers
    // every page the process will map.
    if let Err(e) = vault_server::harden::harden(loaded.args.mlock) {
        eprintln!("vault-server: error: {e}");
        return ExitCode::FAILURE;
    }
    // Blocking work of calls is bounded by --max-concurrent-calls; the pool has room for all
    // of them plus the background jobs, so the limit (not the pool) is what refuses.
    let blocking_threads = loaded.args.max_concurrent_calls.max(1).saturating_add(256);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(blocking_threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vault-server: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vault_server::run(loaded)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}
