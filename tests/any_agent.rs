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
