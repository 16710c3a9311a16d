//! The `valkey-dr` binary.

use clap::Parser as _;

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = match valkey_dr::cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; a usage error exits 2, or 3 (UNKNOWN) for
            // the Nagios-style commands, with a plugin line on stdout.
            let code = if e.use_stderr() {
                valkey_dr::cli::usage_exit_code(&args)
            } else {
                0
            };
            if e.use_stderr() && valkey_dr::cli::is_plugin_command(&args) {
                let first = e.to_string();
                let first = first.lines().next().unwrap_or("invalid command line");
                println!(
                    "{}",
                    valkey_dr::check::unknown_line(first.trim_start_matches("error: "))
                );
            }
            let _ = e.print();
            std::process::exit(code);
        }
    };
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
