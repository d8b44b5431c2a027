#![deny(unsafe_code)]

use clap::Parser;

// The allocator is chosen at build time (Cargo features): jemalloc by
// default, see benches/RESULTS.md for the comparison with glibc's.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        Command::Demo => tollgate::dev::demo::run(),
        Command::Usage {
            from,
            to,
            group_by,
            tenant,
            user,
            csv,
        } => usage(&config, &from, &to, &group_by, tenant, user, csv),
        Command::Keys {
            action,
            admin_url,
            json,
        } => tollgate::keys::client::run(&action, &admin_url, json).map_err(CliError::Runtime),
        Command::HashKey { id } => {
            hash_key(&id);
            Ok(())
        }
        #[cfg(feature = "bench-tools")]
        Command::BareProxy {
            listen,
            upstream,
            threads,
            contract_headers,
        } => tollgate::dev::bare::run(&listen, &upstream, threads, contract_headers),
        Command::MockBackend { listen, threads } => {
            tollgate::server::init_tracing("warn");
            tollgate::dev::mock::run(&listen, threads)
        }
    };
    if let Err(e) = result {
        eprintln!("{e}");
        std::process::exit(e.exit_code());
    }
}

fn check(config: &std::path::Path) -> Result<(), CliError> {
    let snapshot = tollgate::config::load::load_snapshot(config, 1)?;
    for (field, message) in tollgate::config::validate::warnings(&snapshot.config) {
        eprintln!("{}: warning: {field}: {message}", config.display());
    }
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

fn usage(
    config: &std::path::Path,
    from: &str,
    to: &str,
    group_by: &str,
    tenant: Option<String>,
    user: Option<String>,
    csv: bool,
) -> Result<(), CliError> {
    use tollgate::ledger::report::{parse_date, parse_group_by, ReportQuery};
    let snapshot = tollgate::config::load::load_snapshot(config, 1)?;
    let runtime = |e: tollgate::ledger::report::ReportError| CliError::Runtime(e.to_string());
    let query = ReportQuery::new(
        parse_date("from", from).map_err(runtime)?,
        parse_date("to", to).map_err(runtime)?,
        parse_group_by(group_by).map_err(runtime)?,
        tenant,
        user,
    )
    .map_err(runtime)?;
    let reader = tollgate::ledger::reader::LedgerReader::configured(
        &snapshot.config.ledger,
        &snapshot.config.store.path,
    )
    .map_err(|e| CliError::Runtime(e.to_string()))?;
    let report = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(e.to_string()))?
        .block_on(reader.report(query))
        .map_err(runtime)?;
    let out = if csv {
        report.to_csv().map_err(runtime)?
    } else {
        let mut text = serde_json::to_vec_pretty(&report.to_json())
            .map_err(|e| CliError::Runtime(e.to_string()))?;
        text.push(b'\n');
        text
    };
    use std::io::Write;
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| CliError::Runtime(format!("writing the report: {e}")))
}
