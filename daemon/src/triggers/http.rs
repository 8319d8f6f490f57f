//! The inbound webhook listener (`[http] listen`; off by default): HTTP/1.1, or TLS with
//! the configured certificate. It answers `POST /v1/hooks/<id>` only: the token is checked
//! on the headers alone, then the body is read up to `max_body_bytes` (a larger declared or
//! sent body is 413 and never read whole), the request is checked by `Triggers::verify`,
//! and a run is queued. A rejection is answered
//! with its status and an empty body — nothing says which check failed — and recorded.
//! Anything else is 404 (405 for another method on a hook's path), unrecorded.

use super::{Rejection, Request, Triggers};
use crate::config::HttpConfig;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::net::SocketAddr;
use std::sync::Arc;

/// Connections held open at once; past it a new one is closed at once.
const MAX_CONNECTIONS: usize = 1024;

type Reply = hyper::Response<Full<Bytes>>;

fn status(code: u16) -> Reply {
    let mut r = hyper::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::BAD_REQUEST);
    r
}

/// The TLS acceptor for `cfg`'s certificate, when it has one.
pub fn tls_acceptor(cfg: &HttpConfig) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    use rustls_pki_types::pem::PemObject;
    if cfg.tls_cert.as_os_str().is_empty() {
        return Ok(None);
    }
    let read = |p: &std::path::Path| {
        crate::config::read_bounded(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(&read(&cfg.tls_cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cfg.tls_cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls_cert {} holds no certificate",
            cfg.tls_cert.display()
        ));
    }
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(&read(&cfg.tls_key)?)
        .map_err(|e| format!("tls_key {}: {e}", cfg.tls_key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("tls_cert/tls_key: {e}"))?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))))
}

/// Binds `cfg.listen` and serves webhooks until the daemon stops.
pub async fn serve(triggers: Arc<Triggers>, cfg: &HttpConfig) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = cfg
        .listen
        .parse()
        .map_err(|e| anyhow::anyhow!("[http] listen: {e}"))?;
    let tls = tls_acceptor(cfg).map_err(|e| anyhow::anyhow!("[http] {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen for webhooks on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, tls = tls.is_some(), "webhooks listening");
    let forwarded = cfg.forwarded_for;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue; // full: dropped (closed) at once
            };
            let _ = stream.set_nodelay(true);
            let (triggers, tls) = (triggers.clone(), tls.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let triggers = triggers.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(&triggers, req, peer, forwarded).await,
                        )
                    }
                });
                let http = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .max_buf_size(64 * 1024)
                    .clone();
                match tls {
                    Some(acceptor) => {
                        let accept = tokio::time::timeout(
                            std::time::Duration::from_secs(10),
                            acceptor.accept(stream),
                        );
                        if let Ok(Ok(s)) = accept.await {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                        }
                    }
                    None => {
                        let _ = http
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                            .await;
                    }
                }
                drop(slot);
            });
        }
    });
    Ok(bound)
}

fn header<'a>(req: &'a hyper::Request<hyper::body::Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

async fn handle(
    triggers: &Arc<Triggers>,
    req: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
    forwarded: bool,
) -> Reply {
    use agenfleet_protocol::triggers::{HOOK_PATH, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    let Some(id) = req.uri().path().strip_prefix(HOOK_PATH).map(str::to_string) else {
        return status(404);
    };
    if id.is_empty() || id.contains('/') {
        return status(404);
    }
    if req.method() != hyper::Method::POST {
        return status(405);
    }
    // The source recorded: the peer, or the address the trusted proxy added last.
    let source = match header(&req, "x-forwarded-for").filter(|_| forwarded) {
        Some(f) => f
            .rsplit(',')
            .next()
            .map(|s| s.trim().chars().take(64).collect())
            .unwrap_or_else(|| peer.ip().to_string()),
        None => peer.ip().to_string(),
    };
    let authorization = header(&req, "authorization").map(str::to_string);
    let timestamp = header(&req, TIMESTAMP_HEADER).map(str::to_string);
    let signature = header(&req, SIGNATURE_HEADER).map(str::to_string);
    let max = triggers.limits.max_body_bytes;
    let declared: Option<usize> = header(&req, "content-length").and_then(|v| v.parse().ok());
    let mut request = Request {
        id: &id,
        authorization: authorization.as_deref(),
        timestamp: timestamp.as_deref(),
        signature: signature.as_deref(),
        body: &[],
        source,
    };
    // The token first, on the headers alone: nobody unknown gets a body read.
    if let Err(why) = triggers.check_token(&id, request.authorization) {
        triggers
            .record_rejection(&request, declared.unwrap_or(0), why)
            .await;
        return status(why.status());
    }
    let body = if declared.is_some_and(|n| n > max) {
        None
    } else {
        Limited::new(req.into_body(), max)
            .collect()
            .await
            .ok()
            .map(|b| b.to_bytes())
    };
    let Some(body) = body else {
        // Too large (declared or sent), or cut off: not read any further.
        triggers
            .record_rejection(&request, declared.unwrap_or(max + 1), Rejection::TooLarge)
            .await;
        return status(Rejection::TooLarge.status());
    };
    request.body = &body;
    let now = agenfleet_protocol::now_ms();
    let view = match triggers.verify(&request, now) {
        Ok(v) => v,
        Err(why) => {
            triggers.record_rejection(&request, body.len(), why).await;
            return status(why.status());
        }
    };
    let input = match std::str::from_utf8(&body) {
        Ok("") => "{}",
        Ok(s) => s,
        Err(_) => {
            triggers
                .record_rejection(&request, body.len(), Rejection::NotJson)
                .await;
            return status(Rejection::NotJson.status());
        }
    };
    let extra = serde_json::json!({"source": request.source});
    match triggers.start_run(&view, "webhook", input, extra).await {
        Ok(run) => {
            let answer = serde_json::json!({"run": run.id, "state": run.state.as_str()});
            let mut r = hyper::Response::new(Full::new(Bytes::from(answer.to_string())));
            *r.status_mut() = hyper::StatusCode::ACCEPTED;
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            // Not queued: the same request may be sent again.
            triggers.unsee(&id, request.signature);
            let why = match e.code {
                agenfleet_protocol::ErrorCode::FailedPrecondition => Rejection::QueueFull,
                agenfleet_protocol::ErrorCode::InvalidArgument => Rejection::NotJson,
                agenfleet_protocol::ErrorCode::NotFound => Rejection::NotFound,
                _ => Rejection::Unavailable,
            };
            triggers.record_rejection(&request, body.len(), why).await;
            status(why.status())
        }
    }
}
