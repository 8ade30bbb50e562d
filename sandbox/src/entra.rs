//! The Entra ID token endpoint (client-credentials grant) and its error JSON.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;

use crate::config::{App, TokenRequest};
use crate::{json_response, Reply, State};

pub(crate) fn token(state: &State, tenant: &str, body: &[u8]) -> Reply {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    let form: HashMap<String, String> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    let response = entra_answer(state, tenant, &form);
    let field = |k: &str| form.get(k).cloned().unwrap_or_default();
    state.token_log.lock().unwrap().push(TokenRequest {
        tenant: tenant.to_string(),
        grant_type: field("grant_type"),
        client_id: field("client_id"),
        client_secret_sent: form.get("client_secret").is_some_and(|s| !s.is_empty()),
        scope: field("scope"),
        status: response.status().as_u16(),
    });
    response
}

fn entra_answer(state: &State, tenant: &str, form: &HashMap<String, String>) -> Reply {
    let error = |status: u16, error: &str, code: u64, description: &str| {
        json_response(
            status,
            &json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {description} Trace ID: 00000000-0000-0000-0000-000000000000"),
                "error_codes": [code],
                "timestamp": "2026-01-01 00:00:00Z",
            }),
        )
    };
    if let Some(status) = state.faults.lock().unwrap().token_status {
        let mut r = error(status, "temporarily_unavailable", 90033, "The service is temporarily unavailable (sandbox fault).");
        if status == 429 {
            r.headers_mut().insert("retry-after", "1".parse().expect("a header value"));
        }
        return r;
    }
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.");
    }
    let apps = state.apps.lock().unwrap();
    let in_tenant: Vec<&App> = apps.iter().filter(|a| a.tenant_id.eq_ignore_ascii_case(tenant)).collect();
    if in_tenant.is_empty() {
        return error(400, "invalid_request", 90002, &format!("Tenant '{tenant}' not found."));
    }
    let with_client: Vec<&&App> = in_tenant.iter().filter(|a| a.client_id == field("client_id")).collect();
    if with_client.is_empty() {
        return error(400, "unauthorized_client", 700016, "Application was not found in the directory.");
    }
    let Some(app) = with_client.iter().find(|a| a.client_secret == field("client_secret")) else {
        return error(401, "invalid_client", 7000215, "Invalid client secret provided.");
    };
    if field("scope") != format!("https://{}/.default", app.org_url_host) {
        return error(400, "invalid_scope", 1002012, "The provided value for scope is not valid.");
    }
    let lifetime = *state.token_lifetime.lock().unwrap();
    let token = format!("sbx_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    state.tokens.lock().unwrap().insert(token.clone(), (Instant::now() + lifetime, app.org_url_host.clone()));
    state.token_clients.lock().unwrap().insert(token.clone(), app.client_id.clone());
    json_response(200, &json!({ "token_type": "Bearer", "expires_in": lifetime.as_secs(), "ext_expires_in": lifetime.as_secs(), "access_token": token }))
}
