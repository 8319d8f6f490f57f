//! Framing of the operator socket: length-delimited frames with a maximum size, bincode
//! inside. A frame over the limit, or one that does not decode, ends that connection only.
//! A server's transport also bounds each request's deadline before tarpc reads it: tarpc
//! adds the deadline a client sends to `Instant::now()`, which panics on overflow (found by
//! fuzzing), so a frame with an absurd deadline is read with a deadline of at most a day.

use crate::service::FleetClient;
use std::io;
use std::path::Path;
use std::pin::Pin;
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

/// The longest deadline a server accepts from a request (longer ones are shortened).
pub const MAX_DEADLINE_SECS: u64 = 86_400;

/// The serialization codec of a server: bincode, with each incoming frame's request
/// deadline bounded first (see the module's header).
pub struct ServerCodec<Item, SinkItem>(Bincode<Item, SinkItem>);

impl<Item, SinkItem> tokio_serde::Deserializer<Item> for ServerCodec<Item, SinkItem>
where
    Item: for<'de> serde::Deserialize<'de>,
    Bincode<Item, SinkItem>: tokio_serde::Deserializer<Item, Error = io::Error> + Unpin,
{
    type Error = io::Error;

    fn deserialize(self: Pin<&mut Self>, src: &tokio_util::bytes::BytesMut) -> io::Result<Item> {
        let inner = Pin::new(&mut self.get_mut().0);
        match bound_deadline(src) {
            Some(fixed) => inner.deserialize(&fixed),
            None => inner.deserialize(src),
        }
    }
}

impl<Item, SinkItem> tokio_serde::Serializer<SinkItem> for ServerCodec<Item, SinkItem>
where
    SinkItem: serde::Serialize,
    Bincode<Item, SinkItem>: tokio_serde::Serializer<SinkItem, Error = io::Error> + Unpin,
{
    type Error = io::Error;

    fn serialize(self: Pin<&mut Self>, item: &SinkItem) -> io::Result<tokio_util::bytes::Bytes> {
        Pin::new(&mut self.get_mut().0).serialize(item)
    }
}

/// Reads one bincode varint (`DefaultOptions`: below 251 one byte; 251/252/253 then a
/// little-endian u16/u32/u64); answers it and its length.
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let bytes = b.get(1..1 + n)?;
        Some(
            bytes
                .iter()
                .rev()
                .fold(0u64, |acc, x| (acc << 8) | u64::from(*x)),
        )
    };
    match *b.first()? {
        x @ 0..=250 => Some((u64::from(x), 1)),
        251 => Some((le(2)?, 3)),
        252 => Some((le(4)?, 5)),
        253 => Some((le(8)?, 9)),
        _ => None, // u128 or invalid: bincode refuses it for a u64
    }
}

fn put_varint(v: u64, out: &mut tokio_util::bytes::BytesMut) {
    use tokio_util::bytes::BufMut;
    match v {
        0..=250 => out.put_u8(v as u8),
        251..=0xffff => {
            out.put_u8(251);
            out.put_u16_le(v as u16);
        }
        0x1_0000..=0xffff_ffff => {
            out.put_u8(252);
            out.put_u32_le(v as u32);
        }
        _ => {
            out.put_u8(253);
            out.put_u64_le(v);
        }
    }
}

/// A `ClientMessage::Request` frame starts with its variant (0), then the deadline's
/// seconds: a value above `MAX_DEADLINE_SECS` is rewritten to it (answers the new frame).
/// Anything else passes unchanged (bincode judges it).
pub fn bound_deadline(frame: &[u8]) -> Option<tokio_util::bytes::BytesMut> {
    if frame.first() != Some(&0) {
        return None;
    }
    let (secs, n) = varint(&frame[1..])?;
    if secs <= MAX_DEADLINE_SECS {
        return None;
    }
    let mut out = tokio_util::bytes::BytesMut::with_capacity(frame.len());
    out.extend_from_slice(&frame[..1]);
    put_varint(MAX_DEADLINE_SECS, &mut out);
    out.extend_from_slice(&frame[1 + n..]);
    Some(out)
}

/// A server's transport: as `transport`, with request deadlines bounded.
pub fn server_transport<S, Item, SinkItem>(
    stream: S,
    max_frame: usize,
) -> tarpc::serde_transport::Transport<S, Item, SinkItem, ServerCodec<Item, SinkItem>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    Item: for<'de> serde::Deserialize<'de>,
    SinkItem: serde::Serialize,
    Bincode<Item, SinkItem>: tokio_serde::Deserializer<Item, Error = io::Error>
        + tokio_serde::Serializer<SinkItem, Error = io::Error>
        + Unpin,
{
    tarpc::serde_transport::new(
        Framed::new(stream, codec(max_frame)),
        ServerCodec(Bincode::default()),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_huge_deadlines_are_bounded() {
        for v in [0u64, 250, 251, 65_535, 65_536, 1 << 40, u64::MAX] {
            let mut b = tokio_util::bytes::BytesMut::new();
            put_varint(v, &mut b);
            assert_eq!(varint(&b), Some((v, b.len())), "{v}");
        }
        // Request variant, deadline u64::MAX seconds, then the rest untouched.
        let mut frame = vec![0u8, 253];
        frame.extend_from_slice(&u64::MAX.to_le_bytes());
        frame.extend_from_slice(&[7, 1, 2, 3]);
        let fixed = bound_deadline(&frame).expect("rewritten");
        assert_eq!(varint(&fixed[1..]), Some((MAX_DEADLINE_SECS, 5)));
        assert_eq!(&fixed[6..], &[7, 1, 2, 3]);
        // A normal deadline, a cancel, garbage: unchanged.
        assert!(bound_deadline(&[0, 10, 0]).is_none());
        assert!(bound_deadline(&[1, 253, 255, 255]).is_none());
        assert!(bound_deadline(&[0, 255]).is_none());
        assert!(bound_deadline(&[]).is_none());
    }
}
