//! The in-process tool-call decision (`cargo bench -p agenfleet-daemon --bench policy`):
//! parsing and checking the call, the agent's scopes, and Cedar over the tenant's policy —
//! what `authorize` spends before its audit record. The reference is the Cedar paper's
//! 4–11 µs median per authorization (and ~9.4 µs measured for cedar-policy 4.14 alone on
//! this machine kind, 50 tools and 3 policies, request building included).

use agenfleet_daemon::policy::{Kind, PolicyEngine};
use agenfleet_daemon::store::{AgentKey, Store};
use agenfleet_protocol::policy::{ToolCall, Verdict};
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let store = Store::open_in_memory().expect("store");
    // Rows of a tenant are written through its tenant-bound handle (the views' triggers).
    store
        .tenant("acme")
        .with(|c| {
            c.execute_batch(
                "INSERT INTO t_tenants (created_at_ms) VALUES (0);
                 INSERT INTO t_projects (id, created_at_ms) VALUES ('web', 0);
                 INSERT INTO t_agents (name, project_id, spec_json, desired, state, created_at_ms)
                    VALUES ('bot', 'web', '{}', 'running', 'running', 0);",
            )
        })
        .expect("seed");
    let engine = PolicyEngine::new(store, 60_000, 0).expect("engine");
    // 50 tools, 10 http scopes, 10 path prefixes — and the example policy (3 policies).
    let mut scopes = String::from("tools = [\"http_request\", \"read_file\", \"mcp\"");
    for i in 0..47 {
        scopes += &format!(", \"tool{i}\"");
    }
    scopes += "]\nmcp_servers = [\"github\"]\nread_paths = [";
    scopes += &(0..10)
        .map(|i| format!("\"/data/d{i}/\""))
        .collect::<Vec<_>>()
        .join(", ");
    scopes += "]\n";
    for i in 0..10 {
        scopes += &format!("[[http]]\nhost = \"*.svc{i}.example.com\"\nmethods = [\"GET\", \"POST\", \"DELETE\"]\n");
    }
    engine
        .publish(Kind::Scopes, "acme", "bot", &scopes, "bench", "")
        .expect("scopes");
    engine
        .publish(
            Kind::Policy,
            "acme",
            "",
            include_str!("../../assets/policy/example.cedar"),
            "bench",
            "",
        )
        .expect("policy");
    let key = AgentKey {
        tenant: "acme".into(),
        name: "bot".into(),
    };
    let calls = [
        (
            "allow: http GET in scope",
            "http_request",
            r#"{"method":"GET","url":"https://api.svc7.example.com/v1/items?page=2"}"#,
            Verdict::Allow,
        ),
        (
            "deny: forbid policy (DELETE)",
            "http_request",
            r#"{"method":"DELETE","url":"https://api.svc7.example.com/v1/items/3"}"#,
            Verdict::Deny,
        ),
        (
            "escalate: payments POST",
            "http_request",
            r#"{"method":"POST","url":"https://pay.svc1.example.com/charge"}"#,
            Verdict::Escalate,
        ),
        (
            "allow: read_file in scope",
            "read_file",
            r#"{"path":"/data/d9/report.csv"}"#,
            Verdict::Allow,
        ),
        (
            "deny: outside the scopes (no Cedar)",
            "read_file",
            r#"{"path":"/etc/shadow"}"#,
            Verdict::Deny,
        ),
        (
            "allow: custom tool",
            "tool31",
            r#"{"q":"quarterly numbers","limit":10}"#,
            Verdict::Allow,
        ),
    ];
    println!("# in-process decision: call checks + scopes + Cedar (50 tools, 3 policies + the built-in permit)");
    let n = 200_000;
    for (what, tool, args, expect) in calls {
        let call = ToolCall {
            tool: tool.into(),
            args_json: args.into(),
        };
        let first = engine.evaluate(&key, "web", &call, None);
        assert_eq!(first.verdict, expect, "{what}: {first:?}");
        let mut lat = Vec::with_capacity(n);
        let t0 = Instant::now();
        for _ in 0..n {
            let t = Instant::now();
            let ev = engine.evaluate(&key, "web", &call, None);
            lat.push(t.elapsed().as_nanos() as u64);
            std::hint::black_box(ev);
        }
        let total = t0.elapsed();
        lat.sort_unstable();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
        println!(
            "{what:<38} p50 {:>5.1} µs  p99 {:>5.1} µs  mean {:>5.1} µs  ({:.0} decisions/s on one core)",
            p(0.5),
            p(0.99),
            total.as_secs_f64() * 1e6 / n as f64,
            n as f64 / total.as_secs_f64()
        );
    }
    println!("reference: the Cedar paper reports a 4–11 µs median per authorization");
}
