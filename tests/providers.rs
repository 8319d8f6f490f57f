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
    let calls = records(&d, "model.call");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let openai_call = calls
        .iter()
        .map(detail)
        .find(|x| x["provider"] == "openai")
        .expect("the openai call");
    assert_eq!(openai_call["status"], 200);
    assert_eq!(openai_call["model"], "gpt-test");
    assert_eq!(openai_call["tokens_in"], 12);
    assert_eq!(openai_call["tokens_out"], 30);
    assert!(
        !calls.iter().any(|c| c.to_string().contains("hello")),
        "a prompt in the record"
    );
    // Usage: the sum of the stubs' `usage`.
    let usage = d.json(&["usage"]);
    let row = usage
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["agent"] == "py"))
        .cloned()
        .expect("py's usage row");
    assert_eq!(row["last_hour"]["calls"], 2, "{row}");
    assert_eq!(row["last_hour"]["tokens_in"], 12 + 7, "{row}");
    assert_eq!(row["today"]["tokens_out"], 30 + 9, "{row}");
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
    let call = records(&d, "model.call")
        .last()
        .map(detail)
        .expect("the call");
    assert_eq!(
        (call["tokens_in"].clone(), call["tokens_out"].clone()),
        (5.into(), 19.into())
    );
}
