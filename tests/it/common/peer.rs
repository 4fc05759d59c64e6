//! Starts the real authorization server (`tests/peer/server.js`, oidc-provider), installing its
//! npm dependencies first if they are missing.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

pub const CLIENT_ID: &str = "praisma-worker";
pub const REDIRECT_URI: &str = "http://127.0.0.1:9/hub/oauth/callback";

pub struct Peer {
    pub issuer: String,
    pub client_secret: String,
    child: Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

static INSTALL: Mutex<bool> = Mutex::new(false);

fn peer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join("peer")
}

fn ensure_installed() {
    let mut installed = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if *installed || peer_dir().join("node_modules").join("oidc-provider").exists() {
        *installed = true;
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--silent"])
        .current_dir(peer_dir())
        .status()
        .expect("npm must be installed to run the test authorization server");
    assert!(status.success(), "npm ci failed in tests/peer");
    *installed = true;
}

impl Peer {
    pub fn start(access_ttl_secs: u64) -> Peer {
        ensure_installed();
        let client_secret = format!("cs-{}", uuid::Uuid::new_v4().simple());
        let mut child = Command::new("node")
            .arg("server.js")
            .current_dir(peer_dir())
            .env("PEER_CLIENT_ID", CLIENT_ID)
            .env("PEER_CLIENT_SECRET", &client_secret)
            .env("PEER_REDIRECT_URI", REDIRECT_URI)
            .env("PEER_ACCESS_TTL", access_ttl_secs.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node must be installed to run the test authorization server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the authorization server printed its issuer");
        let announced: serde_json::Value = serde_json::from_str(&line).expect("the issuer line is JSON");
        let issuer = announced["issuer"].as_str().expect("an issuer").to_owned();
        Peer {
            issuer,
            client_secret,
            child,
        }
    }

    /// The catalogue entry that points the worker at this server.
    pub fn catalogue_entry(&self) -> String {
        let issuer = &self.issuer;
        format!(
            r#"
[[provider]]
name = "oidc_test"
authorization_url = "{issuer}/auth"
token_url = "{issuer}/token"
revocation_url = "{issuer}/token/revocation"
api_base_url = "{issuer}/api/"
pkce = true
client_auth = "basic"
redirect_uris = ["{REDIRECT_URI}"]
[provider.capabilities]
"profile.read" = ["user.read"]
"posts.read" = ["posts.read"]
"posts.publish" = ["posts.read", "posts.write"]
"insights.read" = ["insights.read"]
"messages.write" = ["messages.read", "messages.write"]
"#
        )
    }

    pub async fn stats(&self) -> serde_json::Value {
        reqwest::get(format!("{}/_test/stats", self.issuer))
            .await
            .expect("stats answered")
            .json()
            .await
            .expect("stats are JSON")
    }

    pub async fn token_calls(&self) -> u64 {
        self.stats().await["token_calls"].as_u64().unwrap_or(0)
    }

    /// Every authorization code, access token and refresh token the server issued.
    pub async fn issued_secrets(&self) -> Vec<String> {
        reqwest::get(format!("{}/_test/issued", self.issuer))
            .await
            .expect("issued answered")
            .json()
            .await
            .expect("a list")
    }

    /// Successful refresh-token grants.
    pub async fn refreshes(&self) -> u64 {
        self.stats().await["grants"]["refresh_token"].as_u64().unwrap_or(0)
    }

    /// Times a spent refresh token was presented again (the server then revokes the grant).
    pub async fn replays(&self) -> u64 {
        self.stats().await["replays"].as_u64().unwrap_or(0)
    }

    /// Queues faults for the next token-endpoint calls (see `tests/peer/server.js`).
    pub async fn inject(&self, faults: serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/_test/faults", self.issuer))
            .json(&faults)
            .send()
            .await
            .expect("faults accepted");
        assert!(response.status().is_success());
    }

    /// Revokes a token at the server, as the user removing the app there would.
    pub async fn revoke(&self, token: &str) {
        let response = reqwest::Client::new()
            .post(format!("{}/token/revocation", self.issuer))
            .basic_auth(CLIENT_ID, Some(&self.client_secret))
            .form(&[("token", token)])
            .send()
            .await
            .expect("revocation answered");
        assert!(response.status().is_success());
    }

    /// Whether the server still honours this refresh token (spends it if it does).
    pub async fn refresh_works(&self, refresh_token: &str) -> bool {
        reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(CLIENT_ID, Some(&self.client_secret))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", refresh_token)])
            .send()
            .await
            .expect("the token endpoint answers")
            .status()
            .is_success()
    }

    pub async fn api_calls(&self) -> u64 {
        self.stats().await["api_calls"].as_u64().unwrap_or(0)
    }

    pub async fn revocations(&self) -> u64 {
        self.stats().await["revocations"].as_u64().unwrap_or(0)
    }

    /// Whether the platform's API accepts this access token.
    pub async fn api_accepts(&self, access_token: &str) -> bool {
        reqwest::Client::new()
            .get(format!("{}/api/me", self.issuer))
            .bearer_auth(access_token)
            .send()
            .await
            .expect("the API answers")
            .status()
            .is_success()
    }
}
