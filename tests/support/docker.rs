//! The real Docker engine: whether it answers, `docker` commands and `inspect`, and tool
//! calls made from inside an agent's container.

use serde_json::Value;
use std::process::{Command, Stdio};

/// True when the Docker engine answers. Outside CI a test may skip without it (and says
/// so loudly); with `CI=true` a missing engine is a failure.
pub fn docker_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
            panic!("{test}: the Docker engine is required in CI (CI=true) but does not answer");
        }
        eprintln!(
            "\n!!! SKIPPED {test}: no Docker engine answers (this skip is not allowed in CI) !!!\n"
        );
    }
    ok
}

/// Runs `docker ARGS` and returns stdout (trimmed); panics with stderr on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `docker inspect` of one object as JSON.
pub fn inspect(id: &str) -> Value {
    let text = docker(&["inspect", id]);
    let v: Value = serde_json::from_str(&text).expect("inspect json");
    v[0].clone()
}

/// Runs `agenfleet-agent call` in container `cid` (`docker exec -i`, extra `exec_args`
/// before the container id), feeding it `calls` as JSON lines; answers the decisions.
pub fn container_calls(cid: &str, exec_args: &[&str], calls: &[Value]) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new("docker")
        .arg("exec")
        .arg("-i")
        .args(exec_args)
        .arg(cid)
        .args(["/agenfleet-agent", "call"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec");
    if let Some(mut stdin) = child.stdin.take() {
        for c in calls {
            writeln!(stdin, "{c}").expect("write a call");
        }
    }
    let out = child.wait_with_output().expect("docker exec output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad decision line {l:?}: {e}")))
        .collect()
}

/// Sends `request` (raw bytes) to `127.0.0.1:port` from inside container `cid` with
/// busybox nc, and answers all that came back. nc's input stays open until the other side
/// has answered and closed (nc may stop reading once its input ends).
pub fn nc(cid: &str, port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut child = Command::new("docker")
        .args(["exec", "-i", cid, "nc", "127.0.0.1", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker exec nc");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(request).expect("send the request");
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read the answer");
    drop(input);
    let _ = child.wait();
    String::from_utf8_lossy(&out).to_string()
}
