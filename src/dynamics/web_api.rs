//! Dataverse table rows (SPEC §14): the Web API requests identity resolution
//! makes — a filtered `GET`, a `POST` that creates, a `PATCH` that updates —
//! with the cached token (refreshed once after a 401), answered before a deadline.

use std::time::Instant;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

use super::{error_of, network_detail, time_left, Dynamics};
use crate::delivery::{Answer, Principal};
use crate::outcome::DeliveryError;

impl Dynamics {
    /// `{method} {base}/api/data/v9.2/{path_and_query}` with `body` as JSON and
    /// `headers`; a non-2xx answer is classified as a trigger call's is (SPEC §7).
    pub async fn row_request(
        &self,
        principal: &Principal,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Answer, DeliveryError> {
        let answer = match tokio::time::timeout_at(deadline.into(), self.web_api(principal, method, path_and_query, body, headers, deadline)).await {
            Ok(answer) => answer?,
            Err(_) => return Err(DeliveryError::Transient { status: None, code: None, detail: "no answer before the invocation's cut-off".into() }),
        };
        if answer.status == StatusCode::UNAUTHORIZED {
            return Err(DeliveryError::Unauthorized { detail: "Dataverse refused a fresh token for a table request".into() });
        }
        if !answer.status.is_success() {
            return Err(error_of(answer.status, &answer.headers, &answer.body));
        }
        Ok(answer)
    }

    /// One Web API request, `{method} {base}/api/data/v9.2/{path_and_query}`,
    /// with the cached token; the answer whatever its status, for the caller to
    /// judge (trigger calls, the trigger-definition reader, row requests).
    pub async fn web_api(
        &self,
        principal: &Principal,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Answer, DeliveryError> {
        let body = body.map(|b| serde_json::to_vec(b).expect("JSON serialises"));
        self.web_api_bytes(principal, method, path_and_query, body, headers, deadline).await
    }

    /// The one way out to the Web API, with the one 401 policy (SPEC §7): the
    /// token is refreshed and the request retried once; a second 401 re-reads
    /// the secret once (it may have been rotated) and retries with it; a 401
    /// after that is the caller's to judge.
    pub(crate) async fn web_api_bytes(
        &self,
        principal: &Principal,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        deadline: Instant,
    ) -> Result<Answer, DeliveryError> {
        let invocation = self.current_invocation();
        let creds = self.credentials_until(deadline).await?;
        let mut token = self.token(creds, principal, deadline).await?;
        let (mut refreshed, mut rotation_checked) = (false, false);
        loop {
            let timeout = time_left(deadline).ok_or(DeliveryError::Deadline)?;
            let url = format!("{}/api/data/v9.2/{}", self.base_url(&token.creds), path_and_query);
            let mut request = self
                .http
                .request(method.clone(), url)
                .header(AUTHORIZATION, format!("Bearer {}", token.value.expose_secret()))
                .header(ACCEPT, "application/json")
                .header("OData-MaxVersion", "4.0")
                .header("OData-Version", "4.0")
                .timeout(timeout);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            if let Some(body) = &body {
                request = request.header(CONTENT_TYPE, "application/json").body(body.clone());
            }
            let transient = |e: reqwest::Error| DeliveryError::Transient { status: None, code: None, detail: network_detail(&e) };
            let response = request.send().await.map_err(transient)?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await.map(|b| b.to_vec()).map_err(transient)?;
            if status != StatusCode::UNAUTHORIZED {
                return Ok(Answer { status, headers, body });
            }
            self.invalidate_token(&token.client_id, token.serial).await;
            if !refreshed {
                refreshed = true;
            } else if !rotation_checked {
                rotation_checked = true;
                match self.secrets.refresh(invocation, &token.creds.version, deadline).await {
                    Ok((_, true)) => {}
                    _ => return Ok(Answer { status, headers, body }),
                }
            } else {
                return Ok(Answer { status, headers, body });
            }
            let creds = self.credentials_until(deadline).await?;
            token = self.token(creds, principal, deadline).await?;
        }
    }
}
