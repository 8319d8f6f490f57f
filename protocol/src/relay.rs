//! Byte relays between two sockets: the shim's (the program's TCP connection ↔ the
//! agent's local API or egress proxy socket) and the daemon's egress proxy (the agent's
//! proxy connection ↔ the upstream TCP connection). Each direction runs on its own and
//! half-closes its writer at its end, so an answer sent before the other side stops
//! reading (a 403, a 413) still gets through.
//!
//! Bytes move with `splice(2)` through a pipe — from one socket into the pipe, from the
//! pipe into the other socket — so they are never copied into this process (a bulk
//! transfer through a CONNECT tunnel crosses two relays). Readiness comes from tokio's
//! reactor (`readable`/`writable` + `try_io`): no thread blocks, nothing polls. Where
//! splice is refused (an old kernel, a socket type without it) the relay copies instead.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use tokio::io::Interest;

/// Bytes moved per read and write when the relay copies (tokio's default, 8 KiB, costs a
/// bulk transfer four system calls per 8 KiB on each hop).
pub const RELAY_BUF: usize = 256 * 1024;

/// A pipe's capacity for splicing (the kernel may give less; that only costs calls).
const PIPE_BYTES: libc::c_int = 1024 * 1024;

/// A socket the relay can splice: its descriptor and its readiness in tokio's reactor.
pub trait Spliceable: AsRawFd {
    fn ready(&self, interest: Interest) -> impl std::future::Future<Output = io::Result<()>>;
    fn try_io_with<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R>;
}

macro_rules! spliceable {
    ($t:ty) => {
        impl Spliceable for $t {
            async fn ready(&self, interest: Interest) -> io::Result<()> {
                <$t>::ready(self, interest).await.map(|_| ())
            }
            fn try_io_with<R>(
                &self,
                interest: Interest,
                f: impl FnOnce() -> io::Result<R>,
            ) -> io::Result<R> {
                self.try_io(interest, f)
            }
        }
    };
}
spliceable!(tokio::net::TcpStream);
spliceable!(tokio::net::UnixStream);

/// A pipe, closed when dropped.
struct Pipe {
    r: RawFd,
    w: RawFd,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into `fds`, which we own from here on.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sets the capacity of the pipe we just made; a refusal leaves the default.
        unsafe {
            libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_BYTES);
        }
        Ok(Pipe {
            r: fds[0],
            w: fds[1],
        })
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: both descriptors are ours and closed once.
        unsafe {
            libc::close(self.r);
            libc::close(self.w);
        }
    }
}

fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: plain splice between descriptors we hold; null offsets (sockets and pipes).
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn shutdown_write(fd: RawFd) {
    // SAFETY: half-closes a socket we hold.
    unsafe {
        libc::shutdown(fd, libc::SHUT_WR);
    }
}

/// Whether splice said "not for this descriptor" (rather than a failed connection).
fn unsupported(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// What one direction ended with.
enum End {
    /// End of file or a broken connection: done.
    Done,
    /// Splice is not possible here, and nothing has moved yet: copy instead.
    Unsupported,
}

/// Moves bytes `from` → `to` with splice until `from` ends; half-closes `to`.
async fn splice_one_way<A: Spliceable, B: Spliceable>(from: &A, to: &B) -> End {
    let Ok(pipe) = Pipe::new() else {
        return End::Unsupported;
    };
    let mut moved_any = false;
    loop {
        if from.ready(Interest::READABLE).await.is_err() {
            break;
        }
        let got = from.try_io_with(Interest::READABLE, || {
            splice(from.as_raw_fd(), pipe.w, PIPE_BYTES as usize)
        });
        let mut in_pipe = match got {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if unsupported(&e) && !moved_any => return End::Unsupported,
            Err(_) => break,
        };
        moved_any = true;
        while in_pipe > 0 {
            if to.ready(Interest::WRITABLE).await.is_err() {
                return End::Done;
            }
            match to.try_io_with(Interest::WRITABLE, || {
                splice(pipe.r, to.as_raw_fd(), in_pipe)
            }) {
                Ok(n) => in_pipe -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return End::Done,
            }
        }
    }
    shutdown_write(to.as_raw_fd());
    End::Done
}

/// Relays `a` ↔ `b` until both directions have ended (see the module's header).
pub async fn relay<A, B>(a: A, b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Spliceable,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Spliceable,
{
    let (forth, back) = tokio::join!(splice_one_way(&a, &b), splice_one_way(&b, &a));
    if matches!(forth, End::Unsupported) || matches!(back, End::Unsupported) {
        // Only a direction that moved nothing gives up; relay the rest by copying.
        copy_relay(
            a,
            b,
            matches!(forth, End::Unsupported),
            matches!(back, End::Unsupported),
        )
        .await;
    }
}

/// The copying relay, for the directions splice could not take.
async fn copy_relay<A, B>(a: A, b: B, forth: bool, back: bool)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Spliceable,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Spliceable,
{
    use tokio::io::{AsyncWriteExt, BufReader};
    let (ar, mut aw) = tokio::io::split(a);
    let (br, mut bw) = tokio::io::split(b);
    let f = async {
        if forth {
            let _ =
                tokio::io::copy_buf(&mut BufReader::with_capacity(RELAY_BUF, ar), &mut bw).await;
            let _ = bw.shutdown().await;
        }
    };
    let k = async {
        if back {
            let _ =
                tokio::io::copy_buf(&mut BufReader::with_capacity(RELAY_BUF, br), &mut aw).await;
            let _ = aw.shutdown().await;
        }
    };
    tokio::join!(f, k);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A TCP client ↔ relay ↔ Unix server: 8 MiB each way arrive whole and in order, and
    /// an answer written after the client half-closed still gets back.
    #[tokio::test]
    async fn bytes_cross_both_ways_in_order_and_half_close_is_kept() {
        let dir = std::env::temp_dir().join(format!("agf-relay-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let sock = dir.join("s.sock");
        let _ = std::fs::remove_file(&sock);
        let unix = tokio::net::UnixListener::bind(&sock).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let relay_task = tokio::spawn(async move {
            let (t, _) = tcp.accept().await.unwrap();
            let u = tokio::net::UnixStream::connect(&sock).await.unwrap();
            relay(t, u).await;
        });
        let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expect = data.clone();
        let server = tokio::spawn(async move {
            let (mut s, _) = unix.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            // The client has half-closed: answer anyway, reversed.
            let back: Vec<u8> = got.iter().rev().copied().collect();
            s.write_all(&back).await.unwrap();
            s.shutdown().await.unwrap();
            got
        });
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut r, mut w) = c.split();
        let send = async {
            w.write_all(&data).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let mut answer = Vec::new();
        let recv = async {
            r.read_to_end(&mut answer).await.unwrap();
        };
        tokio::join!(send, recv);
        assert_eq!(server.await.unwrap(), expect);
        let reversed: Vec<u8> = expect.iter().rev().copied().collect();
        assert_eq!(answer, reversed);
        relay_task.await.unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
