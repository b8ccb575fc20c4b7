//! `booking`: the command line. It parses arguments and calls the library.

use std::process::ExitCode;

use anyhow::Context;
use booking::{
    Application, seed,
    settings::Settings,
    store::{self, OpenError, Store},
};
use clap::{Parser, Subcommand};

/// glibc's allocator spent about a fifth of the CPU on the hot paths
/// (malloc_consolidate, unlink_chunk) under many small per-request
/// allocations; mimalloc's thread-local free lists do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The concert booking service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: booking::settings::SettingsArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Settings come from the flags below or their environment variables.
    ///
    /// Binds BOOKING_LISTEN before opening the database, so a taken port
    /// fails at once, naming the address, and creates no database.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load a catalogue and users with balances, for trying out and load tests.
    Seed(seed::SeedArgs),
    /// Check the sale's invariants (no seat sold twice, money conserved, ...);
    /// exits 1 if one is broken, 2 if it could not check.
    ///
    /// Checks DATABASE_URL's database, which must exist with its schema:
    /// audit never creates or migrates one. Prints the counts as JSON on
    /// stdout and which database it checked (password masked) on stderr.
    Audit,
}

/// Exit status of an audit that could not look, unlike 1 (it looked and
/// found a broken invariant).
const AUDIT_COULD_NOT_CHECK: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("booking: {}", booking::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let command = cli.command.unwrap_or(Command::Serve);
    let telemetry = match command {
        Command::Serve => Some(telemetry::init(&booking::telemetry_config()).context("starting telemetry")?),
        _ => {
            telemetry::init_logs(booking::SERVICE, telemetry::LogLines::Stdout);
            None
        }
    };
    let settings = Settings::from_args(&cli.settings)?;
    match command {
        Command::Serve => {
            let app = Application::build(settings).await.context("starting the booking service")?;
            tracing::info!(port = app.port(), backend = app.state().queue.backend(), "booking service listening");
            app.run_until_stopped(booking::shutdown_signal()).await?;
            if let Some(telemetry) = telemetry {
                telemetry.shutdown();
            }
        }
        Command::Migrate => {
            let url = settings.database_url.expose();
            Store::connect(url, 1).await.with_context(|| format!("migrating {}", store::location(url)))?;
            eprintln!("migrations applied to {}", store::location(url));
        }
        Command::Seed(args) => {
            let url = settings.database_url.expose();
            let summary =
                seed::run(&settings, &args).await.with_context(|| format!("seeding {}", store::location(url)))?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Audit => {
            let url = settings.database_url.expose();
            let location = store::location(url);
            let audit = match Store::open_existing(url, 2).await {
                Ok(store) => store.audit().await.map_err(OpenError::from),
                Err(e) => Err(e),
            };
            let audit = match audit {
                Ok(audit) => audit,
                Err(e) => {
                    eprintln!("booking audit: cannot audit DATABASE_URL={location}: {}", booking::error_chain(&e));
                    return Ok(ExitCode::from(AUDIT_COULD_NOT_CHECK));
                }
            };
            println!("{}", serde_json::to_string_pretty(&audit)?);
            let violations = audit.violations();
            if !violations.is_empty() {
                eprintln!("audited {location}: invariants broken: {}", violations.join("; "));
                return Ok(ExitCode::FAILURE);
            }
            eprintln!("audited {location}: every invariant holds");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn every_command_flag_and_argument_has_help() {
        assert_eq!(testkit::undocumented(&super::Cli::command()), Vec::<String>::new());
    }
}
