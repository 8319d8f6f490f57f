//! Connection limits of the daemon's sockets against slow and hostile clients: how many
//! connections one uid (and everyone together) may hold open, and a stream wrapper that
//! closes a connection whose request frame does not arrive in time (a byte a second), whose
//! answers are not read (a write that makes no progress), or that stays silent too long.
//! A limit hit closes that one connection; the others carry on.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Requests one connection may have in flight; more are answered "throttled" at once.
pub const MAX_IN_FLIGHT: usize = 256;

/// The time limits of one connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request frame must arrive whole within this long of its first byte.
    pub frame: Duration,
    /// A write that makes no progress for this long (the peer reads nothing) closes.
    pub write: Duration,
    /// No byte read or written for this long closes; `None`: never.
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// The time limits of an operator connection.
    pub fn operator(cfg: &crate::config::Config) -> Timeouts {
        Timeouts {
            frame: Duration::from_secs(cfg.frame_timeout_secs),
            write: Duration::from_secs(cfg.frame_timeout_secs),
            idle: Some(Duration::from_secs(cfg.idle_timeout_secs)),
        }
    }

    /// The time limits of a gateway connection: an agent may stay silent for hours
    /// between tool calls, so no idle limit.
    pub fn gateway(cfg: &crate::config::Config) -> Timeouts {
        Timeouts {
            idle: None,
            ..Timeouts::operator(cfg)
        }
    }
}

/// Counts open connections, per uid and in all; a `Permit` holds one place.
#[derive(Debug)]
pub struct Admission {
    per_uid: usize,
    total: usize,
    open: Mutex<(HashMap<u32, usize>, usize)>,
}

/// Why a connection was not admitted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refused {
    #[error("uid {uid} already holds {limit} connections (max_connections_per_uid)")]
    PerUid { uid: u32, limit: usize },
    #[error("the daemon already holds {limit} connections (max_connections)")]
    Total { limit: usize },
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    admission: Arc<Admission>,
    uid: u32,
}

impl Admission {
    pub fn new(per_uid: usize, total: usize) -> Arc<Admission> {
        Arc::new(Admission {
            per_uid,
            total,
            open: Mutex::new((HashMap::new(), 0)),
        })
    }

    /// Takes a place for a connection of `uid`, or says which limit is full.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<Permit, Refused> {
        let mut g = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let (by_uid, total) = &mut *g;
        if *total >= self.total {
            return Err(Refused::Total { limit: self.total });
        }
        let n = by_uid.entry(uid).or_insert(0);
        if *n >= self.per_uid {
            return Err(Refused::PerUid {
                uid,
                limit: self.per_uid,
            });
        }
        *n += 1;
        *total += 1;
        Ok(Permit {
            admission: self.clone(),
            uid,
        })
    }

    /// Connections open now (all uids).
    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).1
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut g = self
            .admission
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (by_uid, total) = &mut *g;
        *total = total.saturating_sub(1);
        if let Some(n) = by_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                by_uid.remove(&self.uid);
            }
        }
    }
}

/// Logs refused connections without letting a flood of them flood the log: the first of
/// each uid at once, then a count at most every 10 s.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// Per uid: when it was last logged, and the refusals since.
    last: HashMap<u32, (Option<std::time::Instant>, u64)>,
}

impl RefusalLog {
    /// Notes one refusal of `uid` (for a gateway, the agent's socket: any fixed key).
    pub fn note(&mut self, uid: u32, why: &dyn std::fmt::Display) {
        let now = std::time::Instant::now();
        let every = Duration::from_secs(10);
        let e = self.last.entry(uid).or_insert((None, 0));
        e.1 += 1;
        if e.0.is_none_or(|t| now.duration_since(t) >= every) {
            tracing::warn!(uid, refused = e.1, "connection refused: {why}");
            *e = (Some(now), 0);
        }
        if self.last.len() > 4096 {
            self.last.retain(|_, (t, _)| {
                t.is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
            });
        }
    }
}

/// Follows the 4-byte big-endian length prefixes of the frames read, to know when a frame
/// is partly received.
#[derive(Debug, Default, Clone, Copy)]
struct FrameTracker {
    header: [u8; 4],
    header_got: usize,
    body_left: u64,
}

impl FrameTracker {
    /// Feeds bytes read; answers whether a frame began in them.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut began = false;
        while !data.is_empty() {
            if self.header_got < 4 {
                if self.header_got == 0 {
                    began = true;
                }
                let n = (4 - self.header_got).min(data.len());
                self.header[self.header_got..self.header_got + n].copy_from_slice(&data[..n]);
                self.header_got += n;
                data = &data[n..];
                if self.header_got == 4 {
                    self.body_left = u64::from(u32::from_be_bytes(self.header));
                }
            } else {
                let n = (self.body_left.min(data.len() as u64)) as usize;
                self.body_left -= n as u64;
                data = &data[n..];
            }
            if self.header_got == 4 && self.body_left == 0 {
                self.header_got = 0;
            }
        }
        began
    }

    fn partial(&self) -> bool {
        self.header_got > 0
    }
}

/// A stream with the time limits of `Timeouts` (and the connection's `Permit`, released
/// when the stream is dropped).
pub struct Guarded<S> {
    inner: S,
    t: Timeouts,
    frames: FrameTracker,
    frame_deadline: Option<Pin<Box<Sleep>>>,
    write_deadline: Option<Pin<Box<Sleep>>>,
    /// Fires at the earliest moment the connection could be idle too long; moved on only
    /// when it fires (activity just records `last_active`, no timer work per read or write).
    idle_deadline: Option<Pin<Box<Sleep>>>,
    last_active: Instant,
    _permit: Option<Permit>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, t: Timeouts, permit: Option<Permit>) -> Self {
        Guarded {
            inner,
            t,
            frames: FrameTracker::default(),
            frame_deadline: None,
            write_deadline: None,
            idle_deadline: t.idle.map(|d| Box::pin(tokio::time::sleep(d))),
            last_active: Instant::now(),
            _permit: permit,
        }
    }

    fn active(&mut self) {
        if self.t.idle.is_some() {
            self.last_active = Instant::now();
        }
    }
}

fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let began = this.frames.feed(&buf.filled()[before..]);
                if buf.filled().len() > before {
                    this.active();
                }
                if !this.frames.partial() {
                    this.frame_deadline = None;
                } else if began || this.frame_deadline.is_none() {
                    this.frame_deadline = Some(Box::pin(tokio::time::sleep(this.t.frame)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if let Some(s) = this.frame_deadline.as_mut() {
                    if s.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(timed_out(format!(
                            "a request frame did not arrive whole within {:?}",
                            this.t.frame
                        ))));
                    }
                }
                if let (Some(s), Some(idle)) = (this.idle_deadline.as_mut(), this.t.idle) {
                    while s.as_mut().poll(cx).is_ready() {
                        let due = this.last_active + idle;
                        if Instant::now() >= due {
                            return Poll::Ready(Err(timed_out(format!("idle for {idle:?}"))));
                        }
                        s.as_mut().reset(due);
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(r) => {
                this.write_deadline = None;
                if matches!(r, Ok(n) if n > 0) {
                    this.active();
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let t = this.t.write;
                let s = this
                    .write_deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(t)));
                if s.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(timed_out(format!(
                        "the peer read nothing of its answers for {t:?}"
                    ))));
                }
                Poll::Pending
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn frames_are_followed_across_reads() {
        let mut f = FrameTracker::default();
        assert!(f.feed(&[0, 0]));
        assert!(f.partial());
        assert!(!f.feed(&[0, 3, b'a']));
        assert!(f.partial());
        assert!(!f.feed(b"bc"));
        assert!(!f.partial());
        // Two whole frames and the start of a third in one read.
        assert!(f.feed(&[0, 0, 0, 1, b'x', 0, 0, 0, 0, 0]));
        assert!(f.partial());
        assert!(!f.feed(&[0, 0]));
        assert!(f.partial());
        // Its header completes (2 bytes to come), then its body.
        assert!(!f.feed(&[2]));
        assert!(f.partial());
        assert!(!f.feed(b"ok"));
        assert!(!f.partial());
    }

    #[test]
    fn admission_counts_per_uid_and_in_all() {
        let a = Admission::new(2, 3);
        let p1 = a.admit(7).unwrap();
        let _p2 = a.admit(7).unwrap();
        assert_eq!(
            a.admit(7).unwrap_err(),
            Refused::PerUid { uid: 7, limit: 2 }
        );
        let _p3 = a.admit(8).unwrap();
        assert_eq!(a.admit(9).unwrap_err(), Refused::Total { limit: 3 });
        drop(p1);
        assert_eq!(a.open(), 2);
        assert!(a.admit(7).is_ok());
    }

    fn timeouts(idle: Option<u64>) -> Timeouts {
        Timeouts {
            frame: Duration::from_secs(2),
            write: Duration::from_secs(2),
            idle: idle.map(Duration::from_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_frame_sent_too_slowly_closes_the_connection() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, timeouts(None), None);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            loop {
                match g.read(&mut buf).await {
                    Ok(0) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        });
        // A whole frame in time is fine, then one byte a second of the next one.
        b.write_all(&[0, 0, 0, 1, b'x']).await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        for byte in [0u8, 0, 0, 9, 1, 2, 3] {
            if b.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let e = reader.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("frame"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_closes_only_when_an_idle_limit_is_set() {
        let (a, _b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, timeouts(Some(30)), None);
        let mut buf = [0u8; 4];
        let t0 = Instant::now();
        let e = g.read(&mut buf).await.unwrap_err();
        assert!(e.to_string().contains("idle"), "{e}");
        assert!(t0.elapsed() >= Duration::from_secs(30));
        let (a, _b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, timeouts(None), None);
        let r = tokio::time::timeout(Duration::from_secs(3600), g.read(&mut buf)).await;
        assert!(r.is_err(), "no idle limit: still waiting after an hour");
    }

    #[tokio::test(start_paused = true)]
    async fn activity_keeps_a_connection_open_and_silence_after_it_closes_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, timeouts(Some(30)), None);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let t0 = Instant::now();
            loop {
                if let Err(e) = g.read(&mut buf).await {
                    return (e, t0.elapsed());
                }
            }
        });
        // A whole (empty) frame every 20 s for 100 s: never idle for 30 s.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(20)).await;
            b.write_all(&[0, 0, 0, 0]).await.unwrap();
        }
        let (e, after) = reader.await.unwrap();
        assert!(e.to_string().contains("idle"), "{e}");
        assert!(
            after >= Duration::from_secs(130) && after < Duration::from_secs(131),
            "closed after {after:?}: 30 s after the last frame at 100 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answers_nobody_reads_close_the_connection() {
        let (a, _b) = tokio::io::duplex(64);
        let mut g = Guarded::new(a, timeouts(None), None);
        let e = g.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(e.to_string().contains("read nothing"), "{e}");
    }
}
