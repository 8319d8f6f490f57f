//! The agent's runs on its local API: `GET /v1/runs/next?wait_ms=N` hands the calling
//! agent its oldest queued run (200 with `{id, input, trigger, deadline_ms, created_ms}`)
//! once it runs fewer than its spec's `runs.max_concurrent`, waiting up to `wait_ms`
//! (at most 30 000) for one — 204 when none came; `POST /v1/runs/{id}/result` with
//! `{"ok": bool, "result": any JSON, "error": "why"}` ends it (succeeded or failed; its
//! end recorded first). The runs are the calling agent's own, picked by the connection's
//! identity: another agent's run id answers 404, like an unknown one. A job's container
//! (`runtime/jobs.rs`) is handed its own run by `next` at once, and answers only that one.

use super::gateway::GatewayService;
use super::local_api::{api_error, body, error, json, Reply};
use agenfleet_protocol::runs::{RunState, MAX_NEXT_WAIT_MS};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use std::time::Duration;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunResult {
    ok: bool,
    #[serde(default)]
    result: Option<serde_json::Value>,
    #[serde(default)]
    error: Option<String>,
}

fn no_content() -> Reply {
    let mut r = Response::new(super::upstream_api::full(bytes::Bytes::new()));
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

/// Answers one runs request; `rest` is the path after `/v1/runs`.
pub(super) async fn handle(svc: GatewayService, req: Request<Incoming>, rest: &str) -> Reply {
    let rt = svc.runtime().clone();
    let key = svc.key().clone();
    let spec = match rt.store.agent_spec(&key) {
        Ok(Some(s)) => s.runs,
        Ok(None) => {
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no agent {key}"),
            )
        }
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    };
    let method = req.method().clone();
    match (method, rest) {
        (Method::GET, "/next") => {
            let wait_ms = url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "wait_ms")
                .map(|(_, v)| v.parse::<u64>());
            let wait_ms = match wait_ms {
                None => 0,
                Some(Ok(n)) if n <= MAX_NEXT_WAIT_MS => n,
                Some(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_argument",
                        format!(
                            "wait_ms must be a number of milliseconds, 0 to {MAX_NEXT_WAIT_MS}"
                        ),
                    )
                }
            };
            // A job's container has its one run, handed to it already.
            let next = match svc.job_run() {
                Some(id) => match rt.runs.get(id) {
                    Ok(v) => Ok(v.filter(|v| v.state == RunState::Running)),
                    Err(e) => Err(agenfleet_protocol::ApiError::internal(e.to_string())),
                },
                None => {
                    rt.runs
                        .next(&key, &spec, Duration::from_millis(wait_ms))
                        .await
                }
            };
            match next {
                Ok(Some(v)) => json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "id": v.id,
                        "input": serde_json::from_str::<serde_json::Value>(&v.input_json)
                            .unwrap_or(serde_json::Value::Null),
                        "trigger": v.trigger,
                        "created_ms": v.created_ms,
                        "deadline_ms": v.deadline_ms,
                    }),
                ),
                Ok(None) => no_content(),
                Err(e) => api_error(&e),
            }
        }
        (Method::POST, p) if p.ends_with("/result") => {
            let id = p
                .strip_prefix('/')
                .and_then(|p| p.strip_suffix("/result"))
                .and_then(|n| n.parse::<u64>().ok());
            let Some(id) = id else {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no endpoint /v1/runs{p}: POST /v1/runs/ID/result"),
                );
            };
            if svc.job_run().is_some_and(|own| own != id) {
                // Another job run of the same agent: not this container's to answer.
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no run {id} of this job's container"),
                );
            }
            let r: RunResult = match body(req).await {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            let state = if r.ok {
                RunState::Succeeded
            } else {
                RunState::Failed
            };
            let error_text = match (r.ok, r.error) {
                (false, None) => Some("the agent reported a failure".to_string()),
                (_, e) => e,
            };
            let result = r.result.map(|v| v.to_string());
            match rt.runs.end(id, Some(&key), state, result, error_text).await {
                Ok(v) => json(
                    StatusCode::OK,
                    &serde_json::json!({"id": v.id, "state": v.state.as_str()}),
                ),
                Err(e) => api_error(&e),
            }
        }
        (_, "/next") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "GET /v1/runs/next takes the next run",
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no endpoint /v1/runs{rest}: GET /v1/runs/next?wait_ms=N, POST /v1/runs/ID/result"
            ),
        ),
    }
}
