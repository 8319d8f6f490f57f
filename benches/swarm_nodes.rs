//! Swarm mode across two nodes (`cargo bench --bench swarm_nodes`; release binaries next
//! to this bench executable). The engine makes a swarm of its own with a worker — Debian's
//! docker.io engine in a container (`agenfleet-test/node`, made by tests/run.sh) — and
//! undoes it after. Overlays unencrypted on both sides (this machine's kernel offers no
//! ESP: see docs/scale-out.md), so the two figures differ by the wire between nodes only.
//!
//! 1. `authorize` from 16 agents at once (`agenfleet-agent bench`, CALLS sequential calls
//!    each) placed on the manager (the daemon's node), then 16 placed on the worker: p50 /
//!    p99 over the overlay → the endpoint → the daemon.
//! 2. The worker killed with MOVERS agents on it (default 16): the time until Swarm has
//!    marked it down, and until every one of them runs again on the manager.

use agenfleet_e2e::*;
use std::time::{Duration, Instant};

fn spec(name: &str, zone: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"bench\"\nproject = \"p\"\nimage = \"agenfleet/agent\"\n\
         [workload]\nlog_interval_ms = 0\n[limits]\nmemory_mb = 32\ncpus = 0.1\n\
         [placement]\nconstraints = [\"node.labels.zone=={zone}\"]\n"
    )
}

/// Creates `names` in `zone`; waits until each runs on `node`; answers their containers.
fn place(d: &Daemon, names: &[String], zone: &str, node: &str) -> Vec<String> {
    for n in names {
        let f = d.file(&format!("{n}.toml"), &spec(n, zone));
        let out = d.cli(&["agents", "create", "-f", &f]);
        assert!(out.status.success(), "{out:?}");
    }
    running_on(d, names, node, Duration::from_secs(600))
}

/// Waits until every one of `names` runs on `node`; answers their containers.
fn running_on(d: &Daemon, names: &[String], node: &str, within: Duration) -> Vec<String> {
    wait_for(within, &format!("every agent running on {node}"), || {
        let list = d.json(&["agents", "list"]);
        let cids: Vec<String> = list
            .as_array()?
            .iter()
            .filter(|v| {
                names.iter().any(|n| v["name"] == n.as_str())
                    && v["state"] == "Running"
                    && v["node"] == node
            })
            .filter_map(|v| v["container_id"].as_str().map(str::to_string))
            .collect();
        (cids.len() == names.len()).then_some(cids)
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(nodes) = TwoNodes::start("swarm_nodes bench") else {
        return;
    };
    let calls = env_usize("CALLS", 2000);
    let movers = env_usize("MOVERS", 16);
    println!(
        "# swarm mode across two nodes (manager {}, worker {}) — binaries from {}",
        nodes.manager,
        nodes.worker,
        bin("agenfleet")
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let d = Daemon::start(
        "swarmnodes",
        &format!(
            "{}swarm_overlay_encrypted = false\nstats_interval_ms = 5000\naudit_checkpoint_every = 100000\n",
            SwarmGuard::config()
        ),
    );
    let built = d.json(&["image", "build"]);
    let tag = built["tag"].as_str().expect("the built-in image's tag");
    nodes.load(tag);
    docker(&["node", "update", "--label-add", "zone=here", &nodes.manager]);
    docker(&["node", "update", "--label-add", "zone=there", &nodes.worker]);

    let here: Vec<String> = (0..16).map(|i| format!("h{i:02}")).collect();
    let there: Vec<String> = (0..16).map(|i| format!("t{i:02}")).collect();
    let here_cids = place(&d, &here, "here", &nodes.manager);
    let there_cids = place(&d, &there, "there", &nodes.worker);
    for (label, engine, cids) in [
        (
            "on the daemon's node",
            vec!["docker".to_string()],
            &here_cids,
        ),
        ("on the other node", nodes.docker_cmd(), &there_cids),
    ] {
        let lat = authorize_in(&engine, cids, calls);
        println!(
            "authorize, 16 agents × {calls} calls, {label}: p50 {:.2} ms, p99 {:.2} ms ({} calls)",
            pct_ms(&lat, 0.50),
            pct_ms(&lat, 0.99),
            lat.len()
        );
    }
    for n in here.iter().chain(&there) {
        let out = d.cli(&["agents", "delete", &format!("bench/{n}")]);
        assert!(out.status.success(), "{out:?}");
    }

    // Node loss: MOVERS agents on the worker, then free to run on either node. (Not by
    // draining the manager: the daemon's node must stay active — its endpoint joins each
    // new agent's network as a task would, and a drained node takes no such task.)
    docker(&["node", "update", "--label-add", "zone=any", &nodes.worker]);
    let names: Vec<String> = (0..movers).map(|i| format!("m{i:02}")).collect();
    place(&d, &names, "any", &nodes.worker);
    docker(&["node", "update", "--label-add", "zone=any", &nodes.manager]);
    let t0 = Instant::now();
    nodes.kill_worker();
    nodes.wait_worker("down", Duration::from_secs(300));
    let down = t0.elapsed();
    running_on(&d, &names, &nodes.manager, Duration::from_secs(600));
    let moved = t0.elapsed();
    println!(
        "worker killed with {movers} agents on it: marked down after {:.1} s; all {movers} running on the manager after {:.1} s",
        down.as_secs_f64(),
        moved.as_secs_f64()
    );
}
