//! `booking`: the command line. It parses arguments and calls the library.

use std::process::ExitCode;

use anyhow::Context;
use booking::{
    Application, seed,
    settings::Settings,
    store::{self, Store},
    telemetry::{self, TelemetryConfig},
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
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default). Settings come from the environment.
    /// Binds BOOKING_LISTEN before opening the database, so a taken port
    /// fails at once, naming the address, and creates no database.
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Load a catalogue and users with balances, for trying out and load tests.
    Seed(seed::SeedArgs),
    /// Check the sale's invariants (no seat sold twice, money conserved, ...);
    /// prints them as JSON and exits 1 if any is broken.
    Audit,
}

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
        Command::Serve => Some(telemetry::init(&TelemetryConfig::from_env()).context("starting telemetry")?),
        _ => {
            telemetry::init_logs();
            None
        }
    };
    let settings = Settings::from_env()?;
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
            let summary = seed::run(&settings, &args).await.with_context(|| format!("seeding {}", store::location(url)))?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Audit => {
            let store = Store::connect(settings.database_url.expose(), 2).await?;
            let audit = store.audit().await?;
            println!("{}", serde_json::to_string_pretty(&audit)?);
            let violations = audit.violations();
            if !violations.is_empty() {
                eprintln!("invariants broken: {}", violations.join("; "));
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
