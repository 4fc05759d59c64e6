//! Command-line interface: `worker` (the main job), `migrate`, `demo`, `contract`, `keys`.

use std::process::ExitCode;

use base64::Engine;
use clap::{Parser, Subcommand, ValueEnum};

use crate::platform::Catalogue;
use crate::settings::{LogFormat, Settings};
use crate::startup::{Worker, connect_database};

#[derive(Debug, Parser)]
#[command(name = "praisma-worker", version, about = "The Praisma Hub integration worker")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker until SIGTERM or Ctrl-C (the main job).
    Worker,
    /// Create the database if needed, apply migrations, and exit.
    Migrate,
    /// Walk consent → connect against the built-in sandbox platform on the local RabbitMQ and
    /// PostgreSQL, print a timeline, and exit.
    Demo,
    /// Print the machine-readable contract, generated from the code.
    Contract {
        #[arg(value_enum, default_value_t = ContractPart::Asyncapi)]
        part: ContractPart,
    },
    /// Vault key tools.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ContractPart {
    /// The AsyncAPI 3 document.
    Asyncapi,
    /// One JSON Schema per event, keyed by event type.
    Schemas,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print a new random key entry for PRAISMA_VAULT_KEYS.
    Generate {
        /// The key's id, stored with every ciphertext it seals.
        #[arg(long, default_value = "k1")]
        id: String,
    },
}

pub async fn run(cli: Cli) -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("praisma-worker: {error}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Contract { part } => {
            let document = match part {
                ContractPart::Asyncapi => crate::contract::schema::asyncapi(&settings.bus.exchange),
                ContractPart::Schemas => serde_json::Value::Object(crate::contract::schema::json_schemas()),
            };
            println!("{}", serde_json::to_string_pretty(&document).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Command::Keys {
            command: KeysCommand::Generate { id },
        } => {
            let key = base64::engine::general_purpose::STANDARD.encode(crate::random::bytes::<32>());
            println!("{id}:{key}");
            ExitCode::SUCCESS
        }
        Command::Migrate => {
            crate::telemetry::init(settings.log_format, std::io::stderr);
            report(
                connect_database(&settings.database_url, settings.database_pool_size)
                    .await
                    .map(|_| ()),
            )
        }
        Command::Worker => {
            crate::telemetry::init(settings.log_format, std::io::stderr);
            let catalogue = match Catalogue::load(&settings) {
                Ok(catalogue) => catalogue,
                Err(error) => {
                    eprintln!("praisma-worker: {error}");
                    return ExitCode::from(2);
                }
            };
            let worker = match Worker::build(settings, catalogue).await {
                Ok(worker) => worker,
                Err(error) => return report::<()>(Err(error)),
            };
            tracing::info!("worker started");
            report(worker.run_until_stopped(crate::shutdown::on_signals()).await)
        }
        Command::Demo => {
            // The timeline goes to stdout; logs only when something is wrong.
            if std::env::var_os("RUST_LOG").is_none() {
                crate::telemetry::init(LogFormat::Pretty, std::io::sink);
            } else {
                crate::telemetry::init(LogFormat::Pretty, std::io::stderr);
            }
            report(crate::demo::run(settings).await)
        }
    }
}

fn report<T>(result: Result<T, impl std::fmt::Display>) -> ExitCode {
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("praisma-worker: {error}");
            ExitCode::FAILURE
        }
    }
}
