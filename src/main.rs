use clap::Parser;

use std::path::PathBuf;
use tollgate::cli::{Cli, CliError, Command, DEFAULT_CONFIG};

fn main() {
    let cli = Cli::parse();
    let config = cli.config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
    let result: Result<(), CliError> = match cli.command.unwrap_or(Command::Run) {
        Command::Run => tollgate::server::build(&config, cli.upgrade).map(|(server, state)| {
            // Not `run_forever`: it calls `process::exit(0)` as soon as the
            // runtimes stop, so the ledger's last batch would never commit.
            // `run` returns after the grace period; then flush and exit 0.
            server.run(pingora::server::RunArgs::default());
            state.shutdown();
        }),
        Command::Check => check(&config),
        Command::Demo => tollgate::demo::run(),
        Command::HashKey { id } => {
            hash_key(&id);
            Ok(())
        }
        Command::BareProxy {
            listen,
            upstream,
            threads,
        } => tollgate::bare::run(&listen, &upstream, threads),
        Command::MockBackend { listen, threads } => {
            tollgate::server::init_tracing("warn");
            tollgate::mock::run(&listen, threads)
        }
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(e.exit_code());
    }
}

fn check(config: &std::path::Path) -> Result<(), CliError> {
    tollgate::config::load_snapshot(config, 1)?;
    println!("{}: configuration OK", config.display());
    Ok(())
}

fn hash_key(id: &str) {
    let (key, digest) = tollgate::auth::api_key::generate_key();
    println!("API key (shown once, give it to the client): {key}");
    println!();
    println!("Paste under auth.api_keys in the config:");
    println!("    - id: {id}");
    println!("      sha256: \"{digest}\"");
    println!("      user: <user id>");
    println!("      tenant: <tenant id>");
    println!("      roles: [agent]");
}
