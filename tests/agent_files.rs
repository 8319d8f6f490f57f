//! End-to-end: an operator's image built through the daemon (`image build DIR --tag T`,
//! the engine's build API, no registry), run with `[[files]]` copied read-only from the
//! spec's directory and a `[workspace]` whose size is a hard limit, which outlives restarts
//! of the agent and `kill -9` of the daemon and is gone (and audited) after the purge.

use agenfleet_e2e::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn logs(d: &Daemon, agent: &str) -> String {
    String::from_utf8_lossy(&d.cli(&["logs", agent]).stdout).to_string()
}

/// The mount points under `dir` in the kernel's table.
fn mounts_under(dir: &std::path::Path) -> Vec<String> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    read(std::path::Path::new("/proc/self/mountinfo"))
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| std::path::Path::new(p).starts_with(&dir))
        .map(str::to_string)
        .collect()
}

#[test]
fn an_image_built_through_the_daemon_runs_with_files_and_a_workspace_that_outlives_restarts() {
    let test =
        "an_image_built_through_the_daemon_runs_with_files_and_a_workspace_that_outlives_restarts";
    if !docker_available(test) {
        return;
    }
    let Some(base) = busybox_image(test) else {
        return;
    };
    let mut d = Daemon::start("agentfiles", "");

    // The image: a Dockerfile directory of the operator's, built by the engine.
    let ctx = d.dir.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let program = "cat /config/SOUL.md; \
        echo run >> /workspace/runs; echo \"runs=$(wc -l < /workspace/runs)\"; \
        (echo x > /config/SOUL.md) 2>/dev/null && echo soul writable || echo soul read-only; \
        dd if=/dev/zero of=/workspace/big bs=1M count=20 2>/dev/null && echo big written || echo workspace full; \
        rm -f /workspace/big; echo checks done; \
        trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done\n";
    std::fs::write(ctx.join("hello.sh"), program).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY hello.sh /app/hello.sh\nCMD [\"sh\", \"/app/hello.sh\"]\n"),
    )
    .unwrap();
    let tag = format!("agf-test/hello:{:x}", std::process::id());
    let built = d.json(&["image", "build", ctx.to_str().unwrap(), "--tag", &tag]);
    assert_eq!(built["tag"], tag.as_str(), "{built}");
    assert_eq!(built["built"], true, "{built}");
    let audit = d
        .json(&["audit", "search", "--action", "image.build"])
        .to_string();
    assert!(
        audit.contains(&format!("{tag} from a context of")),
        "{audit}"
    );

    // The spec, beside its files.
    let soul = "You are triage. Be brief.\n";
    std::fs::create_dir_all(d.dir.join("agents/triage")).unwrap();
    std::fs::write(d.dir.join("agents/triage/SOUL.md"), soul).unwrap();
    let spec = d.file(
        "triage.toml",
        &format!(
            "name = \"triage\"\nimage = \"{tag}\"\n\
             [[files]]\nsource = \"agents/triage/SOUL.md\"\ntarget = \"/config/SOUL.md\"\n\
             [workspace]\nsize_mb = 8\n"
        ),
    );
    d.json(&["agents", "create", "-f", &spec]);
    d.wait_log("triage", "checks done", WAIT);
    let l = logs(&d, "triage");
    assert!(l.contains("You are triage. Be brief."), "{l}");
    assert!(l.contains("soul read-only"), "{l}");
    assert!(l.contains("workspace full"), "20 MiB fitted in 8 MiB: {l}");
    let show = String::from_utf8_lossy(&d.cli(&["agents", "show", "triage"]).stdout).to_string();
    assert!(
        show.contains("/config/SOUL.md ← agents/triage/SOUL.md")
            && show.contains(&format!("{} bytes", soul.len())),
        "{show}"
    );
    assert!(show.contains("/workspace (8 MiB"), "{show}");

    // The workspace outlives a restart of the agent…
    d.json(&["agents", "restart", "triage"]);
    d.wait_log("triage", "runs=2", WAIT);
    // …and `kill -9` of the daemon, then another restart.
    d.restart();
    d.wait_agent("triage", "running again", WAIT, |v| v["state"] == "Running");
    d.json(&["agents", "restart", "triage"]);
    d.wait_log("triage", "runs=3", WAIT);
    assert_eq!(mounts_under(&d.dir).len(), 1, "{:?}", mounts_under(&d.dir));

    // The purge removes it, and says so.
    assert!(d.cli(&["agents", "delete", "triage"]).status.success());
    let purged = d
        .json(&["audit", "search", "--action", "agent.purge"])
        .to_string();
    assert!(purged.contains("workspace removed (8 MiB)"), "{purged}");
    assert!(
        mounts_under(&d.dir).is_empty(),
        "{:?}",
        mounts_under(&d.dir)
    );
    let left: Vec<_> = std::fs::read_dir(d.dir.join("state/workspaces"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    let _ = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .output();
}

#[test]
fn bad_image_builds_and_files_are_refused_with_the_reason() {
    let test = "bad_image_builds_and_files_are_refused_with_the_reason";
    if !docker_available(test) {
        return;
    }
    let d = Daemon::start("agentfilesbad", "");
    let empty = d.dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let failing = d.dir.join("failing");
    std::fs::create_dir_all(&failing).unwrap();
    std::fs::write(failing.join("Dockerfile"), "FROM agf-test/no-such-base:0\n").unwrap();
    for (args, want) in [
        (
            vec!["image", "build", empty.to_str().unwrap(), "--tag", "x/y:1"],
            "no Dockerfile",
        ),
        (
            vec!["image", "build", failing.to_str().unwrap()],
            "needs --tag",
        ),
        (
            vec![
                "image",
                "build",
                failing.to_str().unwrap(),
                "--tag",
                "Bad/Tag",
            ],
            "not an image name",
        ),
        (
            vec![
                "image",
                "build",
                failing.to_str().unwrap(),
                "--tag",
                "agenfleet/agent:x",
            ],
            "built-in image",
        ),
        (
            vec![
                "image",
                "build",
                failing.to_str().unwrap(),
                "--tag",
                "agf-test/failing:1",
            ],
            "building image `agf-test/failing:1` failed",
        ),
    ] {
        let out = d.cli(&args);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(err.contains(want), "{args:?}: `{want}` not in: {err}");
    }
    // A file outside the spec's directory, one that is missing, a target the agent's own
    // mounts hold: refused, naming the field; nothing created.
    for (files, want) in [
        ("source = \"../x\"\ntarget = \"/a\"", "files[0].source"),
        (
            "source = \"missing.md\"\ntarget = \"/a\"",
            "files[0].source",
        ),
        (
            "source = \"ok.md\"\ntarget = \"/run/agenfleet/x\"",
            "files[0].target",
        ),
        (
            "source = \"ok.md\"\ntarget = \"relative\"",
            "files[0].target",
        ),
    ] {
        std::fs::write(d.dir.join("ok.md"), "ok").unwrap();
        let f = d.file(
            "bad.toml",
            &format!("name = \"a\"\nimage = \"x/y\"\n[[files]]\n{files}\n"),
        );
        let out = d.cli(&["agents", "create", "-f", &f]);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{files} was accepted");
        assert!(err.contains(want), "`{want}` not in: {err}");
    }
    let f = d.file(
        "ws.toml",
        "name = \"a\"\nimage = \"agenfleet/agent\"\n[workspace]\nsize_mb = 8\n",
    );
    let out = d.cli(&["agents", "create", "-f", &f]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("workspace"));
    assert_eq!(d.json(&["status"])["agents"], serde_json::json!([]));
    let builds = d.json(&["audit", "search", "--action", "image.build"]);
    assert!(
        builds
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["event"]["outcome"] != "ok")),
        "a failed build is on record: {builds}"
    );
}
