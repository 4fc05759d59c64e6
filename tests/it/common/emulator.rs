//! A platform's wire format, emulated: every request is recorded as the platform would see it
//! (method, host and path, query, form, `Authorization`), and answered with the next reply the
//! test scripted for that method and path, in the platform's documented shape. Contract tests
//! assert the exact requests the worker made.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use praisma_worker::platform::ProviderDefinition;
use praisma_worker::platform::catalogue::{Renewal, ScopeDiscovery};
use serde_json::Value;
use url::Url;

/// One request as the platform received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    /// The platform's host and path, e.g. `graph.facebook.com/v24.0/oauth/access_token`.
    pub target: String,
    pub query: BTreeMap<String, String>,
    pub form: BTreeMap<String, String>,
    pub authorization: Option<String>,
}

/// Scripted answers (status, JSON body) by `METHOD host/path`, served in order.
type Replies = HashMap<String, VecDeque<(u16, Value)>>;

#[derive(Clone, Default)]
struct Script {
    seen: Arc<Mutex<Vec<Seen>>>,
    replies: Arc<Mutex<Replies>>,
}

pub struct Emulator {
    base: Url,
    script: Script,
}

impl Emulator {
    pub async fn start() -> Emulator {
        let script = Script::default();
        let app = axum::Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Emulator { base, script }
    }

    /// Scripts the next answer to `method target`.
    pub fn reply(&self, method: &str, target: &str, status: u16, body: Value) {
        self.script
            .replies
            .lock()
            .unwrap()
            .entry(format!("{method} {target}"))
            .or_default()
            .push_back((status, body));
    }

    /// Every request so far, in order; the log starts empty again.
    pub fn take_requests(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.script.seen.lock().unwrap())
    }

    /// `definition` with every platform URL pointed here (`https://host/path` becomes
    /// `http://127.0.0.1:port/host/path`).
    pub fn relocate(&self, mut definition: ProviderDefinition, redirect_uri: &str) -> ProviderDefinition {
        let here = |url: &Url| {
            let path = format!("{}{}", url.host_str().unwrap(), url.path());
            self.base.join(&path).unwrap()
        };
        definition.authorization_url = here(&definition.authorization_url);
        definition.token_url = here(&definition.token_url);
        definition.api_base_url = here(&definition.api_base_url);
        definition.revocation_url = definition.revocation_url.as_ref().map(here);
        if let Some(trade) = definition.long_lived_exchange.as_mut() {
            trade.url = trade.url.as_ref().map(here);
        }
        if let Renewal::AccessTokenGrant(trade) = &mut definition.renewal {
            trade.url = trade.url.as_ref().map(here);
        }
        match &mut definition.granted_scopes {
            ScopeDiscovery::PermissionsEdge { url } | ScopeDiscovery::Introspection { url } => *url = here(url),
            ScopeDiscovery::TokenResponse => {}
        }
        definition.redirect_uris = vec![Url::parse(redirect_uri).unwrap()];
        definition
    }
}

async fn answer(State(script): State<Script>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let pairs = |raw: &[u8]| -> BTreeMap<String, String> { url::form_urlencoded::parse(raw).into_owned().collect() };
    let seen = Seen {
        method: method.to_string(),
        target: uri.path().trim_start_matches('/').to_owned(),
        query: pairs(uri.query().unwrap_or_default().as_bytes()),
        form: pairs(&body),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let key = format!("{} {}", seen.method, seen.target);
    script.seen.lock().unwrap().push(seen);
    let next = script
        .replies
        .lock()
        .unwrap()
        .get_mut(&key)
        .and_then(VecDeque::pop_front);
    match next {
        Some((status, body)) => (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response(),
        None => (StatusCode::NOT_IMPLEMENTED, format!("nothing scripted for {key}")).into_response(),
    }
}

/// A parameter map from pairs, for comparing with [`Seen::query`] and [`Seen::form`].
pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// `Basic base64(id:secret)`.
pub fn basic(id: &str, secret: &str) -> Option<String> {
    use base64::Engine;
    Some(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    ))
}
