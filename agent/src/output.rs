//! Swarm mode: the task's output, carried to the daemon by the shim itself. A task may run
//! on any node, where the daemon cannot attach to its container, and the engine keeps no
//! copy of what an agent prints (a credential it printed would sit in a file on that
//! node). So the shim, first thing, puts pipes in place of its own stdout and stderr —
//! which the program inherits — reads them, and sends each line to the gateway endpoint
//! on the `logs` channel (`<1|2> <text>\n`, the line cut at `LOG_LINE_MAX`); the daemon
//! redacts and keeps it as it would a line read from the container. Lines wait in a
//! bounded queue while the endpoint is unreachable (the daemon restarting, say) and the
//! oldest go first when it is full, with a line saying how many. At exit the shim waits
//! briefly for the queue to empty, so an agent's last words are not lost. The same
//! connection carries the task's CPU and memory, read from its own cgroup every
//! `AGENFLEET_STATS_INTERVAL_MS` (the daemon cannot read a cgroup on another node), and
//! `o` when the init saw its program killed by the kernel's OOM killer.

use agenfleet_protocol::gateway::{LOG_LINE_MAX, REMOTE_HELLO};
use std::collections::VecDeque;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Bytes of output held while the endpoint is unreachable.
const QUEUE_BYTES: usize = 1 << 20;
/// How long the shim's exit waits for its last lines to leave.
const EXIT_FLUSH: Duration = Duration::from_secs(3);

#[derive(Default)]
struct State {
    /// Framed lines (`<1|2> <text>\n`), oldest first, and their bytes.
    queue: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Lines let go since the last that was sent (the queue was full).
    dropped: u64,
    /// Pipes still open (each reader's end is 0 once the last writer has closed it).
    readers: usize,
    /// A batch taken by the sender and not yet written.
    in_flight: bool,
    /// The newest cgroup reading not yet sent (`s <cpu ns> <memory bytes>\n`); an older
    /// one is replaced, never queued.
    stats: Option<Vec<u8>>,
}

struct Outbox {
    state: Mutex<State>,
    /// Signalled when lines arrive (for the sender) and when they leave (for the exit).
    changed: Condvar,
    wake_sender: tokio::sync::Notify,
}

impl Outbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, stream: u8, text: &[u8]) {
        let mut framed = Vec::with_capacity(text.len() + 3);
        framed.push(stream);
        framed.push(b' ');
        framed.extend_from_slice(text);
        framed.push(b'\n');
        {
            let mut s = self.lock();
            s.bytes += framed.len();
            s.queue.push_back(framed);
            while s.bytes > QUEUE_BYTES {
                let Some(old) = s.queue.pop_front() else {
                    break;
                };
                s.bytes -= old.len();
                s.dropped += 1;
            }
        }
        self.wake_sender.notify_one();
    }
}

static OUTBOX: std::sync::OnceLock<Arc<Outbox>> = std::sync::OnceLock::new();

/// Tells the daemon that the kernel's OOM killer ended the program (a no-op when the
/// output is not carried: container mode, where the engine says so itself).
pub fn report_oom() {
    if let Some(o) = OUTBOX.get() {
        {
            let mut s = o.lock();
            s.bytes += 2;
            s.queue.push_back(b"o\n".to_vec());
        }
        o.wake_sender.notify_one();
    }
}

/// OOM kills in this container's cgroup so far (v2 `memory.events`, v1
/// `memory.oom_control`), when the kernel says.
pub fn oom_kills() -> Option<u64> {
    [
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ]
    .iter()
    .find_map(|p| {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    })
}

/// This container's CPU time (ns) and memory in use (bytes, without page cache that can
/// be dropped), from its own cgroup as mounted in it (v2, else v1).
fn read_cgroup() -> Option<(u64, u64)> {
    let root = std::path::Path::new("/sys/fs/cgroup");
    let num = |p: std::path::PathBuf| -> Option<u64> {
        std::fs::read_to_string(p).ok()?.trim().parse().ok()
    };
    let field = |p: std::path::PathBuf, name: &str| -> Option<u64> {
        let text = std::fs::read_to_string(p).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    };
    if root.join("cgroup.controllers").exists() {
        let cpu = field(root.join("cpu.stat"), "usage_usec")? * 1000;
        let current = num(root.join("memory.current")).unwrap_or(0);
        let inactive = field(root.join("memory.stat"), "inactive_file").unwrap_or(0);
        return Some((cpu, current.saturating_sub(inactive)));
    }
    let cpu = num(root.join("cpuacct/cpuacct.usage"))?;
    let usage = num(root.join("memory/memory.usage_in_bytes")).unwrap_or(0);
    let inactive = field(root.join("memory/memory.stat"), "total_inactive_file").unwrap_or(0);
    Some((cpu, usage.saturating_sub(inactive)))
}

/// Reads the cgroup every `interval` for the daemon, which cannot read the cgroup of a
/// task on another node (a reading that cannot be made is skipped).
fn read_stats(outbox: Arc<Outbox>, interval: Duration) {
    loop {
        if let Some((cpu, mem)) = read_cgroup() {
            outbox.lock().stats = Some(format!("s {cpu} {mem}\n").into_bytes());
            outbox.wake_sender.notify_one();
        }
        std::thread::sleep(interval);
    }
}

/// Puts a pipe in place of fd `target` (stdout or stderr) and answers its reading end.
fn redirect(target: i32) -> std::io::Result<OwnedFd> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just made and are owned here alone.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // dup2 clears close-on-exec on `target`: the program inherits it.
    // SAFETY: plain dup2 of a descriptor we own onto stdout/stderr.
    if unsafe { libc::dup2(write.as_raw_fd(), target) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(read)
}

/// Reads one pipe into the outbox, line by line, until every writer has closed it.
fn read_pipe(outbox: Arc<Outbox>, fd: OwnedFd, stream: u8) {
    let mut pipe = std::fs::File::from(fd);
    let mut buf = vec![0u8; 64 * 1024];
    let mut line: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for chunk in buf[..n].split_inclusive(|b| *b == b'\n') {
            let ends = chunk.last() == Some(&b'\n');
            line.extend_from_slice(if ends {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            });
            while line.len() > LOG_LINE_MAX {
                let rest = line.split_off(LOG_LINE_MAX);
                outbox.push(stream, &line);
                line = rest;
            }
            if ends {
                outbox.push(stream, &line);
                line.clear();
            }
        }
    }
    if !line.is_empty() {
        outbox.push(stream, &line);
    }
    outbox.lock().readers -= 1;
    outbox.changed.notify_all();
    outbox.wake_sender.notify_one();
}

/// Starts carrying this process's stdout and stderr (and its children's) to the endpoint
/// at `host:port`, presenting `token`; the sender runs on `rt`. Output stays as it was
/// when the pipes cannot be made.
pub fn start(rt: &tokio::runtime::Handle, host: String, port: u16, token: String, who: &str) {
    let outbox = Arc::new(Outbox {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        wake_sender: tokio::sync::Notify::new(),
    });
    let mut pipes = Vec::new();
    for (fd, stream) in [(libc::STDOUT_FILENO, b'1'), (libc::STDERR_FILENO, b'2')] {
        match redirect(fd) {
            Ok(read) => pipes.push((read, stream)),
            Err(e) => {
                eprintln!("{who}: cannot carry its output to the daemon ({e}); it goes to the engine's (discarded) stream");
                return;
            }
        }
    }
    outbox.lock().readers = pipes.len();
    for (read, stream) in pipes {
        let o = outbox.clone();
        std::thread::spawn(move || read_pipe(o, read, stream));
    }
    let interval = std::env::var(agenfleet_protocol::gateway::STATS_INTERVAL_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|ms| *ms >= 100);
    if let Some(ms) = interval {
        let o = outbox.clone();
        std::thread::spawn(move || read_stats(o, Duration::from_millis(ms)));
    }
    let _ = OUTBOX.set(outbox.clone());
    // SAFETY: registers a plain `extern "C"` function that takes no arguments.
    unsafe {
        libc::atexit(flush_at_exit);
    }
    rt.spawn(send(outbox, host, port, token));
}

/// Sends the queued lines, connecting (again) as needed, with growing pauses while the
/// endpoint cannot be reached.
async fn send(outbox: Arc<Outbox>, host: String, port: u16, token: String) {
    let hello = format!("{REMOTE_HELLO} {token} logs\n");
    let mut conn: Option<tokio::net::TcpStream> = None;
    let mut pause = Duration::from_millis(100);
    loop {
        let notified = outbox.wake_sender.notified();
        let batch = {
            let mut s = outbox.lock();
            if s.queue.is_empty() && s.stats.is_none() {
                None
            } else {
                // A reading goes first; it is not sent again if this batch fails (a newer
                // one will have come by then).
                let mut batch = s.stats.take().unwrap_or_default();
                if s.dropped > 0 {
                    batch.extend_from_slice(
                        format!(
                            "2 [agenfleet: {} lines let go while the gateway was unreachable]\n",
                            std::mem::take(&mut s.dropped)
                        )
                        .as_bytes(),
                    );
                }
                while batch.len() < 256 * 1024 {
                    let Some(l) = s.queue.pop_front() else { break };
                    s.bytes -= l.len();
                    batch.extend_from_slice(&l);
                }
                s.in_flight = true;
                Some(batch)
            }
        };
        let Some(batch) = batch else {
            notified.await;
            continue;
        };
        // The daemon never writes on this channel: anything readable is its end closing
        // (it restarted, say) — found out before a batch is written into the void.
        if let Some(c) = &conn {
            let mut probe = [0u8; 1];
            match c.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                _ => conn = None,
            }
        }
        let sent = async {
            if conn.is_none() {
                let mut c = crate::remote::dial(&host, port).await?;
                c.write_all(hello.as_bytes()).await.ok()?;
                conn = Some(c);
            }
            conn.as_mut()?.write_all(&batch).await.ok()
        }
        .await;
        let ok = sent.is_some();
        {
            let mut s = outbox.lock();
            s.in_flight = false;
            if !ok {
                // Back to the front, to be sent once the endpoint answers again.
                s.bytes += batch.len();
                s.queue.push_front(batch);
            }
        }
        outbox.changed.notify_all();
        if ok {
            pause = Duration::from_millis(100);
        } else {
            conn = None;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    }
}

/// At exit: closes this process's ends of the pipes and waits (up to `EXIT_FLUSH`) until
/// what they held has been read and sent.
extern "C" fn flush_at_exit() {
    let Some(outbox) = OUTBOX.get() else {
        return;
    };
    // SAFETY: opens /dev/null and puts it over stdout and stderr; no Rust object owns them.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY);
        if null >= 0 {
            libc::dup2(null, libc::STDOUT_FILENO);
            libc::dup2(null, libc::STDERR_FILENO);
            libc::close(null);
        }
    }
    let deadline = std::time::Instant::now() + EXIT_FLUSH;
    let mut s = outbox.lock();
    while s.readers > 0 || !s.queue.is_empty() || s.in_flight {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        s = match outbox.changed.wait_timeout(s, left) {
            Ok((s, _)) => s,
            Err(p) => p.into_inner().0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_lets_the_oldest_lines_go_and_counts_them() {
        let o = Outbox {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            wake_sender: tokio::sync::Notify::new(),
        };
        let line = vec![b'x'; 1000];
        for _ in 0..2000 {
            o.push(b'1', &line);
        }
        let s = o.lock();
        assert!(s.bytes <= QUEUE_BYTES);
        assert_eq!(s.bytes, s.queue.iter().map(Vec::len).sum::<usize>());
        assert_eq!(s.dropped as usize + s.queue.len(), 2000);
        assert_eq!(s.queue[0][..2], *b"1 ");
        assert_eq!(s.queue[0].last(), Some(&b'\n'));
    }
}
