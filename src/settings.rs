//! Typed settings from the environment. Every value has a default that works against this
//! machine's local services, except the vault keys, which a worker must be given. A bad value
//! stops start-up with one sentence that names the variable and never echoes a secret.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use crate::domain::ProviderName;
use crate::domain::secrets::ClientSecret;
use crate::jobs::policy::RefreshPolicy;

#[derive(Debug, Clone)]
pub struct Settings {
    pub database_url: SecretString,
    pub database_pool_size: u32,
    pub amqp_url: SecretString,
    pub bus: BusSettings,
    pub vault_keys: Option<SecretString>,
    pub catalogue_file: Option<PathBuf>,
    pub clients: BTreeMap<ProviderName, ClientCredentials>,
    pub redirect_uris: BTreeMap<ProviderName, Vec<url::Url>>,
    pub state_ttl: Duration,
    pub http_connect_timeout: Duration,
    pub http_timeout: Duration,
    pub event_lease: Duration,
    pub outbox_poll: Duration,
    pub shutdown_grace: Duration,
    pub log_format: LogFormat,
    pub refresh: RefreshPolicy,
    pub job_poll: Duration,
    pub job_concurrency: usize,
    /// How long a runner owns a claimed job; another replica takes it back after.
    pub job_lease: Duration,
    pub operation_max_body: usize,
    /// How long settled events, their answers, finished jobs and expired consent states are kept;
    /// zero keeps them forever. A redelivered event is recognised for this long.
    pub retention: Duration,
    /// How often each replica prunes what is older than `retention`.
    pub retention_interval: Duration,
    /// `/healthz`, `/readyz` and `/metrics`.
    pub http_addr: std::net::SocketAddr,
}

#[derive(Debug, Clone)]
pub struct BusSettings {
    pub exchange: String,
    pub queue: String,
    pub dead_letter_exchange: String,
    pub dead_letter_queue: String,
    pub prefetch: u16,
    pub delivery_limit: u32,
    pub max_event_bytes: usize,
}

impl BusSettings {
    /// Names derived from one prefix, as tests and the demo use to stay apart from each other.
    pub fn namespaced(prefix: &str) -> Self {
        Self {
            exchange: prefix.to_owned(),
            queue: format!("{prefix}.worker"),
            dead_letter_exchange: format!("{prefix}.dead_letter"),
            dead_letter_queue: format!("{prefix}.worker.dead_letter"),
            prefetch: 32,
            delivery_limit: 10,
            max_event_bytes: 256 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Option<ClientSecret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// One sentence naming what is wrong with a setting.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/praisma";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_vars(std::env::vars().collect())
    }

    /// Reads settings from a variable map: the environment in production, a literal in tests.
    pub fn from_vars(vars: BTreeMap<String, String>) -> Result<Self, SettingsError> {
        let get = |name: &str| vars.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let number = |name: &str, default: u64| -> Result<u64, SettingsError> {
            match get(name) {
                None => Ok(default),
                Some(raw) => raw
                    .parse::<u64>()
                    .map_err(|_| SettingsError(format!("{name} must be a whole number, got {raw:?}"))),
            }
        };
        let prefix = get("PRAISMA_EXCHANGE").unwrap_or_else(|| "praisma.integrations".to_owned());
        let mut bus = BusSettings::namespaced(&prefix);
        if let Some(queue) = get("PRAISMA_QUEUE") {
            bus.dead_letter_queue = format!("{queue}.dead_letter");
            bus.queue = queue;
        }
        if let Some(dlx) = get("PRAISMA_DEAD_LETTER_EXCHANGE") {
            bus.dead_letter_exchange = dlx;
        }
        if let Some(dlq) = get("PRAISMA_DEAD_LETTER_QUEUE") {
            bus.dead_letter_queue = dlq;
        }
        let prefetch = number("PRAISMA_PREFETCH", 32)?;
        bus.prefetch = u16::try_from(prefetch)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| SettingsError("PRAISMA_PREFETCH must be between 1 and 65535".into()))?;
        bus.delivery_limit = u32::try_from(number("PRAISMA_DELIVERY_LIMIT", 10)?)
            .map_err(|_| SettingsError("PRAISMA_DELIVERY_LIMIT is too large".into()))?;
        bus.max_event_bytes = usize::try_from(number("PRAISMA_MAX_EVENT_BYTES", 256 * 1024)?)
            .map_err(|_| SettingsError("PRAISMA_MAX_EVENT_BYTES is too large".into()))?;

        let log_format = match get("PRAISMA_LOG_FORMAT").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            Some(other) => {
                return Err(SettingsError(format!(
                    "PRAISMA_LOG_FORMAT must be json or pretty, got {other:?}"
                )));
            }
        };

        let (clients, redirect_uris) = provider_settings(&vars)?;
        let settings = Self {
            database_url: SecretString::from(
                get("PRAISMA_DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            ),
            database_pool_size: u32::try_from(number("PRAISMA_DATABASE_POOL_SIZE", 16)?)
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| SettingsError("PRAISMA_DATABASE_POOL_SIZE must be between 1 and 4294967295".into()))?,
            amqp_url: SecretString::from(get("PRAISMA_AMQP_URL").unwrap_or_else(|| DEFAULT_AMQP_URL.into())),
            bus,
            vault_keys: get("PRAISMA_VAULT_KEYS").map(SecretString::from),
            catalogue_file: get("PRAISMA_CATALOGUE_FILE").map(PathBuf::from),
            clients,
            redirect_uris,
            state_ttl: Duration::from_secs(number("PRAISMA_STATE_TTL_SECONDS", 600)?),
            http_connect_timeout: Duration::from_millis(number("PRAISMA_HTTP_CONNECT_TIMEOUT_MS", 5_000)?),
            http_timeout: Duration::from_millis(number("PRAISMA_HTTP_TIMEOUT_MS", 15_000)?),
            event_lease: Duration::from_secs(number("PRAISMA_EVENT_LEASE_SECONDS", 120)?),
            outbox_poll: Duration::from_millis(number("PRAISMA_OUTBOX_POLL_MS", 1_000)?),
            shutdown_grace: Duration::from_secs(number("PRAISMA_SHUTDOWN_GRACE_SECONDS", 30)?),
            log_format,
            refresh: RefreshPolicy {
                lead_percent: u32::try_from(number("PRAISMA_REFRESH_LEAD_PERCENT", 20)?.min(100)).unwrap_or(20),
                lead_min: Duration::from_secs(number("PRAISMA_REFRESH_LEAD_MIN_SECONDS", 60)?),
                lead_max: Duration::from_secs(number("PRAISMA_REFRESH_LEAD_MAX_SECONDS", 3_600)?),
                retry_min: Duration::from_millis(number("PRAISMA_REFRESH_RETRY_MIN_MS", 500)?),
                retry_max: Duration::from_millis(number("PRAISMA_REFRESH_RETRY_MAX_MS", 300_000)?),
                max_attempts: u32::try_from(number("PRAISMA_REFRESH_MAX_ATTEMPTS", 8)?.max(1)).unwrap_or(8),
                debounce: Duration::from_secs(number("PRAISMA_REFRESH_DEBOUNCE_SECONDS", 60)?),
            },
            job_poll: Duration::from_millis(number("PRAISMA_JOB_POLL_MS", 1_000)?.max(10)),
            job_concurrency: usize::try_from(number("PRAISMA_JOB_CONCURRENCY", 64)?.max(1)).unwrap_or(64),
            job_lease: Duration::from_secs(number("PRAISMA_JOB_LEASE_SECONDS", 0)?),
            retention: Duration::from_secs(number("PRAISMA_RETENTION_DAYS", 30)?.saturating_mul(86_400)),
            retention_interval: Duration::from_secs(number("PRAISMA_RETENTION_INTERVAL_SECONDS", 3_600)?.max(1)),
            http_addr: get("PRAISMA_HTTP_ADDR")
                .unwrap_or_else(|| "0.0.0.0:9464".to_owned())
                .parse()
                .map_err(|_| {
                    SettingsError("PRAISMA_HTTP_ADDR must be an address and port, like 0.0.0.0:9464".into())
                })?,
            operation_max_body: usize::try_from(number("PRAISMA_OPERATION_MAX_BODY_BYTES", 1 << 20)?)
                .unwrap_or(1 << 20),
        };
        let mut settings = settings;
        if settings.job_lease.is_zero() {
            // Longer than any platform call can take, so a live runner never loses its job.
            settings.job_lease = settings.http_timeout * 2 + Duration::from_secs(30);
        }
        if settings.state_ttl.is_zero() {
            return Err(SettingsError("PRAISMA_STATE_TTL_SECONDS must be more than 0".into()));
        }
        if settings.http_timeout.is_zero() || settings.http_connect_timeout.is_zero() {
            return Err(SettingsError(
                "PRAISMA_HTTP_TIMEOUT_MS and PRAISMA_HTTP_CONNECT_TIMEOUT_MS must be more than 0".into(),
            ));
        }
        Ok(settings)
    }
}

type ProviderSettings = (
    BTreeMap<ProviderName, ClientCredentials>,
    BTreeMap<ProviderName, Vec<url::Url>>,
);

/// `PRAISMA_PROVIDER_<NAME>_CLIENT_ID`, `..._CLIENT_SECRET` and `..._REDIRECT_URIS` (comma-separated).
fn provider_settings(vars: &BTreeMap<String, String>) -> Result<ProviderSettings, SettingsError> {
    let mut clients = BTreeMap::new();
    let mut redirects = BTreeMap::new();
    let provider_of = |key: &str, suffix: &str| -> Result<Option<ProviderName>, SettingsError> {
        let Some(middle) = key
            .strip_prefix("PRAISMA_PROVIDER_")
            .and_then(|k| k.strip_suffix(suffix))
        else {
            return Ok(None);
        };
        ProviderName::parse(middle.to_ascii_lowercase())
            .map(Some)
            .map_err(|_| SettingsError(format!("{key} does not name a valid provider")))
    };
    for (key, value) in vars {
        if let Some(provider) = provider_of(key, "_CLIENT_ID")? {
            let secret_key = format!(
                "PRAISMA_PROVIDER_{}_CLIENT_SECRET",
                provider.as_str().to_ascii_uppercase()
            );
            let client_secret = vars
                .get(&secret_key)
                .filter(|s| !s.trim().is_empty())
                .map(|s| ClientSecret::new(s.trim().to_owned()));
            clients.insert(
                provider,
                ClientCredentials {
                    client_id: value.trim().to_owned(),
                    client_secret,
                },
            );
        } else if let Some(provider) = provider_of(key, "_REDIRECT_URIS")? {
            let uris = value
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| {
                    url::Url::parse(u).map_err(|_| SettingsError(format!("{key} holds a value that is not a URL")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            redirects.insert(provider, uris);
        }
    }
    Ok((clients, redirects))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_point_at_local_services() {
        let settings = Settings::from_vars(BTreeMap::new()).map_err(|e| e.to_string());
        let Ok(settings) = settings else {
            panic!("defaults must parse")
        };
        assert_eq!(settings.bus.exchange, "praisma.integrations");
        assert_eq!(settings.bus.queue, "praisma.integrations.worker");
        assert_eq!(settings.state_ttl, Duration::from_secs(600));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = Settings::from_vars(vars(&[("PRAISMA_PREFETCH", "lots")]))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("PRAISMA_PREFETCH must be a whole number, got \"lots\"")
        );
    }

    #[test]
    fn client_credentials_are_read_per_provider() {
        let settings = Settings::from_vars(vars(&[
            ("PRAISMA_PROVIDER_OIDC_TEST_CLIENT_ID", "worker"),
            ("PRAISMA_PROVIDER_OIDC_TEST_CLIENT_SECRET", "s3cret"),
        ]));
        let Ok(settings) = settings else { panic!("must parse") };
        let name = ProviderName::parse("oidc_test").ok();
        let creds = name.as_ref().and_then(|n| settings.clients.get(n));
        assert_eq!(creds.map(|c| c.client_id.as_str()), Some("worker"));
        assert!(!format!("{settings:?}").contains("s3cret"));
    }
}
