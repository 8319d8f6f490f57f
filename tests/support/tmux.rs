//! The real console in a real terminal: a private tmux server per test.

use crate::*;
use std::time::Duration;

/// The real console in a real terminal: a private tmux server per instance.
pub struct Tmux {
    server: String,
}

impl Tmux {
    /// Runs `cmd` in an 80×24 terminal.
    pub fn start(cmd: &str) -> Tmux {
        Self::start_sized(cmd, 80, 24)
    }

    /// Runs `cmd` in a `w`×`h` terminal.
    pub fn start_sized(cmd: &str, w: u16, h: u16) -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let server = format!(
            "agf-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let st = std::process::Command::new("tmux")
            .args([
                "-L",
                &server,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-s",
                "console",
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
                cmd,
            ])
            .env("TERM", "xterm-256color")
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session failed");
        Tmux { server }
    }

    pub fn screen(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["-L", &self.server, "capture-pane", "-p", "-t", "console"])
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["-L", &self.server, "send-keys", "-t", "console"];
        args.extend_from_slice(keys);
        let st = std::process::Command::new("tmux")
            .args(&args)
            .status()
            .expect("send-keys");
        assert!(st.success());
    }

    pub fn wait_screen(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_screen_for(Duration::from_secs(15), what, pred)
    }

    pub fn wait_screen_for(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(timeout, what, || {
                let s = self.screen();
                last = s.clone();
                pred(&s).then_some(s)
            })
        }));
        match r {
            Ok(s) => s,
            Err(_) => panic!("timed out waiting for {what}; screen:\n{last}"),
        }
    }

    /// Appends everything the program writes to its terminal to `file` (tmux pipe-pane).
    pub fn pipe_output(&self, file: &std::path::Path) {
        let st = std::process::Command::new("tmux")
            .args(["-L", &self.server, "pipe-pane", "-o", "-t", "console"])
            .arg(format!("cat >> '{}'", file.display()))
            .status()
            .expect("pipe-pane");
        assert!(st.success());
    }

    /// The pid of the program running in the terminal.
    pub fn pane_pid(&self) -> Option<u32> {
        let out = std::process::Command::new("tmux")
            .args([
                "-L",
                &self.server,
                "display-message",
                "-p",
                "-t",
                "console",
                "#{pane_pid}",
            ])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    pub fn alive(&self) -> bool {
        std::process::Command::new("tmux")
            .args(["-L", &self.server, "has-session", "-t", "console"])
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["-L", &self.server, "kill-server"])
            .status();
    }
}
