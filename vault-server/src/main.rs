//! `vault-server`: the vault's gRPC server.
//!
//! tokio's blocking pool gets room for `--max-concurrent-calls` plus 256 threads, so the call
//! limit, not the pool, is what refuses; watch reads and webhook host lookups have their own
//! bounds on it (64 and 32 at once, 4 per tenant each).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = vault_server::Args::parse();
    vault_server::init_logging();
    // Before any key exists and before the runtime starts its threads, so --mlock covers
    // every page the process will map.
    if let Err(e) = vault_server::harden::harden(args.mlock) {
        eprintln!("vault-server: error: {e}");
        return ExitCode::FAILURE;
    }
    // Blocking work of calls is bounded by --max-concurrent-calls; the pool has room for all
    // of them plus the background jobs, so the limit (not the pool) is what refuses.
    let blocking_threads = args.max_concurrent_calls.max(1).saturating_add(256);
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
    match runtime.block_on(vault_server::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-server: error: {e}");
            ExitCode::FAILURE
        }
    }
}
