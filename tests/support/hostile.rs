//! Slow and hostile clients of the operator socket, for the tests and the benchmark: many
//! connections that send nothing, a frame sent a byte at a time, a client that never reads
//! its answers — and a normal client whose latency is measured meanwhile.

use agenfleet_protocol::transport;
use agenfleet_protocol::FleetClient;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

/// Raises this process's soft descriptor limit to the hard one (a thousand sockets).
pub fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid struct of this process.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// Opens `n` connections that send nothing.
pub fn idle_connections(socket: &Path, n: usize) -> Vec<UnixStream> {
    raise_fd_limit();
    (0..n)
        .map(|i| UnixStream::connect(socket).unwrap_or_else(|e| panic!("idle connection {i}: {e}")))
        .collect()
}

/// Whether the daemon has closed `s` (a read sees end of file or a reset).
pub fn closed_by_peer(s: &UnixStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut b = [0u8; 1];
    let mut r: &UnixStream = s;
    let r = r.read(&mut b);
    s.set_nonblocking(false).expect("blocking");
    match r {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

/// Sends the start of a 100-byte frame, then a byte every `every` until the daemon
/// closes the connection; answers how long that took. Gives up after `limit`.
pub fn slow_frame(socket: &Path, every: Duration, limit: Duration) -> Option<Duration> {
    let mut s = UnixStream::connect(socket).expect("connect");
    let t0 = Instant::now();
    let _ = s.write_all(&100u32.to_be_bytes());
    while t0.elapsed() < limit {
        if s.write_all(&[0u8]).is_err() || closed_by_peer(&s) {
            return Some(t0.elapsed());
        }
        std::thread::sleep(every);
    }
    None
}

/// A stream whose reads never complete: a client over it sends requests and never reads
/// an answer. `broken` is set once a write fails (the daemon closed the connection).
struct NeverReads {
    inner: tokio::net::UnixStream,
    broken: Arc<AtomicBool>,
}

impl tokio::io::AsyncRead for NeverReads {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Poll::Pending
    }
}

impl tokio::io::AsyncWrite for NeverReads {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Err(_)) = &r {
            self.broken.store(true, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Sends `status` requests as fast as it can and never reads an answer, until a write
/// fails (the daemon closed the connection) or `limit` passes; answers how long it took.
pub async fn never_reads(socket: &Path, limit: Duration) -> Option<Duration> {
    let inner = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    let broken = Arc::new(AtomicBool::new(false));
    let stream = NeverReads {
        inner,
        broken: broken.clone(),
    };
    let t = transport::transport(stream, agenfleet_protocol::DEFAULT_MAX_FRAME_BYTES);
    // No answer ever completes a request here, so let requests pile up without bound.
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = usize::MAX / 2;
    let c = FleetClient::new(config, t).spawn();
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        if broken.load(Ordering::Relaxed) {
            return Some(t0.elapsed());
        }
        for _ in 0..32 {
            let c = c.clone();
            tokio::spawn(async move {
                let ctx = transport::context_with_timeout(Duration::from_secs(3600));
                let _ = c.status(ctx).await;
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// Latencies of `n` sequential `status` calls on one connection, sorted (ms).
pub async fn status_latencies(c: &FleetClient, n: usize) -> Vec<f64> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.status(transport::context_with_timeout(Duration::from_secs(30)))
            .await
            .expect("status transport")
            .expect("status");
        v.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    v.sort_by(f64::total_cmp);
    v
}
