//! End-to-end: the daemon supervises real agent containers on the real Docker engine —
//! hardening, restart policy (backoff, budget, reset, stop), OOM kills, adoption after
//! `kill -9` of the daemon, orphan removal, and the live `watch` path.

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn cid(v: &Value) -> String {
    v["container_id"]
        .as_str()
        .expect("container id")
        .to_string()
}

#[test]
fn create_gives_a_hardened_running_container() {
    if !docker_available("create_gives_a_hardened_running_container") {
        return;
    }
    let d = Daemon::start("harden", "");
    let v = d.create(
        "name = \"hard\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [limits]\nmemory_mb = 64\ncpus = 0.5\npids = 32\n",
    );
    assert_eq!(v["state"], "Running", "{v}");
    let c = inspect(&cid(&v));
    let h = &c["HostConfig"];
    assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(
        h["SecurityOpt"],
        serde_json::json!(["no-new-privileges:true"])
    );
    assert_eq!(h["ReadonlyRootfs"], true);
    assert!(
        h["Tmpfs"]["/tmp"].as_str().unwrap_or("").contains("noexec"),
        "{}",
        h["Tmpfs"]
    );
    assert_eq!(h["Memory"], 64 * 1024 * 1024);
    assert_eq!(h["MemorySwap"], 64 * 1024 * 1024);
    assert_eq!(h["NanoCpus"], 500_000_000);
    assert_eq!(h["PidsLimit"], 32);
    assert_eq!(h["NetworkMode"], "none");
    assert_eq!(h["RestartPolicy"]["Name"], "no");
    assert_eq!(c["Config"]["User"], "65534:65534");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["agenfleet.tenant"], "acme");
    assert_eq!(labels["agenfleet.project"], "p1");
    assert_eq!(labels["agenfleet.agent"], "hard");
    assert_eq!(labels["agenfleet.instance"], d.instance.as_str());
    assert_eq!(c["Name"], format!("/agf.{}.acme.hard", d.instance));
    assert_eq!(c["State"]["Running"], true);
    // Its memory is read from the cgroup its process names (`/proc/<pid>/cgroup`) and
    // shown against the limit.
    let v = d.wait_agent("acme/hard", "memory shown", Duration::from_secs(30), |v| {
        v["memory_bytes"].as_u64().is_some_and(|m| m > 0)
    });
    assert!(
        v["memory_bytes"].as_u64().unwrap() < 64 * 1024 * 1024,
        "{v}"
    );
    // Nothing secret or otherwise in the environment but what the image sets.
    let env = c["Config"]["Env"].as_array().cloned().unwrap_or_default();
    assert!(
        env.iter()
            .all(|e| e.as_str().unwrap_or("").starts_with("PATH=")),
        "{env:?}"
    );

    // An agent asking for an internal network gets its own, with no route out.
    let v = d
        .create("name = \"netted\"\nimage = \"agenfleet/agent\"\n[network]\nmode = \"internal\"\n");
    let c = inspect(&cid(&v));
    let net = c["HostConfig"]["NetworkMode"]
        .as_str()
        .expect("network")
        .to_string();
    assert_eq!(net, format!("agfnet.{}.default.netted", d.instance));
    let n: Value = serde_json::from_str(&docker(&["network", "inspect", &net])).unwrap();
    let n = &n[0];
    assert_eq!(n["Internal"], true);
    let subnet = n["IPAM"]["Config"][0]["Subnet"].as_str().unwrap_or("");
    assert!(
        subnet.starts_with("10.213.") && subnet.ends_with("/28"),
        "{subnet}"
    );

    // Delete removes the container and the network.
    let out = d.cli(&["agents", "delete", "netted"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gone = std::process::Command::new("docker")
        .args(["network", "inspect", &net])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "network {net} still exists");
    assert_eq!(d.containers().len(), 1);
}

fn kill_process(v: &Value) {
    let pid = inspect(&cid(v))["State"]["Pid"].as_i64().expect("pid");
    assert!(pid > 0, "no pid for running agent: {v}");
    let rc = unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill {pid}");
}

#[test]
fn restart_backoff_budget_reset_and_stop() {
    if !docker_available("restart_backoff_budget_reset_and_stop") {
        return;
    }
    let d = Daemon::start("restart", "");
    let v = d.create(
        "name = \"crashy\"\nimage = \"agenfleet/agent\"\n\
         [restart]\nmode = \"fail\"\nattempts = 2\ninterval_secs = 120\ndelay_ms = 600\nmax_delay_ms = 5000\n",
    );
    assert_eq!(v["state"], "Running");
    let first_id = cid(&v);

    // Kill its process: it backs off, then runs again after roughly the delay.
    let killed_at = Instant::now();
    kill_process(&v);
    let v = d.wait_agent("crashy", "backing off", Duration::from_secs(10), |v| {
        v["state"] == "BackingOff" || v["restarts"] == 1
    });
    assert_eq!(v["last_exit"]["code"], 137, "{v}");
    let v = d.wait_agent("crashy", "restarted once", Duration::from_secs(10), |v| {
        v["state"] == "Running" && v["restarts"] == 1
    });
    let waited = killed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(450),
        "restarted after {waited:?}, before the backoff (600 ms ±20%)"
    );
    assert_eq!(
        cid(&v),
        first_id,
        "the supervisor restarts the same container"
    );

    // Second kill: the delay doubles (1200 ms ±20%).
    let killed_at = Instant::now();
    kill_process(&v);
    let v = d.wait_agent("crashy", "restarted twice", Duration::from_secs(10), |v| {
        v["state"] == "Running" && v["restarts"] == 2
    });
    let waited = killed_at.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "second restart after {waited:?}, expected ≥ 960 ms"
    );

    // Third kill: the budget (2 per 120 s) is spent → Failed, and it stays down.
    kill_process(&v);
    let v = d.wait_agent("crashy", "failed", Duration::from_secs(10), |v| {
        v["state"] == "Failed"
    });
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("restart budget exhausted"),
        "{v}"
    );
    std::thread::sleep(Duration::from_secs(2));
    let v = d.agent("crashy");
    assert_eq!(v["state"], "Failed");
    assert_eq!(v["restarts"], 2);
    assert_eq!(inspect(&cid(&v))["State"]["Running"], false);

    // Start is refused for a failed agent; reset runs it again.
    let out = d.cli(&["agents", "start", "crashy"]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "start of a failed agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("reset"));
    let v = d.json(&["agents", "reset", "crashy"]);
    assert_eq!(v["state"], "Running");
    assert_eq!(v["restarts_in_window"], 0);
    assert_eq!(inspect(&cid(&v))["State"]["Running"], true);

    // Stop is final: no restart follows.
    let v = d.json(&["agents", "stop", "crashy"]);
    assert_eq!(v["state"], "Stopped");
    std::thread::sleep(Duration::from_secs(2));
    let v = d.agent("crashy");
    assert_eq!(v["state"], "Stopped");
    assert_eq!(inspect(&cid(&v))["State"]["Running"], false);
    // Start brings it back.
    let v = d.json(&["agents", "start", "crashy"]);
    assert_eq!(v["state"], "Running");
}

#[test]
fn delay_mode_waits_instead_of_failing_and_exit_codes_are_recorded() {
    delay_mode_waits(Mode::Containers);
}

#[test]
fn delay_mode_waits_instead_of_failing_and_exit_codes_are_recorded_in_swarm_mode() {
    delay_mode_waits(Mode::Swarm);
}

fn delay_mode_waits(mode: Mode) {
    let test = "delay_mode_waits_instead_of_failing_and_exit_codes_are_recorded";
    let Some(d) = mode.start(test, "delay", "") else {
        return;
    };
    d.create(
        "name = \"exits\"\nimage = \"agenfleet/agent\"\n\
         [restart]\nmode = \"delay\"\nattempts = 1\ninterval_secs = 3\ndelay_ms = 100\nmax_delay_ms = 200\n\
         [workload]\nexit_after_ms = 300\nexit_code = 7\n",
    );
    // One restart per 3 s window; in delay mode it waits for room instead of failing.
    let v = d.wait_agent("exits", "waiting for room", Duration::from_secs(15), |v| {
        v["state"] == "BackingOff"
            && v["message"]
                .as_str()
                .unwrap_or("")
                .contains("budget used up")
    });
    assert_eq!(v["last_exit"]["code"], 7);
    assert_eq!(v["last_exit"]["oom_killed"], false);
    let v = d.wait_agent(
        "exits",
        "restarted after the window",
        Duration::from_secs(15),
        |v| v["restarts"].as_u64().unwrap_or(0) >= 2,
    );
    assert_ne!(v["state"], "Failed");
}

#[test]
fn oom_kill_is_recorded_and_fails_past_budget() {
    oom_kill_fails_past_budget(Mode::Containers);
}

#[test]
fn oom_kill_is_recorded_and_fails_past_budget_in_swarm_mode() {
    oom_kill_fails_past_budget(Mode::Swarm);
}

fn oom_kill_fails_past_budget(mode: Mode) {
    let Some(d) = mode.start("oom_kill_is_recorded_and_fails_past_budget", "oom", "") else {
        return;
    };
    d.create(
        "name = \"hog\"\nimage = \"agenfleet/agent\"\n[limits]\nmemory_mb = 32\n\
         [restart]\nattempts = 1\ndelay_ms = 100\n[workload]\nalloc_mb_per_sec = 64\nlog_interval_ms = 100\n",
    );
    let v = d.wait_agent(
        "hog",
        "failed after OOM kills",
        Duration::from_secs(30),
        |v| v["state"] == "Failed",
    );
    assert_eq!(v["last_exit"]["oom_killed"], true, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("OOM-killed"),
        "{v}"
    );
    assert_eq!(inspect(&cid(&v))["State"]["OOMKilled"], true);
}

#[test]
fn kill9_of_the_daemon_adopts_running_agents_without_restarting_them() {
    if !docker_available("kill9_of_the_daemon_adopts_running_agents_without_restarting_them") {
        return;
    }
    let mut d = Daemon::start("adopt", "");
    let names = ["a1", "a2", "a3"];
    let mut before = Vec::new();
    for n in names {
        let v = d.create(&healthy(n));
        let c = inspect(&cid(&v));
        before.push((
            n,
            cid(&v),
            c["State"]["StartedAt"].as_str().unwrap().to_string(),
        ));
    }
    // One agent stopped on purpose stays stopped.
    d.json(&["agents", "stop", "a3"]);
    let old_pid = d.pid();
    d.restart();
    assert_ne!(d.pid(), old_pid);
    for (n, id, started) in &before[..2] {
        let v = d.wait_agent(
            n,
            "running after the daemon restart",
            Duration::from_secs(10),
            |v| v["state"] == "Running",
        );
        assert_eq!(&cid(&v), id, "{n} got a new container");
        let c = inspect(id);
        assert_eq!(
            c["State"]["StartedAt"].as_str().unwrap(),
            started,
            "{n} was restarted"
        );
        assert_eq!(v["restarts"], 0);
    }
    let v = d.agent("a3");
    assert_eq!(v["state"], "Stopped");
    assert!(d.log().contains("adopted running container"), "{}", d.log());
    // Logs still flow for an adopted agent (what it printed while no daemon was attached
    // is not kept anywhere: the engine keeps no copy).
    d.wait_log("a1", "a1 working", Duration::from_secs(10));
}

#[test]
fn a_crash_while_the_daemon_is_down_is_handled_on_restart() {
    if !docker_available("a_crash_while_the_daemon_is_down_is_handled_on_restart") {
        return;
    }
    let mut d = Daemon::start("downcrash", "");
    let v = d.create(&healthy("victim"));
    d.kill9();
    kill_process(&v);
    let cid = v["container_id"]
        .as_str()
        .expect("container id")
        .to_string();
    wait_for(Duration::from_secs(20), "the container to stop", || {
        (inspect(&cid)["State"]["Running"] == false).then_some(())
    });
    d.restart();
    let v = d.wait_agent(
        "victim",
        "restarted by the new daemon",
        Duration::from_secs(15),
        |v| v["state"] == "Running" && v["restarts"] == 1,
    );
    assert_eq!(v["last_exit"]["code"], 137);
}

#[test]
fn orphan_containers_are_reported_then_removed() {
    if !docker_available("orphan_containers_are_reported_then_removed") {
        return;
    }
    let d = Daemon::start("orphan", "orphan_grace_secs = 2");
    d.create(&healthy("real"));
    let image = d.agent("real")["image"].as_str().unwrap().to_string();
    // A container with our labels that no agent owns.
    let ghost = docker(&[
        "run",
        "-d",
        "--network",
        "none",
        "--label",
        "agenfleet.managed=true",
        "--label",
        &format!("agenfleet.instance={}", d.instance),
        "--label",
        "agenfleet.tenant=default",
        "--label",
        "agenfleet.agent=ghost",
        &image,
    ]);
    let st = wait_for(Duration::from_secs(10), "orphan reported", || {
        let st = d.json(&["status"]);
        (!st["daemon"]["orphans"].as_array().unwrap().is_empty()).then_some(st)
    });
    assert!(st["daemon"]["orphans"][0]
        .as_str()
        .unwrap()
        .contains("default/ghost"));
    wait_for(Duration::from_secs(15), "orphan removed", || {
        let gone = !std::process::Command::new("docker")
            .args(["inspect", &ghost])
            .output()
            .unwrap()
            .status
            .success();
        gone.then_some(())
    });
    // The real agent is untouched.
    assert_eq!(d.agent("real")["state"], "Running");
}

#[test]
fn watch_sees_a_killed_container() {
    watch_sees_a_kill(Mode::Containers);
}

#[test]
fn watch_sees_a_killed_container_in_swarm_mode() {
    watch_sees_a_kill(Mode::Swarm);
}

fn watch_sees_a_kill(mode: Mode) {
    let Some(d) = mode.start("watch_sees_a_killed_container", "watch", "") else {
        return;
    };
    d.create(&healthy("watched"));
    // (A task's container exists once Swarm has started it.)
    let v = d.wait_agent("watched", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running" && v["container_id"].is_string()
    });
    let watcher = Watcher::start_with_snapshot(&d);
    // The snapshot shows the agent: the watch is connected before the kill.
    watcher.wait_for(Duration::from_secs(20), "the snapshot", |l| {
        l["change"]["Agent"]["name"] == "watched"
    });
    kill_process(&v);
    // The kill shows as the agent leaving `running` (other changes may come first).
    let (_, line) = watcher.wait_for(Duration::from_secs(10), "the killed agent", |l| {
        l["change"]["Agent"]["name"] == "watched" && l["change"]["Agent"]["state"] != "Running"
    });
    let agent = &line["change"]["Agent"];
    assert_eq!(agent["last_exit"]["code"], 137, "{line}");
}
