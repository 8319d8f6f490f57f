//! The agent's memory on its local API (`/v1/memory`): the store is the calling agent's
//! own, picked by the connection's identity — nothing in the path, query or body names a
//! tenant or an agent, so no request can reach another agent's store. Writes are recorded
//! in the audit log (key and size, never the value) before they are made.
//!
//! `PUT /v1/memory/{key}` (the body is the value: `application/json` is checked JSON,
//! `text/*` UTF-8 text, anything else bytes), `GET` and `DELETE /v1/memory/{key}`,
//! `GET /v1/memory?prefix=&limit=&cursor=` (keys in order, a page at a time), and
//! `GET /v1/memory/search?q=&limit=` (text and JSON values holding every word of `q`,
//! ranked by FTS5's bm25). Keys are percent-decoded from the path: any UTF-8 text of 1 to
//! 512 bytes without control characters, `search` excepted.

use super::gateway::GatewayService;
use super::local_api::{error, json, Reply};
use crate::memory::{check_key, search_words, Kind, MemError, RESERVED_KEY};
use agenfleet_protocol::AuditEvent;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};

/// Most keys one list or search answers.
const MAX_PAGE: usize = 1000;

fn mem_error(e: &MemError) -> Reply {
    let (status, code) = match e {
        MemError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
        MemError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        MemError::Quota(_) => (StatusCode::INSUFFICIENT_STORAGE, "over_quota"),
        MemError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        MemError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
        MemError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
    };
    error(status, code, e.to_string())
}

/// `%XX` decoded (a `%` not followed by two hex digits, or bytes that are not UTF-8, are
/// refused).
fn percent_decode(s: &str) -> Result<String, MemError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    MemError::Invalid(format!("bad percent-encoding in the key `{s}`"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| MemError::Invalid(format!("the key `{s}` is not UTF-8 once decoded")))
}

/// The query's parameters, decoded.
fn query(req: &Request<Incoming>) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

fn limit(q: &std::collections::HashMap<String, String>, default: usize) -> Result<usize, MemError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| MemError::Invalid(format!("limit must be 1 to {MAX_PAGE} (got `{l}`)"))),
    }
}

fn content_type(kind: Kind) -> &'static str {
    match kind {
        Kind::Json => "application/json",
        Kind::Text => "text/plain; charset=utf-8",
        Kind::Bytes => "application/octet-stream",
    }
}

/// The value of a PUT: its kind from the Content-Type, checked.
async fn value(req: Request<Incoming>, max: u64) -> Result<(Kind, Bytes), Reply> {
    let ct = req
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let kind = if ct.starts_with("application/json") {
        Kind::Json
    } else if ct.starts_with("text/") {
        Kind::Text
    } else {
        Kind::Bytes
    };
    let too_large = || {
        mem_error(&MemError::TooLarge(format!(
            "a memory value is at most {max} bytes (memory_max_value_bytes)"
        )))
    };
    let body = match Limited::new(req.into_body(), max as usize).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the request body: {e}"),
            ))
        }
    };
    match kind {
        Kind::Json => {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_json",
                    format!("the value is sent as application/json but is not JSON: {e}"),
                ));
            }
        }
        Kind::Text => {
            if std::str::from_utf8(&body).is_err() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "bad_text",
                    "the value is sent as text but is not UTF-8 (send it as application/octet-stream)",
                ));
            }
        }
        Kind::Bytes => {}
    }
    Ok((kind, body))
}

/// Records a write before it is made (outcome `requested`; a write then refused — over
/// the quota, say — is recorded again as `refused` with the reason); None, or the 503 to
/// answer when it cannot be recorded.
async fn record(svc: &GatewayService, action: &str, detail: String) -> Option<Reply> {
    record_as(svc, action, "requested", detail).await
}

async fn record_as(
    svc: &GatewayService,
    action: &str,
    outcome: &str,
    detail: String,
) -> Option<Reply> {
    let (tenant, agent) = svc.agent();
    let ev = AuditEvent {
        actor: format!("agent {tenant}/{agent}"),
        action: action.into(),
        tenant: Some(tenant.to_string()),
        agent: Some(agent.to_string()),
        outcome: outcome.into(),
        detail,
    };
    match svc.audit(ev).await {
        Some(_) => None,
        None => Some(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the audit log cannot record this write, so it is not made",
        )),
    }
}

/// Answers one memory request; `rest` is the path after `/v1/memory`.
pub(super) async fn handle(svc: GatewayService, req: Request<Incoming>, rest: &str) -> Reply {
    let rt = svc.runtime().clone();
    let store = match rt.memory.store(svc.key()) {
        Ok(s) => s,
        Err(e) => return mem_error(&e),
    };
    let limits = rt.memory.limits;
    let now = agenfleet_protocol::now_ms();
    let method = req.method().clone();
    let q = query(&req);
    // `/v1/memory` and `/v1/memory/` list; `/v1/memory/search` searches; the rest is a key.
    let key = rest.strip_prefix('/').unwrap_or(rest);
    if key.is_empty() {
        if method != Method::GET {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on /v1/memory (GET lists the keys)"),
            );
        }
        let after = match q.get("cursor").map(hex::decode) {
            None => String::new(),
            Some(Ok(b)) => String::from_utf8_lossy(&b).to_string(),
            Some(Err(_)) => {
                return mem_error(&MemError::Invalid(
                    "cursor is not one this API gave (hex)".into(),
                ))
            }
        };
        let limit = match limit(&q, 100) {
            Ok(l) => l,
            Err(e) => return mem_error(&e),
        };
        let prefix = q.get("prefix").cloned().unwrap_or_default();
        return match store.list(&prefix, &after, limit) {
            Ok(page) => {
                let next = (page.len() == limit)
                    .then(|| page.last().map(|e| hex::encode(e.key.as_bytes())))
                    .flatten();
                json(
                    StatusCode::OK,
                    &serde_json::json!({
                        "keys": page.iter().map(|e| serde_json::json!({
                            "key": e.key, "kind": e.kind.as_str(), "size": e.size,
                            "updated_ms": e.updated_ms,
                        })).collect::<Vec<_>>(),
                        "next_cursor": next,
                    }),
                )
            }
            Err(e) => mem_error(&e),
        };
    }
    if key == RESERVED_KEY && method == Method::GET {
        let words = match q.get("q").map(|q| search_words(q)) {
            Some(Ok(w)) => w,
            Some(Err(e)) => return mem_error(&e),
            None => {
                return mem_error(&MemError::Invalid(
                    "search takes q=WORDS (and limit=N)".into(),
                ))
            }
        };
        let limit = match limit(&q, 20) {
            Ok(l) => l,
            Err(e) => return mem_error(&e),
        };
        return match store.search(&words, limit) {
            Ok(hits) => json(
                StatusCode::OK,
                &serde_json::json!({
                    "words": words,
                    "ranking": "bm25 (lower is better)",
                    "results": hits.iter().map(|(k, s)| serde_json::json!({"key": k, "score": s})).collect::<Vec<_>>(),
                }),
            ),
            Err(e) => mem_error(&e),
        };
    }
    let key = match percent_decode(key).and_then(|k| check_key(&k).map(|_| k)) {
        Ok(k) => k,
        Err(e) => return mem_error(&e),
    };
    match method {
        Method::GET => match store.get(&key) {
            Ok(Some((kind, v, updated))) => {
                let mut r =
                    hyper::Response::new(super::upstream_api::full(Bytes::from(v.to_vec())));
                let h = r.headers_mut();
                h.insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static(content_type(kind)),
                );
                h.insert(
                    "x-agenfleet-updated-ms",
                    hyper::header::HeaderValue::from(updated),
                );
                r
            }
            Ok(None) => error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("this agent's memory has no key `{key}`"),
            ),
            Err(e) => mem_error(&e),
        },
        Method::PUT => {
            if key == RESERVED_KEY {
                return mem_error(&MemError::Invalid(format!(
                    "`{RESERVED_KEY}` is not a key (GET /v1/memory/search is the search)"
                )));
            }
            let (kind, body) = match value(req, limits.max_value_bytes).await {
                Ok(v) => v,
                Err(r) => return r,
            };
            let detail = format!("key `{key}` ({} bytes, {})", body.len(), kind.as_str());
            if let Some(refused) = record(&svc, "memory.put", detail).await {
                return refused;
            }
            match store.put(&key, kind, &body, &limits, now) {
                Ok(u) => json(
                    StatusCode::OK,
                    &serde_json::json!({"key": key, "size": body.len(), "keys": u.keys, "bytes": u.bytes}),
                ),
                Err(e) => {
                    let detail = format!("key `{key}`: {e}");
                    let _ = record_as(&svc, "memory.put", "refused", detail).await;
                    mem_error(&e)
                }
            }
        }
        Method::DELETE => {
            if let Some(refused) = record(&svc, "memory.delete", format!("key `{key}`")).await {
                return refused;
            }
            match store.delete(&key, now) {
                Ok(true) => json(
                    StatusCode::OK,
                    &serde_json::json!({"key": key, "deleted": true}),
                ),
                Ok(false) => error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("this agent's memory has no key `{key}`"),
                ),
                Err(e) => mem_error(&e),
            }
        }
        m => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{m} is not allowed on a memory key (GET, PUT, DELETE)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn keys_are_percent_decoded_and_bad_escapes_refused() {
        assert_eq!(percent_decode("a%2Fb%20c").ok().as_deref(), Some("a/b c"));
        assert_eq!(
            percent_decode("..%2F..%2Fx").ok().as_deref(),
            Some("../../x")
        );
        assert_eq!(percent_decode("%C3%BC").ok().as_deref(), Some("ü"));
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%4").is_err());
        assert!(percent_decode("%FF").is_err(), "not UTF-8");
    }
}
