//! The agent's local API, language-neutral: HTTP/1.1 + JSON on `api.sock` in the agent's
//! gateway directory (`/run/agenfleet/api.sock` in its container; the shim relays
//! `127.0.0.1:4180` there). Same connection checks as the tarpc gateway — the peer must run
//! in the agent's current container — and the same implementations behind it: a decision
//! here is the gateway's `authorize` (scopes, Cedar, escalations, durable audit before the
//! answer), a credential is delivered and audited as the gateway delivers it.
//!
//! `GET /v1/health`, `POST /v1/authorize`, `GET /v1/credentials/{name}`, `POST /v1/report`
//! (assets/api/openapi.yaml), the agent's own memory (`/v1/memory…`: `memory_api.rs`),
//! its runs (`/v1/runs/next`, `/v1/runs/{id}/result`: `runs_api.rs`),
//! and the calls to the agent's providers and connections
//! (`/providers/{name}/…`, `/connections/{name}/…`: `upstream_api.rs`). Bodies are JSON objects of at most 1 MiB with no unknown
//! fields; anything else gets a 4xx with a JSON `{"error": {"code", "message"}}` naming the
//! problem, and the connection stays usable. A request may name the run it is for
//! (`X-AgenFleet-Run: ID`, one the agent is running: a service agent working on several at
//! once), and its records carry that run.

use super::gateway::GatewayService;
use agenfleet_protocol::gateway::Gateway;
use agenfleet_protocol::policy::{AgentReport, ReportKind, ReportOutcome, ToolCall, Verdict};
use agenfleet_protocol::{ApiError, ErrorCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;

/// Largest request body accepted.
pub const MAX_BODY: usize = agenfleet_protocol::gateway::MAX_LOCAL_API_BODY;

/// The header naming the run a call is for.
pub const RUN_HEADER: &str = "x-agenfleet-run";

pub(super) type Reply = Response<super::upstream_api::ApiBody>;

pub(super) fn json(status: StatusCode, v: &serde_json::Value) -> Reply {
    let mut r = Response::new(super::upstream_api::full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    json(
        status,
        &serde_json::json!({"error": {"code": code, "message": message.into()}}),
    )
}

pub(super) fn api_error(e: &ApiError) -> Reply {
    let (status, code) = match e.code {
        ErrorCode::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        ErrorCode::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        ErrorCode::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        ErrorCode::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        ErrorCode::FailedPrecondition => (StatusCode::CONFLICT, "failed_precondition"),
        ErrorCode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        ErrorCode::VersionMismatch => (StatusCode::BAD_REQUEST, "version_mismatch"),
        ErrorCode::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, code, e.message.clone())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthorizeBody {
    tool: String,
    #[serde(default = "empty_object")]
    args: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReportBody {
    kind: ReportKind,
    provider: String,
    outcome: ReportOutcome,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    latency_ms: u64,
    #[serde(default)]
    fallback_used: bool,
    #[serde(default)]
    detail: String,
}

/// Reads a JSON body of at most `MAX_BODY` bytes into `T`; the error reply names the
/// problem (too large, not JSON, a missing or unknown field).
pub(super) async fn body<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Reply> {
    use hyper::body::Body;
    let announced = req.body().size_hint().lower();
    if announced > MAX_BODY as u64 {
        // Refused before a byte of it is read.
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the request body ({announced} bytes) is larger than {MAX_BODY} bytes"),
        ));
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {MAX_BODY} bytes"),
            ))
        }
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the request body: {e}"),
            ))
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the request body is not what this endpoint takes: {e}"),
        )
    })
}

/// Answers one request.
pub(super) async fn handle(svc: GatewayService, req: Request<Incoming>) -> Reply {
    if let Err(e) = svc.check() {
        return api_error(&e);
    }
    // A service agent working on several runs at once names the one a call is for.
    let svc = match req.headers().get(RUN_HEADER) {
        None => svc,
        Some(v) => match v.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()) {
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    format!("{RUN_HEADER} must be a run id (a number)"),
                )
            }
            Some(id) => match svc.naming_run(id) {
                Ok(s) => s,
                Err(e) => return api_error(&e),
            },
        },
    };
    let ctx = tarpc::context::current;
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::GET, "/v1/health") => {
            let (tenant, agent) = svc.agent();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "ok": true,
                    "tenant": tenant,
                    "agent": agent,
                    "protocol_version": agenfleet_protocol::PROTOCOL_VERSION,
                }),
            )
        }
        (Method::POST, "/v1/authorize") => {
            let b: AuthorizeBody = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            if !b.args.is_object() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    "`args` must be a JSON object",
                );
            }
            let call = ToolCall {
                tool: b.tool,
                args_json: b.args.to_string(),
            };
            match svc.authorize(ctx(), call).await {
                Ok(d) => json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "decision": if d.allowed { "allow" } else { "deny" },
                        "reason": d.reason,
                        "request_hash": d.request_hash,
                        "audit_seq": d.decision_id,
                        "escalated": d.verdict == Verdict::Escalate,
                        "reviewer": d.reviewer,
                        "policies": d.policies,
                        "policy_version": d.policy_version,
                    }),
                ),
                Err(e) => api_error(&e),
            }
        }
        (Method::GET, p) if p.starts_with("/v1/credentials/") => {
            let name = &p["/v1/credentials/".len()..];
            match svc.credential(name).await {
                Ok(Some((version, value))) => json(
                    StatusCode::OK,
                    &match std::str::from_utf8(value.expose()) {
                        Ok(text) => {
                            serde_json::json!({"name": name, "version": version, "value": text})
                        }
                        // A binary value travels as hex.
                        Err(_) => serde_json::json!({
                            "name": name,
                            "version": version,
                            "value_hex": hex::encode(value.expose()),
                        }),
                    },
                ),
                Ok(None) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("this agent has no credential `{name}`"),
                ),
                Err(e) => api_error(&e),
            }
        }
        (Method::POST, "/v1/report") => {
            let b: ReportBody = match body(req).await {
                Ok(b) => b,
                Err(r) => return r,
            };
            let report = AgentReport {
                kind: b.kind,
                provider: b.provider,
                outcome: b.outcome,
                status: b.status,
                latency_ms: b.latency_ms,
                fallback_used: b.fallback_used,
                detail: b.detail,
            };
            match svc.report(ctx(), report).await {
                Ok(seq) => json(StatusCode::OK, &serde_json::json!({"audit_seq": seq})),
                Err(e) => api_error(&e),
            }
        }
        (_, p) if p.starts_with("/v1/runs/") => {
            let rest = p["/v1/runs".len()..].to_string();
            super::runs_api::handle(svc, req, &rest).await
        }
        (_, p) if p == "/v1/memory" || p.starts_with("/v1/memory/") => {
            let rest = p["/v1/memory".len()..].to_string();
            super::memory_api::handle(svc, req, &rest).await
        }
        (_, p) if p.starts_with("/providers/") => {
            let rest = p["/providers/".len()..].to_string();
            super::upstream_api::handle(svc, req, agenfleet_protocol::UpstreamClass::Provider, &rest)
                .await
        }
        (_, p) if p.starts_with("/connections/") => {
            let rest = p["/connections/".len()..].to_string();
            super::upstream_api::handle(
                svc,
                req,
                agenfleet_protocol::UpstreamClass::Connection,
                &rest,
            )
            .await
        }
        (_, "/v1/health" | "/v1/authorize" | "/v1/report") => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{} is not allowed on {path}", req.method()),
        ),
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no endpoint {path}: the local API has GET /v1/health, POST /v1/authorize, GET /v1/credentials/NAME, POST /v1/report, the agent's memory at /v1/memory/KEY (GET, PUT, DELETE; GET /v1/memory lists, GET /v1/memory/search?q= searches), its runs at /v1/runs/next and /v1/runs/ID/result, and the agent's providers and connections at /providers/NAME/… and /connections/NAME/…"),
        ),
    }
}

/// Serves one connection of the local API until the peer closes it; a request's head must
/// arrive whole within `header_timeout`.
pub(super) async fn serve<S>(stream: S, svc: GatewayService, header_timeout: std::time::Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = hyper_util::rt::TokioIo::new(stream);
    let service = hyper::service::service_fn(move |req| {
        let svc = svc.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(svc, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        // A client that half-closes after its request (`nc`, a shell's `printf | nc`) still
        // gets its answer: without this the server drops the connection, answer unsent,
        // when the end of file arrives before the answer is written.
        .half_close(true)
        .serve_connection(io, service)
        .await;
}
