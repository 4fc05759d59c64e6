//! `providers`: what the catalogue holds, and how each platform's OAuth is bent; `webhooks`:
//! the deauthorization-callback verifiers, for a hub that prefers a command to the library.

use std::fmt::Write as _;
use std::io::Read as _;

use crate::cli::WebhooksCommand;
use crate::domain::ProviderName;
use crate::platform::catalogue::{
    ProviderDefinition, Renewal, RevocationStyle, ScopeDiscovery, TokenResponseFormat, TradeCredentials,
};
use crate::platform::{Catalogue, webhooks};
use crate::settings::Settings;

pub fn print(settings: &Settings, name: Option<&str>) -> Result<(), String> {
    let catalogue = Catalogue::load(settings).map_err(|e| e.to_string())?;
    let definitions = catalogue.definitions();
    let text = match name {
        None => list(&definitions),
        Some(name) => {
            let (definition, configured) = definitions
                .iter()
                .find(|(d, _)| d.name.as_str() == name)
                .ok_or_else(|| format!("no provider {name} in the catalogue"))?;
            show(definition, *configured)
        }
    };
    print!("{text}");
    Ok(())
}

fn renewal(definition: &ProviderDefinition) -> String {
    match &definition.renewal {
        Renewal::RefreshToken => "refresh token".to_owned(),
        Renewal::AccessTokenGrant(trade) => format!("trade access token ({})", trade.grant_type),
    }
}

fn discovery(definition: &ProviderDefinition) -> &'static str {
    match definition.granted_scopes {
        ScopeDiscovery::TokenResponse => "token response",
        ScopeDiscovery::PermissionsEdge { .. } => "permissions edge",
        ScopeDiscovery::Introspection { .. } => "introspection",
    }
}

fn revocation(definition: &ProviderDefinition) -> &'static str {
    match (&definition.revocation_url, definition.revocation.style) {
        (None, _) => "none documented",
        (Some(_), RevocationStyle::Rfc7009) => "RFC 7009",
        (Some(_), RevocationStyle::DeletePermissions) => "delete permissions",
    }
}

fn list(definitions: &[(&ProviderDefinition, bool)]) -> String {
    let mut out = format!(
        "{:<12} {:<16} {:<11} {:<5} {:<38} {:<17} {}\n",
        "NAME", "PLATFORM", "CONFIGURED", "PKCE", "RENEWAL", "GRANTED SCOPES", "REVOCATION"
    );
    for (definition, configured) in definitions {
        let _ = writeln!(
            out,
            "{:<12} {:<16} {:<11} {:<5} {:<38} {:<17} {}",
            definition.name.as_str(),
            definition.display_name.as_deref().unwrap_or("-"),
            if *configured { "yes" } else { "no" },
            if definition.pkce { "yes" } else { "no" },
            renewal(definition),
            discovery(definition),
            revocation(definition),
        );
    }
    out.push_str("\n`providers <name>` shows one platform's capabilities, scopes and quirks.\n");
    out
}

fn show(definition: &ProviderDefinition, configured: bool) -> String {
    let mut out = String::new();
    let line = |out: &mut String, label: &str, value: &str| {
        let _ = writeln!(out, "{label:<22} {value}");
    };
    line(&mut out, "provider", definition.name.as_str());
    line(&mut out, "platform", definition.display_name.as_deref().unwrap_or("-"));
    line(
        &mut out,
        "configured",
        if configured {
            "yes"
        } else {
            "no (no client credentials)"
        },
    );
    line(&mut out, "authorization", definition.authorization_url.as_str());
    line(&mut out, "token endpoint", definition.token_url.as_str());
    line(&mut out, "api base", definition.api_base_url.as_str());
    line(
        &mut out,
        "scope separator",
        &format!("{:?}", definition.scope_separator),
    );
    line(&mut out, "pkce", if definition.pkce { "S256" } else { "no" });
    line(
        &mut out,
        "client auth",
        &format!("{:?}", definition.client_auth).to_lowercase(),
    );
    line(&mut out, "client id parameter", &definition.client_id_parameter);
    let format = serde_json::to_value(definition.token_response)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    line(&mut out, "token response", &format);
    if definition.token_response == TokenResponseFormat::Standard {
        line(&mut out, "", "(RFC 6749 §5.1, through the oauth2 crate)");
    }
    for (name, value) in &definition.extra_authorization_params {
        line(&mut out, "authorization extra", &format!("{name}={value}"));
    }
    if let Some(trade) = &definition.long_lived_exchange {
        line(
            &mut out,
            "long-lived exchange",
            &format!("{} ({})", trade.grant_type, credentials(trade.client_credentials)),
        );
    }
    line(&mut out, "renewal", &renewal(definition));
    if let Renewal::AccessTokenGrant(trade) = &definition.renewal
        && trade.min_token_age_seconds > 0
    {
        let floor = format!("not before the token is {} s old", trade.min_token_age_seconds);
        line(&mut out, "", &floor);
    }
    line(&mut out, "granted scopes from", discovery(definition));
    line(&mut out, "revocation", revocation(definition));
    if let Some(url) = &definition.revocation_url {
        line(&mut out, "revocation endpoint", url.as_str());
    }
    out.push_str("\nCAPABILITY             SCOPES\n");
    for (capability, scopes) in &definition.capabilities {
        let _ = writeln!(out, "{:<22} {}", capability.as_str(), scopes.join(" "));
    }
    out
}

fn credentials(sent: TradeCredentials) -> &'static str {
    match sent {
        TradeCredentials::None => "no client credentials",
        TradeCredentials::Secret => "client secret",
        TradeCredentials::IdAndSecret => "client id and secret",
    }
}

/// Verifies a callback read from stdin; returns its claims as JSON.
pub fn verify_webhook(settings: &Settings, command: WebhooksCommand) -> Result<String, String> {
    let provider = match &command {
        WebhooksCommand::VerifyMeta { provider } | WebhooksCommand::VerifyTiktok { provider, .. } => provider,
    };
    let name = ProviderName::parse(provider.clone()).map_err(|_| format!("{provider} is not a provider name"))?;
    let secret = settings
        .clients
        .get(&name)
        .and_then(|c| c.client_secret.clone())
        .ok_or_else(|| format!("no client secret for {provider} (PRAISMA_PROVIDER_<NAME>_CLIENT_SECRET)"))?;
    let mut input = Vec::new();
    std::io::stdin()
        .take(64 * 1024)
        .read_to_end(&mut input)
        .map_err(|e| format!("reading stdin: {}", e.kind()))?;
    match command {
        WebhooksCommand::VerifyMeta { .. } => {
            let text = String::from_utf8_lossy(&input);
            // Accept the raw value or the posted form (`signed_request=...`).
            let signed_request = url::form_urlencoded::parse(text.trim().as_bytes())
                .find(|(key, _)| key == "signed_request")
                .map(|(_, value)| value.into_owned())
                .unwrap_or_else(|| text.trim().to_owned());
            let claims = webhooks::verify_meta_signed_request(&signed_request, &secret).map_err(|e| e.to_string())?;
            serde_json::to_string(&claims).map_err(|e| e.to_string())
        }
        WebhooksCommand::VerifyTiktok {
            signature,
            tolerance_secs,
            ..
        } => {
            let now = crate::clock::now().timestamp();
            webhooks::verify_tiktok_signature(&signature, &input, &secret, now, tolerance_secs)
                .map_err(|e| e.to_string())?;
            Ok(String::from_utf8_lossy(&input).trim().to_owned())
        }
    }
}
