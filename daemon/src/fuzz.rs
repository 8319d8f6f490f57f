//! Entry points of the fuzz targets in `fuzz/`: one per parser that takes input from a less
//! trusted party (a socket's frames, config, spec, scopes and policy text, audit segments,
//! an agent's tool call, a webhook's signature headers). Each runs the real code on
//! arbitrary bytes and checks what must hold of its answer; a panic is a finding. The
//! regression test `daemon/tests/fuzz_regressions.rs` replays every input the fuzzers kept
//! through the same functions, so a finding stays fixed in the normal suite.

use agenfleet_protocol::policy::{parse_call, ParsedCall, Scopes, Target, ToolCall};
use futures::StreamExt;
use std::sync::OnceLock;

/// The targets, by the name of their directory under `fuzz/`.
pub const TARGETS: &[&str] = &[
    "rpc_frames",
    "gateway_frames",
    "config_toml",
    "spec_toml",
    "scopes_toml",
    "cedar_policy",
    "audit_segment",
    "tool_call",
    "webhook_signature",
    "proxy_head",
];

/// Runs target `name` on `data`. Unknown names panic (a typo in a fuzz target).
pub fn run(name: &str, data: &[u8]) {
    match name {
        "rpc_frames" => {
            fleet_frames(data);
        }
        "gateway_frames" => {
            frames::<
                tarpc::ClientMessage<agenfleet_protocol::gateway::GatewayRequest>,
                tarpc::Response<agenfleet_protocol::gateway::GatewayResponse>,
            >(data, 64 * 1024);
        }
        "config_toml" => config_toml(data),
        "spec_toml" => spec_toml(data),
        "scopes_toml" => scopes_toml(data),
        "cedar_policy" => cedar_policy(data),
        "audit_segment" => audit_segment(data),
        "tool_call" => tool_call(data),
        "webhook_signature" => webhook_signature(data),
        "proxy_head" => proxy_head(data),
        other => panic!("no fuzz target `{other}`"),
    }
}

fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the fuzz target")
    })
}

fn fleet_frames(data: &[u8]) -> usize {
    frames::<
        tarpc::ClientMessage<agenfleet_protocol::service::FleetRequest>,
        tarpc::Response<agenfleet_protocol::service::FleetResponse>,
    >(data, 64 * 1024)
}

/// The bytes as they would arrive on a socket, decoded by the daemon's own transport
/// (length prefix with its limit, then bincode) until it ends or errs; answers how many
/// messages decoded.
fn frames<In, Out>(data: &[u8], max_frame: usize) -> usize
where
    In: for<'de> serde::Deserialize<'de> + Send + Unpin + 'static,
    Out: serde::Serialize + Send + Unpin + 'static,
{
    runtime().block_on(async {
        use tokio::io::AsyncWriteExt;
        let (mut a, b) = tokio::io::duplex(data.len().max(1));
        // The pipe holds all of it: this write completes at once.
        let _ = a.write_all(data).await;
        drop(a);
        let t = agenfleet_protocol::transport::server_transport::<_, In, Out>(b, max_frame);
        let mut t = std::pin::pin!(t);
        let mut n = 0;
        while let Some(item) = t.next().await {
            if item.is_err() {
                break;
            }
            n += 1;
        }
        n
    })
}

fn config_toml(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(cfg) = crate::config::Config::parse(t, "fuzz.toml".into()) {
        assert!(cfg.max_connections_per_uid <= cfg.max_connections);
    }
}

fn spec_toml(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(spec) = agenfleet_protocol::AgentSpec::from_toml(t) {
        if spec.validate().is_ok() {
            let _ = spec.memory_limit_bytes();
            assert_eq!(spec.hash(), spec.hash());
        }
    }
}

fn scopes_toml(data: &[u8]) {
    let Some(t) = text(data) else { return };
    if let Ok(s) = Scopes::parse(t) {
        // Valid scopes survive a round trip through their own text.
        let again = toml::to_string(&s).expect("scopes serialize");
        let back = Scopes::parse(&again).expect("serialized scopes parse again");
        assert_eq!(back, s);
    }
}

fn cedar_policy(data: &[u8]) {
    static CEDAR: OnceLock<crate::policy::cedar::Cedar> = OnceLock::new();
    let Some(t) = text(data) else { return };
    let c = CEDAR.get_or_init(|| crate::policy::cedar::Cedar::new().expect("the schema loads"));
    match c.compile(t) {
        Ok(compiled) => {
            // A policy that compiled decides a call without panicking.
            if let (Ok((a, e)), Ok(call)) = (
                c.agent_entities("acme", "web", "bot"),
                parse_call(&ToolCall {
                    tool: "read_file".into(),
                    args_json: r#"{"path":"/data/x"}"#.into(),
                }),
            ) {
                let _ = c.evaluate(&compiled, &a, &e, &call);
            }
        }
        Err(problems) => assert!(!problems.is_empty(), "an error names a problem"),
    }
}

fn audit_segment(data: &[u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let shm = std::path::Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!(
        "agf-fuzz-audit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let seg = dir.join(crate::audit::format::segment_name(1));
    if std::fs::write(&seg, data).is_ok() {
        let report = crate::audit::verify_dir(&dir, None);
        if report.valid {
            assert!(report.first_bad.is_none());
        }
        let mut n = 0u64;
        let _ = crate::audit::format::read_segment(&seg, |_| n += 1);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first byte picks the tool; the rest is its arguments' JSON.
fn tool_call(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Some(args) = text(rest) else { return };
    let tool = ["http_request", "read_file", "mcp", "search"][usize::from(pick % 4)];
    let call = ToolCall {
        tool: tool.into(),
        args_json: args.into(),
    };
    let Ok(p) = parse_call(&call) else { return };
    // The canonical form is a fixed point: parsing its own arguments gives it back.
    let again: ParsedCall = parse_call(&ToolCall {
        tool: tool.into(),
        args_json: p.canonical_args.clone(),
    })
    .expect("canonical arguments parse again");
    assert_eq!(again, p, "canonical form of {args:?}");
    match &p.target {
        Target::File { path } => {
            assert!(!path.contains("//") && (path == "/" || !path.ends_with('/')));
        }
        Target::Http { host, path, .. } => {
            assert!(!host.ends_with('.') && !path.contains("//"));
        }
        _ => {}
    }
}

/// An egress proxy request head: what is parsed is what is decided and what is connected
/// to — the decision's host and port are the connection's.
fn proxy_head(data: &[u8]) {
    let Ok(r) = crate::rpc::egress::parse_head(data) else {
        return;
    };
    assert!(!r.host.is_empty() && r.port > 0, "{r:?}");
    if r.method != "CONNECT" {
        let mut headers = [httparse::EMPTY_HEADER; 80];
        let mut up = httparse::Request::new(&mut headers);
        assert!(
            matches!(up.parse(&r.upstream_head), Ok(httparse::Status::Complete(n)) if n == r.upstream_head.len()),
            "the upstream head is not one whole request: {:?}",
            String::from_utf8_lossy(&r.upstream_head)
        );
        assert_eq!(up.method, Some(r.method.as_str()));
    }
    let call = ToolCall {
        tool: "http_request".into(),
        args_json: serde_json::json!({"method": r.method, "url": r.url}).to_string(),
    };
    if let Ok(p) = parse_call(&call) {
        let Target::Http { host, port, .. } = &p.target else {
            panic!("an http_request that is not an http target")
        };
        assert_eq!(*port, r.port, "{r:?}");
        assert_eq!(
            host.trim_end_matches('.'),
            r.host.trim_end_matches('.').to_ascii_lowercase(),
            "decided on one host, connecting to another: {r:?}"
        );
    }
}

/// Bytes split at the first two newlines: timestamp header, signature header, body.
fn webhook_signature(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let ts = parts.next().and_then(text);
    let sig = parts.next().and_then(text);
    let body = parts.next().unwrap_or_default();
    let secret = b"fuzz-secret-0123456789";
    let now = 1_700_000_000;
    let r = agenfleet_protocol::incidents::verify(secret, ts, sig, body, now);
    if r.is_ok() {
        // Only a real signature over exactly this body passes.
        let ts: u64 = ts.unwrap_or_default().trim().parse().expect("checked");
        assert_eq!(
            sig.map(|s| s.trim().to_ascii_lowercase()),
            Some(agenfleet_protocol::incidents::sign(secret, ts, body))
        );
    }
}

/// Seed inputs of each target, made from the values the tests use (real requests encoded
/// by the real transport, the README's spec, the shipped policy, a segment written by the
/// real encoder, a signed webhook): `(target, name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use agenfleet_protocol::gateway::GatewayRequest;
    use agenfleet_protocol::service::FleetRequest;
    let mut out = Vec::new();
    let mut add = |t: &'static str, n: &str, b: Vec<u8>| out.push((t, n.to_string(), b));

    let fleet = [
        FleetRequest::Hello {
            protocol_version: agenfleet_protocol::PROTOCOL_VERSION,
        },
        FleetRequest::Status {},
        FleetRequest::ListAgents {},
        FleetRequest::AuditQuery {
            query: agenfleet_protocol::AuditQuery {
                action: Some("operator.note".into()),
                limit: 50,
                ..Default::default()
            },
            max_wait_ms: 0,
        },
    ];
    for (i, m) in fleet.into_iter().enumerate() {
        add("rpc_frames", &format!("request-{i}"), encode_frame(m));
    }
    let gateway = [
        GatewayRequest::Hello {
            protocol_version: agenfleet_protocol::PROTOCOL_VERSION,
        },
        GatewayRequest::Credentials {},
        GatewayRequest::Authorize {
            call: ToolCall {
                tool: "read_file".into(),
                args_json: r#"{"path":"/data/reports/q3.csv"}"#.into(),
            },
        },
    ];
    for (i, m) in gateway.into_iter().enumerate() {
        add("gateway_frames", &format!("request-{i}"), encode_frame(m));
    }

    for (i, head) in [
        "GET http://api.example.com/v1/x?q=1 HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n",
        "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
        "POST http://10.0.0.7:8080/hook HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nContent-Length: 2\r\n\r\n",
    ]
    .into_iter()
    .enumerate()
    {
        add("proxy_head", &format!("head-{i}"), head.as_bytes().to_vec());
    }
    add(
        "config_toml",
        "all-keys",
        b"state_dir = \"/var/lib/agenfleet\"\nsocket_mode = 0o660\nmax_frame_bytes = 65536\n\
max_connections = 100\nmax_connections_per_uid = 10\nidle_timeout_secs = 60\nframe_timeout_secs = 5\n\
log_ring_lines = 50\nstats_interval_ms = 500\nnetwork_pool = \"10.213.0.0/16\"\nnetwork_prefix = 28\n\
crash_loop_exits = 3\ndenial_spike = 20\napproval_ttl_secs = 600\n\
[[incident_route]]\nparty = \"client\"\ncommand = [\"/bin/true\"]\n"
            .to_vec(),
    );
    add(
        "spec_toml",
        "readme",
        b"name = \"triage-bot\"\ntenant = \"acme\"\nproject = \"support\"\nimage = \"agenfleet/agent\"\n\
credentials = [\"api-key\"]\n[limits]\nmemory_mb = 256\ncpus = 1.0\npids = 128\n\
[restart]\nmode = \"fail\"\nattempts = 5\ninterval_secs = 300\ndelay_ms = 1000\nmax_delay_ms = 30000\n\
[network]\nmode = \"none\"\n[workload]\nmessage = \"working\"\nlog_interval_ms = 1000\n\
[[workload.tool_calls]]\ntool = \"read_file\"\nargs = { path = \"/data/reports/q3.csv\" }\n"
            .to_vec(),
    );
    add(
        "scopes_toml",
        "full",
        b"tools = [\"http_request\", \"read_file\", \"mcp\", \"search\"]\n\
read_paths = [\"/data/reports/\", \"/etc/app\"]\nmcp_servers = [\"github\"]\n\
[[http]]\nhost = \"api.example.com\"\nmethods = [\"GET\", \"POST\"]\n\
[[http]]\nhost = \"*.internal.example\"\npath_prefix = \"/v1\"\nmethods = [\"GET\"]\n"
            .to_vec(),
    );
    add(
        "cedar_policy",
        "example",
        include_bytes!("../../assets/policy/example.cedar").to_vec(),
    );

    let mut seg = crate::audit::format::segment_header(1).to_vec();
    let mut prev = crate::audit::format::GENESIS;
    for seq in 1..=3u64 {
        let ev = agenfleet_protocol::AuditEvent {
            actor: "root (uid 0)".into(),
            action: "operator.note".into(),
            tenant: None,
            agent: None,
            outcome: "ok".into(),
            detail: format!("note {seq}"),
        };
        let bytes = serde_json::to_vec(&ev).unwrap_or_default();
        prev = crate::audit::format::encode(&mut seg, seq, 1_700_000_000_000 + seq, &prev, &bytes);
    }
    add("audit_segment", "three-notes", seg);

    for (i, (tool, args)) in [
        (1u8, r#"{"path":"//data/secrets/a"}"#),
        (
            0,
            r#"{"method":"get","url":"https://API.example.com./v1/%61dmin?x=1#f"}"#,
        ),
        (2, r#"{"server":"github","tool":"list_issues"}"#),
        (3, r#"{"q":"anything","n":[1,2,{"b":1,"a":2}]}"#),
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = vec![tool];
        b.extend_from_slice(args.as_bytes());
        add("tool_call", &format!("call-{i}"), b);
    }

    let body = br#"{"incident":1}"#;
    let sig = agenfleet_protocol::incidents::sign(b"fuzz-secret-0123456789", 1_700_000_000, body);
    add(
        "webhook_signature",
        "signed",
        [b"1700000000\n".as_slice(), sig.as_bytes(), b"\n", body].concat(),
    );
    out
}

/// One request as the client's transport writes it (length prefix, bincode).
fn encode_frame<T>(message: T) -> Vec<u8>
where
    T: serde::Serialize + for<'de> serde::Deserialize<'de> + Send + Unpin + 'static,
{
    use futures::SinkExt;
    use tokio::io::AsyncReadExt;
    runtime().block_on(async {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut t = agenfleet_protocol::transport::transport::<
            _,
            tarpc::Response<()>,
            tarpc::ClientMessage<T>,
        >(a, 1 << 20);
        let msg = tarpc::ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 1,
            message,
        });
        let _ = t.send(msg).await;
        drop(t);
        let mut out = Vec::new();
        let _ = b.read_to_end(&mut out).await;
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_frame_seeds_are_real_requests() {
        let seeds = super::seeds();
        let frames: Vec<_> = seeds.iter().filter(|s| s.0 == "rpc_frames").collect();
        assert!(!frames.is_empty());
        for (_, name, data) in frames {
            assert_eq!(super::fleet_frames(data), 1, "{name}");
            // Two of them back to back are two requests; a cut one is none.
            assert_eq!(super::fleet_frames(&[data.as_slice(), data].concat()), 2);
            assert_eq!(super::fleet_frames(&data[..data.len() - 1]), 0);
        }
    }
}
