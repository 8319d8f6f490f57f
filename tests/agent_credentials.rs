//! End-to-end: credentials reach a program in an image that is not ours the way its spec
//! says — through the local API, as a file on a tmpfs of its own (mode 0400), or in its
//! environment, set by the shim at exec — and rotate without a new container: the file is
//! replaced in place, a variable restarts the program (not the container), and the audit
//! log says so. The canary hunt covers every path a value could take: the engine's view
//! and files, the daemon's state and log, the log ring (the program prints its own
//! secrets), `agents show --json`.

use agenfleet_e2e::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn exec(cid: &str, script: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", cid, "sh", "-c", script])
        .output()
        .expect("docker exec");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn logs(d: &Daemon, agent: &str) -> String {
    String::from_utf8_lossy(&d.cli(&["logs", agent]).stdout).to_string()
}

#[test]
fn credentials_reach_the_program_as_api_file_and_env_and_rotate_in_place() {
    let test = "credentials_reach_the_program_as_api_file_and_env_and_rotate_in_place";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("agentcreds", "");
    d.json(&["vault", "init"]);
    let tag = format!("{:x}", std::process::id());
    let api1 = format!("CANARY-{tag}-API-ONE");
    let db1 = format!("CANARY-{tag}-DB-ONE");
    let db2 = format!("CANARY-{tag}-DB-TWO");
    let env1 = format!("CANARY-{tag}-ENV-ONE");
    let env2 = format!("CANARY-{tag}-ENV-TWO");
    // The program prints its secrets (as a careless agent would): the log ring must
    // show names and versions instead. It stops on SIGTERM, saying so.
    let script = "trap 'echo program got TERM; exit 0' TERM; \
        echo \"program started: db=$(cat /run/agenfleet/secrets/db) env=$OPENAI_API_KEY\"; \
        echo \"api says $(http_proxy= wget -q -O - $AGENFLEET_API/v1/credentials/api-key)\"; \
        while :; do sleep 1 & wait $!; done";
    d.create(&format!(
        "name = \"holder\"\nimage = \"{image}\"\n\
         credentials = [\"api-key\", {{ name = \"db\", as = \"file\" }}, {{ name = \"openai\", as = \"env\", var = \"OPENAI_API_KEY\" }}]\n\
         command = [\"sh\", \"-c\", {}]\n",
        serde_json::to_string(script).unwrap()
    ));
    for (name, value) in [("api-key", &api1), ("db", &db1), ("openai", &env1)] {
        let out = d.cli_stdin(&["creds", "set", "holder", name], value);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.wait_log("holder", "api says", WAIT);
    let v = d.wait_agent("holder", "running", WAIT, |v| v["state"] == "Running");
    let cid = v["container_id"].as_str().expect("cid").to_string();
    let l = logs(&d, "holder");
    assert!(
        l.contains("program started: db=[redacted:db v1] env=[redacted:openai v1]"),
        "{l}"
    );
    assert!(l.contains("\"value\":\"[redacted:api-key v1]\""), "{l}");

    // The file: the agent's user alone may read it, on a tmpfs that is not the image's.
    let listing = exec(&cid, "ls -ln /run/agenfleet/secrets/");
    assert!(
        listing.contains("-r--------") && listing.contains(" 65534 ") && listing.contains(" db"),
        "{listing}"
    );
    let mounts = exec(&cid, "cat /proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|m| m.contains(" /run/agenfleet/secrets tmpfs ") && m.contains("noexec")),
        "{mounts}"
    );
    assert_eq!(exec(&cid, "cat /run/agenfleet/secrets/db"), db1);
    // A credential delivered as a file is not served by the local API as well.
    let answer = exec(
        &cid,
        "printf 'GET /v1/credentials/db HTTP/1.1\\r\\nHost: a\\r\\nConnection: close\\r\\n\\r\\n' | nc 127.0.0.1 4180",
    );
    assert!(
        answer.starts_with("HTTP/1.1 404")
            && answer.contains("delivered as file /run/agenfleet/secrets/db")
            && !answer.contains(&db1),
        "{answer}"
    );
    // The variable is the program's, not the container's: `docker exec` does not see it.
    assert_eq!(exec(&cid, "echo \"[$OPENAI_API_KEY]\""), "[]");

    // Rotating the file credential replaces the file; the program runs on.
    let out = d.cli_stdin(&["creds", "rotate", "holder", "db"], &db2);
    assert!(out.status.success());
    wait_for(WAIT, "the rotated file", || {
        (exec(&cid, "cat /run/agenfleet/secrets/db") == db2).then_some(())
    });
    assert_eq!(logs(&d, "holder").matches("program started").count(), 1);

    // Rotating the variable restarts the program inside the same container.
    let out = d.cli_stdin(&["creds", "rotate", "holder", "openai"], &env2);
    assert!(out.status.success());
    wait_for(WAIT, "the program started again", || {
        (logs(&d, "holder").matches("program started").count() == 2).then_some(())
    });
    let l = logs(&d, "holder");
    assert!(l.contains("program got TERM"), "{l}");
    assert!(
        l.contains("program started: db=[redacted:db v2] env=[redacted:openai v2]"),
        "{l}"
    );
    let v = d.agent("holder");
    assert_eq!(v["container_id"].as_str(), Some(cid.as_str()), "{v}");
    assert_eq!(v["restarts"], 0, "{v}");
    let restarted = d
        .json(&["audit", "search", "--action", "agent.restart_program"])
        .to_string();
    assert!(
        restarted.contains("rotated credential openai in OPENAI_API_KEY"),
        "{restarted}"
    );

    // The restarted program is the one a stop reaches: it handles SIGTERM and exits 0.
    d.json(&["agents", "stop", "holder"]);
    let v = d.wait_agent("holder", "stopped, its exit recorded", WAIT, |v| {
        v["state"] == "Stopped" && !v["last_exit"].is_null()
    });
    assert_eq!(v["last_exit"]["code"], 0, "{v}");
    assert_eq!(logs(&d, "holder").matches("program got TERM").count(), 2);

    // `agents show` says how each credential is delivered.
    let show = d.json(&["agents", "show", "holder"]);
    assert_eq!(
        show["credentials"],
        serde_json::json!([
            {"name": "api-key", "as": "api", "to": null},
            {"name": "db", "as": "file", "to": "/run/agenfleet/secrets/db"},
            {"name": "openai", "as": "env", "to": "OPENAI_API_KEY"},
        ]),
        "{show}"
    );
    let text = show.to_string();

    // The canary hunt: no value anywhere but in the program.
    let mut everywhere = text;
    everywhere.push_str(&logs(&d, "holder"));
    everywhere.push_str(&docker(&["inspect", &cid]));
    everywhere.push_str(&d.log());
    for args in [
        vec!["--json", "status"],
        vec!["--json", "audit", "export"],
        vec!["--json", "creds", "list", "holder"],
    ] {
        let out = d.cli(&args);
        everywhere.push_str(&String::from_utf8_lossy(&out.stdout));
        everywhere.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    for c in [&api1, &db1, &db2, &env1, &env2] {
        assert!(
            !everywhere.contains(c.as_str()),
            "{c} leaked into a reply, the log ring, the daemon's log or docker inspect"
        );
        assert_on_no_disk(&d, &cid, c);
    }
}

#[test]
fn a_credential_delivery_that_cannot_work_is_refused_by_field() {
    let d = Daemon::start("agentcredsbad", "");
    for (spec, field) in [
        (
            "name = \"a\"\nimage = \"agenfleet/agent\"\ncredentials = [{ name = \"k\", as = \"file\" }]\n",
            "credentials[0].as",
        ),
        (
            "name = \"a\"\nimage = \"x/y\"\ncredentials = [{ name = \"k\", as = \"env\", var = \"AGENFLEET_API\" }]\n",
            "credentials[0].var",
        ),
        (
            "name = \"a\"\nimage = \"x/y\"\ncredentials = [\"k\", { name = \"k\", as = \"file\" }]\n",
            "credentials[1]",
        ),
        (
            "name = \"a\"\nimage = \"x/y\"\ncredentials = [{ name = \"k\", as = \"disk\" }]\n",
            "disk",
        ),
    ] {
        let f = d.file("bad.toml", spec);
        let out = d.cli(&["agents", "create", "-f", &f]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{spec} was accepted");
        assert!(err.contains(field), "`{field}` not named: {err}");
    }
    assert_eq!(d.json(&["status"])["agents"], serde_json::json!([]));
}
