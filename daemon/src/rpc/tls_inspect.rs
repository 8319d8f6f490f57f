//! TLS inspection in the egress proxy: a CONNECT to the host:port of a connection marked
//! `tls_inspect` (and bound to the agent) is answered here instead of tunnelled — the
//! agent's TLS ends with a certificate of the daemon's inspection CA for that host
//! (`upstreams::inspect`), and each HTTP/1.1 request inside is served as a call to the
//! connection (`upstream_api::inspected`: decided by method, host and path, sent with the
//! key, recorded). An agent that does not trust the CA fails its handshake; that is
//! recorded as `egress.refused`.

use super::gateway::GatewayService;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Terminates the agent's TLS to an inspected connection with a certificate of the
/// daemon's CA for `host` and serves the HTTP/1.1 requests inside it.
pub(super) async fn serve<S>(
    mut stream: S,
    svc: GatewayService,
    live: std::sync::Arc<crate::upstreams::Live>,
    host: &str,
    header_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let rt = svc.runtime().clone();
    let config = match rt
        .upstreams
        .inspect_ca(&rt.instance)
        .and_then(|ca| ca.server_config(host))
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("cannot inspect the tunnel to {host}: {e}");
            return super::egress::unreachable(&mut stream, &svc, host, why).await;
        }
    };
    if stream
        .write_all(b"HTTP/1.1 200 Connection established\r\nX-AgenFleet-Decision: inspect\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let tls = match tokio::time::timeout(
        header_timeout,
        tokio_rustls::TlsAcceptor::from(config).accept(stream),
    )
    .await
    {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            // Most often: the agent does not trust the daemon's CA (no SSL_CERT_FILE).
            let _ = svc
                .egress_refused(&format!(
                    "TLS with the agent for inspected {host} failed: {e} (does it trust /run/agenfleet/ca.pem?)"
                ))
                .await;
            return;
        }
        Err(_) => return,
    };
    let name = live.view.spec.name.clone();
    let base_path = live.view.spec.base_path();
    let service = hyper::service::service_fn(move |req| {
        let (svc, name, base_path) = (svc.clone(), name.clone(), base_path.clone());
        async move {
            Ok::<_, std::convert::Infallible>(
                super::upstream_api::inspected(svc, req, name, base_path).await,
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
        .await;
}
