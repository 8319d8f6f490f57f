//! End-to-end: slow and hostile clients of the operator socket. A thousand connections
//! that send nothing, a frame sent a byte at a time, a client that never reads its answers
//! — the daemon closes what breaks its limits and keeps serving everyone else, with memory
//! bounded.

use agenfleet_e2e::hostile::*;
use agenfleet_e2e::*;
use agenfleet_protocol::transport;
use std::time::Duration;

#[test]
fn hostile_clients_are_cut_off_and_the_others_keep_being_served() {
    if !docker_available("hostile_clients_are_cut_off_and_the_others_keep_being_served") {
        return;
    }
    let per_uid = 64;
    let d = Daemon::start(
        "hostile",
        &format!("max_connections_per_uid = {per_uid}\nframe_timeout_secs = 2\n"),
    );
    d.open_to_other_uids();
    d.create("name = \"calm\"\ntenant = \"acme\"\nproject = \"web\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n");
    d.json(&["operators", "add", "61300", "viewer-bot"]);
    d.json(&["roles", "grant", "61300", "project_viewer", "acme/web"]);
    let rss_before = rss_mb(d.pid());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    // A normal client, connected before the flood.
    let socket = d.socket.clone();
    let normal = rt
        .block_on(transport::connect(
            &socket,
            agenfleet_protocol::DEFAULT_MAX_FRAME_BYTES,
        ))
        .expect("normal client");
    let quiet = rt.block_on(status_latencies(&normal, 100));

    // 1,000 connections that send nothing: this uid's limit holds (the normal client
    // has one place), every other is closed at once.
    let mut idle = idle_connections(&d.socket, 1000);
    let held = wait_for(
        Duration::from_secs(60),
        "the refused connections to close",
        || {
            let closed = idle.iter().filter(|s| closed_by_peer(s)).count();
            (closed == 1000 - (per_uid - 1)).then_some(1000 - closed)
        },
    );
    assert_eq!(held, per_uid - 1);
    // The uid's new connections are refused while it holds its limit…
    let out = d.cli(&["status"]);
    assert!(
        !out.status.success(),
        "a 65th connection of one uid is refused"
    );
    // …and another uid is served as usual, as is the normal client.
    let out = d.cli_as(61300, None, &["--json", "status"], None);
    assert!(
        out.status.success(),
        "another uid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let during = rt.block_on(status_latencies(&normal, 100));
    let rss_flood = rss_mb(d.pid());

    // The slow and never-reading clients below need places of their own: free some.
    idle.retain(|s| !closed_by_peer(s));
    idle.truncate(per_uid - 10);
    wait_for(Duration::from_secs(30), "places for this uid", || {
        d.cli(&["status"]).status.success().then_some(())
    });
    // A frame a byte at a time is cut off by the frame timeout (2 s here).
    let slow = slow_frame(
        &d.socket,
        Duration::from_millis(200),
        Duration::from_secs(60),
    )
    .expect("the daemon never closed a frame sent a byte every 200 ms");
    assert!(
        slow >= Duration::from_secs(2),
        "closed after {slow:?}, before its limit"
    );

    // A client that sends requests and never reads the answers is cut off once its
    // answers fill the socket and stay unread for the write timeout.
    let unread = rt
        .block_on(never_reads(&socket, Duration::from_secs(120)))
        .expect("the daemon never closed a client that reads nothing");
    let rss_hostile = rss_mb(d.pid());
    let after = rt.block_on(status_latencies(&normal, 100));
    eprintln!(
        "status p50/p99 ms: quiet {:.3}/{:.3}, 1000 idle connections {:.3}/{:.3}, after slow and unread clients {:.3}/{:.3}; slow frame cut after {slow:?}, unread client after {unread:?}; RSS MB {rss_before:.1} → {rss_flood:.1} → {rss_hostile:.1}",
        quantile(&quiet, 0.5),
        quantile(&quiet, 0.99),
        quantile(&during, 0.5),
        quantile(&during, 0.99),
        quantile(&after, 0.5),
        quantile(&after, 0.99),
    );
    assert!(
        rss_hostile < rss_before + 64.0,
        "memory grew from {rss_before:.1} to {rss_hostile:.1} MB"
    );

    // When the flood goes, the uid connects again.
    drop(idle);
    wait_for(
        Duration::from_secs(30),
        "the uid to be served again",
        || d.cli(&["status"]).status.success().then_some(()),
    );
}

/// A program that floods one of its sockets (here its local API, with connections that
/// send nothing) uses up that socket's budget only: its egress proxy keeps working.
#[test]
fn an_agent_flooding_its_local_api_still_gets_out_through_its_proxy() {
    let test = "an_agent_flooding_its_local_api_still_gets_out_through_its_proxy";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let stub = StubServer::start();
    stub.set("/ok", 200, "still out");
    let p = stub.port;
    let d = Daemon::start("apiflood", "");
    d.create(&format!(
        "name = \"flood\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"echo up; exec sleep 100000\"]\n"
    ));
    let f = d.file(
        "scopes.toml",
        &format!(
            "tools = [\"http_request\"]\n[[http]]\nhost = \"127.0.0.1\"\nmethods = [\"GET\"]\nports = [{p}]\nprivate = true\n"
        ),
    );
    d.json(&["scopes", "publish", "flood", &f]);
    d.wait_log("flood", "up", Duration::from_secs(60));
    let cid = d.agent("flood")["container_id"]
        .as_str()
        .expect("cid")
        .to_string();
    // 48 idle connections to the local API from inside the container (its budget is 32).
    docker(&[
        "exec",
        "-d",
        &cid,
        "sh",
        "-c",
        "for i in $(seq 48); do sleep 1000 | nc 127.0.0.1 4180 & done; wait",
    ]);
    wait_for(
        Duration::from_secs(60),
        "the local API's budget to run out",
        || {
            d.log()
                .contains("local API of agent default/flood: 32 connections already open")
                .then_some(())
        },
    );
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            &cid,
            "sh",
            "-c",
            &format!("http_proxy=http://127.0.0.1:3128 wget -q -O - http://127.0.0.1:{p}/ok"),
        ])
        .output()
        .expect("docker exec");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "still out",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
