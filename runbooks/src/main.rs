//! `runbook`: parses the command line and hands it to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    runbook::cli::main(runbook::cli::Cli::parse())
}
