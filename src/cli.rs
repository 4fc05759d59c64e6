//! Command-line interface: `worker` (the main job), `migrate`, `demo`, and the operator commands.

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
    /// Walk a channel's life (consent, connect, refresh, operations, revoke) against the built-in
    /// sandbox platform on the local RabbitMQ and PostgreSQL, print a timeline, and exit.
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
    /// Audit trail tools.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Connected channels, without any secret.
    Channels {
        #[command(subcommand)]
        command: ChannelsCommand,
    },
    /// The provider catalogue: every platform, or one platform's capabilities and scopes.
    Providers {
        /// A provider to show in full.
        name: Option<String>,
    },
    /// Verify a platform's deauthorization callback, as the hub receives it.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// The dead-letter queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Load-test worker processes against the sandbox platform, on a throw-away database.
    Bench {
        #[arg(long, value_enum, default_value_t = crate::bench::Load::Refresh)]
        load: crate::bench::Load,
        #[arg(long, default_value_t = 2000)]
        channels: usize,
        /// Events to publish; defaults to one per channel.
        #[arg(long)]
        events: Option<usize>,
        /// Events per second; 0 publishes as fast as the broker confirms.
        #[arg(long, default_value_t = 0)]
        rate: u32,
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check every channel's hash chain; name the first broken link of each. Exits 1 if any.
    Verify,
}

#[derive(Debug, Subcommand)]
pub enum ChannelsCommand {
    /// A channel's status, scopes, expiry, token kinds and key ids, jobs and latest audit records.
    Show {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        channel: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Each dead-lettered message's error code and reason, event id, type and tenant (never its data).
    List,
    /// Re-publish dead letters where they first went, then remove them from the queue.
    Replay {
        /// Every message in the queue.
        #[arg(long, conflicts_with = "event_id")]
        all: bool,
        /// Only the messages carrying these event ids.
        #[arg(long = "event-id")]
        event_id: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Verify a Meta `signed_request` (Facebook, Instagram and Threads deauthorize and
    /// data-deletion callbacks) read from stdin, under the provider's client secret; print its
    /// claims as JSON; exit 1 if it does not verify.
    VerifyMeta {
        #[arg(long, default_value = "meta")]
        provider: String,
    },
    /// Verify a TikTok webhook body read from stdin against its `TikTok-Signature` header.
    VerifyTiktok {
        #[arg(long, default_value = "tiktok")]
        provider: String,
        /// The `TikTok-Signature` header's value (`t=...,s=...`).
        #[arg(long)]
        signature: String,
        #[arg(long, default_value_t = 300)]
        tolerance_secs: i64,
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
    /// Re-encrypt every ciphertext under the active (first) key, in batches, with the workers
    /// running; resumable. Give the workers the new key ring first.
    Rotate {
        #[arg(long, default_value_t = 500)]
        batch: u64,
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
        Command::Keys {
            command: KeysCommand::Rotate { batch },
        } => report(rotate_keys(&settings, batch).await),
        Command::Audit {
            command: AuditCommand::Verify,
        } => match verify_audit(&settings).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(error) => report::<()>(Err(error)),
        },
        Command::Channels {
            command: ChannelsCommand::Show { tenant, channel },
        } => report(show_channel(&settings, tenant, channel).await),
        Command::Dlq { command } => report(dead_letters(&settings, command).await),
        Command::Providers { name } => report(crate::ops::providers::print(&settings, name.as_deref())),
        Command::Webhooks { command } => match crate::ops::providers::verify_webhook(&settings, command) {
            Ok(claims) => {
                println!("{claims}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("praisma-worker: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Bench {
            load,
            channels,
            events,
            rate,
            workers,
        } => {
            let plan = crate::bench::Plan {
                channels: channels.max(1),
                events: events.unwrap_or(channels).max(1),
                rate,
                workers: workers.max(1),
                load,
            };
            match crate::bench::run(settings, plan.clone()).await {
                Ok(results) => {
                    crate::bench::print(&plan, &results);
                    ExitCode::SUCCESS
                }
                Err(error) => report::<()>(Err(error)),
            }
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
            let stopped = worker.run_until_stopped(crate::shutdown::on_signals()).await;
            crate::metrics::shutdown();
            crate::telemetry::shutdown();
            report(stopped)
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

async fn rotate_keys(settings: &Settings, batch: u64) -> Result<(), String> {
    let spec = settings
        .vault_keys
        .clone()
        .ok_or_else(|| crate::vault::VaultError::NoKeys.to_string())?;
    let vault = crate::vault::Vault::from_spec(&spec).map_err(|e| e.to_string())?;
    let db = connect_database(&settings.database_url, 2)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("re-encrypting under key {:?}", vault.active_key_id());
    let total = crate::ops::keys_rotate::remaining(&db, vault.active_key_id())
        .await
        .map_err(|e| e.to_string())?;
    let progress = crate::ops::progress::Progress::new("keys rotate", total);
    let done = crate::ops::keys_rotate::rotate(&db, &vault, batch.max(1), |so_far| {
        progress.show(so_far.rotated + so_far.unreadable);
    })
    .await
    .map_err(|e| e.to_string())?;
    progress.finish();
    println!(
        "rotated {}, unreadable {}, still under other keys {}",
        done.rotated, done.unreadable, done.remaining
    );
    Ok(())
}

async fn verify_audit(settings: &Settings) -> Result<bool, String> {
    let db = connect_database(&settings.database_url, 2)
        .await
        .map_err(|e| e.to_string())?;
    let total = crate::ops::audit_verify::count(&db).await.map_err(|e| e.to_string())?;
    let progress = crate::ops::progress::Progress::new("audit verify", total);
    let report = crate::ops::audit_verify::verify(&db, |records| progress.show(records))
        .await
        .map_err(|e| e.to_string())?;
    progress.finish();
    for link in &report.broken {
        println!(
            "broken: tenant {} channel {:?} at sequence {}: {}",
            link.tenant, link.channel, link.sequence, link.reason
        );
    }
    println!(
        "{} records in {} chains, {} broken",
        report.records,
        report.chains,
        report.broken.len()
    );
    Ok(report.broken.is_empty())
}

async fn show_channel(settings: &Settings, tenant: String, channel: String) -> Result<(), String> {
    let tenant = crate::domain::TenantId::parse(tenant).map_err(|e| e.to_string())?;
    let channel = crate::domain::ChannelId::parse(channel).map_err(|e| e.to_string())?;
    let db = connect_database(&settings.database_url, 2)
        .await
        .map_err(|e| e.to_string())?;
    match crate::ops::channels_show::show(&db, &tenant, &channel)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(shown) => {
            println!("{}", serde_json::to_string_pretty(&shown).unwrap_or_default());
            Ok(())
        }
        None => Err(format!("no channel {channel} for tenant {tenant}")),
    }
}

async fn dead_letters(settings: &Settings, command: DlqCommand) -> Result<(), String> {
    use crate::ops::dlq;
    let letters = match command {
        DlqCommand::List => dlq::list(&settings.amqp_url, &settings.bus).await,
        DlqCommand::Replay { all, event_id } => {
            if !all && event_id.is_empty() {
                return Err("say which messages to replay: --all or --event-id ID".into());
            }
            let selection = if all {
                dlq::Selection::All
            } else {
                dlq::Selection::EventIds(event_id)
            };
            dlq::replay(&settings.amqp_url, &settings.bus, &selection).await
        }
    }
    .map_err(|e| e.to_string())?;
    for letter in &letters {
        println!("{}", serde_json::to_string(letter).unwrap_or_default());
    }
    eprintln!("{} message(s)", letters.len());
    Ok(())
}
