//! Model calls through the gateway against the same calls made directly
//! (`cargo bench --bench providers`, release binaries, real engine). The provider is a TLS
//! stub on the host (tests/support/provider_stub.rs, certificate from a test CA). Directly:
//! a keep-alive TLS client in this process. Through the gateway: `agenfleet-agent
//! http-bench post` inside agents' containers (Debian's busybox image), plain HTTP on one
//! keep-alive connection to the local API, where each call is bound-checked, decided
//! (`model.call`, durable record), sent with the tenant's key over the daemon's pooled TLS
//! connection, metered and recorded.
//!
//! 1. One call at a time: added latency p50/p99 and added time to the answer's first byte
//!    (a streamed answer: its head and first event).
//! 2. 16 agents at once vs 16 direct clients: calls per second.
//! 3. The daemon's RSS over AGF_PROVIDER_BENCH_CALLS metered calls (default 1,000,000).

use agenfleet_e2e::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BODY: &str = r#"{"model":"gpt-test","messages":[{"role":"user","content":"hello"}]}"#;
const ANSWER: &str = r#"{"id":"c","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":30}}"#;

fn agent_post(cid: &str, provider: &str, n: usize) -> Command {
    let mut c = Command::new("docker");
    c.args([
        "exec",
        cid,
        "/run/agenfleet/bin/agenfleet-agent",
        "http-bench",
        "post",
        &format!("http://127.0.0.1:4180/providers/{provider}/v1/chat/completions"),
        &n.to_string(),
        BODY,
    ]);
    c
}

/// N POSTs on one keep-alive TLS connection to the stub, from this process: (latencies,
/// times to first byte), µs.
fn direct_post(
    port: u16,
    ca_pem: &str,
    n: usize,
    start_at: Option<u64>,
) -> (Vec<f64>, Vec<f64>, u64) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.expect("CA")).expect("root");
    }
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    if let Some(at) = start_at {
        std::thread::sleep(Duration::from_millis(at.saturating_sub(now_ms())));
    }
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    tcp.set_nodelay(true).ok();
    let conn =
        rustls::ClientConnection::new(config, "localhost".try_into().expect("name")).expect("tls");
    let mut s = BufReader::new(rustls::StreamOwned::new(conn, tcp));
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-direct\r\nContent-Length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let (mut lat, mut first) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let t = Instant::now();
        s.get_mut().write_all(req.as_bytes()).expect("write");
        s.get_mut().flush().expect("flush");
        let mut line = String::new();
        s.read_line(&mut line).expect("status");
        first.push(t.elapsed().as_secs_f64() * 1e6);
        let (mut len, mut chunked) = (0usize, false);
        loop {
            let mut h = String::new();
            s.read_line(&mut h).expect("header");
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            chunked |= h.starts_with("transfer-encoding:") && h.contains("chunked");
        }
        if chunked {
            loop {
                let mut size = String::new();
                s.read_line(&mut size).expect("chunk size");
                let k = usize::from_str_radix(size.trim(), 16).expect("hex");
                let mut c = vec![0u8; k + 2];
                s.read_exact(&mut c).expect("chunk");
                if k == 0 {
                    break;
                }
            }
        } else {
            let mut b = vec![0u8; len];
            s.read_exact(&mut b).expect("body");
        }
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    (lat, first, now_ms())
}

fn q(v: &[f64], p: f64) -> f64 {
    let mut x = v.to_vec();
    x.sort_by(|a, b| a.total_cmp(b));
    x.get(((x.len().max(1) - 1) as f64 * p) as usize)
        .copied()
        .unwrap_or(0.0)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("providers bench") {
        return;
    }
    let Some(image) = busybox_image("providers bench") else {
        return;
    };
    let total: usize = std::env::var("AGF_PROVIDER_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let ca = TestCa::new();
    let stub = ProviderStub::start(
        &ca,
        Answer::Json {
            status: 200,
            body: ANSWER.into(),
        },
    );
    let sse = ProviderStub::start(
        &ca,
        Answer::Sse {
            events: vec![
                r#"{"choices":[{"delta":{"content":"a"}}]}"#.into(),
                r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":1}}"#.into(),
            ],
            gap: Duration::ZERO,
        },
    );
    // The stub keeps every request it got; this bench sends a million.
    let forget = |s: &ProviderStub| {
        let seen = s.seen.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            if let Ok(mut v) = seen.lock() {
                v.clear();
            }
        });
    };
    forget(&stub);
    forget(&sse);
    println!(
        "# providers: model calls through the gateway vs directly — 2 cores, TLS stub on the host"
    );
    let d = Daemon::start(
        "provbench",
        "stats_interval_ms = 5000\naudit_checkpoint_every = 100000",
    );
    d.json(&["vault", "init"]);
    let ca_file = d.file("ca.pem", &ca.pem);
    for (name, s) in [("openai", &stub), ("streamed", &sse)] {
        let out = d.cli_stdin(
            &[
                "providers",
                "add",
                name,
                "--kind",
                "openai",
                "--base-url",
                &s.base_url(),
                "--ca-file",
                &ca_file,
            ],
            "sk-bench-key",
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names: Vec<String> = (0..16).map(|i| format!("pm-{i:02}")).collect();
    for n in &names {
        d.create(&format!(
            "name = \"{n}\"\nimage = \"{image}\"\nproviders = [\"openai\", \"streamed\"]\ncommand = [\"sleep\", \"1000000\"]\n[limits]\nmemory_mb = 64\n"
        ));
    }
    let cids: Vec<String> = names
        .iter()
        .map(|n| d.running_container(n, Duration::from_secs(60)))
        .collect();
    // Warm both paths (pools, page cache).
    run_json(agent_post(&cids[0], "openai", 200));
    direct_post(stub.port, &ca.pem, 200, None);

    // 1. One call at a time, 3 rounds alternating; medians of the rounds.
    let n = 2000;
    let (mut dl, mut pl) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let direct = || {
            let (lat, first, _) = direct_post(stub.port, &ca.pem, n, None);
            (q(&lat, 0.5), q(&lat, 0.99), q(&first, 0.5), q(&first, 0.99))
        };
        let proxied = || {
            let r = run_json(agent_post(&cids[0], "openai", n));
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            (f("p50_us"), f("p99_us"), f("fb50_us"), f("fb99_us"))
        };
        if round % 2 == 0 {
            dl.push(direct());
            pl.push(proxied());
        } else {
            pl.push(proxied());
            dl.push(direct());
        }
    }
    let med = |v: &[(f64, f64, f64, f64)], k: usize| {
        let mut x: Vec<f64> = v.iter().map(|t| [t.0, t.1, t.2, t.3][k]).collect();
        x.sort_by(|a, b| a.total_cmp(b));
        x[x.len() / 2]
    };
    println!("1 call at a time, keep-alive, {n} × 3 rounds (medians of rounds):");
    println!(
        "  direct (TLS from the host)  p50 {:6.0} µs  p99 {:6.0} µs",
        med(&dl, 0),
        med(&dl, 1)
    );
    println!(
        "  through the gateway         p50 {:6.0} µs  p99 {:6.0} µs",
        med(&pl, 0),
        med(&pl, 1)
    );
    println!(
        "  added: p50 {:.0} µs, p99 {:.0} µs  (targets: p50 ≤ 1000 µs, p99 ≤ 5000 µs)",
        med(&pl, 0) - med(&dl, 0),
        med(&pl, 1) - med(&dl, 1)
    );
    // First byte of a streamed answer.
    let (mut fd, mut fp) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let (_, first, _) = direct_post(sse.port, &ca.pem, 1000, None);
        fd.push(q(&first, 0.5));
        fp.push(
            run_json(agent_post(&cids[0], "streamed", 1000))["fb50_us"]
                .as_f64()
                .unwrap_or(0.0),
        );
    }
    fd.sort_by(|a, b| a.total_cmp(b));
    fp.sort_by(|a, b| a.total_cmp(b));
    println!(
        "streamed answer, first byte (p50, median of 3): direct {:.0} µs, through the gateway {:.0} µs: added {:.0} µs  (target ≤ 2000 µs)",
        fd[1],
        fp[1],
        fp[1] - fd[1]
    );

    // 2. 16 at once, all starting at one wall-clock instant.
    let each = 500;
    let at = now_ms() + 3000;
    let direct_rate = {
        let ends: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|_| s.spawn(|| direct_post(stub.port, &ca.pem, each, Some(at)).2))
                .collect();
            hs.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        (16 * each) as f64
            / ((ends.iter().max().copied().unwrap_or(at) - at).max(1) as f64 / 1000.0)
    };
    let agents_at_once = |per: usize| -> (f64, Vec<Value>) {
        together(cids.iter().map(|c| agent_post(c, "openai", per)).collect())
    };
    let (proxied_rate, _) = agents_at_once(each);
    println!("16 at once ({each} calls each, keep-alive):");
    println!(
        "  direct: {direct_rate:.0} calls/s; through the gateway: {proxied_rate:.0} calls/s = {:.0}%",
        100.0 * proxied_rate / direct_rate
    );

    // 3. RSS over many metered calls.
    let pid = d.pid();
    // Calls made through the gateway so far (warm-up, rounds, streamed, 16 at once).
    let mut done = 200 + 3 * n + 3 * 1000 + 16 * each;
    println!("daemon RSS over metered calls (16 agents at once):");
    println!("  after {done:>9} calls: {:.1} MB", rss_mb(pid));
    let step = (total / 4).max(16);
    let t = Instant::now();
    while done < total {
        let per = (step.min(total - done) / 16).max(1);
        let (rate, _) = agents_at_once(per);
        done += per * 16;
        println!(
            "  after {done:>9} calls: {:.1} MB  ({rate:.0} calls/s, {:.0} s so far)",
            rss_mb(pid),
            t.elapsed().as_secs_f64()
        );
    }
    let usage = d.json(&["usage"]);
    let tenant = usage
        .as_array()
        .and_then(|r| r.iter().find(|x| x["agent"] == "").cloned())
        .unwrap_or(Value::Null);
    println!(
        "  metered: {} calls, {} tokens in the last hour (tenant total)",
        tenant["last_hour"]["calls"], tenant["last_hour"]["tokens_in"]
    );
}
