//! Secrets Manager `GetSecretValue` (AWS JSON 1.1).

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::{json_response, Reply, State};

pub(crate) fn get_secret_value(state: &State, target: &str, body: &[u8]) -> Reply {
    state.secret_requests.fetch_add(1, Ordering::SeqCst);
    let aws_error = |status: u16, kind: &str, message: &str| {
        let mut r = json_response(status, &json!({ "__type": kind, "message": message }));
        r.headers_mut().insert("x-amzn-errortype", kind.parse().expect("a header value"));
        r.headers_mut().insert("content-type", "application/x-amz-json-1.1".parse().expect("a header value"));
        r
    };
    if let Some(status) = state.faults.lock().unwrap().secrets_status {
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
    let secrets = state.secrets.lock().unwrap();
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
