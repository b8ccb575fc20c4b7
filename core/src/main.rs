//! `booking`: the command line. It parses arguments and calls the library.


use anyhow::Context;
use booking::{
    Application, seed,
    settings::Settings,
    store::Store,
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
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
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
            Store::connect(settings.database_url.expose(), 1).await?;
            eprintln!("migrations applied");
        }
        Command::Seed(args) => {
            let summary = seed::run(&settings, &args).await?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Audit => {
            let store = Store::connect(settings.database_url.expose(), 2).await?;
            let audit = store.audit().await?;
            println!("{}", serde_json::to_string_pretty(&audit)?);
            let violations = audit.violations();
            if !violations.is_empty() {
                eprintln!("invariants broken: {}", violations.join("; "));
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
