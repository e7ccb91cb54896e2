//! `vault-bench-null [--value-size N] [vault-server flags...]`: the benchmarks' null baseline
//! (see vault-server's bench_null.rs). It takes the vault's own flags, so the transport settings
//! are the vault's; of them it uses only those of the listener and the connections.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser as _;

/// The vault's allocator (see vault-server's main.rs), so the baseline differs only in work.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let mut value_size = 256usize;
    let mut rest = Vec::new();
    let mut argv = std::env::args_os();
    rest.extend(argv.next());
    while let Some(arg) = argv.next() {
        if arg == "--value-size" {
            let parsed = argv
                .next()
                .and_then(|v| v.to_str().and_then(|v| v.parse::<usize>().ok()));
            match parsed {
                Some(size) if size <= 1 << 20 => value_size = size,
                _ => {
                    eprintln!(
                        "vault-bench-null: error: --value-size: a number of bytes up to 1048576"
                    );
                    return ExitCode::FAILURE;
                }
            }
        } else {
            rest.push(arg);
        }
    }
    let args = match vault_server::Args::try_parse_from(rest) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vault-bench-null: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vault_server::bench_null::run(args, value_size)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-bench-null: error: {e}");
            ExitCode::FAILURE
        }
    }
}
