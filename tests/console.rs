//! End-to-end: the real `agenfleet` console in a real terminal (tmux) against a real
//! daemon — the live fleet, the detail pane with logs, the filter, a confirmed restart,
//! surviving a daemon restart, and quitting.

use agenfleet_e2e::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn console_shows_the_live_fleet_and_acts_on_it() {
    if !docker_available("console_shows_the_live_fleet_and_acts_on_it") {
        return;
    }
    let _ = Command::new("tmux")
        .arg("-V")
        .output()
        .expect("tmux is required for this test");
    let mut d = Daemon::start("console", "");
    d.create(&healthy("alpha"));
    d.create(&healthy("bravo"));
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start(&cmd);

    let s = t.wait_screen("both agents running", |s| {
        s.contains("alpha") && s.contains("bravo") && s.matches("running").count() >= 2
    });
    assert!(s.contains("2 agents"), "{s}");

    // Detail pane with the selected agent's log.
    t.keys(&["Enter"]);
    t.wait_screen("alpha's log in the detail pane", |s| {
        s.contains("default/alpha") && s.contains("alpha working")
    });
    t.keys(&["j"]);
    t.wait_screen("bravo's log after moving down", |s| {
        s.contains("default/bravo") && s.contains("bravo working")
    });
    t.keys(&["Escape"]);

    // Filter.
    t.keys(&["/", "a", "l", "p", "Enter"]);
    let s = t.wait_screen("filtered to alpha", |s| s.contains("Fleet (1 of 2)"));
    assert!(!s.contains("bravo"), "{s}");
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| s.contains("Fleet (2)"));

    // A confirmed restart really restarts the container.
    let before = d.agent("alpha")["started_at_ms"].as_u64().unwrap();
    t.keys(&["g", "r"]);
    t.wait_screen("confirmation dialog", |s| {
        s.contains("Restart default/alpha?")
    });
    t.keys(&["y"]);
    t.wait_screen("restart reported", |s| {
        s.contains("restart default/alpha: now running")
    });
    let after = d.agent("alpha")["started_at_ms"].as_u64().unwrap();
    assert!(
        after > before,
        "alpha was not restarted ({before} → {after})"
    );

    // The audit view: the trail (with the restart just made) and its health at a glance.
    let out = d.cli(&["audit", "note", "console-test-note"]);
    assert!(out.status.success());
    t.keys(&["2"]);
    let s = t.wait_screen("the audit view", |s| {
        s.contains("Audit trail") && s.contains("operator.note")
    });
    assert!(s.contains("audit log writable"), "{s}");
    assert!(s.contains("agent.restart"), "{s}");
    t.keys(&["/", "n", "o", "t", "e", "Enter"]);
    t.wait_screen("filtered audit view", |s| s.contains("Audit trail (1 of"));
    // (Escape and the next key apart: together a terminal reads them as Alt-key.)
    t.keys(&["Escape"]);
    t.wait_screen("audit filter cleared", |s| {
        s.contains("Audit trail (") && !s.contains("filter: note")
    });
    t.keys(&["1"]);
    t.wait_screen("back to the fleet", |s| s.contains("Fleet (2)"));

    // Help overlay.
    t.keys(&["?"]);
    t.wait_screen("help", |s| s.contains("Keys — any key closes"));
    t.keys(&["x"]);
    t.wait_screen("help closed", |s| !s.contains("Keys — any key closes"));

    // The daemon goes away: the console says so, then reconnects by itself.
    d.kill9();
    t.wait_screen("DISCONNECTED banner", |s| s.contains("DISCONNECTED"));
    d.restart();
    t.wait_screen("reconnected", |s| {
        !s.contains("DISCONNECTED") && s.contains("alpha") && s.contains("running")
    });

    t.keys(&["q"]);
    wait_for(Duration::from_secs(5), "the console to exit", || {
        (!t.alive()).then_some(())
    });
}

#[test]
fn readonly_console_refuses_mutations() {
    if !docker_available("readonly_console_refuses_mutations") {
        return;
    }
    let d = Daemon::start("readonly", "");
    d.create(&healthy("calm"));
    let cmd = format!(
        "{} --readonly --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start(&cmd);
    t.wait_screen("agent listed", |s| {
        s.contains("calm") && s.contains("READ-ONLY")
    });
    let before = d.agent("calm")["started_at_ms"].as_u64();
    t.keys(&["s"]);
    t.wait_screen("refusal", |s| {
        s.contains("read-only console: stop is turned off")
    });
    std::thread::sleep(Duration::from_millis(500));
    let v = d.agent("calm");
    assert_eq!(v["state"], "Running");
    assert_eq!(v["started_at_ms"].as_u64(), before);
    t.keys(&["q"]);
}

#[test]
fn demo_shows_its_fleet_and_leaves_nothing_behind() {
    if !docker_available("demo_shows_its_fleet_and_leaves_nothing_behind") {
        return;
    }
    let cmd = format!("{} demo", bin("agenfleet").display());
    let t = Tmux::start(&cmd);
    // The crash-looper ends Failed, the memory hog is OOM-killed into Failed, the rest run.
    let s = t.wait_screen_for(Duration::from_secs(90), "the demo fleet settled", |s| {
        s.contains("5 agents") && s.contains("2 failed") && s.contains("3 running")
    });
    assert!(s.contains("flaky-bot") && s.contains("memory-hog"), "{s}");
    // This demo's own daemon: its socket sits in a directory named after the console's pid.
    let pid = t.pane_pid().expect("the console's pid");
    let demo_dir = format!("/tmp/agenfleet-demo-{pid}");
    let st = Command::new(bin("agenfleet"))
        .args([
            "--json",
            "--socket",
            &format!("{demo_dir}/agenfleet.sock"),
            "status",
        ])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("demo status");
    let instance = st["daemon"]["instance_id"]
        .as_str()
        .expect("instance")
        .to_string();
    // triage-bot's refund waits for a person: the counter, then the queue.
    t.wait_screen_for(Duration::from_secs(30), "the escalation counter", |s| {
        s.contains("1 ESCALATION")
    });
    t.keys(&["3"]);
    t.wait_screen("the refund in the queue", |s| {
        s.contains("acme/triage-bot") && s.contains("payments are reviewed by a person")
    });
    t.keys(&["1"]);
    // The crash-looper and the memory hog are the client's incidents.
    t.keys(&["4"]);
    t.wait_screen("the client's incidents", |s| {
        s.contains("Client —") && s.contains("Agent crash-loops") && s.contains("acme/flaky-bot")
    });
    t.keys(&["1"]);
    // The OOM kill is visible in the memory hog's detail pane.
    t.keys(&["/", "h", "o", "g", "Enter", "Enter"]);
    t.wait_screen("memory-hog's detail", |s| s.contains("OOM-killed"));
    t.keys(&["q"]);
    wait_for(Duration::from_secs(30), "the demo to exit", || {
        (!t.alive()).then_some(())
    });
    // Nothing of the demo is left: no containers, no daemon, no state dir.
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=agenfleet.instance={instance}"),
    ]);
    assert!(left.is_empty(), "demo containers left behind: {left}");
    let ps = Command::new("pgrep")
        .args(["-f", &demo_dir])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "the demo daemon is still running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(
        !std::path::Path::new(&demo_dir).exists(),
        "{demo_dir} left behind"
    );
}
