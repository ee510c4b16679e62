use std::process::ExitCode;

use clap::Parser;
use raibid_operator::{
    config::{Cli, Command},
    operator, telemetry,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => match raibid_operator::crd::crds_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("raibid-operator: could not serialize the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(config) => {
            telemetry::init(config.log_format);
            match operator::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    // One line a person can act on; the cause chain is already in the message.
                    eprintln!("raibid-operator: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
