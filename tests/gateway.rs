//! End-to-end: tool calls decided by the agent gateway — on the real daemon, through the
//! real gateway socket, from processes inside the agent's real container. Scopes are the
//! outer bound, Cedar policies forbid or escalate, a person decides escalations, and every
//! decision is in the audit log.

use agenfleet_e2e::*;
use serde_json::{json, Value};
use std::process::Command;
use std::time::Duration;

fn agent_spec(name: &str) -> String {
    format!("name = \"{name}\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n")
}

fn publish_scopes(d: &Daemon, agent: &str, text: &str) -> Value {
    let f = d.file(&format!("scopes-{agent}.toml"), text);
    d.json(&["scopes", "publish", agent, &f])
}

fn http(method: &str, url: &str) -> Value {
    json!({"tool": "http_request", "args": {"method": method, "url": url}})
}

/// A small deterministic generator (xorshift), so a failure names its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
    /// Each element with probability 3/4.
    fn subset<'a>(&mut self, xs: &[&'a str]) -> Vec<&'a str> {
        xs.iter()
            .copied()
            .filter(|_| !self.next().is_multiple_of(4))
            .collect()
    }
}

struct HttpRule {
    host: String,
    methods: Vec<String>,
    prefix: Option<String>,
}

struct Model {
    tools: Vec<String>,
    http: Vec<HttpRule>,
    paths: Vec<String>,
    servers: Vec<String>,
}

/// Random scopes, as TOML and as the test's own model of what they allow.
fn random_scopes(r: &mut Rng) -> (String, Model) {
    let tools = r.subset(&["http_request", "read_file", "mcp", "search", "send_email"]);
    let mut text = format!("tools = {:?}\n", tools);
    let mut m = Model {
        tools: tools.iter().map(|s| s.to_string()).collect(),
        http: vec![],
        paths: vec![],
        servers: vec![],
    };
    if tools.contains(&"read_file") {
        let p = r.subset(&["/data/", "/etc/app", "/home/agent/notes"]);
        text += &format!("read_paths = {p:?}\n");
        m.paths = p.iter().map(|s| s.to_string()).collect();
    }
    if tools.contains(&"mcp") {
        let s = r.subset(&["github", "jira"]);
        text += &format!("mcp_servers = {s:?}\n");
        m.servers = s.iter().map(|s| s.to_string()).collect();
    }
    if tools.contains(&"http_request") {
        for _ in 0..(1 + r.next() % 3) {
            let host = r.pick(&[
                "api.example.com",
                "*.example.com",
                "pay.example.org",
                "10.0.0.5",
            ]);
            let mut methods = r.subset(&["GET", "POST", "DELETE"]);
            if methods.is_empty() {
                methods.push("GET");
            }
            let prefix = r.next().is_multiple_of(2).then_some("/v1");
            text += &format!("[[http]]\nhost = \"{host}\"\nmethods = {methods:?}\n");
            if let Some(p) = prefix {
                text += &format!("path_prefix = \"{p}\"\n");
            }
            m.http.push(HttpRule {
                host: host.into(),
                methods: methods.iter().map(|s| s.to_string()).collect(),
                prefix: prefix.map(str::to_string),
            });
        }
    }
    (text, m)
}

/// A random call, and whether the test's model says the scopes allow it.
fn random_call(r: &mut Rng, m: &Model) -> (Value, bool) {
    let under = |path: &str, prefix: &str| {
        if prefix.ends_with('/') {
            path.starts_with(prefix)
        } else {
            path == prefix || path.starts_with(&format!("{prefix}/"))
        }
    };
    let listed = |t: &str| m.tools.iter().any(|x| x == t);
    match r.next() % 4 {
        0 => {
            let method = r.pick(&["GET", "POST", "DELETE", "PUT"]);
            let host = r.pick(&[
                "api.example.com",
                "a.example.com",
                "example.com",
                "evil.com",
                "pay.example.org",
                "api.example.com.evil.com",
                "10.0.0.5",
            ]);
            // (path as sent, path after URL normalisation)
            let (path, norm) = *[
                ("/v1/x", "/v1/x"),
                ("/v10", "/v10"),
                ("/", "/"),
                ("/v1/../admin", "/admin"),
            ]
            .get((r.next() % 4) as usize)
            .expect("in range");
            let host_ok = |pat: &str| match pat.strip_prefix("*.") {
                Some(d) => host.ends_with(&format!(".{d}")),
                None => pat == host,
            };
            let ok = listed("http_request")
                && m.http.iter().any(|h| {
                    host_ok(&h.host)
                        && h.methods.iter().any(|x| x == method)
                        && h.prefix.as_deref().is_none_or(|p| under(norm, p))
                });
            (http(method, &format!("https://{host}{path}")), ok)
        }
        1 => {
            let path = r.pick(&[
                "/data/x.csv",
                "/data",
                "/etc/app",
                "/etc/app/c",
                "/etc/application",
                "/home/agent/notes/a",
                "/data/../etc/shadow",
            ]);
            let ok = listed("read_file")
                && !path.contains("..")
                && m.paths.iter().any(|p| under(path, p));
            (json!({"tool": "read_file", "args": {"path": path}}), ok)
        }
        2 => {
            let server = r.pick(&["github", "jira", "gitlab"]);
            let ok = listed("mcp") && m.servers.iter().any(|s| s == server);
            (
                json!({"tool": "mcp", "args": {"server": server, "tool": "list_issues"}}),
                ok,
            )
        }
        _ => {
            let tool = r.pick(&["search", "send_email", "shell"]);
            (json!({"tool": tool, "args": {"q": "x"}}), listed(tool))
        }
    }
}

#[test]
fn calls_outside_random_scopes_are_denied_every_time_through_the_real_socket() {
    if !docker_available(
        "calls_outside_random_scopes_are_denied_every_time_through_the_real_socket",
    ) {
        return;
    }
    let d = Daemon::start("gw-prop", "");
    d.create(&agent_spec("prop"));
    d.wait_agent("prop", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    let seed = 0x5eed_0001_u64 ^ u64::from(std::process::id());
    let mut r = Rng(seed);
    let (mut total, mut denied) = (0usize, 0usize);
    for round in 0..8 {
        let (text, model) = random_scopes(&mut r);
        publish_scopes(&d, "prop", &text);
        let cases: Vec<(Value, bool)> = (0..40).map(|_| random_call(&mut r, &model)).collect();
        let calls: Vec<Value> = cases.iter().map(|c| c.0.clone()).collect();
        let decisions = d.gateway_calls("prop", &calls);
        assert_eq!(decisions.len(), cases.len(), "seed {seed:#x} round {round}");
        for ((call, allowed), dec) in cases.iter().zip(&decisions) {
            assert_eq!(
                dec["allowed"].as_bool(),
                Some(*allowed),
                "seed {seed:#x} round {round}: scopes\n{text}\ncall {call}\ndecision {dec}"
            );
            assert!(
                dec["decision_id"].as_u64().is_some(),
                "every decision is recorded: {dec}"
            );
            if !allowed {
                denied += 1;
                assert_eq!(dec["verdict"], "deny", "{dec}");
            }
        }
        total += cases.len();
    }
    assert!(
        denied >= 40 && total - denied >= 40,
        "a useful mix: {denied} of {total} denied"
    );
    // Every decision is in the audit log, with its outcome.
    let records = d.json(&[
        "audit",
        "search",
        "--action",
        "tool.decide",
        "--agent",
        "prop",
        "--limit",
        "5000",
    ]);
    let records = records.as_array().expect("array");
    assert_eq!(records.len(), total);
    let denies = records
        .iter()
        .filter(|e| e["event"]["outcome"] == "deny")
        .count();
    assert_eq!(denies, denied);

    // The pulse counts the same decisions once their bucket has closed (`--wait`: the
    // one being filled now), and shows the agent running.
    let pulse = d.json(&["pulse", "--wait"]);
    let buckets = pulse["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 60, "ten minutes of 10 s buckets: {pulse}");
    let sum = |k: &str| {
        buckets
            .iter()
            .map(|b| b[k].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("denied") as usize, denied, "{pulse}");
    assert_eq!(sum("allowed") as usize, total - denied, "{pulse}");
    assert_eq!(buckets[59]["running"], 1, "{pulse}");
    // The agent's own memory history fills in as the stats are sampled.
    let history = wait_for(
        Duration::from_secs(60),
        "a memory sample in the agent's history",
        || {
            let h = d.json(&["pulse", "--agent", "prop", "--wait"]);
            let points = h["points"].as_array()?;
            points
                .iter()
                .any(|p| p["memory_bytes"].as_u64().is_some_and(|m| m > 0))
                .then_some(h)
        },
    );
    let out = d.cli(&["pulse", "--agent", "prop"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("memory") && text.contains("cpu") && text.contains("PEAK"),
        "{text}\n{history}"
    );
}

const POLICY: &str = r#"
@id("explicit-permit")
permit (principal, action, resource) when { context.method == "DELETE" };

@id("no-deletes")
forbid (principal, action, resource == AgenFleet::Tool::"http_request")
when { context.method == "DELETE" };

@id("overflow")
forbid (principal, action, resource == AgenFleet::Tool::"read_file")
when { context.arg_bytes * 9223372036854775807 > 0 };

@id("payments")
@escalate("payments are reviewed by a person")
@timeout_ms("30000")
forbid (principal, action, resource == AgenFleet::Tool::"http_request")
when { context.host like "pay*" && context.method == "POST" && !(context.url_path like "/slow*") };

@id("slow-payments")
@escalate("slow lane")
@timeout_ms("1500")
forbid (principal, action, resource == AgenFleet::Tool::"http_request")
when { context.host like "pay*" && context.url_path like "/slow*" };
"#;

const PAYER_SCOPES: &str = r#"
tools = ["http_request", "read_file"]
read_paths = ["/data/"]
[[http]]
host = "*.example.com"
methods = ["GET", "POST", "DELETE"]
"#;

/// Starts a call in the background (it may wait for a person); join for its decision.
fn call_in_background(d: &Daemon, agent: &str, call: Value) -> std::thread::JoinHandle<Value> {
    let cid = d.agent(agent)["container_id"]
        .as_str()
        .expect("container")
        .to_string();
    std::thread::spawn(move || {
        container_calls(&cid, &[], &[call])
            .pop()
            .expect("one decision")
    })
}

fn wait_pending(d: &Daemon, n: usize) -> Vec<Value> {
    d.wait_pending(n, Duration::from_secs(20))
}

#[test]
fn forbid_beats_permit_errors_deny_and_escalations_end_as_a_person_says() {
    if !docker_available("forbid_beats_permit_errors_deny_and_escalations_end_as_a_person_says") {
        return;
    }
    let d = Daemon::start("gw-policy", "");
    d.create(&agent_spec("payer"));
    d.wait_agent("payer", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    publish_scopes(&d, "payer", PAYER_SCOPES);
    let f = d.file("policy.cedar", POLICY);
    let v = d.json(&["policy", "publish", "default", &f, "--note", "test policy"]);
    assert_eq!(v["version"], 1);

    let out = d.gateway_calls(
        "payer",
        &[
            http("DELETE", "https://api.example.com/a"),
            json!({"tool": "read_file", "args": {"path": "/data/a"}}),
            http("GET", "https://api.example.com/a"),
        ],
    );
    assert_eq!(out[0]["allowed"], false, "forbid beats permit: {}", out[0]);
    assert_eq!(out[0]["policies"], json!(["no-deletes"]));
    assert_eq!(out[1]["allowed"], false, "{}", out[1]);
    assert!(
        out[1]["reason"]
            .as_str()
            .unwrap()
            .contains("evaluation error"),
        "{}",
        out[1]
    );
    assert_eq!(out[2]["allowed"], true, "{}", out[2]);
    assert!(
        out[2]["policy_version"]
            .as_str()
            .unwrap()
            .contains("policy v1"),
        "{}",
        out[2]
    );

    // Escalate → approve. A decision naming another request is refused and changes nothing.
    let charge = http("POST", "https://pay.example.com/charge?amount=1");
    let waiting = call_in_background(&d, "payer", charge.clone());
    let pending = wait_pending(&d, 1);
    let e = &pending[0];
    assert_eq!(e["tool"], "http_request");
    assert_eq!(e["policies"], json!(["payments"]));
    assert!(e["args_json"].as_str().unwrap().contains("amount=1"));
    assert_eq!(
        d.agent("payer")["escalations"],
        1,
        "the count is on the agent's view"
    );
    let id = e["id"].as_u64().unwrap().to_string();
    let other = d.cli(&[
        "escalations",
        "approve",
        &id,
        "--reason",
        "ok",
        "--request",
        &"0".repeat(64),
    ]);
    assert_eq!(
        other.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(String::from_utf8_lossy(&other.stderr).contains("bound to one exact request"));
    assert_eq!(wait_pending(&d, 1)[0]["state"], "pending");
    let approved = d.json(&[
        "escalations",
        "approve",
        &id,
        "--reason",
        "invoice 42 checked",
    ]);
    assert_eq!(approved["state"], "approved");
    let dec = waiting.join().expect("the waiting call ends");
    assert_eq!(dec["allowed"], true, "{dec}");
    assert_eq!(dec["verdict"], "escalate");
    assert!(dec["reviewer"].as_str().unwrap().contains("root"), "{dec}");
    assert_eq!(d.agent("payer")["escalations"], 0);

    // The approval covers this exact request again (a retry) and no other.
    let again = d.gateway_calls("payer", &[charge]);
    assert_eq!(again[0]["allowed"], true, "{}", again[0]);
    assert!(again[0]["reason"]
        .as_str()
        .unwrap()
        .contains(&format!("escalation {id}")));
    let waiting = call_in_background(
        &d,
        "payer",
        http("POST", "https://pay.example.com/charge?amount=2"),
    );
    let pending = wait_pending(&d, 1);
    let id2 = pending[0]["id"].as_u64().unwrap().to_string();
    assert_ne!(id2, id, "another request is a new escalation");
    d.json(&["escalations", "deny", &id2, "--reason", "not ours"]);
    let dec = waiting.join().expect("ends");
    assert_eq!(dec["allowed"], false, "{dec}");
    assert!(
        dec["reason"].as_str().unwrap().contains("not ours"),
        "{dec}"
    );

    // Escalate → nobody decides → denied at the policy's timeout.
    let t0 = std::time::Instant::now();
    let out = d.gateway_calls("payer", &[http("POST", "https://pay.example.com/slow")]);
    assert_eq!(out[0]["allowed"], false, "{}", out[0]);
    assert!(
        out[0]["reason"].as_str().unwrap().contains("timed out"),
        "{}",
        out[0]
    );
    assert!(t0.elapsed() >= Duration::from_millis(1500));
    let all = d.json(&["escalations", "list", "--all"]);
    let states: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["approved", "denied", "timed_out"]);

    // Each is in the audit log: the decisions with their policies and reviewer, the
    // reviewers' own records, and the refused mismatched approval.
    let decided = d.json(&[
        "audit",
        "search",
        "--action",
        "tool.decide",
        "--agent",
        "payer",
    ]);
    let details: Vec<Value> = decided
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e["event"]["detail"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(details.len(), 7, "{decided}");
    assert_eq!(details[0]["policies"], json!(["no-deletes"]));
    assert!(details[3]["reviewer"].as_str().unwrap().contains("root"));
    assert!(details
        .iter()
        .all(|x| x["args_sha256"].as_str().unwrap().len() == 64 && x["latency_us"].is_u64()));
    for action in ["tool.escalate", "escalation.approve", "escalation.deny"] {
        let l = d.json(&["audit", "search", "--action", action]);
        assert!(!l.as_array().unwrap().is_empty(), "{action} recorded");
    }
    let refused = d
        .json(&["audit", "search", "--action", "rpc.refused"])
        .to_string();
    assert!(refused.contains("bound to one exact request"), "{refused}");
}

#[test]
fn every_spelling_of_a_forbidden_target_is_denied_through_the_gateway() {
    if !docker_available("every_spelling_of_a_forbidden_target_is_denied_through_the_gateway") {
        return;
    }
    let d = Daemon::start("gw-spellings", "");
    d.create(&agent_spec("reader"));
    d.wait_agent("reader", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    publish_scopes(&d, "reader", PAYER_SCOPES);
    // The shipped example policy, with everything else permitted.
    let text = format!(
        "{}\npermit(principal, action, resource);\n",
        include_str!("../assets/policy/example.cedar")
    );
    let f = d.file("example.cedar", &text);
    d.json(&["policy", "publish", "default", &f]);
    let read = |p: &str| json!({"tool": "read_file", "args": {"path": p}});
    let out = d.gateway_calls(
        "reader",
        &[
            read("//data/secrets/a"),
            read("/data//secrets/a"),
            read("///data/secrets/a/"),
            read("/data/secrets/a"),
            read("//data/reports/a"),
            read("/data/secrets/../reports/a"),
            http("GET", "https://api.example.com//admin"),
        ],
    );
    for (i, o) in out.iter().take(4).enumerate() {
        assert_eq!(o["allowed"], false, "spelling {i}: {o}");
        assert_eq!(
            o["policies"],
            json!(["no-secrets-dir"]),
            "spelling {i}: {o}"
        );
    }
    assert_eq!(out[4]["allowed"], true, "{}", out[4]);
    assert_eq!(out[5]["allowed"], false, "{}", out[5]);
    assert!(
        out[5]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("malformed"),
        "{}",
        out[5]
    );
    assert_eq!(out[6]["allowed"], false, "{}", out[6]);
    assert!(
        out[6]["reason"]
            .as_str()
            .unwrap_or("")
            .contains("empty segment"),
        "{}",
        out[6]
    );
}

#[test]
fn scopes_publish_diff_rollback_and_bad_input_changes_nothing() {
    if !docker_available("scopes_publish_diff_rollback_and_bad_input_changes_nothing") {
        return;
    }
    let d = Daemon::start("gw-versions", "");
    d.create(&agent_spec("ver"));
    let v1 = publish_scopes(&d, "ver", "tools = [\"search\"]\n");
    let v2 = publish_scopes(
        &d,
        "ver",
        "tools = [\"search\", \"read_file\"]\nread_paths = [\"/data/\"]\n",
    );
    assert_eq!(
        (v1["version"].as_u64(), v2["version"].as_u64()),
        (Some(1), Some(2))
    );
    let diff = d.cli(&["scopes", "diff", "ver"]);
    let text = String::from_utf8_lossy(&diff.stdout);
    assert!(
        text.contains("-tools = [\"search\"]") && text.contains("+read_paths = [\"/data/\"]"),
        "{text}"
    );
    let back = d.json(&["scopes", "rollback", "ver", "1"]);
    assert_eq!(back["version"], 3);
    assert_eq!(
        back["hash"], v1["hash"],
        "a rollback publishes the old text again"
    );
    let h = d.json(&["scopes", "show", "ver"]);
    assert_eq!(h["current"], 3);
    assert_eq!(h["versions"].as_array().unwrap().len(), 3);

    // `scopes edit` with $EDITOR: a bad edit is refused and kept; a good one is published.
    let editor = |body: &str| {
        let script = d.file(
            &format!("editor-{}.sh", body.len()),
            &format!("#!/bin/sh\nprintf '%s' '{body}' > \"$1\"\n"),
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        d.cli_cmd()
            .env("EDITOR", &script)
            .env_remove("VISUAL")
            .args(["scopes", "edit", "ver", "--yes"])
            .output()
            .expect("scopes edit")
    };
    let out = editor("tools = [\"search\", 42]");
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nothing published") && err.contains("your edit is kept"),
        "{err}"
    );
    assert_eq!(d.json(&["scopes", "show", "ver"])["current"], 3);
    let out = editor("tools = [\"search\", \"mcp\"]");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("+tools = [\"search\", \"mcp\"]"),
        "the diff is shown"
    );
    assert_eq!(d.json(&["scopes", "show", "ver"])["current"], 4);

    // Bad scopes: refused with the line, nothing stored, the refusal audited.
    let bad = d.file(
        "bad.toml",
        "tools = [\"http_request\"]\n\n[[http]]\nhost = \"exa mple.com\"\n",
    );
    let out = d.cli(&["scopes", "publish", "ver", &bad]);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 4") && err.contains("http[0].host"),
        "{err}"
    );
    assert_eq!(d.json(&["scopes", "show", "ver"])["current"], 4);

    // A policy that does not parse or does not validate.
    let unparsable = d.file("bad.cedar", "permit(principal, action resource);");
    let out = d.cli(&["policy", "publish", "default", &unparsable]);
    assert_eq!(out.status.code(), Some(6));
    let invalid = d.file("invalid.cedar", "permit(principal, action, resource);\nforbid(principal, action, resource) when { context.nope == 1 };\n");
    let out = d.cli(&["policy", "validate", &invalid]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("line 2"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = d.cli(&["policy", "publish", "default", &invalid]);
    assert_eq!(out.status.code(), Some(6));
    assert_eq!(d.json(&["policy", "show", "default"])["current"], 0);
    let refused = d
        .json(&["audit", "search", "--action", "rpc.refused"])
        .to_string();
    assert!(
        refused.contains("policy_publish: invalid policy"),
        "{refused}"
    );
    // The shipped example policy is valid.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/policy/example.cedar");
    assert_eq!(d.json(&["policy", "validate", example])["valid"], true);

    // `policy test`: cases against a candidate policy; a wrong expectation fails (exit 13).
    publish_scopes(&d, "ver", PAYER_SCOPES);
    let cases = format!(
        "policy = \"{example}\"\n\
         [[case]]\nname = \"deletes are denied\"\nagent = \"ver\"\ntool = \"http_request\"\nargs = {{ method = \"DELETE\", url = \"https://api.example.com/x\" }}\nexpect = \"deny\"\n\
         [[case]]\nname = \"payments ask a person\"\nagent = \"ver\"\ntool = \"http_request\"\nargs = {{ method = \"POST\", url = \"https://pay.example.com/x\" }}\nexpect = \"escalate\"\n\
         [[case]]\nname = \"reads are fine\"\nagent = \"ver\"\ntool = \"read_file\"\nargs = {{ path = \"/data/a\" }}\nexpect = \"allow\"\n"
    );
    let tf = d.file("cases.toml", &cases);
    let r = d.json(&["policy", "test", &tf]);
    assert!(
        r.as_array()
            .unwrap()
            .iter()
            .all(|c| c["got"] == c["expect"]),
        "{r}"
    );
    let wrong = d.file(
        "wrong.toml",
        &cases.replace("expect = \"allow\"", "expect = \"deny\""),
    );
    let out = d.cli(&["policy", "test", &wrong]);
    assert_eq!(out.status.code(), Some(13));
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL reads are fine"));
    // Testing stored nothing.
    assert_eq!(d.json(&["policy", "show", "default"])["current"], 0);
}

#[test]
fn the_shims_workload_is_decided_call_by_call() {
    if !docker_available("the_shims_workload_is_decided_call_by_call") {
        return;
    }
    let d = Daemon::start("gw-workload", "");
    d.create(
        "name = \"worker\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\ntool_call_interval_ms = 200\ntool_call_rounds = 0\n\
         [[workload.tool_calls]]\ntool = \"read_file\"\nargs = { path = \"/agenfleet-agent\" }\n\
         [[workload.tool_calls]]\ntool = \"http_request\"\nargs = { method = \"DELETE\", url = \"https://api.example.com/x\" }\n",
    );
    // No scopes yet: every call is denied and not made.
    d.wait_log(
        "worker",
        "\"outcome\":\"not called\"",
        Duration::from_secs(30),
    );
    publish_scopes(
        &d,
        "worker",
        "tools = [\"read_file\"]\nread_paths = [\"/agenfleet-agent\"]\n",
    );
    // Now the read is allowed and made; the DELETE stays denied.
    d.wait_log("worker", "\"outcome\":\"read ", Duration::from_secs(10));
    let logs = String::from_utf8_lossy(&d.cli(&["logs", "worker"]).stdout).to_string();
    let after: Vec<Value> = logs
        .lines()
        .filter_map(|l| l.split_once("tool-call ").map(|x| x.1))
        .filter_map(|j| serde_json::from_str(j).ok())
        .filter(|v: &Value| {
            v["policy_version"]
                .as_str()
                .unwrap_or("")
                .starts_with("scopes v1")
        })
        .collect();
    assert!(after
        .iter()
        .any(|v| v["tool"] == "read_file" && v["allowed"] == true));
    assert!(after
        .iter()
        .filter(|v| v["tool"] == "http_request")
        .all(|v| v["allowed"] == false && v["outcome"] == "not called"));
}

#[test]
fn another_container_with_an_agents_socket_gets_nothing_and_bad_calls_are_denied() {
    if !docker_available(
        "another_container_with_an_agents_socket_gets_nothing_and_bad_calls_are_denied",
    ) {
        return;
    }
    let d = Daemon::start("gw-foreign", "");
    d.create(&agent_spec("victim"));
    d.wait_agent("victim", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    publish_scopes(&d, "victim", "tools = [\"search\"]\n");
    // A container that is not the agent's, with the agent's gateway directory mounted.
    let image = d.json(&["image", "build"])["tag"]
        .as_str()
        .unwrap()
        .to_string();
    let gw = d.dir.join("state/gateways/default.victim");
    assert!(gw.join("gateway.sock").exists(), "{}", gw.display());
    let out = Command::new("docker")
        .args(["run", "--rm", "-i", "--network", "none", "-v"])
        .arg(format!("{}:/run/agenfleet", gw.display()))
        .args([&image, "call"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                writeln!(i, "{}", json!({"tool": "search", "args": {}}))?;
            }
            c.wait_with_output()
        })
        .expect("docker run");
    let text = String::from_utf8_lossy(&out.stdout);
    let dec: Value = serde_json::from_str(text.lines().next().unwrap_or("{}")).expect("a line");
    assert_eq!(dec["allowed"], false, "{dec}");
    assert_eq!(dec["code"], "permission_denied", "{dec}");
    assert!(
        dec["error"]
            .as_str()
            .unwrap()
            .contains("does not run in its container"),
        "{dec}"
    );
    let refused = d.json(&[
        "audit",
        "search",
        "--action",
        "gateway.refused",
        "--agent",
        "victim",
    ]);
    assert!(
        !refused.as_array().unwrap().is_empty(),
        "the attempt is recorded"
    );
    let inc = wait_for(Duration::from_secs(10), "a cross-agent incident", || {
        d.json(&["incidents", "list"])
            .as_array()?
            .iter()
            .find(|i| i["scenario"] == "cross-agent-attempt")
            .cloned()
    });
    assert_eq!(
        (inc["party"].as_str(), inc["severity"].as_str()),
        (Some("platform"), Some("critical")),
        "{inc}"
    );
    assert_eq!(
        inc["evidence"][0]["seq"], refused[0]["seq"],
        "its evidence is the refusal's record"
    );

    // Malformed and oversized arguments from the agent itself: denied with the reason, audited.
    let out = d.gateway_calls(
        "victim",
        &[
            json!({"tool": "search", "args_json": "{not json"}),
            json!({"tool": "search", "args": {"q": "x".repeat(20_000)}}),
            json!({"tool": "bad tool!", "args": {}}),
        ],
    );
    assert!(
        out[0]["reason"].as_str().unwrap().contains("not JSON"),
        "{}",
        out[0]
    );
    assert!(
        out[1]["reason"].as_str().unwrap().contains("too large"),
        "{}",
        out[1]
    );
    assert!(
        out[2]["reason"]
            .as_str()
            .unwrap()
            .contains("not a tool name"),
        "{}",
        out[2]
    );
    assert!(out
        .iter()
        .all(|o| o["allowed"] == false && o["decision_id"].is_u64()));
    let denies = d.json(&[
        "audit",
        "search",
        "--action",
        "tool.decide",
        "--agent",
        "victim",
    ]);
    assert_eq!(
        denies
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["outcome"] == "deny")
            .count(),
        3
    );
}

#[test]
fn escalations_are_approved_and_scopes_edited_from_the_console() {
    if !docker_available("escalations_are_approved_and_scopes_edited_from_the_console") {
        return;
    }
    let d = Daemon::start("gw-console", "");
    d.create(&agent_spec("payer"));
    d.wait_agent("payer", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    publish_scopes(&d, "payer", PAYER_SCOPES);
    let f = d.file("policy.cedar", POLICY);
    d.json(&["policy", "publish", "default", &f]);
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 110, 30);
    t.wait_screen("the fleet", |s| {
        s.contains("payer") && s.contains("running")
    });

    // An escalated call appears in the header of the fleet view, then in the queue.
    let waiting = call_in_background(&d, "payer", http("POST", "https://pay.example.com/charge"));
    t.wait_screen("the escalation counter", |s| s.contains("1 ESCALATION"));
    t.keys(&["3"]);
    let s = t.wait_screen("the queue", |s| {
        s.contains("payments are reviewed by a person")
    });
    assert!(
        s.contains("default/payer") && s.contains("http_request"),
        "{s}"
    );
    t.keys(&["a"]);
    t.wait_screen("the reason dialog", |s| {
        s.contains("Reason (recorded in the audit log)")
    });
    t.keys(&["-l", "ticket 7 ok"]);
    t.keys(&["Enter"]);
    let dec = waiting.join().expect("the call ends");
    assert_eq!(dec["allowed"], true, "{dec}");
    assert!(
        dec["reason"].as_str().unwrap().contains("ticket 7 ok"),
        "{dec}"
    );
    t.wait_screen("the queue empties", |s| {
        s.contains("No tool call is waiting")
    });
    let rec = d
        .json(&["audit", "search", "--action", "escalation.approve"])
        .to_string();
    assert!(rec.contains("ticket 7 ok"), "{rec}");

    // Scopes edited in place: a bad line is pointed at; a good edit is diffed and published.
    t.keys(&["1"]);
    t.wait_screen("the fleet again", |s| s.contains("Fleet (1)"));
    t.keys(&["p"]);
    t.wait_screen("the scopes pane", |s| {
        s.contains("Scopes of default/payer") && s.contains("v1 in force")
    });
    t.keys(&["e"]);
    t.wait_screen("the editor", |s| s.contains("editing"));
    t.keys(&["Down", "End"]);
    t.keys(&["-l", " x"]);
    t.wait_screen("the problem, with its line", |s| s.contains("✗ line 2"));
    t.keys(&["BSpace", "BSpace"]);
    t.keys(&["Down", "Down", "Down", "End", "Enter"]);
    t.keys(&["-l", "path_prefix = \"/v1\""]);
    t.wait_screen("valid again", |s| s.contains("✓ valid scopes"));
    t.keys(&["C-s"]);
    t.wait_screen("the diff", |s| {
        s.contains("Diff before publish") && s.contains("+path_prefix = \"/v1\"")
    });
    t.keys(&["y"]);
    t.wait_screen("published", |s| s.contains("v2 in force"));
    let h = d.json(&["scopes", "show", "payer"]);
    assert_eq!(h["current"], 2);
    assert!(h["versions"][1]["text"]
        .as_str()
        .unwrap()
        .contains("path_prefix = \"/v1\""));
    // In force at once: a GET outside /v1 is now denied.
    let out = d.gateway_calls("payer", &[http("GET", "https://api.example.com/other")]);
    assert_eq!(out[0]["allowed"], false, "{}", out[0]);
}
