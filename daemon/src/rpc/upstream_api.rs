//! Provider and connection calls on the local API: `/providers/<name>/…` and
//! `/connections/<name>/…`. The agent's program talks plain HTTP to its local API with a
//! placeholder key; here the call is checked against the spec's binding, decided (a
//! provider's as `model.call` — provider, model, path; a connection's as `http_request`
//! for the upstream URL, so its host must be in the scopes), admitted against the agent's
//! budget (and counted in the same step), made with the tenant's key (`upstreams::call`, down the fallback chain), and its answer streamed
//! back frame by frame as it arrives. When the answer ends (or the agent leaves), one
//! `model.call` / `connection.call` record says what happened — upstream used, hops,
//! status, tokens, sizes and SHA-256 of both bodies, never their content unless the
//! upstream says `record_bodies` — the meter counts its tokens, and what the gateway saw
//! raises incidents. That record is written as the answer's end passes (not waited for):
//! a `kill -9` within that write loses it, while the decision before the call stays.

use super::gateway::GatewayService;
use crate::incidents::detect::{Seen, Signal};
use crate::upstreams::call::{Attempt, Hop, Outgoing};
use crate::upstreams::usage::{Tokens, UsageReader};
use agenfleet_protocol::upstream::{UsageTotals, HOP_HEADERS, RECORDED_BODY_BYTES};
use agenfleet_protocol::{AuditEvent, UpstreamClass};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use sha2::{Digest, Sha256};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// Largest request body carried to an upstream (held in memory for the fallbacks).
pub const MAX_UPSTREAM_BODY: usize = 8 * 1024 * 1024;

pub(super) type ApiBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// A JSON error answer: `{"error": {"code", "message"}}`.
pub(super) fn error(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
) -> Response<ApiBody> {
    let v = serde_json::json!({"error": {"code": code, "message": message.into()}});
    let mut r = Response::new(full(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) fn full(b: Bytes) -> ApiBody {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

/// What the call's record needs, filled in as the call goes.
struct CallRecord {
    svc: GatewayService,
    class: UpstreamClass,
    /// A connection of kind `workflow` (its failures are the client's).
    workflow: bool,
    name: String,
    model: String,
    method: String,
    path: String,
    decision: u64,
    hops: Vec<Hop>,
    status: Option<u16>,
    used: Option<String>,
    request_bytes: usize,
    request_sha256: String,
    started: Instant,
    first_byte_ms: Option<u64>,
    /// With `record_bodies`: the start of the request body.
    request_body: Option<String>,
}

impl CallRecord {
    fn action(&self) -> &'static str {
        match self.class {
            UpstreamClass::Provider => "model.call",
            UpstreamClass::Connection => "connection.call",
        }
    }

    /// What the gateway saw, for the incident detectors.
    fn seen(&self) -> Vec<(String, Seen)> {
        let answered_ok = self.status.is_some_and(|s| s < 400);
        let last = self.hops.len().saturating_sub(1);
        self.hops
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                // A failure a later hop made good is absorbed.
                let absorbed = i < last && answered_ok;
                let s = match &h.attempt {
                    Attempt::Status(s @ (401 | 403)) => Seen::KeyRejected(*s),
                    Attempt::Status(429) => Seen::RateLimited { absorbed },
                    Attempt::Status(s) if *s >= 500 => Seen::Failed {
                        what: format!("HTTP {s}"),
                        timeout: false,
                        unreachable: false,
                        absorbed,
                    },
                    Attempt::Status(_) => return None,
                    Attempt::Timeout => Seen::Failed {
                        what: "no answer within its timeout".into(),
                        timeout: true,
                        unreachable: false,
                        absorbed,
                    },
                    Attempt::Unreachable(e) => Seen::Failed {
                        what: format!("unreachable ({e})"),
                        timeout: false,
                        unreachable: true,
                        absorbed,
                    },
                    Attempt::Unusable(_) => return None,
                };
                Some((h.upstream.clone(), s))
            })
            .collect()
    }

    /// Writes the record, counts the call and signals what was seen; `response` is (bytes,
    /// SHA-256, tokens), `problem` why the answer did not reach its end.
    async fn finish(
        self,
        response: (usize, String, Option<Tokens>),
        problem: Option<String>,
        response_body: Option<Vec<u8>>,
    ) {
        let (bytes, sha, tokens) = response;
        let t = tokens.unwrap_or_default();
        let failed = self.status.is_none_or(|s| s >= 400) || problem.is_some();
        let detail = serde_json::json!({
            self.class.as_str(): self.name,
            "used": self.used,
            "model": self.model,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "decision": self.decision,
            "tokens_in": tokens.map(|t| t.input),
            "tokens_out": tokens.map(|t| t.output),
            "latency_ms": self.started.elapsed().as_millis() as u64,
            "first_byte_ms": self.first_byte_ms,
            "hops": self.hops.iter().map(|h| serde_json::json!({
                "upstream": h.upstream,
                "outcome": h.attempt.to_string(),
                "latency_ms": h.latency_ms,
            })).collect::<Vec<_>>(),
            "request_bytes": self.request_bytes,
            "request_sha256": self.request_sha256,
            "response_bytes": bytes,
            "response_sha256": sha,
            "problem": problem,
            "run": self.svc.run(),
        });
        let mut detail = detail;
        if let Some(req) = &self.request_body {
            detail["request_body"] = req.clone().into();
            detail["response_body"] = response_body
                .map(|b| String::from_utf8_lossy(&b).to_string())
                .unwrap_or_default()
                .into();
            detail["bodies_cut_at"] = RECORDED_BODY_BYTES.into();
        }
        let detail = detail.to_string();
        let (tenant, agent) = self.svc.agent();
        let ev = AuditEvent {
            actor: format!("agent {tenant}/{agent}"),
            action: self.action().into(),
            tenant: Some(tenant.to_string()),
            agent: Some(agent.to_string()),
            outcome: if failed { "error" } else { "ok" }.into(),
            detail,
        };
        let seq = self.svc.audit(ev).await;
        let rt = self.svc.runtime();
        if self.class == UpstreamClass::Provider {
            crate::pulse::history().tokens(
                tenant,
                self.svc.project(),
                t.input + t.output,
                agenfleet_protocol::now_ms(),
            );
            rt.upstreams.meter.record(
                tenant,
                agent,
                agenfleet_protocol::now_ms(),
                // The call itself was counted when it was admitted.
                &UsageTotals {
                    calls: 0,
                    errors: u64::from(failed),
                    tokens_in: t.input,
                    tokens_out: t.output,
                },
            );
        }
        let seen = self.seen();
        if let (Some(seq), false) = (seq, seen.is_empty()) {
            rt.incidents.signal(Signal::Observed {
                key: self.svc.key().clone(),
                project: self.svc.project().to_string(),
                action: self.action(),
                provider: self.class == UpstreamClass::Provider,
                workflow: self.workflow,
                seen,
                seq,
            });
        }
    }
}

/// The upstream's answer on its way to the agent: every frame is passed on as it comes
/// (never collected), counted, hashed and read for usage; at its end — or when the agent
/// drops it — the call is recorded.
struct Metered {
    inner: Incoming,
    record: Option<CallRecord>,
    reader: Option<UsageReader>,
    hasher: Sha256,
    bytes: usize,
    /// With `record_bodies`: the start of the answer.
    captured: Option<Vec<u8>>,
}

impl Metered {
    fn finish(&mut self, problem: Option<String>) {
        let Some(record) = self.record.take() else {
            return;
        };
        let tokens = self.reader.take().and_then(UsageReader::finish);
        let sha = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let response = (self.bytes, sha, tokens);
        let body = self.captured.take();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(record.finish(response, problem, body));
        }
    }
}

impl Body for Metered {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if let Some(r) = this.record.as_mut() {
                        r.first_byte_ms
                            .get_or_insert_with(|| r.started.elapsed().as_millis() as u64);
                    }
                    this.bytes += d.len();
                    this.hasher.update(d);
                    if let Some(r) = this.reader.as_mut() {
                        r.feed(d);
                    }
                    if let Some(c) = this.captured.as_mut() {
                        let room = RECORDED_BODY_BYTES.saturating_sub(c.len());
                        c.extend_from_slice(&d[..d.len().min(room)]);
                    }
                }
                // A body of known length ends with its last byte: the server stops
                // polling there, so this may be the last chance to see the end.
                if this.inner.is_end_stream() {
                    this.finish(None);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(Some(format!("the upstream's answer broke off: {e}")));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish(Some(
            "the agent closed the connection before the answer ended".into(),
        ));
    }
}

/// The model a request names (`"model"` of a JSON body), "" when none.
fn model_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct M {
        model: Option<String>,
    }
    serde_json::from_slice::<M>(body)
        .ok()
        .and_then(|m| m.model)
        .unwrap_or_default()
}

/// Records a call refused before it went out, with why.
async fn refuse(
    svc: &GatewayService,
    class: UpstreamClass,
    name: &str,
    status: StatusCode,
    code: &str,
    why: String,
) -> Response<ApiBody> {
    let (tenant, agent) = svc.agent();
    let action = match class {
        UpstreamClass::Provider => "model.call",
        UpstreamClass::Connection => "connection.call",
    };
    let ev = AuditEvent {
        actor: format!("agent {tenant}/{agent}"),
        action: action.into(),
        tenant: Some(tenant.to_string()),
        agent: Some(agent.to_string()),
        outcome: code.into(),
        detail: serde_json::json!({ class.as_str(): name, "reason": why }).to_string(),
    };
    let seq = svc.audit(ev).await;
    if code == "over_budget" {
        if let Some(seq) = seq {
            svc.runtime().incidents.signal(Signal::Observed {
                key: svc.key().clone(),
                project: svc.project().to_string(),
                action,
                provider: true,
                workflow: false,
                seen: vec![(name.to_string(), Seen::OverBudget(why.clone()))],
                seq,
            });
        }
    }
    error(status, code, why)
}

/// Answers one request under `/providers/` or `/connections/` (`rest`: what follows the
/// route, `NAME/…`).
pub(super) async fn handle(
    svc: GatewayService,
    req: Request<Incoming>,
    class: UpstreamClass,
    rest: &str,
) -> Response<ApiBody> {
    let (name, below) = match rest.split_once('/') {
        Some((n, b)) => (n.to_string(), format!("/{b}")),
        None => (rest.to_string(), "/".to_string()),
    };
    call(svc, req, class, name, below).await
}

/// Answers one request the agent sent inside its own https to connection `name`, which
/// the egress proxy terminated (`tls_inspect`): the same call as at `/connections/NAME/…`,
/// for the part of the path below the connection's base URL.
pub(super) async fn inspected(
    svc: GatewayService,
    req: Request<Incoming>,
    name: String,
    base_path: String,
) -> Response<ApiBody> {
    let path = req.uri().path().to_string();
    let below = match path.strip_prefix(base_path.as_str()) {
        Some("") => "/".to_string(),
        Some(b) if b.starts_with('/') => b.to_string(),
        _ => {
            let why = format!(
                "{path} is outside connection `{name}`'s base URL (its paths start with {base_path}/)"
            );
            return refuse(
                &svc,
                UpstreamClass::Connection,
                &name,
                StatusCode::FORBIDDEN,
                "outside_base_url",
                why,
            )
            .await;
        }
    };
    call(svc, req, UpstreamClass::Connection, name, below).await
}

async fn call(
    svc: GatewayService,
    req: Request<Incoming>,
    class: UpstreamClass,
    name: String,
    below: String,
) -> Response<ApiBody> {
    let rt = svc.runtime().clone();
    let Some(spec) = rt.agent_spec(svc.key()) else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the agent's spec is not loaded",
        );
    };
    let bound = match class {
        UpstreamClass::Provider => &spec.providers,
        UpstreamClass::Connection => &spec.connections,
    };
    if !bound.contains(&name) {
        let why = format!(
            "{class} `{name}` is not bound to this agent (its spec's {} = [{}])",
            class.route(),
            bound.join(", ")
        );
        return refuse(&svc, class, &name, StatusCode::FORBIDDEN, "not_bound", why).await;
    }
    let (tenant, _) = svc.agent();
    let live = match rt.upstreams.get(tenant, &name) {
        Ok(Some(l)) if l.view.spec.class == class => l,
        Ok(_) => {
            let why = format!("tenant {tenant} has no {class} named `{name}` (the spec names it; an admin adds it with `agenfleet {} add`)", class.route());
            return refuse(&svc, class, &name, StatusCode::NOT_FOUND, "not_found", why).await;
        }
        Err(e) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            );
        }
    };
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let announced = body.size_hint().lower();
    if announced > MAX_UPSTREAM_BODY as u64 {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!(
                "the request body ({announced} bytes) is larger than {MAX_UPSTREAM_BODY} bytes"
            ),
        );
    }
    let body = match Limited::new(body, MAX_UPSTREAM_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {MAX_UPSTREAM_BODY} bytes"),
            )
        }
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the request body: {e}"),
            )
        }
    };
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{below}?{q}"),
        None => below.clone(),
    };
    let model = if class == UpstreamClass::Provider {
        model_of(&body)
    } else {
        String::new()
    };
    let call = match class {
        UpstreamClass::Provider => agenfleet_protocol::policy::ToolCall {
            tool: agenfleet_protocol::policy::TOOL_MODEL.into(),
            args_json: serde_json::json!({
                "provider": name,
                "model": model,
                "path": below,
                "method": parts.method.as_str(),
            })
            .to_string(),
        },
        UpstreamClass::Connection => agenfleet_protocol::policy::ToolCall {
            tool: agenfleet_protocol::policy::TOOL_HTTP.into(),
            args_json: serde_json::json!({
                "method": parts.method.as_str(),
                "url": live.view.spec.url_for(&path_and_query),
            })
            .to_string(),
        },
    };
    let decision = match svc.decide_call(&call).await {
        Ok(d) if d.allowed => d.decision_id,
        Ok(d) => {
            return error(
                StatusCode::FORBIDDEN,
                "denied",
                format!("{} (decision {})", d.reason, d.decision_id),
            )
        }
        Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.message),
    };
    // The budget, held after the decision (a denied call spends none of it) and counted
    // in the same step.
    if class == UpstreamClass::Provider {
        let (t, a) = svc.agent();
        let admitted = rt
            .upstreams
            .meter
            .admit(t, a, &spec.budget, agenfleet_protocol::now_ms());
        if let Err(e) = admitted {
            return refuse(
                &svc,
                class,
                &name,
                StatusCode::TOO_MANY_REQUESTS,
                "over_budget",
                e.0,
            )
            .await;
        }
    }
    let out = Outgoing {
        method: parts.method.clone(),
        path_and_query,
        headers: parts.headers,
        body,
    };
    let record_bodies = live.view.spec.record_bodies;
    let workflow = live.view.spec.kind == agenfleet_protocol::upstream::UpstreamKind::Workflow;
    let sent = rt.upstreams.send(live, &out).await;
    let mut record = CallRecord {
        svc: svc.clone(),
        class,
        workflow,
        name: name.clone(),
        model,
        method: parts.method.to_string(),
        path: below,
        decision,
        hops: sent.hops,
        status: None,
        used: None,
        request_bytes: out.body.len(),
        request_sha256: hex::encode(Sha256::digest(&out.body)),
        started,
        first_byte_ms: None,
        request_body: record_bodies.then(|| {
            String::from_utf8_lossy(&out.body[..out.body.len().min(RECORDED_BODY_BYTES)])
                .to_string()
        }),
    };
    let Some((used, resp)) = sent.answer else {
        let tried: Vec<String> = record
            .hops
            .iter()
            .map(|h| format!("{} ({})", h.upstream, h.attempt))
            .collect();
        let why = format!("no upstream answered: {}", tried.join(", "));
        record
            .finish((0, String::new(), None), Some(why.clone()), None)
            .await;
        return error(StatusCode::BAD_GATEWAY, "upstream_unreachable", why);
    };
    record.status = Some(resp.status().as_u16());
    record.used = Some(used.view.spec.name.clone());
    let (mut head, incoming) = resp.into_parts();
    for h in HOP_HEADERS {
        head.headers.remove(*h);
    }
    let ct = head
        .headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let reader = (class == UpstreamClass::Provider).then(|| UsageReader::new(ct));
    let metered = Metered {
        inner: incoming,
        record: Some(record),
        reader,
        hasher: Sha256::new(),
        bytes: 0,
        captured: record_bodies.then(Vec::new),
    };
    Response::from_parts(head, metered.boxed_unsync())
}
