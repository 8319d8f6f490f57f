//! RPC throughput with and without the permission check (`cargo bench --bench rpc`):
//! 64 calls in flight on one connection to a real daemon. `hello` checks nothing;
//! `list_agents` checks the caller (a platform admin: the cached uid path), and with a
//! member's token: the scoped check, with the token's resolution cached until it expires or
//! any token or role changes.

use agenfleet_e2e::*;
use agenfleet_protocol::{
    transport, FleetClient, SecretValue, DEFAULT_MAX_FRAME_BYTES, PROTOCOL_VERSION,
};
use std::time::{Duration, Instant};

async fn run(c: &FleetClient, what: &str, total: usize) -> f64 {
    let t = Instant::now();
    let per = total / 64;
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let c = c.clone();
        let what = what.to_string();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per {
                let ctx = transport::context_with_timeout(Duration::from_secs(30));
                let ok = if what == "hello" {
                    c.hello(ctx, PROTOCOL_VERSION).await.map(|r| r.is_ok())
                } else {
                    c.list_agents(ctx).await.map(|r| r.is_ok())
                };
                assert!(ok.unwrap_or(false), "{what} failed");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    (per * 64) as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if !docker_available("rpc bench") {
        return;
    }
    let d = Daemon::start("rpcbench", "");
    d.create("name = \"one\"\ntenant = \"acme\"\nproject = \"web\"\nimage = \"agenfleet/agent\"\n");
    d.json(&["operators", "add", "61300", "bench"]);
    d.json(&["roles", "grant", "61300", "project_viewer", "acme/web"]);
    // The member mints its own token (nobody creates one on another's behalf).
    d.open_to_other_uids();
    let out = d.cli_as(
        61300,
        None,
        &[
            "--json",
            "tokens",
            "create",
            "bench",
            "--scope",
            "acme/web",
            "--perm",
            "fleet.read",
            "--expires",
            "1h",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("token json");
    let token = v["token"].as_str().expect("token").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("rt");
    let socket = d.socket.clone();
    rt.block_on(async move {
        let root = transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES)
            .await
            .expect("connect");
        let with_token = transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES)
            .await
            .expect("connect");
        with_token
            .authenticate(
                transport::context_with_timeout(Duration::from_secs(5)),
                SecretValue::new(token.into_bytes()),
            )
            .await
            .expect("rpc")
            .expect("authenticate");
        let n = 40_000;
        let _ = run(&root, "hello", 4_096).await; // warm up
        let hello = run(&root, "hello", n).await;
        let list = run(&root, "list", n).await;
        let tok = run(&with_token, "list", n).await;
        println!("# RPC throughput, 64 in flight on one connection, 1 agent");
        println!("hello (no permission check):                 {hello:>9.0} calls/s");
        println!("list_agents, platform admin (cached check):  {list:>9.0} calls/s");
        println!("list_agents, member token (scoped check):   {tok:>9.0} calls/s");
    });
}
