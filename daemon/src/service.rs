//! Running as a system service: the systemd notification protocol (`READY=1` once the
//! operator socket listens, `WATCHDOG=1` every half of `WATCHDOG_USEC`, `STOPPING=1`),
//! spoken over the datagram socket `NOTIFY_SOCKET` names (a path, or `@` for the abstract
//! namespace) — nothing happens when it is not set; the socket's group (`socket_group`);
//! and log lines for journald (`JOURNAL_STREAM` set: no timestamps of our own, a
//! `<N>` syslog priority prefix on each line).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;
use tracing_subscriber::fmt::{format::Writer, FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Sends `state` to the service manager, if there is one. Errors are logged, not fatal.
pub fn notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| -> std::io::Result<()> {
        let sock = UnixDatagram::unbound()?;
        let bytes = std::os::unix::ffi::OsStrExt::as_bytes(addr.as_os_str());
        if let Some(name) = bytes.strip_prefix(b"@") {
            use std::os::linux::net::SocketAddrExt;
            let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &a)?;
        } else {
            sock.send_to(state.as_bytes(), &addr)?;
        }
        Ok(())
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "cannot notify the service manager");
    }
}

/// The watchdog interval the service manager asked for (`WATCHDOG_USEC`, for this process
/// when `WATCHDOG_PID` says so): pings go out every half of it.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog while the runtime runs (a stuck runtime stops the pings, and the
/// service manager restarts the daemon; agents keep running).
pub fn spawn_watchdog() {
    let Some(every) = watchdog_interval() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            notify("WATCHDOG=1");
        }
    });
}

/// The id of group `name` (through NSS, as `getent group` sees it).
pub fn group_id(name: &str) -> Result<u32, String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("group `{name}`: a NUL byte"))?;
    let mut buf = vec![0u8; 4096];
    loop {
        // SAFETY: getgrnam_r writes into `grp` and `buf` (sized as given) and sets `out`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                c.as_ptr(),
                &mut grp,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "group `{name}`: {}",
                std::io::Error::from_raw_os_error(rc)
            ));
        }
        if out.is_null() {
            return Err(format!("no group `{name}` on this host"));
        }
        return Ok(grp.gr_gid);
    }
}

/// Gives `path` to group `gid` (owner unchanged).
pub fn chgrp(path: &std::path::Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid))
}

/// Log lines for journald: `<N>` (the syslog priority of the event's level) before the
/// usual line, which is made without a timestamp (journald keeps its own).
pub struct Journald<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let prio = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            tracing::Level::DEBUG | tracing::Level::TRACE => 7,
        };
        write!(writer, "<{prio}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Whether stderr goes to the journal (`JOURNAL_STREAM` names it).
pub fn under_journald() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    // "device:inode" of the stream; stderr must be that stream (not redirected since).
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_resolve_through_nss_and_unknown_ones_are_named() {
        assert_eq!(group_id("root"), Ok(0));
        let e = group_id("agf-no-such-group").unwrap_err();
        assert!(e.contains("no group `agf-no-such-group`"), "{e}");
    }

    #[test]
    fn notifications_reach_the_socket_named() {
        let dir = std::env::temp_dir().join(format!("agf-notify-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).expect("bind");
        // SAFETY: this test is the only user of NOTIFY_SOCKET in this process.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).expect("a datagram");
        assert_eq!(&buf[..n], b"READY=1");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
