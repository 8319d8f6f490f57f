//! End-to-end: the credential vault of a real daemon with the real kernel keyring —
//! sealed start and unseal, delivery over the agent's own gateway socket only, rotation
//! reaching the running agent, and the canary hunt: a credential's value appears nowhere
//! but in its agent's process memory.

use agenfleet_e2e::*;
use std::process::Command;
use std::time::Duration;

fn secret_agent(name: &str) -> String {
    format!(
        "name = \"{name}\"\nimage = \"agenfleet/agent\"\ncredentials = [\"api-key\"]\n[workload]\nmessage = \"{name} working\"\nlog_interval_ms = 200\n"
    )
}

fn init_vault(d: &Daemon) -> String {
    let v = d.json(&["vault", "init"]);
    v["recovery_key"]
        .as_str()
        .expect("recovery key")
        .to_string()
}

#[test]
fn canary_appears_nowhere_but_in_the_agents_memory() {
    if !docker_available("canary_appears_nowhere_but_in_the_agents_memory") {
        return;
    }
    let d = Daemon::start("canary", "");
    init_vault(&d);
    let canary1 = format!("CANARY-{:x}-ONE", std::process::id());
    let canary2 = format!("CANARY-{:x}-TWO", std::process::id());
    d.create(&secret_agent("holder"));
    let out = d.cli_stdin(&["creds", "set", "holder", "api-key"], &canary1);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = d.wait_agent(
        "holder",
        "running with its credential",
        Duration::from_secs(20),
        |v| v["state"] == "Running",
    );
    let first_start = v["started_at_ms"].as_u64().unwrap();
    // Rotate: the running agent is restarted and gets version 2.
    let out = d.cli_stdin(&["creds", "rotate", "holder", "api-key"], &canary2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = d.wait_agent(
        "holder",
        "restarted with version 2",
        Duration::from_secs(20),
        |v| v["state"] == "Running" && v["started_at_ms"].as_u64().unwrap_or(0) > first_start,
    );
    d.wait_log(
        "holder",
        "credential api-key version 2 in memory",
        Duration::from_secs(10),
    );
    let cid = v["container_id"].as_str().unwrap().to_string();
    let pid = inspect(&cid)["State"]["Pid"].as_i64().unwrap();
    // Positive control: the search finds the value where it must be.
    assert!(
        in_memory(pid, canary2.as_bytes()) > 0,
        "the agent does not hold the rotated value"
    );

    let mut everywhere = String::new();
    // Every reply to an operator.
    for args in [
        vec!["--json", "status"],
        vec!["--json", "agents", "show", "holder"],
        vec!["--json", "creds", "list", "holder"],
        vec!["--json", "creds", "show", "holder", "api-key"],
        vec!["--json", "vault", "status"],
        vec!["--json", "audit", "export"],
        vec!["--json", "logs", "holder"],
        vec!["status"],
        vec!["creds", "list", "holder"],
        vec!["audit", "tail", "-n", "100"],
    ] {
        let out = d.cli(&args);
        everywhere.push_str(&String::from_utf8_lossy(&out.stdout));
        everywhere.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    // The engine's view of the container, and its on-disk config and logs.
    everywhere.push_str(&docker(&["inspect", &cid]));
    for c in [&canary1, &canary2] {
        assert!(
            !everywhere.contains(c.as_str()),
            "{c} leaked into a reply or docker inspect"
        );
        // The engine's config and logs; the daemon's log, audit segments, SQLite files
        // (db, WAL), its whole state dir.
        assert_on_no_disk(&d, &cid, c);
    }
    // The audit trail says what happened, with an HMAC instead of the value.
    let rot = d.json(&["audit", "search", "--action", "creds.rotate"]);
    assert!(
        rot[0]["event"]["detail"]
            .as_str()
            .unwrap()
            .contains("value hmac"),
        "{rot}"
    );
    let deliveries = d.json(&["audit", "search", "--action", "creds.deliver"]);
    assert!(deliveries.as_array().unwrap().len() >= 2, "{deliveries}");

    // The console's screen: fleet, detail pane with logs, audit view.
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 120, 40);
    let mut screens = t.wait_screen("the fleet", |s| s.contains("holder"));
    t.keys(&["Enter"]);
    screens.push_str(&t.wait_screen("the detail pane", |s| s.contains("in window)")));
    // Escape and the next key apart (together a terminal reads them as Alt-key): wait
    // for the detail pane to close before pressing `2`.
    t.keys(&["Escape"]);
    screens.push_str(&t.wait_screen("the detail pane closed", |s| {
        s.contains("Fleet") && !s.contains("in window)")
    }));
    t.keys(&["2"]);
    screens.push_str(&t.wait_screen("the audit view", |s| s.contains("Audit trail")));
    drop(t);
    assert!(
        screens.contains("holder"),
        "the console showed nothing: {screens}"
    );
    assert!(
        !screens.contains(&canary1) && !screens.contains(&canary2),
        "a canary on the console"
    );
}

#[test]
fn another_agents_gateway_gives_nothing() {
    if !docker_available("another_agents_gateway_gives_nothing") {
        return;
    }
    let d = Daemon::start("gateway", "");
    init_vault(&d);
    d.create(&secret_agent("victim"));
    let canary = format!("VICTIM-SECRET-{:x}", std::process::id());
    assert!(d
        .cli_stdin(&["creds", "set", "victim", "api-key"], &canary)
        .status
        .success());
    let v = d.wait_agent("victim", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    let image = v["image"].as_str().unwrap().to_string();
    // A rogue container that got hold of the victim's gateway directory.
    let dir = d.dir.join("state/gateways/default.victim");
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", "--user", "65534:65534"])
        .arg("-v")
        .arg(format!("{}:/run/stolen:ro", dir.display()))
        .args([
            &image,
            "--gateway",
            "/run/stolen/gateway.sock",
            "--credentials",
            "api-key",
        ])
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(70),
        "the rogue shim should fail: {all}"
    );
    assert!(
        all.contains("not permitted") && all.contains("does not run in its container"),
        "{all}"
    );
    assert!(!all.contains(&canary));
    // The host is no better placed than another container.
    let rogue = Command::new(bin("agenfleet"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(rogue.status.success());
    let refused = d.json(&["audit", "search", "--action", "gateway.refused"]);
    assert!(
        !refused.as_array().unwrap().is_empty(),
        "the attempt was not audited"
    );
    // The victim itself got its value.
    let out = d.cli(&["logs", "victim"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("credential api-key version 1 in memory"));
}

#[test]
fn sealed_start_holds_credentialed_agents_back_until_unsealed() {
    if !docker_available("sealed_start_holds_credentialed_agents_back_until_unsealed") {
        return;
    }
    let mut d = Daemon::start("sealed", "");
    let recovery = init_vault(&d);
    d.create(&healthy("plain"));
    d.create(&secret_agent("secretive"));
    assert!(d
        .cli_stdin(&["creds", "set", "secretive", "api-key"], "s3cret-value")
        .status
        .success());
    let v = d.wait_agent("secretive", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    // What a reboot does: the keyring forgets the master key and the containers are gone.
    let st = d.json(&["vault", "seal"]);
    assert_eq!(st["state"], "Sealed");
    d.kill9();
    docker(&["rm", "-f", v["container_id"].as_str().unwrap()]);
    d.restart();
    let st = d.json(&["status"]);
    assert_eq!(st["daemon"]["vault"], "Sealed");
    let out = d.cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("SEALED"));
    // Agents without credentials keep running; the credentialed one is held back.
    assert_eq!(d.agent("plain")["state"], "Running");
    let v = d.wait_agent("secretive", "held back", Duration::from_secs(15), |v| {
        v["state"] == "Pending" && v["message"].as_str().unwrap_or("").contains("SEALED")
    });
    assert!(
        v["container_id"].is_null()
            || !inspect(v["container_id"].as_str().unwrap())["State"]["Running"]
                .as_bool()
                .unwrap_or(false)
    );
    // The platform's incident: agents held back by a sealed vault.
    let inc = d.json(&["incidents", "list"]);
    let sealed = inc
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["scenario"] == "vault-sealed")
        .cloned()
        .unwrap_or_else(|| panic!("a vault-sealed incident: {inc}"));
    assert_eq!(sealed["party"], "platform");
    assert!(
        sealed["summary"].as_str().unwrap().contains("1 agent(s)"),
        "{sealed}"
    );
    // A wrong recovery key: a clear error, still sealed, and audited.
    let wrong = "00000000-11111111-22222222-33333333-44444444-55555555-66666666-77777777";
    let out = d.cli_stdin(&["vault", "unseal"], wrong);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong recovery key"));
    let out = d.cli_stdin(&["vault", "unseal"], "not-hex");
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed recovery key"));
    assert_eq!(d.json(&["vault", "status"])["state"], "Sealed");
    let failed = d.json(&["audit", "search", "--action", "vault.unseal"]);
    assert!(
        failed
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["outcome"] == "failed"),
        "{failed}"
    );
    // The right key opens it, and the held-back agent starts with its credential.
    let out = d.cli_stdin(&["vault", "unseal"], &recovery);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.wait_agent(
        "secretive",
        "running after unseal",
        Duration::from_secs(20),
        |v| v["state"] == "Running",
    );
    d.wait_log(
        "secretive",
        "credential api-key version 1 in memory",
        Duration::from_secs(10),
    );
    let after = d.json(&["incidents", "show", &sealed["id"].to_string()]);
    assert_eq!(after["state"], "resolved", "unsealing resolves it: {after}");
    // The master key is back in the keyring: a daemon restart comes up unsealed.
    d.restart();
    assert_eq!(d.json(&["status"])["daemon"]["vault"], "Unsealed");
}

#[test]
fn bad_credential_input_is_refused_and_audited() {
    if !docker_available("bad_credential_input_is_refused_and_audited") {
        return;
    }
    let d = Daemon::start("badcreds", "");
    // Before init: a clear error.
    d.create(&healthy("someone"));
    let out = d.cli_stdin(&["creds", "set", "someone", "k"], "v");
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("vault init"));
    init_vault(&d);
    // Unknown agent: not found, audited as a refusal.
    let out = d.cli_stdin(&["creds", "rotate", "ghost", "k"], "v");
    assert_eq!(out.status.code(), Some(5));
    let refused = d.json(&["audit", "search", "--action", "rpc.refused"]);
    assert!(refused.to_string().contains("ghost"), "{refused}");
    // Empty value, bad name, rotate before set, set twice.
    let out = d.cli_stdin(&["creds", "set", "someone", "k"], "");
    assert_eq!(out.status.code(), Some(6));
    let out = d.cli_stdin(&["creds", "set", "someone", "bad name"], "v");
    assert_eq!(out.status.code(), Some(6));
    let out = d.cli_stdin(&["creds", "rotate", "someone", "k"], "v");
    assert_eq!(out.status.code(), Some(5));
    assert!(d
        .cli_stdin(&["creds", "set", "someone", "k"], "v1")
        .status
        .success());
    let out = d.cli_stdin(&["creds", "set", "someone", "k"], "v2");
    assert_eq!(out.status.code(), Some(7));
    let list = d.json(&["creds", "list", "someone"]);
    assert_eq!(list[0]["current_version"], 1);
    assert_eq!(list[0]["versions"].as_array().unwrap().len(), 1);
    // Revoke makes it unusable at once.
    let out = d.cli(&["creds", "revoke", "someone", "k"]);
    assert!(out.status.success());
    assert!(d.json(&["creds", "show", "someone", "k"])["current_version"].is_null());
    // A second init is refused and changes nothing.
    let out = d.cli(&["vault", "init"]);
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn refresh_mode_hands_the_rotated_value_over_in_place() {
    if !docker_available("refresh_mode_hands_the_rotated_value_over_in_place") {
        return;
    }
    let d = Daemon::start("refresh", "");
    init_vault(&d);
    d.create(
        "name = \"fresh\"\nimage = \"agenfleet/agent\"\ncredentials = [\"api-key\"]\n\
         credential_refresh = \"refresh\"\n[workload]\nlog_interval_ms = 200\n",
    );
    assert!(d
        .cli_stdin(&["creds", "set", "fresh", "api-key"], "first-value")
        .status
        .success());
    let v = d.wait_agent("fresh", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    let started = v["started_at_ms"].as_u64().unwrap();
    let pid = inspect(v["container_id"].as_str().unwrap())["State"]["Pid"]
        .as_i64()
        .unwrap();
    // The shim holds version 1 (and listens for a refresh) before the rotation.
    d.wait_log("fresh", "version 1 in memory (", Duration::from_secs(20));
    let canary = format!("REFRESHED-{:x}", std::process::id());
    let t = std::time::Instant::now();
    assert!(d
        .cli_stdin(
            &["creds", "rotate", "fresh", "api-key", "--grace", "30"],
            &canary
        )
        .status
        .success());
    d.wait_log("fresh", "version 2 in memory (", Duration::from_secs(10));
    eprintln!("rotate → agent holds the new value: {:?}", t.elapsed());
    let v = d.agent("fresh");
    assert_eq!(
        v["started_at_ms"].as_u64().unwrap(),
        started,
        "refresh mode must not restart"
    );
    assert!(
        in_memory(pid, canary.as_bytes()) > 0,
        "the running process did not get the new value"
    );
    // The old version stays usable for its grace period.
    let c = d.json(&["creds", "show", "fresh", "api-key"]);
    assert!(c["versions"][0]["revoke_at_ms"].as_u64().is_some(), "{c}");
    assert!(c["versions"][0]["revoked_ms"].is_null(), "{c}");
}

#[test]
fn a_credential_is_rotated_from_the_console() {
    if !docker_available("a_credential_is_rotated_from_the_console") {
        return;
    }
    let d = Daemon::start("console-rotate", "");
    init_vault(&d);
    d.create(&secret_agent("rotor"));
    assert!(d
        .cli_stdin(&["creds", "set", "rotor", "api-key"], "old-value")
        .status
        .success());
    d.wait_agent("rotor", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 100, 30);
    t.wait_screen("the fleet", |s| {
        s.contains("rotor") && s.contains("running")
    });
    t.keys(&["c"]);
    t.wait_screen("the credentials pane", |s| {
        s.contains("Credentials of default/rotor") && s.contains("api-key")
    });
    t.keys(&["R"]);
    t.wait_screen("the rotate dialog", |s| s.contains("typing is hidden"));
    t.keys(&["-l", "brand-new-secret"]);
    t.keys(&["Enter"]);
    let s = t.wait_screen("the confirmation", |s| {
        s.contains("Rotate default/rotor/api-key to a new version?")
    });
    assert!(!s.contains("brand-new-secret"), "typed value shown: {s}");
    t.keys(&["y"]);
    let s = t.wait_screen("the rotation reported", |s| {
        s.contains("rotated default/rotor/api-key to version 2")
    });
    assert!(!s.contains("brand-new-secret"));
    drop(t);
    let c = d.json(&["creds", "show", "rotor", "api-key"]);
    assert_eq!(c["current_version"], 2, "{c}");
    d.wait_log(
        "rotor",
        "credential api-key version 2 in memory",
        Duration::from_secs(15),
    );
}

#[test]
fn deleting_an_agent_purges_its_rows_and_files_and_the_audit_shows_it() {
    if !docker_available("deleting_an_agent_purges_its_rows_and_files_and_the_audit_shows_it") {
        return;
    }
    let d = Daemon::start("purge", "");
    init_vault(&d);
    d.create(&secret_agent("doomed"));
    let canary = format!("PURGE-ME-{:x}", std::process::id());
    assert!(d
        .cli_stdin(&["creds", "set", "doomed", "api-key"], &canary)
        .status
        .success());
    assert!(d
        .cli_stdin(
            &["creds", "rotate", "doomed", "api-key"],
            &format!("{canary}-2")
        )
        .status
        .success());
    let v = d.wait_agent("doomed", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    let cid = v["container_id"].as_str().unwrap().to_string();
    let gw = d.dir.join("state/gateways/default.doomed");
    assert!(gw.exists());
    assert!(d.cli(&["agents", "delete", "doomed"]).status.success());
    // Rows and files are gone.
    assert!(!gw.exists(), "gateway dir left behind");
    assert!(
        !Command::new("docker")
            .args(["inspect", &cid])
            .output()
            .unwrap()
            .status
            .success(),
        "container left behind"
    );
    let out = d.cli(&["creds", "list", "doomed"]);
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(d.json(&["vault", "status"])["credentials"], 0);
    // Re-creating the name starts from nothing.
    d.create(&secret_agent("doomed"));
    assert_eq!(d.json(&["creds", "list", "doomed"]), serde_json::json!([]));
    // The audit shows the purge, before and after.
    let p = d.json(&["audit", "search", "--action", "agent.purge"]);
    let p = p.as_array().unwrap();
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0]["event"]["outcome"], "requested");
    assert_eq!(p[1]["event"]["outcome"], "ok");
    assert!(
        p[1]["event"]["detail"]
            .as_str()
            .unwrap()
            .contains("1 credential(s) with 2 version(s)"),
        "{p:?}"
    );
}

#[test]
fn a_deleted_agents_data_is_purged_on_schedule() {
    if !docker_available("a_deleted_agents_data_is_purged_on_schedule") {
        return;
    }
    let mut d = Daemon::start("scheduled-purge", "purge_after_secs = 3");
    init_vault(&d);
    d.create(&secret_agent("later"));
    assert!(d
        .cli_stdin(&["creds", "set", "later", "api-key"], "v")
        .status
        .success());
    let v = d.wait_agent("later", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    let cid = v["container_id"].as_str().unwrap().to_string();
    assert!(d.cli(&["agents", "delete", "later"]).status.success());
    // The agent is gone at once…
    assert_eq!(d.cli(&["agents", "show", "later"]).status.code(), Some(5));
    assert!(!Command::new("docker")
        .args(["inspect", &cid])
        .output()
        .unwrap()
        .status
        .success());
    // …its data waits for the purge (and the name with it).
    assert_eq!(d.json(&["vault", "status"])["credentials"], 1);
    let p = d.dir.join("again.toml");
    std::fs::write(&p, secret_agent("later")).unwrap();
    let out = d.cli(&["agents", "create", "-f", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scheduled purge"));
    // A restart does not lose the schedule.
    d.restart();
    wait_for(Duration::from_secs(15), "the scheduled purge", || {
        (d.json(&["vault", "status"])["credentials"] == 0).then_some(())
    });
    // The "ok" record follows the purge itself: wait for it rather than race it.
    let purges = wait_for(Duration::from_secs(10), "the purge's audit record", || {
        let purges = d.json(&["audit", "search", "--action", "agent.purge"]);
        (purges.as_array().map(|a| a.len()) == Some(2)).then_some(purges)
    });
    let outcomes: Vec<&str> = purges
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["requested", "ok"], "{purges}");
    assert!(
        d.cli(&["agents", "create", "-f", p.to_str().unwrap()])
            .status
            .success(),
        "the name is free after the purge"
    );
}

/// Flips one byte of a copy of `archive` at `at`; answers the copy's path.
fn flipped(archive: &std::path::Path, at: u64, name: &str) -> std::path::PathBuf {
    let mut bytes = std::fs::read(archive).expect("archive");
    bytes[at as usize] ^= 0x20;
    let p = archive.with_file_name(name);
    std::fs::write(&p, bytes).expect("damaged copy");
    p
}

#[test]
fn a_host_is_restored_from_a_backup_taken_under_load() {
    if !docker_available("a_host_is_restored_from_a_backup_taken_under_load") {
        return;
    }
    let mut d = Daemon::start("backup", "");
    let recovery = init_vault(&d);
    let canary = format!("CANARY-{:x}-BACKUP", std::process::id());
    d.create(&secret_agent("holder"));
    d.create(&secret_agent("churn"));
    d.create(&healthy("plain"));
    for (agent, value) in [("holder", canary.as_str()), ("churn", "churn-0")] {
        let out = d.cli_stdin(&["creds", "set", agent, "api-key"], value);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    d.wait_agent("holder", "running", Duration::from_secs(20), |v| {
        v["state"] == "Running"
    });
    // The checkpoint an operator kept from before the backup.
    let (kept, kept_file) = d.keep_checkpoint();
    let archive = d.dir.join("host.agfbackup");
    // Writers run while the backup is made: audit notes, and rotations of churn's key
    // (each a vault write, an audit record and a restart).
    let stop = std::sync::atomic::AtomicBool::new(false);
    let done = std::sync::atomic::AtomicU32::new(0);
    let backup = std::thread::scope(|s| {
        let (d, stop, done) = (&d, &stop, &done);
        s.spawn(move || {
            for i in 0.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                assert!(d
                    .cli(&["audit", "note", &format!("load {i}")])
                    .status
                    .success());
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        s.spawn(move || {
            for i in 1.. {
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let out = d.cli_stdin(
                    &["creds", "rotate", "churn", "api-key"],
                    &format!("churn-{i}"),
                );
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        });
        wait_for(Duration::from_secs(30), "the writers at work", || {
            (done.load(std::sync::atomic::Ordering::SeqCst) >= 10).then_some(())
        });
        let out = d.cli(&["--json", "backup", "--out", archive.to_str().unwrap()]);
        let at_backup = done.load(std::sync::atomic::Ordering::SeqCst);
        // The writers go on after it, so the live state moves past the copy.
        wait_for(Duration::from_secs(30), "writes after the backup", || {
            (done.load(std::sync::atomic::Ordering::SeqCst) >= at_backup + 6).then_some(())
        });
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        out
    });
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&backup.stdout).expect("backup json");
    let meta = std::fs::metadata(&archive).expect("the archive");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "an archive only its owner reads"
    );
    assert_eq!(meta.len(), info["bytes"].as_u64().unwrap());
    // Its fingerprint: the SHA-256 of the manifest in it, which holds every file's.
    let sum = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar xOf {} manifest.json | sha256sum",
            archive.display()
        ))
        .output()
        .expect("tar | sha256sum");
    let fingerprint = info["manifest_sha256"].as_str().unwrap();
    assert_eq!(fingerprint.len(), 64, "{info}");
    assert!(
        String::from_utf8_lossy(&sum.stdout).starts_with(fingerprint),
        "{info}"
    );
    let cut = info["checkpoint"]["seq"].as_u64().unwrap();
    assert!(cut > kept["seq"].as_u64().unwrap(), "{info}");
    // A plain tar: its listing shows the database, the segments and the manifest.
    let list = Command::new("tar")
        .arg("tf")
        .arg(&archive)
        .output()
        .expect("tar");
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    for f in [
        "agenfleet.db",
        "audit/checkpoints.jsonl",
        "manifest.json",
        "agenfleetd.toml.at-backup",
    ] {
        assert!(list.lines().any(|l| l == f), "{f} in {list}");
    }
    // The secrets are in it only sealed.
    assert!(
        files_containing(&d.dir, canary.as_bytes()).is_empty(),
        "the canary in a file"
    );

    // A new host: no master key and no audit signing key in the keyring (sealing
    // removes both, as a reboot does: the restored daemon below finds neither), no
    // containers, no state.
    assert_eq!(d.json(&["vault", "seal"])["state"], "Sealed");
    d.kill9();
    for cid in d.containers() {
        docker(&["rm", "-f", &cid]);
    }
    let state = d.dir.join("state");
    std::fs::remove_dir_all(&state).expect("wipe the state");

    // Damaged archives are refused, naming what is wrong, and create nothing.
    let restore = |from: &std::path::Path| {
        restore_cmd(from, &state)
            .output()
            .expect("agenfleetd restore")
    };
    let in_db = flipped(&archive, 512 + 4000, "in-db.agfbackup");
    let out = restore(&in_db);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(
        err.contains("agenfleet.db") && err.contains("SHA-256"),
        "{err}"
    );
    assert!(!state.exists(), "a refused restore leaves nothing");
    let in_header = flipped(&archive, 100, "in-header.agfbackup");
    let out = restore(&in_header);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("header") && err.contains("checksum"), "{err}");
    // Inside the manifest's digest (the last entry before the two end blocks).
    let last = flipped(&archive, meta.len() - 1500, "in-manifest.agfbackup");
    let out = restore(&last);
    assert_eq!(
        out.status.code(),
        Some(65),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = archive.with_file_name("short.agfbackup");
    std::fs::write(
        &short,
        &std::fs::read(&archive).unwrap()[..meta.len() as usize / 2],
    )
    .unwrap();
    let out = restore(&short);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(65), "{err}");
    assert!(err.contains("truncated"), "{err}");
    assert!(!state.exists());

    // The good one.
    let out = restore(&archive);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = restore(&archive);
    assert_eq!(
        again.status.code(),
        Some(73),
        "a non-empty target is refused"
    );
    assert_eq!(
        std::fs::read_to_string(state.join("agenfleetd.toml.at-backup")).unwrap(),
        std::fs::read_to_string(&d.config).unwrap(),
        "the config in force at backup time comes back beside the state"
    );
    d.restart();

    // The trail verifies against the checkpoint kept before, and says it was restored
    // (not that the daemon crashed at the cut). Checkpoints wait for the signing key,
    // which the sealed vault holds.
    d.assert_verifies_against(&kept_file);
    let st = d.json(&["audit", "status"]);
    assert!(st["signing"].as_str().unwrap().contains("waiting"), "{st}");
    let restored = d.json(&["audit", "search", "--action", "daemon.restored"]);
    assert_eq!(restored.as_array().unwrap().len(), 1, "{restored}");
    let incidents = d.json(&["incidents", "list"]);
    assert!(
        !incidents.to_string().contains("without a clean shutdown"),
        "a restore is not a crash: {incidents}"
    );
    // The copy holds nothing the trail does not: every version of churn's key it has
    // was recorded (set, then one rotation per later version).
    let creds = d.json(&["creds", "list", "churn"]);
    let version = creds[0]["current_version"].as_u64().unwrap();
    let rotations = d.json(&[
        "audit",
        "search",
        "--action",
        "creds.rotate",
        "--agent",
        "churn",
    ]);
    let recorded = rotations
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["seq"].as_u64().unwrap() <= cut)
        .count() as u64;
    assert!(
        version >= 2 && recorded >= version - 1,
        "v{version}, {recorded} rotations recorded"
    );

    // The vault opens with the recovery key; the credential decrypts to its value and
    // reaches its agent; the agents come back.
    assert_eq!(d.json(&["vault", "status"])["state"], "Sealed");
    let out = d.cli_stdin(&["vault", "unseal"], &recovery);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same signing key is back: a checkpoint over the records written meanwhile, and
    // the whole log, before and after the restore, verifies as one.
    let cp = wait_for(
        Duration::from_secs(30),
        "a checkpoint after the unseal",
        || {
            let st = d.json(&["audit", "status"]);
            let cp = st["last_checkpoint"].clone();
            (cp["seq"].as_u64().unwrap_or(0) > cut).then_some(cp)
        },
    );
    assert_eq!(
        cp["public_key"], kept["public_key"],
        "the key from before the backup"
    );
    d.assert_verifies_against(&kept_file);
    let back = d.json(&["audit", "search", "--action", "audit.key_restored"]);
    assert_eq!(back.as_array().unwrap().len(), 1, "{back}");
    let v = d.wait_agent("holder", "back and running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    d.wait_log(
        "holder",
        "credential api-key version 1 in memory",
        Duration::from_secs(15),
    );
    let pid = inspect(v["container_id"].as_str().unwrap())["State"]["Pid"]
        .as_i64()
        .unwrap();
    assert!(
        in_memory(pid, canary.as_bytes()) > 0,
        "the restored value reached its agent"
    );
    d.wait_agent("plain", "back and running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
}
