//! Job agents on the real engine (`cargo bench --bench jobs`; the binaries next to this
//! bench executable are used, target/release under `cargo bench`).
//!
//! 1. A signed webhook to a job agent (Debian's static busybox, exiting at once) → its
//!    run's container started: from just before the request is sent to the engine's own
//!    `start` event of the container labelled with the run (`docker events`, the engine's
//!    clock — the same host's). Each run is waited for to its end before the next.
//!    Also to the run's end as the daemon records it (`runs show --wait` answering).
//! 2. In the same run, the engine's own create + start of a container of the same image
//!    with the same hardening flags, over its API socket (no CLI), to the same `start`
//!    event: what the daemon adds is the difference.
//! 3. (1) again with the daemon in swarm mode on a one-node swarm made for it (left as
//!    found): each run a Swarm service of one task; its task's container's `start` event,
//!    and the run's end.
//!
//! N trials each (AGENFLEET_BENCH_TRIALS, default 20): p50 / p95 / max.

use agenfleet_e2e::*;
use agenfleet_protocol::triggers::signature;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One HTTP/1.1 request with `Connection: close`; answers the response's text.
fn http(
    mut s: impl Read + Write,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> String {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).expect("send");
    s.write_all(body).expect("send the body");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

/// The engine's API socket.
fn engine() -> std::os::unix::net::UnixStream {
    std::os::unix::net::UnixStream::connect("/var/run/docker.sock").expect("the engine's socket")
}

/// `docker events` for container starts with `label` since a second ago (replayed, so none
/// is missed while the stream connects): each start's (container id, its run label, time).
type Start = (String, String, u128);

fn starts(label: &str) -> (std::process::Child, mpsc::Receiver<Start>) {
    let since = (now_ms() / 1000).saturating_sub(1).to_string();
    let mut child = Command::new("docker")
        .args([
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--filter",
            &format!("label={label}"),
            "--since",
            &since,
            "--format",
            "{{.ID}} {{.TimeNano}} run={{index .Actor.Attributes \"agenfleet.run\"}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("docker events");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let mut w = line.split_whitespace();
            let (id, t, run) = (w.next(), w.next().and_then(|t| t.parse().ok()), w.next());
            if let (Some(id), Some(t), Some(run)) = (id, t, run) {
                let run = run.trim_start_matches("run=").to_string();
                if tx.send((id.to_string(), run, t)).is_err() {
                    return;
                }
            }
        }
    });
    (child, rx)
}

/// The start of the container `pick` matches (other starts are passed over).
fn start_of(rx: &mpsc::Receiver<Start>, pick: impl Fn(&Start) -> bool) -> u128 {
    loop {
        let s = rx.recv_timeout(WAIT).expect("the container starts");
        if pick(&s) {
            return s.2;
        }
    }
}

fn main() {
    let Some(image) = busybox_image("bench jobs") else {
        return;
    };
    let trials: usize = std::env::var("AGENFLEET_BENCH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let (job, ended) = webhook_runs(Mode::Containers, &image, trials);
    let job_p50 = report_ms("signed webhook → job container started", job);
    report_ms("signed webhook → job run ended (exit 0)", ended);

    // 2. The engine alone: create + start, same image and hardening, over its socket.
    let label = format!("agfbench.{}", rand_suffix());
    let (mut events, rx) = starts(&label);
    let create = serde_json::json!({
        "Image": image,
        "Cmd": ["sh", "-c", "exit 0"],
        "User": "65534:65534",
        "Labels": { label.clone(): "1" },
        "HostConfig": {
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "ReadonlyRootfs": true,
            "NetworkMode": "none",
            "Memory": 268435456,
            "PidsLimit": 64,
            "LogConfig": { "Type": "none" },
            "Tmpfs": { "/tmp": "rw,noexec,nosuid,size=16m" }
        }
    })
    .to_string();
    let mut engine_ms = Vec::new();
    let t = Instant::now();
    for i in 0..=trials {
        let t0 = now_ns();
        let created = http(
            engine(),
            "POST",
            "/containers/create",
            &[("Content-Type", "application/json".into())],
            create.as_bytes(),
        );
        let id = created
            .split("\"Id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("created: {created}"))
            .to_string();
        let started = http(
            engine(),
            "POST",
            &format!("/containers/{id}/start"),
            &[],
            b"",
        );
        assert!(started.starts_with("HTTP/1.1 204"), "{started}");
        let at = start_of(&rx, |s| s.0 == id);
        if i > 0 {
            engine_ms.push(at.saturating_sub(t0) as f64 / 1e6);
        }
        http(
            engine(),
            "POST",
            &format!("/containers/{id}/wait"),
            &[],
            b"",
        );
        http(
            engine(),
            "DELETE",
            &format!("/containers/{id}?force=true"),
            &[],
            b"",
        );
    }
    let _ = events.kill();
    let engine_p50 = report_ms("engine alone: create + start (its API)", engine_ms);
    println!(
        "the daemon adds p50 {:.1} ms to the engine's create + start ({} trials in {:.1} s)",
        job_p50 - engine_p50,
        trials,
        t.elapsed().as_secs_f64()
    );

    // 3. The same runs in swarm mode.
    let (job, ended) = webhook_runs(Mode::Swarm, &image, trials);
    report_ms(
        "swarm mode: signed webhook → run's task container started",
        job,
    );
    report_ms("swarm mode: signed webhook → job run ended (exit 0)", ended);
}

/// `trials` runs (after one to warm up) of a job agent exiting at once, each started by a
/// signed webhook and waited for to its end, with a daemon in `mode`: the milliseconds
/// from the request to its container's start, and to the run's end.
fn webhook_runs(mode: Mode, image: &str, trials: usize) -> (Vec<f64>, Vec<f64>) {
    let port = free_port();
    let d = mode
        .start(
            "bench jobs",
            "benchjobs",
            &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        )
        .expect("the engine");
    d.create(&format!(
        "name = \"job\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"exit 0\"]\n[runs]\nkind = \"job\"\n"
    ));
    d.wait_agent("job", "ready", WAIT, |v| v["state"] == "Running");
    d.json(&["vault", "init"]);
    let hook = d.json(&[
        "triggers",
        "add",
        "job",
        "--webhook",
        "--rate-per-min",
        "100000",
    ]);
    let (path, token, secret) = (
        hook["path"].as_str().expect("path").to_string(),
        hook["token"].as_str().expect("token").to_string(),
        hook["secret"].as_str().expect("secret").to_string(),
    );

    // 1. Webhook → the run's container started.
    let (mut events, rx) = starts(&format!("agenfleet.instance={}", d.instance));
    let (mut job, mut ended) = (Vec::new(), Vec::new());
    for i in 0..=trials {
        let body = format!("{{\"n\":{i}}}");
        let ts = (now_ms() / 1000).to_string();
        let headers = [
            ("Authorization", format!("Bearer {token}")),
            ("X-AgenFleet-Timestamp", ts.clone()),
            (
                "X-AgenFleet-Signature",
                signature(secret.as_bytes(), &ts, body.as_bytes()),
            ),
        ];
        let t0 = now_ns();
        let answer = http(
            std::net::TcpStream::connect(("127.0.0.1", port)).expect("listener"),
            "POST",
            &path,
            &headers,
            body.as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
        let run = answer
            .split("\"run\":")
            .nth(1)
            .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
            .expect("the run's id")
            .to_string();
        let started = start_of(&rx, |s| s.1 == run);
        let v = d.json(&["runs", "show", &run, "--wait"]);
        let t_end = now_ns();
        assert_eq!(v["state"], "succeeded", "{v}");
        // The first trial warms the image's resolution and the listener up.
        if i > 0 {
            job.push(started.saturating_sub(t0) as f64 / 1e6);
            ended.push(t_end.saturating_sub(t0) as f64 / 1e6);
        }
    }
    let _ = events.kill();
    (job, ended)
}
