//! Framing of the operator socket: length-delimited frames with a maximum size, bincode
//! inside. A frame over the limit, or one that does not decode, ends that connection only.

use crate::service::FleetClient;
use std::io;
use std::path::Path;
use tokio::net::UnixStream;
use tokio_serde::formats::Bincode;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// A length-delimited codec that refuses frames larger than `max_frame`.
pub fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .length_field_length(4)
        .new_codec()
}

/// Wraps a connected stream into a tarpc transport with bincode framing.
pub fn transport<S, Item, SinkItem>(
    stream: S,
    max_frame: usize,
) -> tarpc::serde_transport::Transport<S, Item, SinkItem, Bincode<Item, SinkItem>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
{
    tarpc::serde_transport::new(Framed::new(stream, codec(max_frame)), Bincode::default())
}

/// Connects a `FleetClient` to the daemon's operator socket.
pub async fn connect(path: &Path, max_frame: usize) -> io::Result<FleetClient> {
    let stream = UnixStream::connect(path).await?;
    let t = transport(stream, max_frame);
    Ok(FleetClient::new(tarpc::client::Config::default(), t).spawn())
}

/// A tarpc context whose deadline is `timeout` from now.
pub fn context_with_timeout(timeout: std::time::Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = std::time::Instant::now() + timeout;
    ctx
}

/// Connects a `GatewayClient` to an agent's gateway socket.
pub async fn connect_gateway(
    path: &Path,
    max_frame: usize,
) -> io::Result<crate::gateway::GatewayClient> {
    let stream = UnixStream::connect(path).await?;
    let t = transport(stream, max_frame);
    Ok(crate::gateway::GatewayClient::new(tarpc::client::Config::default(), t).spawn())
}
