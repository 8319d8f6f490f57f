//! A long-running `agenfleet-agent report` inside an agent's container: the benches send
//! agents' reports of failing providers through the real gateway (real signals).

use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// A long-running `agenfleet-agent report` inside the agent's container.
pub struct Reporter {
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    pub answers: std::sync::mpsc::Receiver<String>,
}

impl Reporter {
    pub fn start(cid: &str) -> Reporter {
        let mut child = Command::new("docker")
            .args(["exec", "-i", cid, "/agenfleet-agent", "report"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("docker exec report");
        let stdin = child.stdin.take().expect("stdin");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Reporter {
            child,
            stdin,
            answers: rx,
        }
    }

    /// A failing model provider (HTTP 503) named `provider`.
    pub fn send(&mut self, provider: &str) {
        let r = json!({"kind": "model_call", "provider": provider, "outcome": "server_error",
            "status": 503, "latency_ms": 12, "fallback_used": false, "detail": "bench"});
        writeln!(self.stdin, "{r}").expect("write a report");
    }

    /// A tool endpoint named `endpoint` that is down.
    pub fn send_tool(&mut self, endpoint: &str) {
        let r = json!({"kind": "tool_call", "provider": endpoint, "outcome": "unreachable",
            "status": null, "latency_ms": 3, "fallback_used": false, "detail": "bench"});
        writeln!(self.stdin, "{r}").expect("write a report");
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
