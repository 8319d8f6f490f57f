//! The operator socket: accepts connections, binds each to the caller named by the peer's
//! credentials, and serves the `Fleet` service (`fleet/`) on it with a frame-size limit
//! and the connection limits of `conn`. A malformed or oversized frame, a slow or silent
//! client, ends that one connection; the others carry on.

use super::conn;
use super::fleet::FleetService;
use crate::runtime::Runtime;
use futures::StreamExt;
use std::sync::Arc;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::UnixListener;

/// Serves until the listener fails.
pub async fn serve(rt: Arc<Runtime>, listener: UnixListener) {
    let max_frame = rt.cfg.max_frame_bytes;
    let timeouts = conn::Timeouts::operator(&rt.cfg);
    let admission = conn::Admission::new(rt.cfg.max_connections_per_uid, rt.cfg.max_connections);
    let mut refusals = conn::RefusalLog::default();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let uid = match stream.peer_cred() {
            Ok(c) => c.uid(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read peer credentials; closing");
                continue;
            }
        };
        let permit = match admission.admit(uid) {
            Ok(p) => p,
            Err(why) => {
                refusals.note(uid, &why);
                continue;
            }
        };
        tracing::debug!(uid, "operator connected");
        let service = FleetService::new(rt.clone(), uid, max_frame);
        tokio::spawn(async move {
            let stream = conn::Guarded::new(stream, timeouts, Some(permit));
            let transport = agenfleet_protocol::transport::server_transport(stream, max_frame);
            BaseChannel::with_defaults(transport)
                .max_concurrent_requests(conn::MAX_IN_FLIGHT)
                .execute(agenfleet_protocol::Fleet::serve(service))
                .for_each(|fut| async {
                    tokio::spawn(fut);
                })
                .await;
            tracing::debug!(uid, "operator connection closed");
        });
    }
}
