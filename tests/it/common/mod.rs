//! `World::spawn()`: a fresh database, exchange and queues named for this test alone, a real
//! authorization server, the worker running in-process on them, and a hub client that publishes
//! events and awaits the worker's answers.

pub mod emulator;
pub mod logs;
pub mod peer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use praisma_worker::bus::consumer::Faults;
use praisma_worker::bus::hub_client::{HubClient, Received};
use praisma_worker::bus::{self, topology};
use praisma_worker::platform::catalogue::parse_definitions;
use praisma_worker::platform::{Catalogue, ProviderDefinition};
use praisma_worker::sandbox::{SandboxClient, SandboxHandle};
use praisma_worker::settings::{BusSettings, Settings};
use praisma_worker::startup::{StartupError, Worker};
use praisma_worker::vault::Vault;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use peer::{Peer, REDIRECT_URI};

/// How long a test waits for an outcome before failing.
pub const WAIT: Duration = Duration::from_secs(15);
/// How long a test waits to be sure something did *not* arrive.
pub const QUIET: Duration = Duration::from_millis(750);

pub const ADMIN_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

struct RunningWorker {
    http_address: std::net::SocketAddr,
    shutdown: CancellationToken,
    handle: JoinHandle<Result<(), StartupError>>,
}

pub struct World {
    pub settings: Settings,
    pub db: DatabaseConnection,
    pub hub: HubClient,
    pub peer: Peer,
    pub tenant: String,
    pub vault: Vault,
    pub sandbox: Option<SandboxHandle>,
    providers: Vec<ProviderDefinition>,
    /// The worker's settings as environment variables, for worker processes.
    env: BTreeMap<String, String>,
    processes: Vec<tokio::process::Child>,
    db_name: String,
    workers: Vec<RunningWorker>,
}

/// Where the platform sent the browser back to.
#[derive(Debug, Clone)]
pub struct Callback {
    pub params: BTreeMap<String, String>,
}

impl Callback {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// What a test changes about its world.
#[derive(Debug, Clone)]
pub struct Options {
    /// Access-token lifetime the authorization server grants.
    pub access_ttl_secs: u64,
    /// Extra worker settings, as environment variables.
    pub vars: Vec<(&'static str, String)>,
    /// Also run the in-project sandbox platform (its standard and Meta-dialect providers).
    pub sandbox: bool,
    /// More provider definitions (platform emulations); their client credentials go in `vars`.
    pub providers: Vec<ProviderDefinition>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            access_ttl_secs: 3600,
            vars: Vec::new(),
            sandbox: false,
            providers: Vec::new(),
        }
    }
}

impl World {
    pub async fn spawn() -> World {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> World {
        logs::install();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("test_{id}");
        let peer = Peer::start(options.access_ttl_secs);
        let mut vars = BTreeMap::new();
        vars.insert(
            "PRAISMA_DATABASE_URL".to_owned(),
            format!("postgres://postgres@127.0.0.1:5432/{db_name}"),
        );
        vars.insert("PRAISMA_DATABASE_POOL_SIZE".to_owned(), "4".to_owned());
        vars.insert(
            "PRAISMA_PROVIDER_OIDC_TEST_CLIENT_ID".to_owned(),
            peer::CLIENT_ID.to_owned(),
        );
        vars.insert(
            "PRAISMA_PROVIDER_OIDC_TEST_CLIENT_SECRET".to_owned(),
            peer.client_secret.clone(),
        );
        vars.insert("PRAISMA_SHUTDOWN_GRACE_SECONDS".to_owned(), "5".to_owned());
        vars.insert("PRAISMA_EVENT_LEASE_SECONDS".to_owned(), "1".to_owned());
        vars.insert("PRAISMA_HTTP_ADDR".to_owned(), "127.0.0.1:0".to_owned());
        for (name, value) in options.vars {
            vars.insert(name.to_owned(), value);
        }
        let sandbox = if options.sandbox {
            let client = SandboxClient {
                client_id: "praisma-sandbox".into(),
                client_secret: format!("sandbox-{id}"),
                redirect_uri: REDIRECT_URI.into(),
            };
            for name in ["SANDBOX", "SANDBOX_META"] {
                vars.insert(format!("PRAISMA_PROVIDER_{name}_CLIENT_ID"), client.client_id.clone());
                vars.insert(
                    format!("PRAISMA_PROVIDER_{name}_CLIENT_SECRET"),
                    client.client_secret.clone(),
                );
            }
            Some(
                praisma_worker::sandbox::start(client)
                    .await
                    .expect("the sandbox starts"),
            )
        } else {
            None
        };
        let vault_spec = Vault::ephemeral_spec();
        vars.insert("PRAISMA_EXCHANGE".to_owned(), format!("test.{id}"));
        vars.insert("PRAISMA_VAULT_KEYS".to_owned(), vault_spec.expose_secret().to_owned());
        let catalogue_file = std::env::temp_dir().join(format!("catalogue-{id}.toml"));
        std::fs::write(&catalogue_file, peer.catalogue_entry()).expect("the catalogue file is written");
        vars.insert(
            "PRAISMA_CATALOGUE_FILE".to_owned(),
            catalogue_file.display().to_string(),
        );
        let env = vars.clone();
        let mut settings = Settings::from_vars(vars).expect("test settings are valid");
        settings.bus = BusSettings::namespaced(&format!("test.{id}"));
        let vault = Vault::from_spec(&vault_spec).expect("ephemeral key");

        let providers = options.providers;
        let catalogue = catalogue_for(&peer, sandbox.as_ref(), &providers, &settings);
        let first = spawn_worker(&settings, catalogue).await;
        World {
            hub: HubClient::connect(&settings.amqp_url, &settings.bus.exchange)
                .await
                .expect("RabbitMQ at 127.0.0.1:5672"),
            db: Database::connect(settings.database_url.expose_secret())
                .await
                .expect("the test database"),
            settings,
            peer,
            tenant: format!("tenant_{}", &id[..8]),
            vault,
            db_name,
            sandbox,
            providers,
            env,
            processes: Vec::new(),
            workers: vec![first.0],
        }
    }

    /// Starts one more worker on this world's database and queues; returns its fault switches.
    pub async fn start_worker(&mut self) -> Arc<Faults> {
        let catalogue = catalogue_for(&self.peer, self.sandbox.as_ref(), &self.providers, &self.settings);
        let (running, faults) = spawn_worker(&self.settings, catalogue).await;
        self.workers.push(running);
        faults
    }

    /// The fault switches of a worker started with [`World::start_worker_with_faults`].
    pub async fn start_worker_with_faults(&mut self) -> Arc<Faults> {
        self.start_worker().await
    }

    /// Starts a worker process (the real binary) on this world's database and queues, and waits
    /// until it consumes.
    pub async fn start_worker_process(&mut self) {
        self.start_worker_process_with(&[]).await;
    }

    /// As [`World::start_worker_process`], with extra environment variables.
    pub async fn start_worker_process_with(&mut self, extra: &[(&str, String)]) {
        let consumers_before = self.consumers().await;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_praisma-worker"))
            .arg("worker")
            .envs(&self.env)
            .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the worker binary starts");
        self.processes.push(child);
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.consumers().await <= consumers_before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the worker process did not start consuming"
            );
            // The broker has no push notification for a new consumer; this polls it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the worker processes with SIGTERM and waits for them to exit.
    pub async fn stop_worker_processes(&mut self) {
        for mut process in self.processes.drain(..) {
            if let Some(pid) = process.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
            let _ = tokio::time::timeout(WAIT, process.wait()).await;
        }
    }

    /// Kills the worker processes outright (SIGKILL): no draining, no acks, no flush.
    #[allow(dead_code, reason = "used by the survival target, which shares this module")]
    pub async fn kill_worker_processes(&mut self) {
        for mut process in self.processes.drain(..) {
            let _ = process.start_kill();
            let _ = tokio::time::timeout(WAIT, process.wait()).await;
        }
    }

    /// Consumers on the worker queue, as the broker counts them.
    async fn consumers(&self) -> u32 {
        let Ok(connection) = bus::connect(&self.settings.amqp_url, "test-probe").await else {
            return 0;
        };
        let Ok(channel) = connection.create_channel().await else {
            return 0;
        };
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let declared = channel
            .queue_declare(
                self.settings.bus.queue.as_str().into(),
                passive,
                lapin::types::FieldTable::default(),
            )
            .await;
        let _ = connection.close(200, "probe".into()).await;
        declared.map(|q| q.consumer_count()).unwrap_or(0)
    }

    /// The first running worker's `/healthz`, `/readyz` and `/metrics` base URL.
    pub fn http_base(&self) -> String {
        format!("http://{}", self.workers[0].http_address)
    }

    /// The worker's `PRAISMA_VAULT_KEYS`.
    pub fn vault_spec(&self) -> String {
        self.env.get("PRAISMA_VAULT_KEYS").cloned().unwrap_or_default()
    }

    /// The worker's settings as environment variables, to run the binary's commands on this world.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// Stops the worker started first, gracefully.
    pub async fn join_first_worker(&mut self) {
        let worker = self.workers.remove(0);
        worker.shutdown.cancel();
        let result = tokio::time::timeout(WAIT, worker.handle).await;
        assert!(
            matches!(result, Ok(Ok(Ok(())))),
            "the worker stopped cleanly: {result:?}"
        );
    }

    /// Waits until every running worker has stopped by itself (a simulated crash).
    pub async fn wait_for_crash(&mut self) {
        for worker in self.workers.drain(..) {
            let result = tokio::time::timeout(WAIT, worker.handle).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "the worker crashed as injected: {result:?}"
            );
        }
    }

    /// Waits for every worker to stop (after a shutdown or a simulated crash).
    pub async fn join_workers(&mut self) {
        for worker in self.workers.drain(..) {
            worker.shutdown.cancel();
            let result = tokio::time::timeout(WAIT, worker.handle).await;
            assert!(
                matches!(result, Ok(Ok(Ok(())))),
                "the worker stopped cleanly: {result:?}"
            );
        }
    }

    pub fn event(&self, event_type: &str, data: Value) -> Value {
        HubClient::event(&self.tenant, event_type, data)
    }

    /// Publishes and waits for the final outcome on the exchange.
    pub async fn request(&self, event: &Value) -> Received {
        self.hub.publish(event, false).await.expect("published");
        let id = event["id"].as_str().expect("an id");
        self.hub
            .outcome(id, WAIT)
            .await
            .unwrap_or_else(|| panic!("no outcome for {} within {WAIT:?}", event["type"]))
    }

    pub fn consent_request(&self, channel: &str, capabilities: &[&str]) -> Value {
        self.consent_request_via("oidc_test", channel, capabilities)
    }

    pub fn consent_request_via(&self, provider: &str, channel: &str, capabilities: &[&str]) -> Value {
        self.event(
            "ConsentUrlRequested",
            json!({ "channel_id": channel, "provider": provider, "capabilities": capabilities, "redirect_uri": REDIRECT_URI }),
        )
    }

    /// The user's browser: follows the authorization URL through the server's login and consent,
    /// leaving `deny` unticked (or refusing everything), and stops at the redirect to the hub.
    pub async fn user_consents(&self, authorization_url: &str, deny: &[&str], refuse: bool) -> Callback {
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .cookie_store(true)
            .build()
            .expect("a browser");
        let mut url = url::Url::parse(authorization_url).expect("the authorization URL parses");
        for _ in 0..10 {
            let response = browser
                .get(url.clone())
                .send()
                .await
                .expect("the authorization server answers");
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| panic!("expected a redirect from {url}, got {}", response.status()))
                .to_owned();
            let mut next = url.join(&location).expect("a valid redirect");
            if next.as_str().starts_with(REDIRECT_URI) {
                return Callback {
                    params: next.query_pairs().into_owned().collect(),
                };
            }
            if next.path().starts_with("/interaction/") {
                if refuse {
                    next.query_pairs_mut().append_pair("refuse", "1");
                } else if !deny.is_empty() {
                    next.query_pairs_mut().append_pair("deny", &deny.join(","));
                }
            }
            url = next;
        }
        panic!("the authorization flow did not come back to the hub");
    }

    /// Consent URL → the user consents (leaving `deny` unticked) → the callback, not yet
    /// forwarded to the worker.
    pub async fn consent_callback(&self, channel: &str, capabilities: &[&str], deny: &[&str]) -> Callback {
        self.consent_callback_via("oidc_test", channel, capabilities, deny)
            .await
    }

    pub async fn consent_callback_via(
        &self,
        provider: &str,
        channel: &str,
        capabilities: &[&str],
        deny: &[&str],
    ) -> Callback {
        let issued = self
            .request(&self.consent_request_via(provider, channel, capabilities))
            .await;
        assert_eq!(issued.event_type(), "ConsentUrlIssued", "{:?}", issued.event);
        let url = issued.event["data"]["authorization_url"]
            .as_str()
            .expect("a URL")
            .to_owned();
        self.user_consents(&url, deny, false).await
    }

    /// The whole connect flow for `channel`: returns the worker's answer and the callback.
    pub async fn connect_channel(&self, channel: &str, capabilities: &[&str], deny: &[&str]) -> (Received, Callback) {
        let callback = self.consent_callback(channel, capabilities, deny).await;
        let established = self.request(&self.connect_request(&callback)).await;
        (established, callback)
    }

    pub fn connect_request(&self, callback: &Callback) -> Value {
        self.event(
            "ConnectRequested",
            json!({ "state": callback.get("state"), "code": callback.get("code") }),
        )
    }

    pub async fn query(&self, sql: &str, values: Vec<sea_orm::Value>) -> Vec<sea_orm::QueryResult> {
        self.db
            .query_all_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, values))
            .await
            .expect("query runs")
    }

    pub async fn count(&self, sql: &str, values: Vec<sea_orm::Value>) -> i64 {
        let rows = self.query(sql, values).await;
        rows.first()
            .map(|r| r.try_get_by_index::<i64>(0).expect("a count"))
            .unwrap_or(0)
    }

    /// Every row of every table, as JSON text: what a `pg_dump` would show of the data.
    pub async fn dump_tables(&self) -> String {
        let mut dump = String::new();
        for table in [
            "channels",
            "channel_tokens",
            "authorizations",
            "inbox",
            "outbox",
            "audit_log",
        ] {
            for row in self
                .query(&format!("SELECT row_to_json(t)::text AS j FROM {table} t"), vec![])
                .await
            {
                dump.push_str(&row.try_get::<String>("", "j").expect("json text"));
                dump.push('\n');
            }
        }
        dump
    }

    pub async fn dead_letters(&self) -> Vec<Received> {
        self.hub
            .drain_queue(&self.settings.bus.dead_letter_queue)
            .await
            .expect("the dead-letter queue")
    }

    /// Waits until the dead-letter queue has received `count` messages.
    pub async fn wait_dead_letters(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut taken = Vec::new();
        while taken.len() < count && tokio::time::Instant::now() < deadline {
            taken.extend(self.dead_letters().await);
            if taken.len() < count {
                // basic.get has no push notification; this polls the broker, it does not wait on time.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        taken
    }

    /// The channel's stored token ciphertext, as the database holds it.
    pub async fn sealed_token(&self, channel: &str, kind: &str) -> Option<praisma_worker::vault::Sealed> {
        let rows = self
            .query(
                "SELECT t.key_id, t.nonce, t.ciphertext FROM channel_tokens t JOIN channels c ON c.id = t.channel_pk
                 WHERE c.tenant_id = $1 AND c.channel_id = $2 AND t.kind = $3",
                vec![self.tenant.clone().into(), channel.into(), kind.into()],
            )
            .await;
        let row = rows.first()?;
        Some(praisma_worker::vault::Sealed {
            key_id: row.try_get("", "key_id").ok()?,
            nonce: row.try_get("", "nonce").ok()?,
            ciphertext: row.try_get("", "ciphertext").ok()?,
        })
    }

    /// The channel's stored token, decrypted as only the worker could.
    pub async fn stored_token(&self, channel: &str, kind: &str) -> Option<String> {
        let sealed = self.sealed_token(channel, kind).await?;
        let tenant = praisma_worker::domain::TenantId::parse(self.tenant.clone()).ok()?;
        let channel = praisma_worker::domain::ChannelId::parse(channel).ok()?;
        let kind = if kind == "access" {
            praisma_worker::vault::SecretKind::AccessToken
        } else {
            praisma_worker::vault::SecretKind::RefreshToken
        };
        let binding = praisma_worker::vault::Binding {
            tenant: &tenant,
            channel: &channel,
            kind,
            context: "",
        };
        self.vault.open(&binding, &sealed).ok().map(|p| p.to_string())
    }

    /// Moves the channel's last token change into the past, as if time had passed, so that a
    /// `TokenExpiring` is not answered from a token that is still fresh.
    pub async fn age_tokens(&self, channel: &str) {
        self.query(
            "UPDATE channels SET tokens_updated_at = now() - interval '1 hour' WHERE tenant_id = $1 AND channel_id = $2",
            vec![self.tenant.clone().into(), channel.into()],
        )
        .await;
    }

    /// Waits until the database answers `sql` (a count) with at least `at_least`.
    pub async fn wait_count(&self, sql: &str, at_least: i64) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if self.count(sql, vec![]).await >= at_least {
                return true;
            }
            // Database state has no push notification; this polls a condition, it does not wait on time.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn teardown(mut self) {
        self.join_workers().await;
        self.stop_worker_processes().await;
        if let Some(file) = self.env.get("PRAISMA_CATALOGUE_FILE") {
            let _ = std::fs::remove_file(file);
        }
        if let Some(sandbox) = &self.sandbox {
            sandbox.stop();
        }
        if let Ok(connection) = bus::connect(&self.settings.amqp_url, "test-teardown").await {
            if let Ok(channel) = connection.create_channel().await {
                let _ = topology::delete(&channel, &self.settings.bus).await;
            }
            let _ = connection.close(200, "done".into()).await;
        }
        let _ = self.db.clone().close().await;
        if let Ok(admin) = Database::connect(ADMIN_DATABASE_URL).await {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db_name))
                .await;
        }
    }
}

fn catalogue_for(
    peer: &Peer,
    sandbox: Option<&SandboxHandle>,
    providers: &[ProviderDefinition],
    settings: &Settings,
) -> Catalogue {
    let mut definitions = parse_definitions(&peer.catalogue_entry()).expect("test catalogue parses");
    definitions.extend(providers.iter().cloned());
    if let Some(sandbox) = sandbox {
        definitions.push(sandbox.definition().expect("sandbox definition"));
        definitions.push(sandbox.meta_definition().expect("sandbox Meta definition"));
    }
    Catalogue::build(definitions, settings).expect("test catalogue builds")
}

async fn spawn_worker(settings: &Settings, catalogue: Catalogue) -> (RunningWorker, Arc<Faults>) {
    let worker = Worker::build(settings.clone(), catalogue)
        .await
        .expect("the worker starts");
    let faults = worker.faults();
    let http_address = worker.http_address();
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(worker.run_until_stopped(shutdown.clone()));
    (
        RunningWorker {
            http_address,
            shutdown,
            handle,
        },
        faults,
    )
}
