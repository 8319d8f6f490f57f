//! End-to-end: an agent whose image is not ours (Debian's busybox, built locally) runs
//! under the daemon with the shim as its init — the spec's `command`, `workdir` and `env`,
//! or the image's own program; signals reach the program, its exit code is the agent's,
//! orphans it leaves are reaped; a spec that puts a secret in `env` creates nothing.

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn cid(v: &Value) -> String {
    v["container_id"]
        .as_str()
        .expect("container id")
        .to_string()
}

/// Process states in the container (from /proc, with busybox's cat): (pid, state, name).
fn processes(cid: &str) -> Vec<(u32, char, String)> {
    let out = std::process::Command::new("docker")
        .args(["exec", cid, "sh", "-c", "cat /proc/[0-9]*/stat 2>/dev/null"])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let pid = l.split(' ').next()?.parse().ok()?;
            let (name, rest) = l.split_once(" (")?.1.split_once(") ")?;
            Some((pid, rest.chars().next()?, name.to_string()))
        })
        .collect()
}

#[test]
fn a_program_in_an_image_we_did_not_build_runs_with_the_shim_as_init() {
    let test = "a_program_in_an_image_we_did_not_build_runs_with_the_shim_as_init";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("anyagent", "stop_timeout_secs = 20");
    // A shell program: says where it runs, leaves orphans that exit at once, and handles
    // SIGTERM by exiting 7.
    let script = "trap 'echo got TERM; exit 7' TERM; \
                  echo \"started in $(pwd) level=$LOG_LEVEL\"; \
                  for i in 1 2 3 4 5; do (sh -c 'exit 0' &); done; \
                  echo orphans-spawned; \
                  while true; do sleep 0.2; done";
    let spec = format!(
        "name = \"bb\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", {}]\nworkdir = \"/tmp\"\n\
         [env]\nLOG_LEVEL = \"debug\"\n",
        serde_json::to_string(script).unwrap()
    );
    let v = d.create(&spec);
    assert_eq!(v["state"], "Running", "{v}");
    d.wait_log("bb", "started in /tmp level=debug", WAIT);
    d.wait_log("bb", "orphans-spawned", WAIT);

    // What `agents show` tells.
    let v = d.agent("bb");
    assert_eq!(v["command"][0], "sh", "{v}");
    assert_eq!(v["workdir"], "/tmp");
    assert_eq!(v["env"]["LOG_LEVEL"], "debug");
    let text = String::from_utf8_lossy(&d.cli(&["agents", "show", "bb"]).stdout).to_string();
    assert!(
        text.contains("command") && text.contains("sh -c '"),
        "{text}"
    );
    assert!(text.contains("LOG_LEVEL=debug"), "{text}");

    // The container: the shim (bind-mounted read-only) is PID 1 and runs the program; the
    // hardening is the built-in image's.
    let id = cid(&v);
    let c = inspect(&id);
    assert_eq!(
        c["Config"]["Entrypoint"],
        serde_json::json!(["/run/agenfleet/bin/agenfleet-agent", "run", "--"])
    );
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true);
    assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    assert_eq!(c["Config"]["User"], "65534:65534");
    let binds = c["HostConfig"]["Binds"].to_string();
    assert!(
        binds.contains(":/run/agenfleet/bin/agenfleet-agent:ro"),
        "{binds}"
    );
    let cmdline = docker(&["exec", &id, "cat", "/proc/1/cmdline"]).replace('\0', " ");
    assert!(
        cmdline.starts_with("/run/agenfleet/bin/agenfleet-agent run -- sh -c"),
        "PID 1 is `{cmdline}`"
    );
    // The shim cannot be changed from inside.
    let out = std::process::Command::new("docker")
        .args([
            "exec",
            &id,
            "sh",
            "-c",
            "echo x > /run/agenfleet/bin/agenfleet-agent",
        ])
        .output()
        .expect("docker exec");
    assert!(!out.status.success(), "the shim is writable from inside");

    // The orphans were reparented to PID 1, which reaps them: no zombie stays.
    wait_for(WAIT, "no zombie left in the container", || {
        let ps = processes(&id);
        (!ps.is_empty() && !ps.iter().any(|p| p.1 == 'Z')).then_some(())
    });

    // `agents stop`: the program gets SIGTERM, its handler runs, and its exit code is the
    // container's (the shim passes it on).
    let v = d.json(&["agents", "stop", "bb"]);
    assert_eq!(v["state"], "Stopped", "{v}");
    let c = inspect(&id);
    assert_eq!(c["State"]["Running"], false);
    assert_eq!(c["State"]["ExitCode"], 7, "{}", c["State"]);
    d.wait_log("bb", "got TERM", WAIT);
}

#[test]
fn exit_codes_and_the_images_own_program() {
    let test = "exit_codes_and_the_images_own_program";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("anyexit", "");
    // No `command`: the image's own CMD runs, under the shim.
    let v = d.create(&format!("name = \"own\"\nimage = \"{image}\"\n"));
    d.wait_log("own", "image default program", WAIT);
    let pid1 = docker(&["exec", &cid(&v), "cat", "/proc/1/cmdline"]).replace('\0', " ");
    assert!(
        pid1.starts_with(
            "/run/agenfleet/bin/agenfleet-agent run -- sh -c echo image default program"
        ),
        "{pid1}"
    );

    // A program that exits 3: the agent's last exit is 3, and with no restarts allowed it
    // fails.
    d.create(&format!(
        "name = \"three\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", \"echo bye; exit 3\"]\n\
         [restart]\nattempts = 0\n"
    ));
    let v = d.wait_agent("three", "failed", WAIT, |v| v["state"] == "Failed");
    assert_eq!(v["last_exit"]["code"], 3, "{v}");

    // A program that does not exist: 127, and the reason in its log.
    d.create(&format!(
        "name = \"nope\"\nimage = \"{image}\"\ncommand = [\"/no/such/program\"]\n\
         [restart]\nattempts = 0\n"
    ));
    let v = d.wait_agent("nope", "failed", WAIT, |v| v["state"] == "Failed");
    assert_eq!(v["last_exit"]["code"], 127, "{v}");
    d.wait_log("nope", "cannot start `/no/such/program`", WAIT);

    // Direct egress around the gateway is refused where the config does not allow it.
    let f = d.file(
        "direct.toml",
        &format!("name = \"direct\"\nimage = \"{image}\"\n[network]\nmode = \"egress\"\n"),
    );
    let out = d.cli(&["agents", "create", "-f", &f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("network.mode") && err.contains("allow_direct_egress"),
        "{err}"
    );
    assert!(!d.json(&["agents", "list"]).to_string().contains("direct"));

    // A secret in `env` is refused, naming the field, and nothing is created.
    let f = d.file(
        "secret.toml",
        &format!("name = \"leaky\"\nimage = \"{image}\"\n[env]\nOPENAI_API_KEY = \"sk-123\"\n"),
    );
    let out = d.cli(&["agents", "create", "-f", &f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("env.OPENAI_API_KEY") && err.contains("credentials"),
        "{err}"
    );
    assert!(!err.contains("sk-123"), "the value is echoed: {err}");
    let list = d.json(&["agents", "list"]);
    assert!(
        !list.to_string().contains("leaky"),
        "a refused spec created an agent: {list}"
    );
}

/// `request` (raw HTTP) to the local API from inside container `cid`, through the shim's
/// relay on 127.0.0.1:4180.
fn raw_api(cid: &str, request: &str) -> String {
    nc(cid, 4180, request.as_bytes())
}

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_shell_agent_uses_nothing_but_the_local_api() {
    let test = "a_shell_agent_uses_nothing_but_the_local_api";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("anyapi", "");
    d.json(&["vault", "init"]);
    let canary = format!("CANARY-{:x}-LOCALAPI", std::process::id());
    let script = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples/shell/agent.sh"),
    )
    .expect("the shell example");
    d.create(&format!(
        "name = \"sh\"\nimage = \"{image}\"\ncredentials = [\"api-key\"]\ncommand = [\"sh\", \"-c\", {}]\n\
         [env]\nCREDENTIAL = \"api-key\"\nAGENT_FILES = \"/data/report.txt /etc/shadow\"\n",
        serde_json::to_string(&script).unwrap()
    ));
    let f = d.file(
        "scopes.toml",
        "tools = [\"read_file\"]\nread_paths = [\"/data/\"]\n",
    );
    d.json(&["scopes", "publish", "sh", &f]);
    let out = d.cli_stdin(&["creds", "set", "sh", "api-key"], &canary);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_log("sh", "agent: done", WAIT);
    let logs = String::from_utf8_lossy(&d.cli(&["logs", "sh"]).stdout).to_string();
    assert!(logs.contains("local API up for sh"), "{logs}");
    assert!(
        logs.contains(&format!(
            "credential api-key version 1 in memory ({} bytes)",
            canary.len()
        )),
        "{logs}"
    );
    assert!(
        logs.contains("read_file /data/report.txt: allowed (audit record "),
        "{logs}"
    );
    assert!(
        logs.contains("read_file /etc/shadow: denied (audit record "),
        "{logs}"
    );
    assert!(
        !logs.contains(&canary),
        "the credential's value reached the log"
    );

    // Each decision, the delivery and the report are in the audit log.
    let (outcomes, decided) = decisions(&d, "sh");
    assert_eq!(outcomes, ["allow", "deny"], "{decided}");
    let delivered = d
        .json(&["audit", "search", "--action", "creds.deliver"])
        .to_string();
    assert!(delivered.contains("api-key v1 (local API)"), "{delivered}");
    assert!(!delivered.contains(&canary));
    let reports = d
        .json(&["audit", "search", "--action", "agent.report"])
        .to_string();
    assert!(reports.contains("/data/report.txt"), "{reports}");

    // An agent that prints its own secret: the log ring holds a label, never the value.
    let canary2 = format!("CANARY-{:x}-PRINTED", std::process::id());
    d.create(&format!(
        "name = \"leaky\"\nimage = \"{image}\"\ncredentials = [\"api-key\"]\n\
         command = [\"sh\", \"-c\", \"http_proxy= wget -q -O - $AGENFLEET_API/v1/credentials/api-key; echo; echo printed; exec sleep 100000\"]\n"
    ));
    let out = d.cli_stdin(&["creds", "set", "leaky", "api-key"], &canary2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_log("leaky", "printed", WAIT);
    for args in [vec!["logs", "leaky"], vec!["--json", "logs", "leaky"]] {
        let out = String::from_utf8_lossy(&d.cli(&args).stdout).to_string();
        assert!(out.contains("[redacted:api-key v1]"), "{out}");
        assert!(
            !out.contains(&canary2),
            "the printed secret reached the log ring: {out}"
        );
    }
    // …and the engine kept no copy of the output: no log driver, nothing in its files.
    let leaky = d.agent("leaky")["container_id"]
        .as_str()
        .expect("cid")
        .to_string();
    let c = inspect(&leaky);
    assert_eq!(
        c["HostConfig"]["LogConfig"]["Type"], "none",
        "{}",
        c["HostConfig"]["LogConfig"]
    );
    let root = docker(&["info", "--format", "{{.DockerRootDir}}"]);
    let dir = std::path::Path::new(&root).join("containers").join(&leaky);
    let mut looked = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let bytes = std::fs::read(e.path()).unwrap_or_default();
        looked += 1;
        assert!(
            !bytes
                .windows(canary2.len())
                .any(|w| w == canary2.as_bytes()),
            "the printed secret is in the engine's file {}",
            e.path().display()
        );
    }
    assert!(
        looked > 0,
        "nothing found in the engine's directory {}",
        dir.display()
    );

    // Bad input through the relay: a clear 4xx naming the problem, nothing crashes.
    let cid = d.agent("sh")["container_id"]
        .as_str()
        .expect("cid")
        .to_string();
    let r = raw_api(&cid, &post("/v1/authorize", "{bad"));
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("bad_json"),
        "{r}"
    );
    let r = raw_api(
        &cid,
        &post(
            "/v1/authorize",
            r#"{"tool":"read_file","args":{},"sudo":true}"#,
        ),
    );
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("sudo"), "{r}");
    let r = raw_api(
        &cid,
        &post("/v1/authorize", r#"{"tool":"read_file","args":[1]}"#),
    );
    assert!(r.starts_with("HTTP/1.1 400") && r.contains("args"), "{r}");
    let r = raw_api(&cid, &post("/v1/report", r#"{"kind":"tool_call"}"#));
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("provider"),
        "{r}"
    );
    let r = raw_api(
        &cid,
        "GET /v1/nothing HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = raw_api(
        &cid,
        "GET /v1/credentials/other HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 404") && r.contains("other"), "{r}");
    let r = raw_api(
        &cid,
        "DELETE /v1/authorize HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    // A body announced larger than 1 MiB is refused before it is read.
    let big = "POST /v1/authorize HTTP/1.1\r\nHost: a\r\nContent-Length: 1100000\r\nConnection: close\r\n\r\n{\"tool\":";
    let r = raw_api(&cid, big);
    assert!(r.starts_with("HTTP/1.1 413"), "{}", &r[..r.len().min(300)]);
    let r = raw_api(&cid, "\x16\x03\x01 not http at all\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 400") || r.is_empty(), "{r}");
    // Still serving after all that.
    let r = raw_api(
        &cid,
        "GET /v1/health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("\"agent\":\"sh\""),
        "{r}"
    );

    // The API socket answers nobody outside the agent's container (this test runs on the
    // host): refused, and audited.
    let sock = d.dir.join("state/gateways/default.sh/api.sock");
    let mut s = std::os::unix::net::UnixStream::connect(&sock).expect("connect api.sock");
    {
        use std::io::{Read, Write};
        s.write_all(
            b"GET /v1/credentials/api-key HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut r = String::new();
        let _ = s.read_to_string(&mut r);
        assert!(r.starts_with("HTTP/1.1 403"), "{r}");
        assert!(!r.contains(&canary));
    }
    let refused = d
        .json(&["audit", "search", "--action", "gateway.refused"])
        .to_string();
    assert!(refused.contains("\"agent\":\"sh\""), "{refused}");
}

/// The outcomes of `agent`'s `tool.decide` records, oldest first, and the records (for
/// failure messages).
fn decisions(d: &Daemon, agent: &str) -> (Vec<String>, Value) {
    let decided = d.json(&["audit", "search", "--action", "tool.decide"]);
    let outcomes = decided
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["event"]["agent"] == agent)
        .filter_map(|r| r["event"]["outcome"].as_str().map(str::to_string))
        .collect();
    (outcomes, decided)
}

/// Hits of the stub so far.
fn hits(stub: &StubServer) -> u64 {
    stub.hits.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn egress_leaves_only_through_the_gateway_and_only_as_decided() {
    let test = "egress_leaves_only_through_the_gateway_and_only_as_decided";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let stub = StubServer::start();
    stub.set("/ok/data", 200, "{\"data\":\"from the stub\"}");
    let other = StubServer::start();
    let (p, q) = (stub.port, other.port);
    let d = Daemon::start("anyegress", "");
    // No [network]: the default, `gateway`. The program shows the proxy it was given.
    d.create(&format!(
        "name = \"net\"\nimage = \"{image}\"\n\
         command = [\"sh\", \"-c\", \"env | grep -i proxy | sort; echo env-shown; exec sleep 100000\"]\n"
    ));
    d.wait_log("net", "env-shown", WAIT);
    let logs = String::from_utf8_lossy(&d.cli(&["logs", "net"]).stdout).to_string();
    for want in [
        "HTTP_PROXY=http://127.0.0.1:3128",
        "https_proxy=http://127.0.0.1:3128",
        "NO_PROXY=localhost,127.0.0.1",
    ] {
        assert!(
            logs.contains(want),
            "{want} not in the program's env: {logs}"
        );
    }
    let f = d.file(
        "scopes.toml",
        &format!(
            "tools = [\"http_request\"]\n\
             [[http]]\nhost = \"127.0.0.1\"\nmethods = [\"GET\"]\nports = [{p}]\npath_prefix = \"/ok\"\nprivate = true\n\
             [[http]]\nhost = \"127.0.0.1\"\nmethods = [\"CONNECT\"]\nports = [{p}]\nprivate = true\n\
             [[http]]\nhost = \"127.0.0.1\"\nmethods = [\"GET\"]\nports = [{q}]\n"
        ),
    );
    d.json(&["scopes", "publish", "net", &f]);
    let cid = d.agent("net")["container_id"]
        .as_str()
        .expect("cid")
        .to_string();
    let proxy = |req: String| nc(&cid, 3128, req.as_bytes());
    let get = |port: u16, path: &str| {
        proxy(format!(
            "GET http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"
        ))
    };

    // Allowed: decided, recorded, relayed.
    let r = get(p, "/ok/data");
    assert!(
        r.starts_with("HTTP/1.1 200") && r.contains("from the stub"),
        "{r}"
    );
    assert_eq!(hits(&stub), 1);
    // The same through busybox wget, as a program uses it (the proxy from the env).
    let out = docker(&[
        "exec",
        "-e",
        "http_proxy=http://127.0.0.1:3128",
        &cid,
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://127.0.0.1:{p}/ok/data"),
    ]);
    assert!(out.contains("from the stub"), "{out}");
    assert_eq!(hits(&stub), 2);

    // Outside the path prefix: 403 with the decision and its record; nothing went out.
    let r = get(p, "/admin");
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    assert!(
        r.contains("X-AgenFleet-Decision: deny") && r.contains("audit_seq"),
        "{r}"
    );
    assert!(r.contains("outside the agent's http scopes"), "{r}");
    // Allowed by the scopes, but a loopback address without `private = true`.
    let r = get(q, "/x");
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("loopback"),
        "{r}"
    );
    assert_eq!(hits(&other), 0, "a request to a private address went out");
    // A Host header that disagrees with the URL; https in absolute form; not HTTP at all.
    let r = proxy(format!(
        "GET http://127.0.0.1:{p}/ok/data HTTP/1.1\r\nHost: evil.example.com\r\n\r\n"
    ));
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("disagrees"),
        "{r}"
    );
    let r = proxy(format!(
        "GET https://127.0.0.1:{p}/ok/data HTTP/1.1\r\n\r\n"
    ));
    assert!(
        r.starts_with("HTTP/1.1 400") && r.contains("CONNECT"),
        "{r}"
    );
    let r = proxy("\u{16}\u{3}\u{1} definitely not http\r\n\r\n".to_string());
    assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    // CONNECT where a rule names it: a tunnel, through which the stub answers.
    let r = proxy(format!(
        "CONNECT 127.0.0.1:{p} HTTP/1.1\r\nHost: 127.0.0.1:{p}\r\n\r\nGET /ok/data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    ));
    assert!(r.starts_with("HTTP/1.1 200 Connection established"), "{r}");
    assert!(r.contains("from the stub"), "{r}");
    assert_eq!(hits(&stub), 3);
    // CONNECT to a port no rule names for it.
    let r = proxy(format!("CONNECT 127.0.0.1:{q} HTTP/1.1\r\n\r\n"));
    assert!(
        r.starts_with("HTTP/1.1 403") && r.contains("CONNECT"),
        "{r}"
    );
    assert_eq!(hits(&other), 0);
    assert_eq!(hits(&stub), 3, "a refused request reached the stub");

    // No way around the gateway: loopback is the only interface, there is no route, and a
    // request without the proxy fails.
    let ifaces = docker(&["exec", &cid, "ls", "/sys/class/net"]);
    assert_eq!(
        ifaces.split_whitespace().collect::<Vec<_>>(),
        ["lo"],
        "{ifaces}"
    );
    let gw = inspect(&cid)["NetworkSettings"]["Gateway"].to_string();
    assert!(
        gw == "\"\"" || gw == "null",
        "the container has a gateway: {gw}"
    );
    for url in [
        format!("http://172.17.0.1:{p}/ok/data"),
        format!("http://127.0.0.1:{p}/ok/data"),
    ] {
        let out = std::process::Command::new("docker")
            .args(["exec", &cid, "wget", "-q", "-T", "3", "-O", "-", &url])
            .output()
            .expect("docker exec wget");
        assert!(!out.status.success(), "{url} reached without the proxy");
    }
    assert_eq!(hits(&stub), 3);

    // Every decision and refusal is on record.
    let (outcomes, decided) = decisions(&d, "net");
    assert_eq!(
        outcomes,
        ["allow", "allow", "deny", "allow", "allow", "deny"],
        "{decided}"
    );
    let refused = d
        .json(&["audit", "search", "--action", "egress.refused"])
        .to_string();
    for want in [
        "loopback",
        "disagrees",
        "CONNECT tunnel",
        "not an HTTP proxy request",
    ] {
        assert!(refused.contains(want), "{want} not recorded: {refused}");
    }
}

#[test]
fn a_python_agent_works_through_the_local_api_and_the_egress_proxy() {
    let test = "a_python_agent_works_through_the_local_api_and_the_egress_proxy";
    if !docker_available(test) {
        return;
    }
    let Some(image) = python_image(test) else {
        return;
    };
    let stub = StubServer::start();
    stub.set("/ok/data", 200, "{\"data\":\"for python\"}");
    let p = stub.port;
    // The host as the daemon reaches it (the stub listens on every address): the host's
    // own address, so its rule must say private = true.
    let host = host_address();
    let d = Daemon::start("anypython", "");
    d.json(&["vault", "init"]);
    let canary = format!("CANARY-{:x}-PY", std::process::id());
    let (command, files) = python_example(&d);
    d.create(&format!(
        "name = \"py\"\nimage = \"{image}\"\n\
         credentials = [\"api-key\", {{ name = \"db\", as = \"file\" }}, {{ name = \"openai\", as = \"env\", var = \"OPENAI_API_KEY\" }}]\n\
         {command}\
         [env]\nCREDENTIAL = \"api-key\"\nCREDENTIAL_FILE = \"db\"\nCREDENTIAL_ENV = \"OPENAI_API_KEY\"\nREAD_PATHS = \"/data/a.txt /etc/shadow\"\n\
         FETCH_URLS = \"http://{host}:{p}/ok/data http://{host}:{p}/admin\"\n{files}"
    ));
    let f = d.file(
        "scopes.toml",
        &format!(
            "tools = [\"read_file\", \"http_request\"]\nread_paths = [\"/data/\"]\n\
             [[http]]\nhost = \"{host}\"\nmethods = [\"GET\"]\nports = [{p}]\npath_prefix = \"/ok\"\nprivate = true\n"
        ),
    );
    d.json(&["scopes", "publish", "py", &f]);
    for (name, value) in [
        ("api-key", canary.clone()),
        ("db", format!("{canary}-DB")),
        ("openai", format!("{canary}-OPENAI")),
    ] {
        let out = d.cli_stdin(&["creds", "set", "py", name], &value);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.wait_log("py", "agent: done", WAIT);
    let logs = String::from_utf8_lossy(&d.cli(&["logs", "py"]).stdout).to_string();
    for want in [
        "local API up for default/py".to_string(),
        format!(
            "credential api-key version 1 in memory ({} bytes)",
            canary.len()
        ),
        format!("credential db from its file ({} bytes)", canary.len() + 3),
        format!("credential in $OPENAI_API_KEY ({} bytes)", canary.len() + 7),
        "read_file /data/a.txt: allow".to_string(),
        "read_file /etc/shadow: deny".to_string(),
        format!("GET http://{host}:{p}/ok/data: 200 {{\"data\":\"for python\"}}"),
        format!("GET http://{host}:{p}/admin: 403 deny:"),
    ] {
        assert!(
            logs.contains(&want),
            "`{want}` not in the agent's log: {logs}"
        );
    }
    assert!(!logs.contains(&canary));
    assert_eq!(
        stub.hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a denied request went out"
    );
    let decided = d.json(&["audit", "search", "--action", "tool.decide"]);
    let calls: Vec<(String, String)> = decided
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["event"]["agent"] == "py")
        .map(|r| {
            let detail: Value = serde_json::from_str(r["event"]["detail"].as_str().unwrap_or("{}"))
                .unwrap_or_default();
            (
                detail["tool"].as_str().unwrap_or("").to_string(),
                r["event"]["outcome"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("read_file", "allow"),
        ("read_file", "deny"),
        ("http_request", "allow"),
        ("http_request", "deny"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(calls, want, "{decided}");
}

#[test]
fn an_agent_that_fails_its_health_check_is_restarted_and_shown_unhealthy() {
    let test = "an_agent_that_fails_its_health_check_is_restarted_and_shown_unhealthy";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("anyhealth", "");
    // The program serves /healthz while the file exists (busybox httpd).
    let script = "mkdir -p /tmp/www && echo ok > /tmp/www/healthz && \
                  httpd -p 127.0.0.1:8080 -h /tmp/www && echo serving && exec sleep 100000";
    d.create(&format!(
        "name = \"hc\"\nimage = \"{image}\"\ncommand = [\"sh\", \"-c\", {}]\n\
         [health]\nhttp = \"/healthz\"\nport = 8080\ninterval_secs = 1\ntimeout_secs = 2\nretries = 2\n\
         [restart]\nattempts = 3\ndelay_ms = 100\n",
        serde_json::to_string(script).unwrap()
    ));
    let v = d.wait_agent("hc", "healthy", WAIT, |v| v["health"] == "healthy");
    let cid = v["container_id"].as_str().expect("cid").to_string();
    let c = inspect(&cid);
    assert_eq!(
        c["Config"]["Healthcheck"]["Test"],
        serde_json::json!([
            "CMD",
            "/run/agenfleet/bin/agenfleet-agent",
            "health-http",
            "8080",
            "/healthz"
        ])
    );
    let text = String::from_utf8_lossy(&d.cli(&["agents", "show", "hc"]).stdout).to_string();
    assert!(
        text.contains("health") && text.contains("healthy"),
        "{text}"
    );

    // The endpoint starts failing: after 2 failed checks the agent is killed and
    // restarted by its policy, and its last exit says why.
    docker(&["exec", &cid, "rm", "/tmp/www/healthz"]);
    let v = d.wait_agent(
        "hc",
        "restarted after failing its health check",
        WAIT,
        |v| v["restarts"].as_u64().unwrap_or(0) >= 1 && v["last_exit"]["unhealthy"] == true,
    );
    assert_eq!(v["last_exit"]["unhealthy"], true, "{v}");
    let status = String::from_utf8_lossy(&d.cli(&["agents", "list"]).stdout).to_string();
    assert!(
        status.contains("unhealthy ("),
        "the last exit column: {status}"
    );
    let unhealthy = d
        .json(&["audit", "search", "--action", "agent.unhealthy"])
        .to_string();
    assert!(
        unhealthy.contains("failed its health check 2 times"),
        "{unhealthy}"
    );
    // The new run serves again and is healthy.
    d.wait_agent("hc", "healthy again", WAIT, |v| {
        v["state"] == "Running" && v["health"] == "healthy"
    });
}

/// `openssl s_server -www` on a free port with a fresh self-signed certificate; killed on
/// drop.
struct TlsStub {
    child: std::process::Child,
    port: u16,
    _dir: std::path::PathBuf,
}

impl TlsStub {
    fn start() -> Option<TlsStub> {
        let dir =
            std::env::temp_dir().join(format!("agf-tls-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=stub",
            ])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?
            .success();
        if !ok {
            return None;
        }
        let port = free_port();
        let child = std::process::Command::new("openssl")
            .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
            .arg("-cert")
            .arg(dir.join("cert.pem"))
            .arg("-key")
            .arg(dir.join("key.pem"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        wait_for(WAIT, "the TLS stub to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .ok()
                .map(|_| ())
        });
        Some(TlsStub {
            child,
            port,
            _dir: dir,
        })
    }
}

impl Drop for TlsStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

#[test]
fn https_goes_through_a_decided_connect_tunnel() {
    let test = "https_goes_through_a_decided_connect_tunnel";
    if !docker_available(test) {
        return;
    }
    let Some(image) = python_image(test) else {
        return;
    };
    let Some(tls) = TlsStub::start() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: openssl cannot make a self-signed stub on this CI machine");
        }
        eprintln!("\n!!! SKIPPED {test}: no openssl for a TLS stub !!!\n");
        return;
    };
    let host = host_address();
    let d = Daemon::start("anytls", "");
    d.create(&format!(
        "name = \"tls\"\nimage = \"{image}\"\ncommand = [\"python3\", \"-c\", \"import time; time.sleep(10**6)\"]\n"
    ));
    let f = d.file(
        "scopes.toml",
        &format!(
            "tools = [\"http_request\"]\n[[http]]\nhost = \"{host}\"\nmethods = [\"CONNECT\"]\nports = [{}]\nprivate = true\n",
            tls.port
        ),
    );
    d.json(&["scopes", "publish", "tls", &f]);
    let cid = d.agent("tls")["container_id"]
        .as_str()
        .expect("cid")
        .to_string();
    // Python's urllib, with the proxy from the environment as the shim sets it, speaks
    // TLS to the stub through the tunnel (the stub's certificate is self-signed).
    let fetch = |port: u16| {
        let code = format!(
            "import ssl, urllib.request, urllib.error\n\
             ctx = ssl._create_unverified_context()\n\
             try:\n    r = urllib.request.urlopen('https://{host}:{port}/', context=ctx, timeout=20)\n    print('status', r.status, r.read(60))\n\
             except Exception as e:\n    print('failed', repr(e))\n"
        );
        std::process::Command::new("docker")
            .args([
                "exec",
                "-e",
                "HTTPS_PROXY=http://127.0.0.1:3128",
                &cid,
                "python3",
                "-c",
                &code,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .expect("docker exec python3")
    };
    let out = fetch(tls.port);
    assert!(out.starts_with("status 200"), "through the tunnel: {out}");
    // A port no rule names: the tunnel is refused (Python reports the proxy's 403).
    let out = fetch(free_port());
    assert!(out.contains("failed") && out.contains("403"), "{out}");
    let (outcomes, decided) = decisions(&d, "tls");
    assert_eq!(outcomes, ["allow", "deny"], "{decided}");
}
