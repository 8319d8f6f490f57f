//! End-to-end, swarm mode (`engine_mode = "swarm"`) on a one-node swarm of the real
//! engine: an agent is a hardened service of one task on its own encrypted internal
//! overlay; create, stop, start, restart, delete; placement no node meets → pending with
//! Swarm's reason; the restart budget spent → Failed and the service scaled down; `kill
//! -9` of the daemon → the service and its task untouched, adopted on restart. The
//! gateway over the overlay with tokens; a foreign image's task needing nothing of the
//! daemon's host; and across two nodes (a second engine in a container): an agent and a
//! job agent's runs on the other node, governed the same, and the agent moved when that
//! node dies. (Job agents on one node: `tests/jobs.rs`, in both modes.)

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn service(d: &Daemon, tenant: &str, name: &str) -> String {
    format!("agf_{}_{tenant}_{name}", d.instance)
}

fn task_of(v: &Value) -> String {
    v["task"].as_str().expect("a task id").to_string()
}

#[test]
fn swarm_agents_are_hardened_services_through_their_lifecycle() {
    let Some(_swarm) =
        SwarmGuard::join("swarm_agents_are_hardened_services_through_their_lifecycle")
    else {
        return;
    };
    let d = Daemon::start("swarm-life", SwarmGuard::config());
    d.create(
        "name = \"s1\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [workload]\nmessage = \"hello from swarm\"\nlog_interval_ms = 200\n\
         [limits]\nmemory_mb = 64\ncpus = 0.5\npids = 32\n\
         [restart]\nattempts = 3\ninterval_secs = 60\ndelay_ms = 300\n",
    );
    let v = d.wait_agent("acme/s1", "running as a task", T, |v| {
        v["state"] == "Running" && v["task"].is_string()
    });
    let hostname = docker(&["info", "--format", "{{.Name}}"]);
    assert_eq!(v["node"], hostname.as_str(), "{v}");
    assert_eq!(v["task_state"], "running", "{v}");
    let name = service(&d, "acme", "s1");

    // The service: the container's hardening as a task template.
    let s = service_inspect(&name);
    let spec = &s["Spec"];
    assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 1, "{spec}");
    let c = &spec["TaskTemplate"]["ContainerSpec"];
    assert_eq!(c["CapabilityDrop"], serde_json::json!(["ALL"]), "{c}");
    assert_eq!(c["ReadOnly"], true);
    assert_eq!(c["User"], "65534:65534");
    assert_eq!(c["Labels"]["agenfleet.agent"], "s1");
    assert_eq!(c["Labels"]["agenfleet.instance"], d.instance.as_str());
    let limits = &spec["TaskTemplate"]["Resources"]["Limits"];
    assert_eq!(limits["MemoryBytes"], 64 * 1024 * 1024);
    assert_eq!(limits["NanoCPUs"], 500_000_000);
    assert_eq!(limits["Pids"], 32);
    let restart = &spec["TaskTemplate"]["RestartPolicy"];
    assert_eq!(restart["Condition"], "any");
    assert_eq!(restart["MaxAttempts"], 3);
    assert_eq!(restart["Delay"], 300_000_000i64);
    assert_eq!(spec["TaskTemplate"]["LogDriver"]["Name"], "none");
    // Its network: the agent's own overlay, encrypted and internal.
    let net_name = format!("agfnet_{}_acme_s1", d.instance);
    let net: Value =
        serde_json::from_str(&docker(&["network", "inspect", &net_name])).expect("network JSON");
    let net = &net[0];
    assert_eq!(net["Driver"], "overlay");
    assert_eq!(net["Internal"], true);
    assert!(net["Options"].get("encrypted").is_some(), "{net}");
    assert_eq!(
        spec["TaskTemplate"]["Networks"][0]["Target"], net["Id"],
        "{spec}"
    );
    // The task's container, as the engine made it.
    let cid = v["container_id"].as_str().expect("container id");
    let ci = inspect(cid);
    let h = &ci["HostConfig"];
    assert_eq!(h["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["Memory"], 64 * 1024 * 1024);
    assert_eq!(h["PidsLimit"], 32);
    assert_eq!(ci["Config"]["User"], "65534:65534");
    assert_eq!(
        ci["Config"]["Labels"]["com.docker.swarm.service.name"],
        name.as_str()
    );
    let nets = ci["NetworkSettings"]["Networks"]
        .as_object()
        .expect("networks");
    assert_eq!(nets.keys().collect::<Vec<_>>(), vec![&net_name], "{nets:?}");
    // The CLI names the node, as the console's fleet view does.
    let list = String::from_utf8_lossy(&d.cli(&["agents", "list"]).stdout).to_string();
    let header = list.lines().next().unwrap_or_default();
    assert!(header.contains("NODE"), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains("acme/s1") && l.contains(&hostname)),
        "{list}"
    );
    let show = String::from_utf8_lossy(&d.cli(&["agents", "show", "acme/s1"]).stdout).to_string();
    assert!(
        show.lines()
            .any(|l| l.starts_with("node") && l.contains(&hostname) && l.contains("running")),
        "{show}"
    );
    // Its output reaches the daemon (carried by its shim; the engine keeps none), and so
    // do its CPU and memory, read from its own cgroup (on any node).
    d.wait_log("acme/s1", "hello from swarm", T);
    let v = d.wait_agent("acme/s1", "its task's readings", T, |v| {
        v["memory_bytes"].as_u64().is_some_and(|m| m > 0) && v["cpu_percent"].is_number()
    });
    assert!(
        v["memory_bytes"].as_u64().unwrap_or(0) < 64 * 1024 * 1024,
        "within its limit: {v}"
    );

    // Stop: no replica, no task running; no readings shown for it.
    let out = d.cli(&["agents", "stop", "acme/s1"]);
    assert!(out.status.success(), "{out:?}");
    let stopped = d.wait_agent("acme/s1", "stopped", T, |v| v["state"] == "Stopped");
    assert!(stopped["memory_bytes"].is_null(), "{stopped}");
    assert_eq!(
        service_inspect(&name)["Spec"]["Mode"]["Replicated"]["Replicas"],
        0
    );
    wait_for(T, "the task to stop", || {
        (!service_tasks(&name)
            .iter()
            .any(|(_, s)| s.starts_with("Running")))
        .then_some(())
    });
    // Start: a new task.
    let first = task_of(&v);
    let out = d.cli(&["agents", "start", "acme/s1"]);
    assert!(out.status.success(), "{out:?}");
    let v = d.wait_agent("acme/s1", "running again", T, |v| {
        v["state"] == "Running" && v["task"].is_string() && v["task"] != first.as_str()
    });
    // Restart: another task.
    let second = task_of(&v);
    let out = d.cli(&["agents", "restart", "acme/s1"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_agent("acme/s1", "restarted as a new task", T, |v| {
        v["state"] == "Running" && v["task"].is_string() && v["task"] != second.as_str()
    });

    // A new restart budget is Swarm's restart policy: the service takes it (a new task).
    let third = d.agent("acme/s1")["task"].clone();
    let f = d.file(
        "s1-v2.toml",
        "name = \"s1\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [workload]\nmessage = \"hello from swarm\"\nlog_interval_ms = 200\n\
         [limits]\nmemory_mb = 64\ncpus = 0.5\npids = 32\n\
         [restart]\nattempts = 4\ninterval_secs = 60\ndelay_ms = 300\n",
    );
    let out = d.cli(&["agents", "apply", "-f", &f, "--yes"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_agent("acme/s1", "running a task of the new spec", T, |v| {
        v["state"] == "Running" && v["task"].is_string() && v["task"] != third
    });
    assert_eq!(
        service_inspect(&name)["Spec"]["TaskTemplate"]["RestartPolicy"]["MaxAttempts"],
        4
    );

    // A placement no node meets: pending, with Swarm's reason.
    d.create(
        "name = \"nowhere\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [placement]\nconstraints = [\"node.labels.zone==mars\"]\n",
    );
    let v = d.wait_agent("acme/nowhere", "pending with Swarm's reason", T, |v| {
        v["state"] == "Pending"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("no suitable node"))
    });
    assert!(v["node"].is_null(), "{v}");
    // A constraint Swarm cannot read is refused before anything is made.
    let typo = d.file(
        "typo.toml",
        "name = \"typo\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [placement]\nconstraints = [\"node.lables.zone==eu\"]\n",
    );
    let bad = d.cli(&["agents", "create", "-f", &typo]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("placement.constraints[0]"), "{err}");

    // Delete: the service and its network go.
    for a in ["acme/s1", "acme/nowhere"] {
        let out = d.cli(&["agents", "delete", a]);
        assert!(out.status.success(), "{out:?}");
    }
    wait_for(T, "the services to be removed", || {
        let left = docker(&[
            "service",
            "ls",
            "--filter",
            &format!("label=agenfleet.instance={}", d.instance),
            "-q",
        ]);
        left.is_empty().then_some(())
    });
    wait_for(T, "the overlay network to be removed", || {
        let out = std::process::Command::new("docker")
            .args(["network", "inspect", &net_name])
            .output()
            .expect("docker");
        (!out.status.success()).then_some(())
    });
}

#[test]
fn swarm_budget_marks_failed_and_a_killed_daemon_adopts_its_services() {
    let Some(_swarm) =
        SwarmGuard::join("swarm_budget_marks_failed_and_a_killed_daemon_adopts_its_services")
    else {
        return;
    };
    let mut d = Daemon::start("swarm-budget", SwarmGuard::config());
    // A crashing agent: Swarm restarts it, the budget (2 in 60 s) ends it.
    d.create(
        "name = \"crash\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [workload]\nexit_after_ms = 300\nexit_code = 3\n\
         [restart]\nattempts = 2\ninterval_secs = 60\ndelay_ms = 200\n",
    );
    let v = d.wait_agent("acme/crash", "failed past its budget", T, |v| {
        v["state"] == "Failed"
    });
    let msg = v["message"].as_str().unwrap_or("");
    assert!(msg.contains("restart budget exhausted"), "{v}");
    assert!(msg.contains("exit code 3"), "{v}");
    assert_eq!(v["restarts"], 2, "{v}");
    let crash = service(&d, "acme", "crash");
    assert_eq!(
        service_inspect(&crash)["Spec"]["Mode"]["Replicated"]["Replicas"],
        0,
        "a failed agent's service is scaled down"
    );
    // Each exit is in the audit trail, and the failure.
    let audit = d.json(&["audit", "search", "--agent", "acme/crash"]);
    let actions: Vec<String> = audit
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| *a == "agent.exited").count(),
        3,
        "{actions:?}"
    );
    assert!(actions.iter().any(|a| a == "agent.failed"), "{actions:?}");
    // The crash loop is an incident, routed as in container mode.
    let incidents = d.json(&["incidents", "list", "--all"]).to_string();
    assert!(incidents.contains("crash-loop"), "{incidents}");
    // Reset: runs again (and crashes again).
    let out = d.cli(&["agents", "reset", "acme/crash"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_agent("acme/crash", "running again after reset", T, |v| {
        v["restarts_in_window"] == 0 && v["state"] != "Failed"
    });

    // An OOM kill on this node is seen as one (the task's container says so).
    d.create(
        "name = \"hog\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [limits]\nmemory_mb = 32\n[restart]\nattempts = 1\ndelay_ms = 100\n\
         [workload]\nalloc_mb_per_sec = 64\nlog_interval_ms = 100\n",
    );
    let v = d.wait_agent("acme/hog", "failed after OOM kills", T, |v| {
        v["state"] == "Failed"
    });
    assert_eq!(v["last_exit"]["oom_killed"], true, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("OOM-killed"),
        "{v}"
    );

    // A steady agent survives kill -9 of the daemon: same service, same task.
    d.create(
        "name = \"steady\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"agenfleet/agent\"\n\
         [workload]\nmessage = \"steady\"\nlog_interval_ms = 200\n",
    );
    let v = d.wait_agent("acme/steady", "running", T, |v| {
        v["state"] == "Running" && v["task"].is_string()
    });
    let task = task_of(&v);
    let steady = service(&d, "acme", "steady");
    let service_id = service_inspect(&steady)["ID"].clone();
    d.kill9();
    d.restart();
    let v = d.wait_agent("acme/steady", "adopted", T, |v| {
        v["state"] == "Running" && v["task"].is_string()
    });
    assert_eq!(task_of(&v), task, "the same task runs on");
    assert_eq!(service_inspect(&steady)["ID"], service_id);
    let running: Vec<_> = service_tasks(&steady)
        .into_iter()
        .filter(|(_, s)| s.starts_with("Running"))
        .collect();
    assert_eq!(running.len(), 1, "{running:?}");
    assert_eq!(running[0].0, task);
    let audit = d.json(&["audit", "search", "--agent", "acme/steady"]);
    assert!(
        audit
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["event"]["action"] == "agent.adopted"),
        "{audit}"
    );
    d.wait_log("acme/steady", "steady", T);
    // Its token is in force again after the restart: a decision over the overlay.
    let decisions = d.gateway_calls(
        "acme/steady",
        &[serde_json::json!({"tool": "search", "args": {}})],
    );
    assert_eq!(decisions.len(), 1, "{decisions:?}");
    assert_eq!(decisions[0]["verdict"], "deny", "{decisions:?}");
    assert!(
        decisions[0]["decision_id"].as_u64().is_some(),
        "{decisions:?}"
    );
    for a in ["acme/crash", "acme/hog", "acme/steady"] {
        let out = d.cli(&["agents", "delete", a]);
        assert!(out.status.success(), "{out:?}");
    }
}

#[test]
fn a_swarm_agent_has_no_route_out_but_its_gateway() {
    let test = "a_swarm_agent_has_no_route_out_but_its_gateway";
    let Some(_swarm) = SwarmGuard::join(test) else {
        return;
    };
    let Some(image) = busybox_image(test) else {
        return;
    };
    // A listener on the host, reachable from a container on the engine's default bridge.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").expect("listen");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = s.write_all(b"yes\n");
        }
    });
    // The host as a container on the default bridge sees it: its default gateway.
    let routes = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/busybox",
        &image,
        "ip",
        "route",
    ]);
    let host = routes
        .lines()
        .find_map(|l| l.strip_prefix("default via "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no default route in a plain container: {routes}"))
        .to_string();
    // (busybox's wget crashes when static; nc connects and says so by its status)
    let probe =
        format!("echo | /bin/busybox nc -w 3 {host} {port} && echo REACHED || echo BLOCKED");
    // The same probe from a plain container gets through: the listener is there.
    let plain = docker(&[
        "run",
        "--rm",
        "--entrypoint",
        "/bin/busybox",
        &image,
        "sh",
        "-c",
        &probe,
    ]);
    assert!(plain.contains("REACHED"), "{plain}");
    let d = Daemon::start("swarm-egress", SwarmGuard::config());
    // The probe runs again every second: the daemon attaches to a task's output once
    // Swarm has started it, so the first lines can come before it listens.
    d.create(&format!(
        "name = \"shut-in\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"while true; do {probe}; echo PROBED; /bin/busybox sleep 1; done\"]\n"
    ));
    d.wait_agent("acme/shut-in", "running", T, |v| v["state"] == "Running");
    d.wait_log("acme/shut-in", "PROBED", T);
    let logs = String::from_utf8_lossy(&d.cli(&["logs", "acme/shut-in"]).stdout).to_string();
    assert!(logs.contains("BLOCKED"), "{logs}");
    assert!(!logs.contains("REACHED"), "{logs}");
    // The program runs with no_new_privs set by its init (a task spec cannot ask for it).
    let v = d.agent("acme/shut-in");
    let cid = v["container_id"].as_str().expect("container id");
    let status = docker(&["exec", cid, "/bin/busybox", "cat", "/proc/1/status"]);
    let pid1_nnp = status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .unwrap_or_default()
        .to_string();
    let children = docker(&[
        "exec",
        cid,
        "/bin/busybox",
        "sh",
        "-c",
        "for p in /proc/[0-9]*; do /bin/busybox grep -h NoNewPrivs $p/status; done",
    ]);
    assert!(
        children.lines().any(|l| l.trim_end().ends_with('1')),
        "the program has NoNewPrivs: {children} (init: {pid1_nnp})"
    );
    let out = d.cli(&["agents", "delete", "acme/shut-in"]);
    assert!(out.status.success(), "{out:?}");
}

/// Asks for `http_request` calls (one per method, to api.example.com) through the shim's
/// `call` in container `cid`, reached with `engine` (`docker`, or a worker's engine);
/// answers the decisions.
fn decide(engine: &[String], cid: &str, methods: &[&str]) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(&engine[0])
        .args(&engine[1..])
        .args(["exec", "-i", cid, "/.agenfleet/agenfleet-agent", "call"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("docker exec");
    let mut stdin = child.stdin.take().expect("stdin");
    for m in methods {
        let call = serde_json::json!({"tool": "http_request", "args": {"method": m, "url": "https://api.example.com/x"}});
        writeln!(stdin, "{call}").expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("output");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("decision JSON ({e}): {l}")))
        .collect()
}

#[test]
fn swarm_gateway_serves_each_agent_over_its_overlay_and_refuses_a_copied_token() {
    let test = "swarm_gateway_serves_each_agent_over_its_overlay_and_refuses_a_copied_token";
    let Some(_swarm) = SwarmGuard::join(test) else {
        return;
    };
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("swarm-gw", SwarmGuard::config());
    d.json(&["vault", "init"]);
    // A file credential reaches the program: fetched by the shim over the overlay.
    let script = "while :; do echo \"db=$(/bin/busybox cat /run/agenfleet/secrets/db)\"; /bin/busybox sleep 1; done";
    d.create(&format!(
        "name = \"alpha\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         credentials = [{{ name = \"db\", as = \"file\" }}]\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", {}]\n",
        serde_json::to_string(script).expect("json")
    ));
    let canary = format!("CANARY-swarm-{:x}", std::process::id());
    let out = d.cli_stdin(&["creds", "set", "acme/alpha", "db"], &canary);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = d.wait_agent("acme/alpha", "running", T, |v| v["state"] == "Running");
    d.wait_log("acme/alpha", "db=[redacted:db v1]", T);
    let alpha = v["container_id"].as_str().expect("cid").to_string();
    // Tool calls are decided over the overlay: the scopes allow one, deny the other.
    let f = d.file(
        "scopes.toml",
        "tools = [\"http_request\"]\n[[http]]\nhost = \"api.example.com\"\nmethods = [\"GET\"]\n",
    );
    d.json(&["scopes", "publish", "acme/alpha", &f]);
    let decisions = decide(&["docker".to_string()], &alpha, &["GET", "DELETE"]);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[0]["allowed"], true, "{decisions:?}");
    assert_eq!(decisions[1]["verdict"], "deny", "{decisions:?}");

    // Another agent, on its own network.
    d.create(&format!(
        "name = \"beta\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"while :; do /bin/busybox sleep 1; done\"]\n"
    ));
    let v = d.wait_agent("acme/beta", "running", T, |v| v["state"] == "Running");
    let beta = v["container_id"].as_str().expect("cid").to_string();
    let alpha_token = sh_in(&alpha, "/bin/busybox cat /run/secrets/agenfleet-gateway");
    let beta_token = sh_in(&beta, "/bin/busybox cat /run/secrets/agenfleet-gateway");
    assert_eq!(alpha_token.trim().len(), 64, "a token in alpha's task");
    assert_ne!(alpha_token, beta_token);
    let ep = endpoint_address(&d.instance, "acme", "beta");
    let ask = |token: &str| health_through_endpoint(&beta, &ep, token);
    // Its own token: its local API answers.
    let own = ask(&beta_token);
    assert!(own.starts_with("HTTP/1.0 200"), "{own}");
    // Alpha's token, from beta's network: refused, recorded, an incident.
    let stolen = ask(&alpha_token);
    assert!(stolen.is_empty(), "{stolen}");
    let refused = d
        .json(&["audit", "search", "--action", "gateway.refused"])
        .to_string();
    assert!(
        refused.contains("acme/beta's network presented the gateway token of acme/alpha"),
        "{refused}"
    );
    let incidents = d.json(&["incidents", "list", "--all"]).to_string();
    assert!(incidents.contains("with acme/alpha's token"), "{incidents}");
    // A made-up token: refused too.
    let forged = ask(&"0".repeat(64));
    assert!(forged.is_empty(), "{forged}");
    // What the trail says was refused on beta's behalf.
    let refused_of_beta = || {
        d.json(&[
            "audit",
            "search",
            "--action",
            "gateway.refused",
            "--agent",
            "acme/beta",
        ])
        .to_string()
    };
    // A first line that is not the protocol's: closed, and recorded as beta's.
    let junk = sh_in(
        &beta,
        &format!("(printf 'GET / HTTP/1.0\\r\\n\\r\\n'; /bin/busybox sleep 2) | /bin/busybox nc -w 4 {ep} 4190"),
    );
    assert!(junk.is_empty(), "{junk}");
    let refused = refused_of_beta();
    assert!(refused.contains("malformed connection"), "{refused}");
    // On the logs channel with its own token: its lines are its output; a line the shim
    // would not write closes the connection and is recorded.
    sh_in(
        &beta,
        &format!(
            "(printf 'AGF-GW1 {} logs\n1 beta says hello\nGARBAGE\n'; /bin/busybox sleep 2) | /bin/busybox nc -w 4 {ep} 4190",
            beta_token.trim()
        ),
    );
    d.wait_log("acme/beta", "beta says hello", T);
    wait_for(T, "the malformed output line on record", || {
        refused_of_beta()
            .contains("malformed line on the logs channel")
            .then_some(())
    });

    // Rotation: beta gets a new token in a new task; the old one is refused at once.
    let before = d.agent("acme/beta")["task"].clone();
    let out = d.cli(&["agents", "rotate-token", "acme/beta"]);
    assert!(out.status.success(), "{out:?}");
    let v = d.wait_agent("acme/beta", "running a new task", T, |v| {
        v["state"] == "Running" && v["task"].is_string() && v["task"] != before
    });
    let beta = v["container_id"].as_str().expect("cid").to_string();
    let ask = |token: &str| health_through_endpoint(&beta, &ep, token);
    let new_token = sh_in(&beta, "/bin/busybox cat /run/secrets/agenfleet-gateway");
    assert_ne!(new_token, beta_token);
    let old = ask(&beta_token);
    assert!(old.is_empty(), "the old token is refused: {old}");
    let new = ask(&new_token);
    assert!(new.starts_with("HTTP/1.0 200"), "{new}");
    let refused = refused_of_beta();
    assert!(
        refused.contains("a gateway token that is not in force"),
        "{refused}"
    );
    let rotated = d
        .json(&["audit", "search", "--action", "agent.token_rotated"])
        .to_string();
    assert!(
        rotated.contains("acme") && rotated.contains("replaced by"),
        "{rotated}"
    );
    // In container mode there is no token to rotate: the daemon says so.
    let plain = Daemon::start("swarm-gw-plain", "");
    plain.create(&healthy("plain"));
    let out = plain.cli(&["agents", "rotate-token", "plain"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tokens are for engine_mode"),
        "{out:?}"
    );
    // The credential's value is in no log, audit record or service spec.
    let spec = docker(&[
        "service",
        "inspect",
        &format!("agf_{}_acme_alpha", d.instance),
    ]);
    assert!(!spec.contains(&canary) && !spec.contains(alpha_token.trim()));
    assert!(!d.log().contains(&canary) && !d.log().contains(alpha_token.trim()));
    for a in ["acme/alpha", "acme/beta"] {
        let out = d.cli(&["agents", "delete", a]);
        assert!(out.status.success(), "{out:?}");
    }
}

/// The engine's objects of one kind (`config`, `volume`) labelled as this agent's.
fn labelled(kind: &str, d: &Daemon, name: &str) -> String {
    docker(&[
        kind,
        "ls",
        "-q",
        "--filter",
        &format!("label=agenfleet.instance={}", d.instance),
        "--filter",
        &format!("label=agenfleet.agent={name}"),
    ])
}

#[test]
fn a_foreign_images_task_needs_nothing_of_the_daemons_host() {
    let test = "a_foreign_images_task_needs_nothing_of_the_daemons_host";
    let Some(_swarm) = SwarmGuard::join(test) else {
        return;
    };
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("swarm-portable", SwarmGuard::config());
    d.file("SOUL.md", "You are the portable agent.\n");
    let program = "cat /config/SOUL.md; echo run >> /workspace/runs; \
                   echo RUNS=$(/bin/busybox wc -l < /workspace/runs); exec /bin/busybox sleep 100000";
    d.create(&format!(
        "name = \"portable\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"{program}\"]\n\
         [[files]]\nsource = \"SOUL.md\"\ntarget = \"/config/SOUL.md\"\n\
         [workspace]\nsize_mb = 8\n"
    ));
    let first = d.wait_agent("acme/portable", "running as a task", T, |v| {
        v["state"] == "Running" && v["task"].is_string()
    });
    d.wait_log("acme/portable", "RUNS=1", T);
    d.wait_log("acme/portable", "You are the portable agent.", T);

    // The service mounts nothing of the daemon's host: the shim is in the agent's init
    // image, the file is a Swarm config, the workspace a named volume.
    let name = service(&d, "acme", "portable");
    let c = service_inspect(&name)["Spec"]["TaskTemplate"]["ContainerSpec"].clone();
    let img = c["Image"].as_str().expect("image");
    assert!(img.starts_with("agenfleet/init:"), "{c}");
    assert_eq!(c["Command"][0], "/.agenfleet/agenfleet-agent", "{c}");
    let mounts = c["Mounts"].as_array().expect("mounts");
    assert!(!mounts.iter().any(|m| m["Type"] == "bind"), "{mounts:?}");
    let ws = mounts
        .iter()
        .find(|m| m["Target"] == "/workspace")
        .unwrap_or_else(|| panic!("no workspace mount: {mounts:?}"));
    assert_eq!(ws["Type"], "volume");
    assert_eq!(
        ws["Source"],
        format!("agfws_{}_acme_portable", d.instance).as_str()
    );
    let cfg = &c["Configs"][0];
    assert_eq!(cfg["File"]["Name"], "/config/SOUL.md", "{c}");
    assert_eq!(cfg["File"]["Mode"], 0o444);
    assert_eq!(cfg["File"]["UID"], "65534");
    // Nor did the daemon write them on its host.
    let state = d.dir.join("state");
    assert!(!state.join("files/acme.portable").exists());
    assert!(!state.join("workspaces/acme.portable.ext4").exists());
    // The image is the busybox image with the shim added: loaded on a node, it is all a
    // task there needs.
    let layers = docker(&["image", "inspect", "--format", "{{.Config.Cmd}}", img]);
    assert!(layers.contains("image default program"), "{layers}");

    // A new task (restart) finds the workspace as the last one left it.
    let out = d.cli(&["agents", "restart", "acme/portable"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_agent("acme/portable", "running a new task", T, |v| {
        v["state"] == "Running" && v["task"].is_string() && v["task"] != first["task"]
    });
    d.wait_log("acme/portable", "RUNS=2", T);

    // A changed file is a new config; the old one goes once no task holds it.
    let old_config = labelled("config", &d, "portable");
    assert_eq!(old_config.lines().count(), 1, "{old_config}");
    d.file("SOUL.md", "You are the portable agent, second edition.\n");
    let f = d.file(
        "portable-v2.toml",
        &format!(
            "name = \"portable\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
             command = [\"/bin/busybox\", \"sh\", \"-c\", \"{program}\"]\n\
             [[files]]\nsource = \"SOUL.md\"\ntarget = \"/config/SOUL.md\"\n\
             [workspace]\nsize_mb = 8\n"
        ),
    );
    let out = d.cli(&["agents", "apply", "-f", &f, "--yes"]);
    assert!(out.status.success(), "{out:?}");
    d.wait_log("acme/portable", "second edition", T);
    d.wait_log("acme/portable", "RUNS=3", T);
    wait_for(T, "the old file's config to go", || {
        let now = labelled("config", &d, "portable");
        (now.lines().count() == 1 && now != old_config).then_some(())
    });

    // The shim carries the task's output to the daemon itself (the engine keeps none, and
    // a task on another node cannot be attached to): its first lines, both streams, and
    // its last words before it exits.
    d.create(&format!(
        "name = \"brief\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"echo first words; echo on stderr >&2; /bin/busybox sleep 1; echo last words; exit 4\"]\n\
         [restart]\nattempts = 1\ninterval_secs = 60\ndelay_ms = 200\n"
    ));
    d.wait_agent("acme/brief", "failed past its budget", T, |v| {
        v["state"] == "Failed"
    });
    let out = d.cli(&["logs", "acme/brief"]);
    let logs = String::from_utf8_lossy(&out.stdout).to_string();
    for want in ["first words", "on stderr", "last words"] {
        assert_eq!(
            logs.matches(want).count(),
            2,
            "`{want}` once per task: {logs}"
        );
    }
    let out = d.cli(&["agents", "delete", "acme/brief"]);
    assert!(out.status.success(), "{out:?}");

    // Delete (and the purge right after it): the config and the volume go, recorded.
    let out = d.cli(&["agents", "delete", "acme/portable"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(T, "the file config to be removed", || {
        labelled("config", &d, "portable").is_empty().then_some(())
    });
    wait_for(T, "the workspace volume to be removed", || {
        labelled("volume", &d, "portable").is_empty().then_some(())
    });
    let volume = format!(
        "workspace volume agfws_{}_acme_portable removed from this node",
        d.instance
    );
    wait_for(T, "the purge's record", || {
        let purged = d
            .json(&["audit", "search", "--action", "agent.purge"])
            .to_string();
        purged.contains(&volume).then_some(())
    });
}

#[test]
fn an_agent_on_another_node_is_governed_the_same_and_moves_when_its_node_dies() {
    let test = "an_agent_on_another_node_is_governed_the_same_and_moves_when_its_node_dies";
    let Some(nodes) = TwoNodes::start(test) else {
        return;
    };
    let Some(image) = busybox_image(test) else {
        return;
    };
    // This machine's kernel offers no ESP with AES-GCM (IPsec): an encrypted overlay
    // carries nothing between nodes here ("function not implemented" from the engine).
    let d = Daemon::start(
        "swarm-two",
        &format!("{}swarm_overlay_encrypted = false\n", SwarmGuard::config()),
    );
    d.json(&["vault", "init"]);
    d.file("SOUL.md", "You are far from home.\n");
    let program = "echo \\\"soul=$(/bin/busybox cat /config/SOUL.md)\\\"; echo run >> /workspace/runs; \
                   while :; do echo \\\"db=$(/bin/busybox cat /run/agenfleet/secrets/db)\\\"; /bin/busybox sleep 1; done";
    // Placed where no node is yet: the daemon makes its init image meanwhile.
    d.create(&format!(
        "name = \"far\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         credentials = [{{ name = \"db\", as = \"file\" }}]\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"{program}\"]\n\
         [[files]]\nsource = \"SOUL.md\"\ntarget = \"/config/SOUL.md\"\n\
         [workspace]\nsize_mb = 8\n\
         [placement]\nconstraints = [\"node.labels.agf==far\"]\n"
    ));
    let canary = format!("CANARY-far-{:x}", std::process::id());
    let out = d.cli_stdin(&["creds", "set", "acme/far", "db"], &canary);
    assert!(out.status.success(), "{out:?}");
    d.wait_agent("acme/far", "pending: no node has the label", T, |v| {
        v["state"] == "Pending"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("no suitable node"))
    });
    // There is no registry: the agent's (init) image goes onto the worker by hand, as an
    // operator would load it on each node.
    let name = service(&d, "acme", "far");
    let init_image = service_inspect(&name)["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        .as_str()
        .expect("image")
        .to_string();
    assert!(init_image.starts_with("agenfleet/init:"), "{init_image}");
    // A node without the image rejects the task: the agent says so, in Swarm's words,
    // and fails past its budget like any agent that cannot start.
    docker(&["node", "update", "--label-add", "agf=far", &nodes.worker]);
    let v = d.wait_agent("acme/far", "failed: no such image on the worker", T, |v| {
        v["state"] == "Failed"
            && v["last_exit"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("No such image"))
    });
    assert!(
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("no exit code (Swarm: No such image")),
        "{v}"
    );
    // Loaded there, and reset: it runs.
    nodes.load(&init_image);
    let out = d.cli(&["agents", "reset", "acme/far"]);
    assert!(out.status.success(), "{out:?}");

    // On the worker: running, its output and readings reach the daemon, its file
    // credential came over the overlay, its file and workspace are the worker's.
    let v = d.wait_agent("acme/far", "running on the worker", T, |v| {
        v["state"] == "Running" && v["node"] == nodes.worker.as_str()
    });
    let cid = v["container_id"]
        .as_str()
        .expect("container id")
        .to_string();
    d.wait_log("acme/far", "soul=You are far from home.", T);
    d.wait_log("acme/far", "db=[redacted:db v1]", T);
    d.wait_agent("acme/far", "its readings from the worker", T, |v| {
        v["memory_bytes"].as_u64().is_some_and(|m| m > 0)
    });
    let on_worker = nodes.on_worker(&["ps", "-q", "--no-trunc"]);
    assert!(
        on_worker.contains(&cid),
        "{cid} not on the worker: {on_worker}"
    );
    let volumes = nodes.on_worker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=agenfleet.agent=far",
    ]);
    assert_eq!(
        volumes.lines().count(),
        1,
        "the workspace on the worker: {volumes}"
    );
    // Its tool calls are decided by the daemon, across the nodes.
    let f = d.file(
        "scopes.toml",
        "tools = [\"http_request\"]\n[[http]]\nhost = \"api.example.com\"\nmethods = [\"GET\"]\n",
    );
    d.json(&["scopes", "publish", "acme/far", &f]);
    let decisions = decide(&nodes.docker_cmd(), &cid, &["GET", "DELETE"]);
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[0]["allowed"], true, "{decisions:?}");
    assert_eq!(decisions[1]["verdict"], "deny", "{decisions:?}");

    // A program the kernel's OOM killer ends on the worker: its shim says so (the daemon
    // cannot inspect a container there), and the exit is shown as an OOM kill.
    d.create(&format!(
        "name = \"hog\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"x=$(/bin/busybox head -c 300000000 /dev/zero | /bin/busybox tr '\\\\0' a); echo survived\"]\n\
         [limits]\nmemory_mb = 32\n[restart]\nattempts = 1\ninterval_secs = 60\ndelay_ms = 200\n\
         [placement]\nconstraints = [\"node.hostname=={}\"]\n",
        nodes.worker
    ));
    // (The shim's word and the task's end reach the daemon by different ways, in either
    // order; and the word is the shim's best effort — should the kernel pick the shim
    // itself, no one is left to say it — so an OOM-killed exit on record is asked for,
    // and the client's OOM incident.)
    d.wait_agent("acme/hog", "failed past its budget on the worker", T, |v| {
        v["state"] == "Failed" && v["node"] == nodes.worker.as_str()
    });
    wait_for(T, "an OOM kill on the worker on record", || {
        let exits = d
            .json(&[
                "audit",
                "search",
                "--action",
                "agent.exited",
                "--agent",
                "acme/hog",
            ])
            .to_string();
        exits.contains("OOM-killed").then_some(())
    });
    let incidents = d.json(&["incidents", "list", "--all"]).to_string();
    assert!(incidents.contains("oom-kill"), "{incidents}");
    let out = d.cli(&["agents", "delete", "acme/hog"]);
    assert!(out.status.success(), "{out:?}");

    // A job agent's run placed on the worker: a service of one task there, its input from
    // a config, its output and its end (the exit code) back at the daemon, and nothing of
    // it left on the worker afterwards.
    let job = "echo \\\"input=$(/bin/busybox cat $AGENFLEET_RUN_INPUT)\\\"; /bin/busybox sleep 2; \
               case $(/bin/busybox cat $AGENFLEET_RUN_INPUT) in *fail*) exit 4;; esac";
    d.create(&format!(
        "name = \"batch\"\ntenant = \"acme\"\nproject = \"p1\"\nimage = \"{image}\"\n\
         command = [\"/bin/busybox\", \"sh\", \"-c\", \"{job}\"]\n\
         [runs]\nkind = \"job\"\ntimeout_secs = 120\n\
         [placement]\nconstraints = [\"node.hostname=={}\"]\n",
        nodes.worker
    ));
    d.wait_agent("acme/batch", "ready for runs", T, |v| {
        v["state"] == "Running"
    });
    let on_worker = |id: &str| {
        nodes.on_worker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=agenfleet.run={id}"),
        ])
    };
    let (_, v) = d.run_start("acme/batch", r#"{"far": true}"#, false);
    let id = v["id"].to_string();
    wait_for(T, "the run's container on the worker", || {
        (!on_worker(&id).trim().is_empty()).then_some(())
    });
    let v = d.json(&["runs", "show", &id, "--wait"]);
    assert_eq!(v["state"], "succeeded", "{v}");
    let out = d.cli(&["runs", "logs", &id]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains(r#"input={"far": true}"#), "{text}");
    let (_, v) = d.run_start("acme/batch", r#"{"fail": 1}"#, true);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited with code 4")),
        "{v}"
    );
    let failed = v["id"].to_string();
    wait_for(T, "the runs' containers gone from the worker", || {
        (on_worker(&id).trim().is_empty() && on_worker(&failed).trim().is_empty()).then_some(())
    });
    let out = d.cli(&["agents", "delete", "acme/batch"]);
    assert!(out.status.success(), "{out:?}");

    // The worker dies. Swarm places a new task where the placement allows (the manager,
    // once labelled too); the daemon records the loss, which is not the agent's exit.
    docker(&["node", "update", "--label-add", "agf=far", &nodes.manager]);
    let restarts = d.agent("acme/far")["restarts"].clone();
    nodes.kill_worker();
    let moved = d.wait_agent(
        "acme/far",
        "running on the manager",
        Duration::from_secs(120),
        |v| v["state"] == "Running" && v["node"] == nodes.manager.as_str(),
    );
    assert_eq!(
        moved["restarts"], restarts,
        "a lost node is not the agent's exit: {moved}"
    );
    wait_for(T, "the loss on record", || {
        let lost = d
            .json(&["audit", "search", "--action", "agent.node_lost"])
            .to_string();
        lost.contains(&format!("node {} is down", nodes.worker))
            .then_some(())
    });
    // The new task starts afresh: the file and the credential are there again (from
    // Swarm and the gateway), the workspace is a new one (the local driver's stayed on
    // the dead node).
    let n = |l: &str| l.matches("soul=You are far from home.").count();
    wait_for(T, "the new task's first lines", || {
        let out = d.cli(&["logs", "acme/far"]);
        (n(&String::from_utf8_lossy(&out.stdout)) >= 2).then_some(())
    });
    let after = d.cli(&["logs", "acme/far"]);
    let text = String::from_utf8_lossy(&after.stdout);
    assert!(
        !text.contains(&canary),
        "a credential value in the log: {text}"
    );
    // Deleted: its service goes, and the purge removes the workspace volume of the node it
    // last ran on (the daemon's; one on the dead node stays with it).
    let out = d.cli(&["agents", "delete", "acme/far"]);
    assert!(out.status.success(), "{out:?}");
    wait_for(T, "the workspace volume on this node to go", || {
        labelled("volume", &d, "far").is_empty().then_some(())
    });
}
