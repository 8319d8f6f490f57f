//! End-to-end: runs on the real daemon and engine. A service agent (busybox `sh` + `nc`
//! against its local API from inside its container) takes its runs with `GET
//! /v1/runs/next` and answers them with `POST /v1/runs/{id}/result`; the CLI starts runs
//! and waits for their ends. Results, failures, a timeout, a cancel, the queue's limit,
//! another agent's run id, the audit trail, and a run interrupted by `kill -9` of the daemon.

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn idle(name: &str, image: &str) -> String {
    format!(
        "name = \"{name}\"\nimage = \"{image}\"\n\
         command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done\"]\n\
         [runs]\nqueue = 2\n"
    )
}

/// The console `width` columns wide, on the fleet, then `:command` typed.
fn console_at(d: &Daemon, width: u16, command: &str) -> Tmux {
    let console = Tmux::start_sized(
        &format!(
            "{} --socket {}",
            bin("agenfleet").display(),
            d.socket.display()
        ),
        width,
        50,
    );
    console.wait_screen("the fleet", |s| s.contains("mute") && s.contains("svc"));
    console.keys(&[":"]);
    console.keys(&[command, "Enter"]);
    console
}

fn start(d: &Daemon, agent: &str, input: &str, wait: bool) -> (Option<i32>, Value) {
    d.run_start(agent, input, wait)
}

#[test]
fn service_agents_take_runs_answer_them_and_every_end_is_told() {
    let test = "service_agents_take_runs_answer_them_and_every_end_is_told";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let mut d = Daemon::start("runs", "");
    d.create(&service_agent("svc", &image, 3));
    d.create(&idle("mute", &image));
    let svc = d.running_container("svc", WAIT);
    let mute = d.running_container("mute", WAIT);

    // A run answered: its result, from the agent, on the run.
    let (code, v) = start(&d, "svc", r#"{"n": 7}"#, true);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(v["state"], "succeeded", "{v}");
    let result: Value = serde_json::from_str(v["result_json"].as_str().unwrap()).unwrap();
    assert_eq!(result, serde_json::json!({"echo": {"n": 7}}));
    assert_eq!(v["trigger"], "cli");
    assert!(v["started_ms"].as_u64() >= v["created_ms"].as_u64());
    let first = v["id"].as_u64().unwrap();

    // One that fails, one that times out (the agent takes it and never answers): exit 14.
    let (code, v) = start(&d, "svc", r#"{"fail": 1}"#, true);
    assert_eq!((code, &v["state"]), (Some(14), &"failed".into()), "{v}");
    assert_eq!(v["error"], "asked to fail");
    let (code, v) = start(&d, "svc", r#"{"hang": 1}"#, true);
    assert_eq!((code, &v["state"]), (Some(14), &"timed-out".into()), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("no result within 3 s"),
        "{v}"
    );

    // The console's describe view of svc lists its last runs, newest first.
    let console = console_at(&d, 140, "describe svc");
    // (The label shows "loading…" first: wait for the runs themselves.)
    let screen = console.wait_screen("svc's last runs", |s| {
        s.contains("Last runs") && s.contains("succeeded (cli")
    });
    let order: Vec<usize> = ["timed-out (cli", "failed (cli", "succeeded (cli"]
        .iter()
        .map(|w| screen.find(w).unwrap_or_else(|| panic!("{w} in {screen}")))
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{screen}");
    drop(console);

    // An agent that never asks: its runs wait; its queue holds 2; one is cancelled.
    let (_, q1) = start(&d, "mute", "{}", false);
    let (_, q2) = start(&d, "mute", "{}", false);
    assert_eq!(q1["state"], "queued");
    let out = d.cli(&["runs", "start", "mute"]);
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs.queue = 2"));
    let c = d.json(&["runs", "cancel", &q1["id"].to_string()]);
    assert_eq!(c["state"], "cancelled", "{c}");
    assert!(
        c["error"].as_str().unwrap().starts_with("cancelled by"),
        "{c}"
    );
    let out = d.cli(&["runs", "cancel", &q1["id"].to_string()]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "an ended run cannot be cancelled again"
    );
    // Bad input changes nothing.
    let out = d.cli(&["runs", "start", "svc", "--input", &d.file("bad.json", "{")]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not JSON"));
    let out = d.cli(&["runs", "show", "999999"]);
    assert_eq!(out.status.code(), Some(5));

    let req = format!(
        "POST /v1/runs/{}/result HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{{\"ok\":true}}",
        q2["id"]
    );
    // Its own queued run cannot be answered before it is handed out (409, and why).
    let text = nc(&mute, 4180, req.as_bytes());
    assert!(text.starts_with("HTTP/1.1 409"), "{text}");
    assert!(text.contains("not handed to you"), "{text}");
    let stranger = format!(
        "POST /v1/runs/{first}/result HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{{\"ok\":true}}"
    );
    // Another agent's run cannot be answered from this agent's API (404, like none).
    let text = nc(&mute, 4180, stranger.as_bytes());
    assert!(
        text.starts_with("HTTP/1.1 404"),
        "svc's run from mute: {text}"
    );

    // Listed newest first; --failed shows the failed and the timed-out ones.
    let failed = d.json(&["runs", "list", "--failed"]);
    let states: Vec<&str> = failed
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["timed-out", "failed"], "{failed}");
    let svc_runs = d.json(&["runs", "list", "svc"]);
    assert_eq!(svc_runs.as_array().unwrap().len(), 3, "{svc_runs}");
    // The trail: each start (requested, then ok with its run id) and each end.
    let starts = d
        .json(&["audit", "search", "--action", "run.start"])
        .to_string();
    assert!(starts.contains(&format!("\\\"run\\\":{first}")), "{starts}");
    let ends = d.json(&["audit", "search", "--action", "run.end"]);
    assert_eq!(ends.as_array().unwrap().len(), 4, "{ends}");

    // kill -9 while the agent holds a run: after the restart that run has failed,
    // interrupted; the queued ones still wait.
    let (_, held) = start(&d, "svc", r#"{"hang": 2}"#, false);
    let id = held["id"].to_string();
    wait_for(WAIT, "the agent to take the run", || {
        (d.json(&["runs", "show", &id])["state"] == "running").then_some(())
    });
    // A tool call the agent makes meanwhile is the run's (it names it; a run it is not
    // running, or not a number, is refused and decides nothing).
    let call = r#"{"tool":"lookup_ticket","args":{}}"#;
    let req = |run: &str| {
        format!(
            "POST /v1/authorize HTTP/1.1\r\nHost: a\r\nConnection: close\r\nX-AgenFleet-Run: {run}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{call}",
            call.len()
        )
    };
    let text = nc(&svc, 4180, req(&q2["id"].to_string()).as_bytes());
    assert!(text.starts_with("HTTP/1.1 409"), "{text}");
    assert!(text.contains("not one this agent is running"), "{text}");
    let text = nc(&svc, 4180, req("soon").as_bytes());
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let text = nc(&svc, 4180, req(&id).as_bytes());
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    d.kill9();
    d.restart();
    let v = d.json(&["runs", "show", &id]);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(v["error"].as_str().unwrap().contains("interrupted"), "{v}");
    // Its story: started, the decision, the end — oldest first, nothing of other runs.
    let story: Vec<(String, String)> = v["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"]["action"].as_str().unwrap().to_string(),
                e["event"]["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("run.start", "ok"),
        ("tool.decide", "deny"),
        ("run.end", "failed"),
    ]
    .iter()
    .map(|(a, o)| (a.to_string(), o.to_string()))
    .collect();
    assert_eq!(story, want, "{v}");
    assert!(v["timeline"][1]["event"]["detail"]
        .as_str()
        .unwrap()
        .contains("lookup_ticket"));
    let text = String::from_utf8_lossy(&d.cli(&["runs", "show", &id]).stdout).to_string();
    assert!(
        text.contains("tool.decide") && text.contains("tool=lookup_ticket"),
        "{text}"
    );
    assert_eq!(
        d.json(&["runs", "show", &q2["id"].to_string()])["state"],
        "queued"
    );
    // And the service goes on taking runs.
    let (code, v) = start(&d, "svc", r#"{"n": 8}"#, true);
    assert_eq!((code, &v["state"]), (Some(0), &"succeeded".into()), "{v}");

    // The console's runs view: the fleet's runs, failed only, a run's story under the
    // list; a run started meanwhile appears without a key (the audit log tells it).
    let console = console_at(&d, 160, "runs");
    console.wait_screen("the fleet's runs", |s| {
        s.contains("Runs — all agents") && s.contains("default/svc") && s.contains("succeeded")
    });
    console.keys(&["f"]);
    // asked to fail, timed out, interrupted by the kill -9; the newest first.
    let screen = console.wait_screen("failed runs only", |s| s.contains("failed only (3)"));
    assert!(!screen.contains("succeeded"), "{screen}");
    console.keys(&["Enter"]);
    let screen = console.wait_screen("the interrupted run's timeline", |s| {
        s.contains(&format!("Run {id} — timeline")) && s.contains("tool=lookup_ticket")
    });
    let order: Vec<usize> = ["run.start", "tool.decide", "run.end"]
        .iter()
        .map(|w| screen.find(w).unwrap_or_else(|| panic!("{w} in {screen}")))
        .collect();
    assert!(order[0] < order[1] && order[1] < order[2], "{screen}");
    assert!(screen.contains("interrupted"), "{screen}");
    console.keys(&["f"]);
    console.wait_screen("all runs again", |s| {
        s.contains("Runs — all agents (") && !s.contains("failed only")
    });
    let (_, live) = start(&d, "svc", r#"{"n": 9}"#, false);
    let live = live["id"].to_string();
    let row = |s: &str| {
        s.lines().any(|l| {
            let cell = l.trim_start_matches('│').trim_start_matches(['▶', ' ']);
            cell.starts_with(&format!("{live} ")) && l.contains("succeeded")
        })
    };
    // (Under load the run itself can take a while: its state, not a fixed time, is awaited.)
    console.wait_screen_for(
        std::time::Duration::from_secs(60),
        "the new run, succeeded, without a key",
        row,
    );
    drop(console);

    // A deleted agent's waiting runs end with it, cancelled, recorded; then they are
    // purged with its other data (purge_after_secs = 0 here).
    d.json(&["agents", "delete", "mute"]);
    let ends = d
        .json(&["audit", "search", "--action", "run.end"])
        .to_string();
    assert!(
        ends.contains(&format!("\\\"run\\\":{}", q2["id"])) && ends.contains("agent was deleted"),
        "{ends}"
    );
    let out = d.cli(&["runs", "show", &q2["id"].to_string()]);
    assert_eq!(out.status.code(), Some(5), "purged with its agent");
}
