//! `bench`: a load generator for the real worker processes. It seeds connected channels whose
//! grants the in-process sandbox platform knows, starts worker processes of this same binary on
//! a throw-away database and exchange, publishes `TokenExpiring` (one real refresh per channel)
//! or `OperationRequested` (one API call each) at a fixed rate or as fast as the broker takes
//! them, and reports throughput, latency from publish to outcome, and the workers' peak RSS and
//! CPU time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use entity::{channel_tokens, channels};
use sea_orm::{ActiveValue::Set, ConnectionTrait, Database, EntityTrait};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::bus::hub_client::HubClient;
use crate::domain::{ChannelId, TenantId};
use crate::sandbox::{self, SandboxClient};
use crate::settings::{BusSettings, Settings};
use crate::vault::{Binding, SecretKind, Vault};

/// Publishes awaiting their confirms at once.
const PUBLISH_WINDOW: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Load {
    /// `TokenExpiring`, one real refresh per channel.
    Refresh,
    /// `OperationRequested` (profile.read: GET me), one platform API call each.
    Operation,
}

impl Load {
    /// The routing keys of the outcomes that answer this load.
    fn outcome_keys(self) -> &'static [&'static str] {
        use crate::contract::outbound::*;
        match self {
            Load::Refresh => &[
                TokenRefreshed::ROUTING_KEY,
                ConnectionReauthRequired::ROUTING_KEY,
                TokenRefreshFailed::ROUTING_KEY,
            ],
            Load::Operation => &[OperationCompleted::ROUTING_KEY, OperationRejected::ROUTING_KEY],
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub channels: usize,
    pub events: usize,
    /// Events per second; 0 publishes as fast as the broker confirms.
    pub rate: u32,
    pub workers: usize,
    pub load: Load,
}

#[derive(Debug, Clone, Default)]
pub struct Results {
    pub events: usize,
    pub answered: usize,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub ready_ms: Vec<u128>,
    pub peak_rss_mib: Vec<f64>,
    pub cpu_seconds: Vec<f64>,
    /// PostgreSQL commits in the bench database per answered event.
    pub commits_per_event: f64,
    /// How fast the generator got its events confirmed by the broker.
    pub published_per_second: f64,
    /// Write-ahead log the whole PostgreSQL cluster wrote per answered event, in KiB.
    pub wal_kib_per_event: f64,
}

pub async fn run(settings: Settings, plan: Plan) -> Result<Results, String> {
    let id = crate::audit::hex(&crate::random::bytes::<4>());
    let mut url = url::Url::parse(settings.database_url.expose_secret()).map_err(|e| e.to_string())?;
    let database = format!("praisma_bench_{id}");
    url.set_path(&format!("/{database}"));
    let database_url = SecretString::from(url.to_string());
    let bus = BusSettings::namespaced(&format!("praisma.bench.{id}"));
    let vault_spec = Vault::ephemeral_spec();
    let vault = Vault::from_spec(&vault_spec).map_err(|e| e.to_string())?;

    let secret = crate::audit::hex(&crate::random::bytes::<16>());
    let client = SandboxClient {
        client_id: "praisma-bench".into(),
        client_secret: secret.clone(),
        redirect_uri: "http://127.0.0.1:9/cb".into(),
    };
    let sandbox = sandbox::start(client).await.map_err(|e| e.to_string())?;
    let db = crate::startup::connect_database(&database_url, 4)
        .await
        .map_err(|e| e.to_string())?;
    eprintln!("seeding {} channels...", plan.channels);
    seed(&db, &vault, &sandbox, plan.channels)
        .await
        .map_err(|e| e.to_string())?;

    let catalogue = std::env::temp_dir().join(format!("praisma-bench-{id}.toml"));
    let definition = format!(
        "[[provider]]\nname = \"sandbox\"\nauthorization_url = \"{base}/authorize\"\ntoken_url = \"{base}/token\"\n\
         revocation_url = \"{base}/revoke\"\napi_base_url = \"{base}/api/\"\nredirect_uris = [\"http://127.0.0.1:9/cb\"]\n\
         [provider.capabilities]\n\"profile.read\" = [\"profile\"]\n",
        base = sandbox.base_url()
    );
    std::fs::write(&catalogue, definition).map_err(|e| e.to_string())?;
    let connection = crate::bus::connect(&settings.amqp_url, "praisma-bench")
        .await
        .map_err(|e| e.to_string())?;
    let channel = connection.create_channel().await.map_err(|e| e.to_string())?;
    crate::bus::topology::declare(&channel, &bus)
        .await
        .map_err(|e| e.to_string())?;
    // Only the outcomes it measures: the generator should cost the broker no more than a hub
    // service would.
    let hub = HubClient::connect_to(&settings.amqp_url, &bus.exchange, plan.load.outcome_keys())
        .await
        .map_err(|e| e.to_string())?;

    let mut env: Vec<(String, String)> = vec![
        ("PRAISMA_DATABASE_URL".into(), database_url.expose_secret().to_owned()),
        ("PRAISMA_AMQP_URL".into(), settings.amqp_url.expose_secret().to_owned()),
        ("PRAISMA_EXCHANGE".into(), bus.exchange.clone()),
        ("PRAISMA_VAULT_KEYS".into(), vault_spec.expose_secret().to_owned()),
        ("PRAISMA_CATALOGUE_FILE".into(), catalogue.display().to_string()),
        ("PRAISMA_PROVIDER_SANDBOX_CLIENT_ID".into(), "praisma-bench".into()),
        ("PRAISMA_PROVIDER_SANDBOX_CLIENT_SECRET".into(), secret),
        ("PRAISMA_HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("PRAISMA_LOG_FORMAT".into(), "json".into()),
        ("RUST_LOG".into(), "warn".into()),
    ];
    // Tuning the operator set (PRAISMA_PREFETCH, PRAISMA_JOB_CONCURRENCY, ...) reaches the workers.
    let fixed: Vec<String> = env.iter().map(|(name, _)| name.clone()).collect();
    env.extend(std::env::vars().filter(|(name, _)| name.starts_with("PRAISMA_") && !fixed.contains(name)));
    let mut results = Results {
        events: plan.events,
        ..Results::default()
    };
    let mut workers = Vec::new();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    for n in 0..plan.workers {
        let started = Instant::now();
        let child = tokio::process::Command::new(&exe)
            .arg("worker")
            .envs(env.iter().cloned())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        wait_for_consumers(&channel, &bus.queue, n + 1).await?;
        results.ready_ms.push(started.elapsed().as_millis());
        workers.push(child);
    }

    let commits_before = commits(&db, &database).await;
    let wal_before = wal_position(&db).await;
    eprintln!(
        "publishing {} {:?} events{}...",
        plan.events,
        plan.load,
        if plan.rate > 0 {
            format!(" at {}/s", plan.rate)
        } else {
            " as fast as accepted".into()
        }
    );
    let mut sent: HashMap<String, Instant> = HashMap::with_capacity(plan.events);
    let first = Instant::now();
    let mut pace = (plan.rate > 0).then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(plan.rate))));
    let mut unconfirmed = std::collections::VecDeque::with_capacity(PUBLISH_WINDOW);
    for n in 0..plan.events {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let channel_id = format!("ch-{}", n % plan.channels);
        let event = match plan.load {
            Load::Refresh => HubClient::event("tenant_bench", "TokenExpiring", json!({ "channel_id": channel_id })),
            Load::Operation => HubClient::event(
                "tenant_bench",
                "OperationRequested",
                json!({
                    "channel_id": channel_id, "capability": "profile.read", "request": { "method": "GET", "path": "me" },
                }),
            ),
        };
        let id = event["id"].as_str().unwrap_or_default().to_owned();
        sent.insert(id, Instant::now());
        // Confirms are awaited in a window, so the generator is never what bounds the rate.
        unconfirmed.push_back(hub.send(&event, false).await.map_err(|e| e.to_string())?);
        if unconfirmed.len() >= PUBLISH_WINDOW
            && let Some(confirm) = unconfirmed.pop_front()
        {
            confirm.confirmed().await.map_err(|e| e.to_string())?;
        }
    }
    for confirm in unconfirmed {
        confirm.confirmed().await.map_err(|e| e.to_string())?;
    }
    results.published_per_second = plan.events as f64 / first.elapsed().as_secs_f64().max(f64::EPSILON);

    let deadline = Instant::now() + Duration::from_secs(120 + plan.events as u64 / 50);
    loop {
        let answered = hub.inspect(|all| all.iter().filter(|r| is_answer(r, plan.load)).count());
        eprint!("\r  answered {answered}/{}", plan.events);
        if answered >= plan.events || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!();
    let commits_after = commits(&db, &database).await;
    let wal_after = wal_position(&db).await;
    // `pg_waldump --stats=record --start <from> --end <to>` breaks this down by record type.
    eprintln!("WAL from {wal_before} to {wal_after}");
    let wal_bytes = wal_distance(&db, &wal_before, &wal_after).await;
    let mut latencies: Vec<f64> = Vec::with_capacity(plan.events);
    let mut last = first;
    hub.inspect(|all| {
        for received in all.iter().filter(|r| is_answer(r, plan.load)) {
            if let Some(at) = received.event["correlationid"].as_str().and_then(|c| sent.get(c)) {
                latencies.push(received.received_at.duration_since(*at).as_secs_f64() * 1000.0);
                last = last.max(received.received_at);
            }
        }
    });
    latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    results.answered = latencies.len();
    results.commits_per_event = (commits_after - commits_before) as f64 / results.answered.max(1) as f64;
    results.wal_kib_per_event = wal_bytes as f64 / 1024.0 / results.answered.max(1) as f64;
    results.seconds = last.duration_since(first).as_secs_f64();
    results.per_second = if results.seconds > 0.0 {
        results.answered as f64 / results.seconds
    } else {
        0.0
    };
    (results.p50_ms, results.p95_ms, results.p99_ms) = (percentile(0.50), percentile(0.95), percentile(0.99));

    for worker in &mut workers {
        if let Some(pid) = worker.id() {
            let (rss, cpu) = process_usage(pid);
            results.peak_rss_mib.push(rss);
            results.cpu_seconds.push(cpu);
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
    }
    let _ = crate::bus::topology::delete(&channel, &bus).await;
    let _ = connection.close(200, "bench done".into()).await;
    sandbox.stop();
    let _ = std::fs::remove_file(&catalogue);
    db.close().await.map_err(|e| e.to_string())?;
    if let Ok(mut admin) = url::Url::parse(settings.database_url.expose_secret()) {
        admin.set_path("/postgres");
        if let Ok(admin) = Database::connect(admin.to_string()).await {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
                .await;
        }
    }
    Ok(results)
}

fn is_answer(received: &crate::bus::hub_client::Received, load: Load) -> bool {
    let wanted = match load {
        Load::Refresh => ["TokenRefreshed", "ConnectionReauthRequired"],
        Load::Operation => ["OperationCompleted", "OperationRejected"],
    };
    !received.via_reply
        && (wanted.contains(&received.event_type())
            || (received.event_type() == "TokenRefreshFailed" && received.event["data"]["retryable"] == false))
}

/// Transactions committed in `database` so far (PostgreSQL's statistics, updated within a second).
async fn commits(db: &sea_orm::DatabaseConnection, database: &str) -> i64 {
    tokio::time::sleep(Duration::from_millis(600)).await; // the statistics collector lags; this is a measurement, not a sync
    let sql = "SELECT xact_commit AS v FROM pg_stat_database WHERE datname = $1";
    scalar(db, sql, [database.into()]).await.unwrap_or(0)
}

async fn wal_position(db: &sea_orm::DatabaseConnection) -> String {
    let sql = "SELECT pg_current_wal_lsn()::text AS v";
    scalar(db, sql, []).await.unwrap_or_else(|| "0/0".into())
}

async fn wal_distance(db: &sea_orm::DatabaseConnection, from: &str, to: &str) -> i64 {
    let sql = "SELECT pg_wal_lsn_diff($2::pg_lsn, $1::pg_lsn)::bigint AS v";
    scalar(db, sql, [from.into(), to.into()]).await.unwrap_or(0)
}

/// The column `v` of a one-row measurement query; none if the server would not say.
async fn scalar<T: sea_orm::TryGetable>(
    db: &sea_orm::DatabaseConnection,
    sql: &str,
    values: impl IntoIterator<Item = sea_orm::Value>,
) -> Option<T> {
    let statement = sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Postgres, sql, values);
    let row = db.query_one_raw(statement).await.ok().flatten()?;
    row.try_get::<T>("", "v").ok()
}

async fn wait_for_consumers(channel: &lapin::Channel, queue: &str, count: usize) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(queue.into(), passive, lapin::types::FieldTable::default())
            .await
            .map_err(|e| e.to_string())?;
        if declared.consumer_count() as usize >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("a worker process did not start consuming within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Peak resident memory (MiB) and CPU time (s) of a process, from /proc.
fn process_usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or_default().split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    (rss_kib / 1024.0, ticks / 100.0)
}

async fn seed(
    db: &sea_orm::DatabaseConnection,
    vault: &Vault,
    sandbox: &sandbox::SandboxHandle,
    count: usize,
) -> Result<(), sea_orm::DbErr> {
    let grants = sandbox.seed_grants(count);
    let tenant = TenantId::parse("tenant_bench").map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
    let now = Utc::now();
    for (chunk_index, chunk) in grants.chunks(500).enumerate() {
        let mut channel_rows = Vec::with_capacity(chunk.len());
        let mut token_rows = Vec::with_capacity(chunk.len() * 2);
        for (offset, (access, refresh)) in chunk.iter().enumerate() {
            let n = chunk_index * 500 + offset;
            let channel = ChannelId::parse(format!("ch-{n}")).map_err(|e| sea_orm::DbErr::Custom(e.to_string()))?;
            let pk = uuid::Uuid::now_v7();
            channel_rows.push(channels::ActiveModel {
                id: Set(pk),
                tenant_id: Set(tenant.to_string()),
                channel_id: Set(channel.to_string()),
                provider: Set("sandbox".into()),
                status: Set("active".into()),
                generation: Set(1),
                requested_scopes: Set(json!(["profile"])),
                granted_scopes: Set(json!(["profile"])),
                token_version: Set(1),
                expires_at: Set(Some(now + chrono::Duration::hours(1))),
                created_at: Set(now),
                updated_at: Set(now),
                revoked_at: Set(None),
                revoked_origin: Set(None),
                // Old enough that TokenExpiring refreshes for real.
                tokens_updated_at: Set(Some(now - chrono::Duration::hours(2))),
                platform_revocation: Set(None),
            });
            for (kind, token) in [(SecretKind::AccessToken, access), (SecretKind::RefreshToken, refresh)] {
                let sealed = vault.seal(
                    &Binding {
                        tenant: &tenant,
                        channel: &channel,
                        kind,
                        context: "",
                    },
                    token,
                );
                token_rows.push(channel_tokens::ActiveModel {
                    channel_pk: Set(pk),
                    kind: Set(kind.as_str().into()),
                    tenant_id: Set(tenant.to_string()),
                    key_id: Set(sealed.key_id),
                    nonce: Set(sealed.nonce),
                    ciphertext: Set(sealed.ciphertext),
                    token_version: Set(1),
                    updated_at: Set(now),
                });
            }
        }
        channels::Entity::insert_many(channel_rows).exec(db).await?;
        channel_tokens::Entity::insert_many(token_rows).exec(db).await?;
    }
    Ok(())
}

pub fn print(plan: &Plan, results: &Results) {
    println!(
        "| load | channels | events | rate | workers | answered | seconds | events/s | p50 ms | p95 ms | p99 ms | ready ms | peak RSS MiB | CPU s | commits/event | WAL KiB/event | published/s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let list = |values: &[f64]| values.iter().map(|v| format!("{v:.1}")).collect::<Vec<_>>().join(" / ");
    println!(
        "| {:?} | {} | {} | {} | {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.1} | {:.1} | {:.0} |",
        plan.load,
        plan.channels,
        plan.events,
        if plan.rate == 0 {
            "max".to_owned()
        } else {
            plan.rate.to_string()
        },
        plan.workers,
        results.answered,
        results.seconds,
        results.per_second,
        results.p50_ms,
        results.p95_ms,
        results.p99_ms,
        results
            .ready_ms
            .iter()
            .map(u128::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        list(&results.peak_rss_mib),
        list(&results.cpu_seconds),
        results.commits_per_event,
        results.wal_kib_per_event,
        results.published_per_second,
    );
}
