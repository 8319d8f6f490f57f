//! The operator socket: accepts connections, binds each to the caller named by the peer's
//! credentials, and serves the `Fleet` service on it with a frame-size limit. A malformed
//! or oversized frame ends that one connection; the others carry on.

pub mod fleet;
pub mod gateway;

use crate::runtime::Runtime;
use futures::StreamExt;
use std::sync::Arc;
use tarpc::server::{BaseChannel, Channel};
use tokio::net::UnixListener;

pub use fleet::FleetService;

/// Serves until the listener fails.
pub async fn serve(rt: Arc<Runtime>, listener: UnixListener, max_frame: usize) {
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
        tracing::debug!(uid, "operator connected");
        let service = FleetService::new(rt.clone(), uid, max_frame);
        tokio::spawn(async move {
            let transport = agenfleet_protocol::transport::transport(stream, max_frame);
            BaseChannel::with_defaults(transport)
                .execute(agenfleet_protocol::Fleet::serve(service))
                .for_each(|fut| async {
                    tokio::spawn(fut);
                })
                .await;
            tracing::debug!(uid, "operator connection closed");
        });
    }
}
