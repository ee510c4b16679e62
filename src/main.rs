use std::process::ExitCode;

use clap::Parser;
use raibid_operator::{
    config::{Cli, Command, ExplainCommand},
    explain::{self, ExplainError},
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
        Command::Explain(what) => match run_explain(what) {
            Ok(answer) => {
                println!("{answer}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("raibid-operator explain: {error}");
                ExitCode::from(2)
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

fn run_explain(what: ExplainCommand) -> Result<serde_json::Value, ExplainError> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|source| ExplainError::Read {
            path: path.into(),
            source,
        })
    };
    let queue = |path: Option<&str>| -> Result<_, ExplainError> {
        path.map(|p| explain::read_queue(p, &read(p)?)).transpose()
    };
    match what {
        ExplainCommand::Issue(args) => {
            let queue = queue(args.queue.as_deref())?;
            explain::explain_issue(&args.file, &read(&args.file)?, queue.as_ref())
        }
        ExplainCommand::Queue(args) => {
            let queue = queue(args.queue.as_deref())?;
            explain::explain_queue(&args.file, &read(&args.file)?, queue.as_ref())
        }
        ExplainCommand::Pr(args) => explain::explain_pr(&args.file, &read(&args.file)?),
    }
}
