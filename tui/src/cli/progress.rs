//! Progress bars on stderr for the CLI's long calls, when both stdout and stderr are a
//! terminal and the output is not JSON: `during` follows the daemon's long operations
//! (`Fleet::operations`) that start while a call is running (an image build's steps, the
//! agents' resync after an unseal); `Bar` is drawn by a command that counts itself (a
//! backup's bytes). The line is redrawn in place and cleared at the end.

use super::Out;
use crate::client::Conn;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// One progress line on stderr (does nothing when not wanted).
pub struct Bar {
    on: bool,
    last: String,
}

/// "building image x  ▕████▌     ▏ 3/7 steps".
pub fn line(what: &str, ratio: f64, progress: &str) -> String {
    format!("{what}  {} {progress}", crate::fmt::bar(ratio, 24))
}

impl Bar {
    pub fn new(out: &Out) -> Bar {
        Bar {
            on: !out.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal(),
            last: String::new(),
        }
    }

    pub fn on(&self) -> bool {
        self.on
    }

    /// Draws `text` in place of the line before (nothing when it is the same).
    pub fn draw(&mut self, text: String) {
        if !self.on || text == self.last {
            return;
        }
        let mut e = std::io::stderr().lock();
        let _ = write!(e, "\r\x1b[2K{text}");
        let _ = e.flush();
        self.last = text;
    }

    /// Clears the line (once drawn).
    pub fn clear(&mut self) {
        if self.on && !self.last.is_empty() {
            let mut e = std::io::stderr().lock();
            let _ = write!(e, "\r\x1b[2K");
            let _ = e.flush();
            self.last.clear();
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Runs `call`, drawing the progress of the daemon's operations that start meanwhile.
pub async fn during<T>(conn: &Conn, out: &Out, call: impl Future<Output = T>) -> T {
    let mut bar = Bar::new(out);
    if !bar.on() {
        return call.await;
    }
    // What runs already is someone else's.
    let Ok(Ok((mut rev, before))) = conn.client.operations(conn.ctx(), 0, 0).await else {
        return call.await;
    };
    let known: Vec<u64> = before.iter().map(|o| o.id).collect();
    let follow = async {
        loop {
            let wait = Duration::from_secs(20);
            match conn
                .client
                .operations(conn.ctx_wait(wait), rev, wait.as_millis() as u64)
                .await
            {
                Ok(Ok((r, list))) => {
                    rev = r;
                    match list.iter().find(|o| !known.contains(&o.id)) {
                        Some(o) => bar.draw(line(&o.what, o.ratio(), &o.progress())),
                        None => bar.clear(),
                    }
                }
                // No progress to show; the call itself says what went wrong.
                _ => std::future::pending::<()>().await,
            }
        }
    };
    tokio::pin!(call);
    tokio::select! {
        r = &mut call => r,
        // (Following never ends; should it, the call's answer is still what counts.)
        () = follow => call.await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_progress_line_names_the_operation_and_how_far_it_got() {
        assert_eq!(
            super::line("building image x", 0.5, "3/6 steps"),
            "building image x  ▕████████████            ▏ 3/6 steps"
        );
    }
}
