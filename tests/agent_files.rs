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

    // In a terminal the CLI draws the build's progress (the engine's steps) on stderr
    // while it waits, and clears it when the answer comes.
    let slow = d.dir.join("slow");
    std::fs::create_dir_all(&slow).unwrap();
    // (A step of its own each run: the engine's build cache would make it instant.)
    let nonce = format!("{:?}", std::time::SystemTime::now());
    std::fs::write(
        slow.join("Dockerfile"),
        format!("FROM {base}\nRUN echo '{nonce}' && sleep 2\nRUN true\n"),
    )
    .unwrap();
    let cmd = format!(
        "read go; {} --socket {} image build {} --tag {tag}-slow; echo EXIT=$?; sleep 600",
        bin("agenfleet").display(),
        d.socket.display(),
        slow.display()
    );
    let t = Tmux::start(&cmd);
    let seen = d.dir.join("terminal-output");
    t.pipe_output(&seen);
    t.keys(&["Enter"]);
    t.wait_screen_for(WAIT, "the slow build's answer", |s| s.contains("EXIT=0"));
    let drawn = read(&seen);
    assert!(
        drawn.contains(&format!("building image {tag}-slow")) && drawn.contains("/3 steps"),
        "no progress bar in the terminal: {drawn:?}"
    );
    assert!(
        drawn.contains("\x1b[2K"),
        "the bar is drawn in place: {drawn:?}"
    );
    drop(t);

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

/// `agents apply --yes --json -f FILE` with `spec` written to FILE.
fn apply(d: &Daemon, spec: &str, extra: &[&str]) -> std::process::Output {
    let f = d.file(&format!("apply-{}.toml", rand_suffix()), spec);
    let mut args = vec!["agents", "apply", "-f", f.as_str()];
    args.extend_from_slice(extra);
    d.cli(&args)
}

fn applied(d: &Daemon, spec: &str) -> serde_json::Value {
    let out = apply(d, spec, &["--yes", "--json"]);
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

#[test]
fn agents_change_in_place_or_with_a_new_container_and_keep_credentials_scopes_workspace_and_history(
) {
    let test = "agents_change_in_place_or_with_a_new_container_and_keep_credentials_scopes_workspace_and_history";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let mut d = Daemon::start("agentapply", "");
    d.json(&["vault", "init"]);
    let script = "echo run >> /workspace/runs; \
        echo \"greeting=$GREETING runs=$(wc -l < /workspace/runs) db=$(cat /run/agenfleet/secrets/db) mib=$(df -m /workspace | tail -1 | awk '{print $2}')\"; \
        trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done";
    // `extra`: top-level fields; `tables`: more tables at the end.
    let spec_with = |greeting: &str, extra: &str, size: u32, tables: &str| {
        format!(
            "name = \"app\"\nimage = \"{image}\"\n{extra}\
             credentials = [{{ name = \"db\", as = \"file\" }}]\n\
             command = [\"sh\", \"-c\", {}]\n\
             [env]\nGREETING = \"{greeting}\"\n[workspace]\nsize_mb = {size}\n{tables}",
            serde_json::to_string(script).unwrap()
        )
    };
    let spec = |greeting: &str, extra: &str, size: u32| spec_with(greeting, extra, size, "");
    let mib = |d: &Daemon, runs: u32| -> u64 {
        let l = logs(d, "app");
        let line = l
            .lines()
            .find(|l| l.contains(&format!("runs={runs} ")))
            .unwrap_or_else(|| panic!("no run {runs}: {l}"));
        line.rsplit("mib=").next().unwrap().trim().parse().unwrap()
    };

    // Version 1: apply creates.
    let v1 = applied(&d, &spec("one", "", 16));
    assert_eq!(v1["action"], "created", "{v1}");
    assert_eq!(v1["version"], 1, "{v1}");
    let out = d.cli_stdin(&["creds", "set", "app", "db"], "CANARY-apply-db");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scopes = d.file("scopes.toml", "tools = [\"read_file\"]\n");
    d.json(&["scopes", "publish", "app", &scopes]);
    d.wait_log("app", "greeting=one runs=1 db=[redacted:db v1]", WAIT);
    let first = d.running_container("app", WAIT);
    let small = mib(&d, 1);

    // Version 2: the restart budget and a description, in place: same container.
    let v2_text = spec_with(
        "one",
        "description = \"answers the door\"\n",
        16,
        "[restart]\nattempts = 9\n",
    );
    let v2 = applied(&d, &v2_text);
    assert_eq!(v2["action"], "in_place", "{v2}");
    assert_eq!(v2["version"], 2, "{v2}");
    assert_eq!(v2["change"]["recreate"], false, "{v2}");
    assert_eq!(v2["agent"]["container_id"], first.as_str(), "{v2}");
    assert_eq!(v2["agent"]["restart_budget"], 9, "{v2}");
    assert_eq!(v2["agent"]["spec_version"], 2, "{v2}");
    let show = String::from_utf8_lossy(&d.cli(&["agents", "show", "app"]).stdout).to_string();
    assert!(
        show.contains("answers the door") && show.contains("version 2 (hash"),
        "{show}"
    );
    assert!(!logs(&d, "app").contains("runs=2"), "the program restarted");

    // The same spec again: nothing stored.
    let same = applied(&d, &v2_text);
    assert_eq!(same["action"], "unchanged", "{same}");
    let v2_spec = d.json(&["agents", "spec", "app"]);
    assert_eq!(v2_spec["version"], 2);
    assert_eq!(v2_spec["spec"]["description"], "answers the door");

    // A dry run shows the diff and what would happen, and changes nothing; without a
    // terminal, apply wants --yes.
    let two = spec("two", "", 16);
    let dry = apply(&d, &two, &["--dry-run"]);
    let err = String::from_utf8_lossy(&dry.stderr);
    assert!(dry.status.success(), "{err}");
    assert!(
        err.contains("-GREETING = \"one\"") && err.contains("+GREETING = \"two\""),
        "{err}"
    );
    assert!(
        err.contains("version 2 → 3: new container (description, env, restart)"),
        "{err}"
    );
    let asked = apply(&d, &two, &[]);
    assert_eq!(asked.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&asked.stderr).contains("use --yes"));
    assert_eq!(d.json(&["agents", "history", "app"])["current"], 2);

    // What cannot change is refused with the field named, and nothing is stored.
    for (bad, want) in [
        (
            spec("one", "project = \"other\"\n", 16),
            "cannot move from project",
        ),
        (spec("one", "", 8), "can grow, not shrink"),
    ] {
        let out = apply(&d, &bad, &["--yes"]);
        assert_eq!(out.status.code(), Some(6), "{bad}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(want),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Version 3: a new environment and a larger workspace need a new container; the
    // credential, the workspace's data (now larger) and the scopes are kept.
    let v3 = applied(&d, &spec("two", "", 48));
    assert_eq!(v3["action"], "recreated", "{v3}");
    assert_eq!(v3["version"], 3, "{v3}");
    assert_ne!(v3["agent"]["container_id"], first.as_str(), "{v3}");
    d.wait_log("app", "greeting=two runs=2 db=[redacted:db v1]", WAIT);
    let large = mib(&d, 2);
    assert!(
        large >= small + 25,
        "the workspace did not grow: {small} → {large} MiB"
    );
    let scoped = d.json(&["scopes", "show", "app"]);
    assert_eq!(scoped["current"], 1, "{scoped}");

    // Rollback to version 1 would shrink the workspace: refused. The history says who
    // changed what.
    let out = d.cli(&["agents", "rollback", "app", "1", "--yes"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not shrink"));
    let h = d.json(&["agents", "history", "app"]);
    let notes: Vec<&str> = h["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["note"].as_str().unwrap())
        .collect();
    assert_eq!(
        notes,
        [
            "created",
            "in place (description, restart)",
            "new container (description, env, workspace, restart)"
        ],
        "{h}"
    );
    assert_eq!(
        d.json(&["agents", "spec", "app", "--version", "1"])["spec"]["env"]["GREETING"],
        "one"
    );
    let audit = d
        .json(&["audit", "search", "--action", "agent.apply"])
        .to_string();
    assert!(audit.contains("in place (description, restart)"), "{audit}");
    let audit = d
        .json(&["audit", "search", "--action", "agent.recreate"])
        .to_string();
    assert!(audit.contains("spec version 3"), "{audit}");

    // Rollback to version 3's own spec from a later one: version 4 = GREETING three;
    // rollback 3 → version 5, a copy of 3.
    applied(&d, &spec("three", "", 48));
    d.wait_log("app", "greeting=three runs=3", WAIT);
    let r = d.json(&["agents", "rollback", "app", "3", "--yes"]);
    assert_eq!(r["version"], 5, "{r}");
    assert_eq!(r["action"], "recreated", "{r}");
    d.wait_log("app", "greeting=two runs=4", WAIT);
    let h = d.json(&["agents", "history", "app"]);
    assert_eq!(
        h["versions"][4]["note"], "rollback to 3: new container (env)",
        "{h}"
    );

    // A crash between storing a version and replacing the container: the daemon that
    // starts next replaces the container made from the older spec.
    let running = d.running_container("app", WAIT);
    d.kill9();
    let db = d.dir.join("state/agenfleet.db");
    let py = "import sqlite3, sys, json\n\
        c = sqlite3.connect(sys.argv[1])\n\
        (s,) = c.execute(\"SELECT spec_json FROM agents WHERE name = 'app'\").fetchone()\n\
        s = json.loads(s); s['env']['GREETING'] = 'crashed'; s = json.dumps(s)\n\
        c.execute(\"UPDATE agents SET spec_json = ? WHERE name = 'app'\", (s,))\n\
        c.execute(\"INSERT INTO spec_versions SELECT tenant_id, agent, 6, ?, created_ms, author, 'stored before a crash' FROM spec_versions WHERE agent = 'app' AND version = 5\", (s,))\n\
        c.commit()\n";
    let out = std::process::Command::new("python3")
        .args(["-c", py, db.to_str().unwrap()])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.restart();
    d.wait_log("app", "greeting=crashed runs=5", WAIT);
    let now = d.running_container("app", WAIT);
    assert_ne!(now, running);
    assert_eq!(d.agent("app")["spec_version"], 6);
    let audit = d
        .json(&["audit", "search", "--action", "agent.recreate"])
        .to_string();
    assert!(audit.contains("older version of the spec"), "{audit}");
    assert!(d.cli(&["agents", "delete", "app"]).status.success());
}
