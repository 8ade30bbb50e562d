//! Secrets Manager `GetSecretValue` (AWS JSON 1.1): the secrets, their
//! versions, the requests counted, and the one fault (`secrets_status`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::config::App;
use crate::{json_response, Reply, State};

/// The faults of [`Faults`](crate::Faults) that Secrets Manager injects.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SecretsFaults {
    /// Secrets Manager answers this status instead of secrets.
    pub status: Option<u16>,
}

struct StoredSecret {
    value: String,
    version: u64,
}

/// What the emulated Secrets Manager holds and has seen.
#[derive(Default)]
pub(crate) struct SecretsManager {
    secrets: Mutex<BTreeMap<String, StoredSecret>>,
    pub(crate) faults: Mutex<SecretsFaults>,
    requests: AtomicU64,
}

impl SecretsManager {
    /// Stores a new version of `name`; returns the application users it names
    /// (the top-level one and each of `principals`, SPEC §17.3), for Entra to accept.
    pub(crate) fn put(&self, name: &str, value: &Value) -> Vec<App> {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut secrets = self.secrets.lock().unwrap();
        let version = secrets.get(name).map_or(1, |s| s.version + 1);
        secrets.insert(name.to_string(), StoredSecret { value: text, version });
        let parsed: Value = match value {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            other => other.clone(),
        };
        let mut apps = apps_of(&parsed);
        // Each destination's block names its own (SPEC §23.1).
        for block in parsed.get("destinations").and_then(Value::as_object).into_iter().flat_map(|d| d.values()) {
            apps.extend(apps_of(block));
        }
        apps
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
    }
}

/// The application users a block of credentials names: its own and each of its `principals`.
fn apps_of(block: &Value) -> Vec<App> {
    let mut apps: Vec<App> = serde_json::from_value::<App>(block.clone()).into_iter().collect();
    for principal in block.get("principals").and_then(Value::as_array).into_iter().flatten() {
        let mut entry = block.clone();
        for field in ["client_id", "client_secret"] {
            entry[field] = principal.get(field).cloned().unwrap_or(Value::Null);
        }
        apps.extend(serde_json::from_value::<App>(entry));
    }
    apps
}

pub(crate) fn get_secret_value(state: &State, target: &str, body: &[u8]) -> Reply {
    let service = &state.secrets_manager;
    service.requests.fetch_add(1, Ordering::SeqCst);
    let aws_error = |status: u16, kind: &str, message: &str| {
        let mut r = json_response(status, &json!({ "__type": kind, "message": message }));
        r.headers_mut().insert("x-amzn-errortype", kind.parse().expect("a header value"));
        r.headers_mut().insert("content-type", "application/x-amz-json-1.1".parse().expect("a header value"));
        r
    };
    if let Some(status) = service.faults.lock().unwrap().status {
        return aws_error(status, "InternalServiceError", "Secrets Manager is unavailable (sandbox fault).");
    }
    if target != "secretsmanager.GetSecretValue" {
        return aws_error(400, "UnknownOperationException", &format!("The sandbox serves GetSecretValue only, not {target}."));
    }
    let request: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(id) = request.get("SecretId").and_then(Value::as_str) else {
        return aws_error(400, "InvalidParameterException", "SecretId is required.");
    };
    // A name, or an ARN whose last part is the name plus a six-character suffix.
    let name = match id.strip_prefix("arn:aws:secretsmanager:") {
        Some(rest) => rest.splitn(4, ':').nth(3).map(|n| n.rsplit_once('-').map_or(n, |(base, _)| base)).unwrap_or(id),
        None => id,
    };
    let secrets = service.secrets.lock().unwrap();
    let Some(secret) = secrets.get(name) else {
        return aws_error(400, "ResourceNotFoundException", "Secrets Manager can't find the specified secret.");
    };
    let mut response = json_response(
        200,
        &json!({
            "ARN": format!("arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}-Sbx001"),
            "Name": name,
            "SecretString": secret.value,
            "VersionId": format!("00000000-0000-4000-8000-{:012}", secret.version),
            "VersionStages": ["AWSCURRENT"],
            "CreatedDate": 1_767_225_600.0,
        }),
    );
    response.headers_mut().insert("content-type", "application/x-amz-json-1.1".parse().expect("a header value"));
    response
}
