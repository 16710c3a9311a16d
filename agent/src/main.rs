//! The `valkey-dr` binary.

use clap::Parser;

fn main() {
    let cli = valkey_dr::cli::Cli::parse();
    // One thread is plenty for a health checker and keeps the footprint small; probes are
    // I/O-bound and run concurrently on it.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(3);
        }
    };
    let code = runtime.block_on(valkey_dr::cli::run(cli));
    std::process::exit(code);
}
