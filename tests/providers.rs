//! End-to-end: providers whose keys the agent never holds. A Python agent (the example in
//! assets/examples/python) calls an OpenAI-shaped and an Anthropic-shaped stub — HTTPS,
//! certificates from a CA made for the test — through the base URLs the daemon set for
//! its SDKs, with a placeholder key: the stubs see the real keys, and the keys are nowhere
//! in the agent's container (environment, files, the memory of every process). Streams
//! pass through event by event; fallbacks, observed incidents, budgets, bindings and
//! usage are what the gateway itself saw.

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

/// `providers add NAME` with the key on stdin; panics with the CLI's words on failure.
fn add_provider(
    d: &Daemon,
    ca: &str,
    name: &str,
    kind: &str,
    url: &str,
    key: &str,
    extra: &[&str],
) {
    let mut args = vec![
        "providers",
        "add",
        name,
        "--kind",
        kind,
        "--base-url",
        url,
        "--ca-file",
        ca,
    ];
    args.extend_from_slice(extra);
    let out = d.cli_stdin(&args, key);
    assert!(
        out.status.success(),
        "providers add {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The host pids of every process in container `cid`.
fn container_pids(cid: &str) -> Vec<i64> {
    let out = std::process::Command::new("docker")
        .args(["top", cid, "-eo", "pid"])
        .output()
        .expect("docker top");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Audit records of `action`, oldest first.
fn records(d: &Daemon, action: &str) -> Vec<Value> {
    d.json(&["audit", "search", "--action", action])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The details of the `action` records, once at least `n` are durable (a call's record is
/// written as its answer's end passes, so just after the agent has it).
fn records_at_least(d: &Daemon, action: &str, n: usize) -> Vec<Value> {
    wait_for(WAIT, &format!("{n} {action} record(s)"), || {
        let r = records(d, action);
        (r.len() >= n).then(|| r.iter().map(detail).collect())
    })
}

/// The details of the first `action` record that `pred` admits, waited for.
fn record_where(d: &Daemon, action: &str, pred: impl Fn(&Value) -> bool) -> Value {
    wait_for(WAIT, &format!("a matching {action} record"), || {
        records(d, action).iter().map(detail).find(|x| pred(x))
    })
}

fn detail(r: &Value) -> Value {
    serde_json::from_str(r["event"]["detail"].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
}

#[test]
fn an_agent_calls_models_whose_keys_it_never_sees() {
    let test = "an_agent_calls_models_whose_keys_it_never_sees";
    if !docker_available(test) {
        return;
    }
    let Some(image) = python_image(test) else {
        return;
    };
    let ca = TestCa::new();
    let openai = ProviderStub::start(
        &ca,
        Answer::Json {
            status: 200,
            body: r#"{"id":"c1","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#.into(),
        },
    );
    let anthropic = ProviderStub::start(
        &ca,
        Answer::Json {
            status: 200,
            body: r#"{"type":"message","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":7,"output_tokens":9}}"#.into(),
        },
    );
    let d = Daemon::start("providers", "");
    d.json(&["vault", "init"]);
    let ca_file = d.file("ca.pem", &ca.pem);
    let key1 = format!("sk-CANARY-{:x}-OPENAI", std::process::id());
    let key2 = format!("sk-ant-CANARY-{:x}-CLAUDE", std::process::id());
    add_provider(
        &d,
        &ca_file,
        "openai",
        "openai",
        &openai.base_url(),
        &key1,
        &[],
    );
    add_provider(
        &d,
        &ca_file,
        "claude",
        "anthropic",
        &anthropic.base_url(),
        &key2,
        &[],
    );
    let listed = d.json(&["providers", "list"]);
    let text = listed.to_string();
    assert!(!text.contains(&key1) && !text.contains(&key2), "{text}");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    let (command, files) = python_example(&d);
    d.create(&format!(
        "name = \"py\"\nimage = \"{image}\"\nproviders = [\"openai\", \"claude\"]\n{command}\
         [env]\nASK_MODELS = \"1\"\n{files}"
    ));
    let v = d.wait_agent("py", "its model calls answered", WAIT, |v| {
        v["state"] == "Running"
    });
    d.wait_log("py", "agent: done", WAIT);
    let logs = d.cli(&["logs", "py"]);
    let logs = String::from_utf8_lossy(&logs.stdout).to_string();
    assert!(
        logs.contains("model openai: 200 usage {\"prompt_tokens\": 12"),
        "{logs}"
    );
    assert!(
        logs.contains("model anthropic: 200 usage {\"input_tokens\": 7"),
        "{logs}"
    );
    // The stubs got the real keys, injected the way each vendor wants them.
    let o = openai.requests();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].path, "/v1/chat/completions");
    assert_eq!(
        o[0].header("authorization"),
        Some(format!("Bearer {key1}").as_str())
    );
    let a = anthropic.requests();
    assert_eq!(a[0].path, "/v1/messages");
    assert_eq!(a[0].header("x-api-key"), Some(key2.as_str()));
    assert_eq!(a[0].header("anthropic-version"), Some("2023-06-01"));
    // The agent never had them: not in its environment (config or processes), its files,
    // or the memory of any process in its container.
    let cid = v["container_id"].as_str().expect("cid").to_string();
    let info = inspect(&cid);
    let env = info["Config"]["Env"].to_string();
    assert!(env.contains("OPENAI_API_KEY=agf-placeholder"), "{env}");
    assert!(
        env.contains(
            "AGENFLEET_PROVIDER_CLAUDE_BASE_URL=http://127.0.0.1:4180/providers/claude/v1"
        ),
        "{env}"
    );
    let pids = container_pids(&cid);
    assert!(pids.len() >= 2, "the init and the program: {pids:?}");
    for key in [&key1, &key2] {
        for pid in &pids {
            assert_eq!(
                in_memory(*pid, key.as_bytes()),
                0,
                "{key} in the memory of pid {pid}"
            );
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            assert!(!environ.windows(key.len()).any(|w| w == key.as_bytes()));
        }
        if let Some(merged) = info["GraphDriver"]["Data"]["MergedDir"].as_str() {
            let hits = files_containing(std::path::Path::new(merged), key.as_bytes());
            assert!(hits.is_empty(), "{key} in the container's files: {hits:?}");
        }
        assert_on_no_disk(&d, &cid, key);
    }
    // Each call is one record: provider, model, status and tokens, never the content.
    records_at_least(&d, "model.call", 2);
    let calls = records(&d, "model.call");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let openai_call = calls
        .iter()
        .map(detail)
        .find(|x| x["provider"] == "openai")
        .expect("the openai call");
    assert_eq!(openai_call["status"], 200);
    assert!(openai_call["problem"].is_null(), "{openai_call}");
    assert!(
        calls.iter().all(|c| c["event"]["outcome"] == "ok"),
        "{calls:?}"
    );
    assert_eq!(openai_call["model"], "gpt-test");
    assert_eq!(openai_call["tokens_in"], 12);
    assert_eq!(openai_call["tokens_out"], 30);
    assert!(
        !calls.iter().any(|c| c.to_string().contains("hello")),
        "a prompt in the record"
    );
    // Usage: the sum of the stubs' `usage` (counted just after each record is durable).
    let row = wait_for(WAIT, "py's usage row with both calls' tokens", || {
        d.json(&["usage"]).as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["agent"] == "py" && r["last_hour"]["tokens_out"] == 30 + 9)
                .cloned()
        })
    });
    assert_eq!(row["last_hour"]["calls"], 2, "{row}");
    assert_eq!(row["last_hour"]["tokens_in"], 12 + 7, "{row}");
    assert_eq!(row["today"]["tokens_out"], 30 + 9, "{row}");
    // The fleet view carries today's figures (published once a second while they change).
    let v = d.wait_agent("py", "its usage in the fleet view", WAIT, |v| {
        v["usage_today"]["calls"] == 2 && v["usage_today"]["tokens_in"] == 19
    });
    assert_eq!(v["usage_today"]["tokens_in"], 19);
    let status = String::from_utf8_lossy(&d.cli(&["status"]).stdout).to_string();
    assert!(
        status.contains("models   today 2 calls, 0 errors, 58 tokens"),
        "{status}"
    );
    // The totals survive kill -9 of the daemon (a snapshot and the records after it).
    let mut d = d;
    d.kill9();
    d.restart();
    // (Its row shows once the restarted daemon has the agent in its fleet view again.)
    let again = wait_for(WAIT, "py's usage row after the restart", || {
        d.json(&["usage"])
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["agent"] == "py").cloned())
    });
    assert_eq!(again["last_30_days"], row["last_30_days"], "{again}");
    assert_eq!(again["today"], row["today"], "{again}");
    // A call counted after the last save is replayed from its record: kill -9 as soon as
    // the record is durable (saves come every 5 s), and it is still counted.
    assert_eq!(model_call(&cid, "openai").0, 200);
    wait_for(WAIT, "the third model.call record", || {
        (records(&d, "model.call").len() == 3).then_some(())
    });
    d.kill9();
    d.restart();
    wait_for(WAIT, "3 calls counted after the second restart", || {
        d.json(&["usage"]).as_array().and_then(|rows| {
            rows.iter()
                .find(|r| r["agent"] == "py" && r["last_30_days"]["calls"] == 3)
                .map(|_| ())
        })
    });
}

#[test]
fn streamed_events_reach_the_agent_as_the_provider_sends_them() {
    let test = "streamed_events_reach_the_agent_as_the_provider_sends_them";
    if !docker_available(test) {
        return;
    }
    let Some(image) = python_image(test) else {
        return;
    };
    let ca = TestCa::new();
    let mut events: Vec<String> = (0..19)
        .map(|i| format!("{{\"choices\":[{{\"delta\":{{\"content\":\"w{i}\"}}}}]}}"))
        .collect();
    events.push(r#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":19}}"#.into());
    let stub = ProviderStub::start(
        &ca,
        Answer::Sse {
            events,
            gap: Duration::from_millis(50),
        },
    );
    let d = Daemon::start("provstream", "");
    d.json(&["vault", "init"]);
    let ca_file = d.file("ca.pem", &ca.pem);
    add_provider(
        &d,
        &ca_file,
        "openai",
        "openai",
        &stub.base_url(),
        "sk-stream",
        &[],
    );
    let (command, files) = python_example(&d);
    d.create(&format!(
        "name = \"st\"\nimage = \"{image}\"\nproviders = [\"openai\"]\n{command}\
         [env]\nASK_MODELS = \"1\"\nSTREAM = \"1\"\n{files}"
    ));
    d.wait_log("st", "model openai: 200 streamed", WAIT);
    let logs = String::from_utf8_lossy(&d.cli(&["logs", "st"]).stdout).to_string();
    let got: Vec<u64> = logs
        .lines()
        .filter_map(|l| l.split("event at ").nth(1)?.trim().parse().ok())
        .collect();
    let sent = stub.sent_ns.lock().map(|v| v.clone()).unwrap_or_default();
    assert_eq!(got.len(), 20, "{logs}");
    assert_eq!(sent.len(), 20);
    // Nothing is held back: each event reaches the agent before the provider sends the
    // next one (50 ms later). How soon it arrives is measured in `cargo bench --bench
    // providers`, not asserted here.
    let late: Vec<f64> = got
        .iter()
        .zip(&sent)
        .map(|(g, s)| (*g as f64 - *s as f64) / 1e6)
        .collect();
    for i in 0..19 {
        assert!(
            got[i] < sent[i + 1],
            "event {i} reached the agent after the next one was sent: delays {late:?} ms"
        );
    }
    eprintln!("stream delays (ms): {late:?}");
    // The stream's final event carried the usage.
    let call = records_at_least(&d, "model.call", 1)
        .pop()
        .expect("the call");
    assert_eq!(
        (call["tokens_in"].clone(), call["tokens_out"].clone()),
        (5.into(), 19.into())
    );
}

/// One model call from inside container `cid` to provider `name` (OpenAI-shaped, with the
/// placeholder key, straight to the local API): (status, body).
fn model_call(cid: &str, name: &str) -> (u16, String) {
    let code = format!(
        "import json, urllib.request, urllib.error\n\
         o = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))\n\
         r = urllib.request.Request('http://127.0.0.1:4180/providers/{name}/v1/chat/completions', \
         data=json.dumps({{'model': 'gpt-test', 'messages': []}}).encode(), \
         headers={{'Content-Type': 'application/json', 'Authorization': 'Bearer agf-placeholder'}})\n\
         try:\n    a = o.open(r, timeout=60)\n    print(a.status)\n    print(a.read().decode())\n\
         except urllib.error.HTTPError as e:\n    print(e.code)\n    print(e.read().decode())\n"
    );
    let out = std::process::Command::new("docker")
        .args(["exec", cid, "python3", "-c", &code])
        .output()
        .expect("docker exec");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (
        status.trim().parse().unwrap_or_else(|_| {
            panic!(
                "no status from the call: {text} {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        body.trim().to_string(),
    )
}

/// The open incident of `scenario` whose summary mentions `needle`, waited for.
fn incident(d: &Daemon, scenario: &str, needle: &str) -> Value {
    wait_for(
        WAIT,
        &format!("a {scenario} incident about {needle}"),
        || {
            d.json(&["incidents", "list"])
                .as_array()?
                .iter()
                .find(|i| {
                    i["scenario"] == scenario
                        && i["summary"].as_str().is_some_and(|s| s.contains(needle))
                })
                .cloned()
        },
    )
}

const OK: &str = r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#;

#[test]
fn fallbacks_absorb_failures_and_incidents_say_what_the_gateway_saw() {
    let test = "fallbacks_absorb_failures_and_incidents_say_what_the_gateway_saw";
    if !docker_available(test) {
        return;
    }
    let Some(image) = python_image(test) else {
        return;
    };
    let ca = TestCa::new();
    let json = |status: u16, body: &str| Answer::Json {
        status,
        body: body.to_string(),
    };
    let primary = ProviderStub::start(&ca, json(429, r#"{"error":"slow down"}"#));
    let secondary = ProviderStub::start(&ca, json(200, OK));
    let rejecting = ProviderStub::start(&ca, json(401, r#"{"error":"invalid api key"}"#));
    let closed = |_: ()| format!("https://localhost:{}", free_port());
    let d = Daemon::start("provfallback", "");
    d.json(&["vault", "init"]);
    let ca_file = d.file("ca.pem", &ca.pem);
    add_provider(
        &d,
        &ca_file,
        "backup",
        "openai",
        &secondary.base_url(),
        "sk-b",
        &[],
    );
    add_provider(
        &d,
        &ca_file,
        "main",
        "openai",
        &primary.base_url(),
        "sk-m",
        &["--fallback", "backup"],
    );
    add_provider(
        &d,
        &ca_file,
        "badkey",
        "openai",
        &rejecting.base_url(),
        "sk-revoked",
        &[],
    );
    add_provider(&d, &ca_file, "gone2", "openai", &closed(()), "sk-g", &[]);
    add_provider(
        &d,
        &ca_file,
        "gone1",
        "openai",
        &closed(()),
        "sk-g",
        &["--fallback", "gone2"],
    );
    add_provider(
        &d,
        &ca_file,
        "lonely",
        "openai",
        &secondary.base_url(),
        "sk-l",
        &[],
    );
    // A provider that does not exist cannot be bound.
    let out = d.cli(&[
        "agents",
        "create",
        "-f",
        &d.file(
            "bad.toml",
            &format!("name = \"x\"\nimage = \"{image}\"\nproviders = [\"nope\"]\n"),
        ),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("field `providers[0]`: tenant default has no provider named `nope`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sleep = "command = [\"python3\", \"-c\", \"import time; time.sleep(10**6)\"]\n";
    d.create(&format!(
        "name = \"a\"\nimage = \"{image}\"\nproviders = [\"main\", \"badkey\", \"gone1\"]\n{sleep}"
    ));
    d.create(&format!(
        "name = \"b\"\nimage = \"{image}\"\nproviders = [\"backup\"]\n{sleep}[budget]\ncalls_per_minute = 1\n"
    ));
    let running = |n: &str| d.running_container(n, WAIT);
    let (a, b) = (running("a"), running("b"));

    // 429 → the fallback answers; the agent sees only the answer.
    let (status, body) = model_call(&a, "main");
    assert_eq!(
        (status, body.contains("prompt_tokens")),
        (200, true),
        "{body}"
    );
    let call = records_at_least(&d, "model.call", 1)
        .pop()
        .expect("the call");
    assert_eq!(call["used"], "backup", "{call}");
    let hops: Vec<String> = call["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .map(|h| {
            format!(
                "{} {}",
                h["upstream"].as_str().unwrap_or(""),
                h["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(hops, ["main HTTP 429", "backup HTTP 200"]);
    let i = incident(&d, "rate-limit-with-fallback", "main");
    assert_eq!(
        (i["party"].as_str(), i["severity"].as_str()),
        (Some("model_provider"), Some("info")),
        "{i}"
    );
    assert!(
        i["evidence"]
            .to_string()
            .contains("observed by the gateway"),
        "{i}"
    );
    // 500 → the fallback too; the failing provider's outage is an incident.
    primary.set(json(500, r#"{"error":"boom"}"#));
    assert_eq!(model_call(&a, "main").0, 200);
    let i = incident(&d, "model-provider-down", "main");
    assert_eq!(i["party"], "model_provider");
    // Everything down → 502, and the providers' outage.
    let (status, body) = model_call(&a, "gone1");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("gone1") && body.contains("gone2"), "{body}");
    incident(&d, "model-provider-down", "gone2");
    // A rejected key is the client's: rotate it.
    let (status, _) = model_call(&a, "badkey");
    assert_eq!(status, 401);
    let i = incident(&d, "provider-key-rejected", "badkey");
    assert_eq!(i["party"], "client", "{i}");
    assert!(
        i["summary"].as_str().unwrap_or("").contains("rotate"),
        "{i}"
    );
    // Not bound → 403 naming the binding; the stub never hears of it.
    let before = secondary.requests().len();
    let (status, body) = model_call(&a, "lonely");
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("not bound to this agent"), "{body}");
    assert_eq!(secondary.requests().len(), before);
    // The budget: one call a minute, the second is refused by the gateway itself.
    assert_eq!(model_call(&b, "backup").0, 200);
    let (status, body) = model_call(&b, "backup");
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("calls_per_minute"), "{body}");
    let i = incident(&d, "budget-exceeded", "default/b");
    assert_eq!(i["party"], "client");
    // Every key the stubs saw was the tenant's, never the placeholder.
    for s in [&primary, &secondary, &rejecting] {
        for r in s.requests() {
            let auth = r.header("authorization").unwrap_or("");
            assert!(auth.starts_with("Bearer sk-"), "{auth}");
        }
    }
}

/// A daemon with connection `crm` — a stub at https://127.0.0.1:PORT/api answering
/// `{"customer":"acme"}`, its key in header x-crm-key, plus `extra` options — and a
/// running Python agent `name` bound to it: (daemon, stub, container id, key).
fn crm_agent(
    mode: Mode,
    test: &str,
    name: &str,
    extra: &[&str],
) -> Option<(ModeDaemon, ProviderStub, String, String)> {
    if !docker_available(test) {
        return None;
    }
    let image = python_image(test)?;
    let ca = TestCa::new();
    let crm = ProviderStub::start(
        &ca,
        Answer::Json {
            status: 200,
            body: r#"{"customer":"acme"}"#.into(),
        },
    );
    let d = mode.start(test, name, "")?;
    d.json(&["vault", "init"]);
    let ca_file = d.file("ca.pem", &ca.pem);
    let key = format!("crm-CANARY-{:x}-{name}", std::process::id());
    let base = format!("https://127.0.0.1:{}/api", crm.port);
    let mut args = vec![
        "connections",
        "add",
        "crm",
        "--kind",
        "generic",
        "--base-url",
        &base,
        "--ca-file",
        &ca_file,
        "--auth",
        "header:x-crm-key",
    ];
    args.extend_from_slice(extra);
    let out = d.cli_stdin(&args, &key);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.create(&format!(
        "name = \"{name}\"\nimage = \"{image}\"\nconnections = [\"crm\"]\n\
         command = [\"python3\", \"-c\", \"import time; time.sleep(10**6)\"]\n"
    ));
    let cid = d.running_container(name, WAIT);
    Some((d, crm, cid, key))
}

/// Publishes scopes that admit GET on the stub's host and port under /api/customers.
fn crm_scopes(d: &Daemon, agent: &str, port: u16) {
    let f = d.file(
        "scopes.toml",
        &format!(
            "tools = [\"http_request\"]\n[[http]]\nhost = \"127.0.0.1\"\nmethods = [\"GET\"]\nports = [{port}]\npath_prefix = \"/api/customers\"\n"
        ),
    );
    d.json(&["scopes", "publish", agent, &f]);
}

/// Runs Python `code` in container `cid` (with `env` set) and answers what it printed.
fn python_in(cid: &str, env: &[&str], code: &str) -> String {
    let mut args = vec!["exec"];
    for e in env {
        args.extend(["-e", e]);
    }
    args.extend([cid, "python3", "-c", code]);
    let out = std::process::Command::new("docker")
        .args(&args)
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Python that GETs `url` and prints "STATUS BODY" (or "failed …").
fn python_get(url: &str, direct: bool) -> String {
    let opener = if direct {
        "urllib.request.build_opener(urllib.request.ProxyHandler({}))"
    } else {
        "urllib.request.build_opener()"
    };
    format!(
        "import urllib.request, urllib.error\n\
         o = {opener}\n\
         try:\n    a = o.open({url}, timeout=60)\n    print(a.status, a.read().decode())\n\
         except urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\n\
         except Exception as e:\n    print('failed', repr(e))\n"
    )
}

#[test]
fn a_connection_is_decided_against_the_scopes_and_gets_its_key_in_its_own_header() {
    let test = "a_connection_is_decided_against_the_scopes_and_gets_its_key_in_its_own_header";
    let Some((d, crm, cid, key)) = crm_agent(Mode::Containers, test, "c", &[]) else {
        return;
    };
    let get = |path: &str| {
        let url =
            format!("__import__('os').environ['AGENFLEET_CONNECTION_CRM_BASE_URL'] + '{path}'");
        python_in(&cid, &[], &python_get(&url, true))
    };
    // Its host is not in the scopes yet: denied, and the stub hears nothing.
    let denied = get("/customers/1");
    assert!(denied.starts_with("403"), "{denied}");
    assert!(denied.contains("http_request"), "{denied}");
    assert!(crm.requests().is_empty());
    crm_scopes(&d, "c", crm.port);
    let ok = get("/customers/1");
    assert_eq!(ok, r#"200 {"customer":"acme"}"#);
    let seen = crm.requests();
    assert_eq!(seen[0].path, "/api/customers/1");
    assert_eq!(seen[0].header("x-crm-key"), Some(key.as_str()));
    // A path outside the prefix is denied like any request outside the scopes.
    assert!(get("/admin").starts_with("403"));
    assert_eq!(crm.requests().len(), 1);
    record_where(&d, "connection.call", |x| x["status"] == 200);
    let rec = records(&d, "connection.call");
    // The answer is not in the record: its size and SHA-256 are.
    assert!(!format!("{rec:?}").contains("acme"), "{rec:?}");
    // Until the tenant's admin turns record_bodies on for this connection.
    let out = d.cli(&["connections", "set", "crm", "--record-bodies", "true"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(get("/customers/2").starts_with("200"));
    let last = record_where(&d, "connection.call", |x| x["path"] == "/customers/2");
    assert_eq!(last["response_body"], r#"{"customer":"acme"}"#, "{last}");
}

#[test]
fn tls_inspect_decides_each_https_request_by_path_and_injects_the_key() {
    tls_inspect(
        Mode::Containers,
        "tls_inspect_decides_each_https_request_by_path_and_injects_the_key",
    );
}

/// The same from a Swarm task: the inspection CA reaches it as a config (there is no
/// gateway directory of the daemon's host in a task).
#[test]
fn tls_inspect_decides_each_https_request_by_path_and_injects_the_key_in_swarm_mode() {
    tls_inspect(
        Mode::Swarm,
        "tls_inspect_decides_each_https_request_by_path_and_injects_the_key_in_swarm_mode",
    );
}

fn tls_inspect(mode: Mode, test: &str) {
    let Some((d, crm, cid, key)) = crm_agent(mode, test, "i", &["--tls-inspect", "true"]) else {
        return;
    };
    let listed = d.json(&["connections", "list"]).to_string();
    assert!(listed.contains("\"tls_inspect\":true"), "{listed}");
    let env = inspect(&cid)["Config"]["Env"].to_string();
    assert!(env.contains("SSL_CERT_FILE=/run/agenfleet/ca.pem"), "{env}");
    let shown = String::from_utf8_lossy(&d.cli(&["agents", "show", "i"]).stdout).to_string();
    assert!(shown.contains("connection crm (tls_inspect)"), "{shown}");
    crm_scopes(&d, "i", crm.port);
    // The program speaks https to the host itself, through its proxy, verifying the
    // certificate with the default context (which reads SSL_CERT_FILE).
    let get = |path: &str| {
        let url = format!("'https://127.0.0.1:{}/api{path}'", crm.port);
        python_in(
            &cid,
            &["HTTPS_PROXY=http://127.0.0.1:3128"],
            &python_get(&url, false),
        )
    };
    let ok = get("/customers/7");
    assert_eq!(ok, r#"200 {"customer":"acme"}"#);
    let seen = crm.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, "/api/customers/7");
    assert_eq!(seen[0].header("x-crm-key"), Some(key.as_str()));
    // A path outside the scopes, inside the same https: denied, never sent.
    let denied = get("/admin/users");
    assert!(denied.starts_with("403"), "{denied}");
    assert!(
        denied.contains("outside the agent's http scopes"),
        "{denied}"
    );
    assert_eq!(crm.requests().len(), 1);
    record_where(&d, "connection.call", |x| x["status"] == 200);
}
