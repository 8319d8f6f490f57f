//! Running as a service on a host: the systemd unit checks, the service manager hears
//! READY/WATCHDOG/STOPPING, journald gets priorities without our timestamps, and an
//! operator in the socket's group — a real other user — connects to a root daemon with
//! no manual step, the CLI finding the socket where it looks by default.

use agenfleet_e2e::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/systemd/agenfleetd.service"),
    )
    .expect("the unit file");
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIP the_unit_file_passes_systemd_analyze_verify: no systemd-analyze on this host"
        );
        return;
    }
    // The unit names the installed binary; verify it against the one just built.
    let dir = tempdir("unit");
    let path = dir.join("agenfleetd.service");
    let agenfleetd = bin("agenfleetd").display().to_string();
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/agenfleetd", &agenfleetd),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "Type=notify",
        "WatchdogSec=",
        "StateDirectory=agenfleet",
        "RuntimeDirectory=agenfleet",
        "Group=agenfleet",
    ] {
        assert!(unit.contains(want), "{want}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_service_manager_hears_ready_watchdog_and_stopping() {
    let dir = tempdir("sdnotify");
    let path = dir.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    rx.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let notify = path.display().to_string();
    let mut d = Daemon::start_with_env(
        "sdnotify",
        "",
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    );
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while got.iter().filter(|m: &&String| *m == "WATCHDOG=1").count() < 2 {
        let n = rx.recv(&mut buf).expect("a notification within 30 s");
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(
        got[0].starts_with("READY=1\nSTATUS=serving "),
        "READY first, once the socket listens: {got:?}"
    );
    // SIGTERM: the daemon says it is stopping.
    // SAFETY: kill with a pid of our own child.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    loop {
        let n = rx.recv(&mut buf).expect("STOPPING=1 within 30 s");
        if &buf[..n] == b"STOPPING=1" {
            break;
        }
    }
    d.kill9();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamps() {
    let dir = tempdir("journald");
    let config = dir.join("agenfleetd.toml");
    let socket = dir.join("s.sock");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsocket = {:?}\nsocket_group = \"no-such-group-agf\"\n",
            dir.join("state"),
            socket
        ),
    )
    .unwrap();
    // The stream journald would hand the service: here a file, named by JOURNAL_STREAM.
    let log = dir.join("journal.log");
    let f = std::fs::File::create(&log).unwrap();
    let meta = f.metadata().unwrap();
    let out = Command::new(bin("agenfleetd"))
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(f)
        .output()
        .expect("agenfleetd");
    // A group that does not exist stops it at once, as a config error naming it.
    assert_eq!(out.status.code(), Some(78));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("socket_group") && text.contains("no group `no-such-group-agf`"),
        "{text}"
    );
    // Now a good config: the start's info lines, as journald wants them.
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\nsocket = {:?}\n",
            dir.join("state"),
            socket
        ),
    )
    .unwrap();
    let f = std::fs::File::create(&log).unwrap();
    let meta = f.metadata().unwrap();
    let mut child = Command::new(bin("agenfleetd"))
        .arg("--config")
        .arg(&config)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env("RUST_LOG", "info")
        .stderr(f)
        .spawn()
        .expect("agenfleetd");
    wait_for(Duration::from_secs(30), "the ready line", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|t| t.contains("agenfleetd ready"))
    });
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "a syslog priority first: {line}"
        );
        assert!(
            !line[3..].trim_start().starts_with("20"),
            "no timestamp of our own: {line}"
        );
        assert!(!line.contains('\u{1b}'), "no colour: {line}");
    }
    let ready = text
        .lines()
        .find(|l| l.contains("agenfleetd ready"))
        .unwrap();
    assert!(
        ready.starts_with("<6> INFO") || ready.starts_with("<6>INFO"),
        "{ready}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A real group and a real user in it (and one not in it), removed when the test ends.
struct Users {
    group: String,
    member: String,
    outsider: String,
}

impl Users {
    fn make() -> Option<Users> {
        let tag = rand_suffix();
        let tag = &tag[tag.len().saturating_sub(6)..];
        let u = Users {
            group: format!("agfops{tag}"),
            member: format!("agfop{tag}"),
            outsider: format!("agfout{tag}"),
        };
        let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
        if !ok(Command::new("groupadd").arg(&u.group)) {
            return None;
        }
        let made = ok(Command::new("useradd")
            .args(["-M", "-N", "-s", "/usr/sbin/nologin", "-G", &u.group])
            .arg(&u.member))
            && ok(Command::new("useradd")
                .args(["-M", "-N", "-s", "/usr/sbin/nologin"])
                .arg(&u.outsider));
        made.then_some(u)
    }

    fn uid(name: &str) -> u32 {
        let out = Command::new("id").args(["-u", name]).output().expect("id");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a uid")
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for u in [&self.member, &self.outsider] {
            let _ = Command::new("userdel").arg(u).status();
        }
        let _ = Command::new("groupdel").arg(&self.group).status();
    }
}

/// `agenfleet ARGS` as user `name` (its groups from the group database, as at a login),
/// with the environment given.
fn cli_as_user(name: &str, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut c = Command::new("runuser");
    c.args(["-u", name, "--"])
        .arg(bin_for_other_uids("agenfleet"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/tmp");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("runuser")
}

#[test]
fn an_operator_in_the_socket_group_connects_to_a_root_daemon() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must make users"
        );
        eprintln!(
            "SKIP an_operator_in_the_socket_group_connects_to_a_root_daemon: needs root (useradd)"
        );
        return;
    }
    let users = Users::make().expect("groupadd and useradd work as root");
    // The socket's directory does not exist yet: the daemon makes it, for the group.
    let run = tempdir("sockgroup");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = run.join("agenfleet").join("agenfleet.sock");
    let d = Daemon::start(
        "sockgroup",
        &format!(
            "socket = {:?}\nsocket_group = {:?}\n",
            socket.display().to_string(),
            users.group
        ),
    );
    // The helper reads the socket from the config it wrote first; ours is the one above.
    let gid = {
        let out = Command::new("getent")
            .args(["group", &users.group])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split(':')
            .nth(2)
            .unwrap()
            .parse::<u32>()
            .unwrap()
    };
    let m = std::fs::metadata(&socket).expect("the socket");
    assert_eq!(m.gid(), gid, "the socket is the group's");
    assert_eq!(m.mode() & 0o777, 0o660);
    let dm = std::fs::metadata(socket.parent().unwrap()).unwrap();
    assert_eq!((dm.gid(), dm.mode() & 0o777), (gid, 0o750));

    // The member: found by $XDG_RUNTIME_DIR (no --socket), identified by its own uid.
    let uid = Users::uid(&users.member);
    d.json(&["operators", "add", &uid.to_string(), &users.member]);
    let xdg = run.display().to_string();
    let out = cli_as_user(
        &users.member,
        &[("XDG_RUNTIME_DIR", &xdg)],
        &["--json", "whoami"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(me["uid"], uid, "{me}");

    // Someone outside the group cannot open the socket, and is told what to ask for.
    let out = cli_as_user(&users.outsider, &[("XDG_RUNTIME_DIR", &xdg)], &["whoami"]);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not permitted") && err.contains("socket_group"),
        "{err}"
    );

    // With no daemon anywhere it looks, the error lists every place it looked.
    let empty = tempdir("nosock");
    let out = cli_as_user(
        &users.member,
        &[("XDG_RUNTIME_DIR", &empty.display().to_string())],
        &["whoami"],
    );
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("looked for a daemon at")
            && err.contains(&empty.join("agenfleet/agenfleet.sock").display().to_string())
            && err.contains("/run/agenfleet/agenfleet.sock"),
        "{err}"
    );
    drop(d);
    let _ = std::fs::remove_dir_all(&run);
    let _ = std::fs::remove_dir_all(&empty);
}

#[test]
fn info_says_versions_the_socket_and_where_the_daemon_keeps_things() {
    let d = Daemon::start("info", "");
    let v = d.json(&["info"]);
    assert_eq!(v["client"]["socket_from"], "--socket");
    assert_eq!(v["client"]["socket"], d.socket.display().to_string());
    assert_eq!(v["client"]["version"], v["daemon"]["daemon_version"]);
    assert_eq!(
        v["client"]["protocol_version"],
        v["daemon"]["protocol_version"]
    );
    assert_eq!(v["daemon"]["instance_id"], d.instance);
    assert_eq!(
        v["daemon"]["config_file"],
        d.config.display().to_string(),
        "{v}"
    );
    assert_eq!(
        v["daemon"]["state_dir"],
        d.dir.join("state").display().to_string()
    );
    assert_eq!(
        v["daemon"]["audit_dir"],
        d.dir.join("state/audit").display().to_string()
    );
    assert!(v["daemon"]["engine_address"]
        .as_str()
        .unwrap()
        .contains("://"));
    assert!(v["daemon"]["keyring"]
        .as_str()
        .unwrap()
        .contains("kernel keyring"));
    // Found through AGENFLEET_SOCKET, it says so.
    let out = Command::new(bin("agenfleet"))
        .args(["--json", "info"])
        .env("AGENFLEET_SOCKET", &d.socket)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["client"]["socket_from"], "AGENFLEET_SOCKET");
}

#[test]
fn check_config_judges_a_config_without_starting_and_the_cli_makes_completions_and_man_pages() {
    let dir = tempdir("checkconfig");
    let config = dir.join("agenfleetd.toml");
    let state = dir.join("state");
    let check = |text: &str| {
        std::fs::write(&config, text).unwrap();
        let out = Command::new(bin("agenfleetd"))
            .arg("check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, text) = check(&format!("state_dir = {:?}\n", state.display().to_string()));
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("is good"), "{text}");
    assert!(
        !state.exists(),
        "checking starts nothing and creates nothing"
    );
    let (code, text) = check(&format!(
        "state_dir = {:?}\nnetwork_pool = \"10.0.0.0/33\"\n",
        state.display().to_string()
    ));
    assert_eq!(code, Some(78), "{text}");
    assert!(text.contains("network_pool"), "{text}");
    let (code, text) = check("[[incident_route]]\nparty = \"client\"\ncommand = [\"true\"]\n[[incident_route]]\nparty = \"client\"\ncommand = [\"true\"]\n");
    assert_eq!(code, Some(78), "{text}");
    assert!(
        text.contains("incident_route[1]") && text.contains("give one a `name`"),
        "{text}"
    );

    let out = Command::new(bin("agenfleet"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    let script = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && script.contains("_agenfleet()") && script.contains("incidents")
    );
    let man = dir.join("man");
    let out = Command::new(bin("agenfleet"))
        .args(["man", "--out"])
        .arg(&man)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "agenfleet.1",
        "agenfleet-incidents-routes.1",
        "agenfleet-info.1",
    ] {
        let text = std::fs::read_to_string(man.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page} is a man page");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `GET /metrics` on `port`: the body.
fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the metrics port");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The value of the sample `series` (its name and labels, as exposed), or 0.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_move_with_real_events() {
    if !docker_available("metrics_move_with_real_events") {
        return;
    }
    let port = free_port();
    let d = Daemon::start(
        "metrics",
        &format!("metrics_listen = \"127.0.0.1:{port}\"\n"),
    );
    let before = wait_for(
        Duration::from_secs(30),
        "the engine up in the metrics",
        || {
            let t = scrape(port);
            (sample(&t, "agenfleet_engine_up") == 1.0).then_some(t)
        },
    );
    assert_eq!(sample(&before, "agenfleet_audit_writable"), 1.0);
    d.create("name = \"m1\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n");
    d.wait_agent("m1", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    let denied = "agenfleet_decisions_total{verdict=\"deny\",decision=\"deny\"}";
    let n0 = sample(&scrape(port), denied);
    let calls: Vec<serde_json::Value> = (0..3)
        .map(|i| serde_json::json!({"tool": "read_file", "args": {"path": format!("/etc/x{i}")}}))
        .collect();
    d.gateway_calls("m1", &calls);
    d.open_incident("api-key-leaked", "m");
    let after = scrape(port);
    assert_eq!(
        sample(
            &after,
            "agenfleet_agents{tenant=\"default\",state=\"running\"}"
        ),
        1.0,
        "{after}"
    );
    assert_eq!(sample(&after, denied) - n0, 3.0, "{after}");
    assert!(sample(&after, "agenfleet_decision_seconds_count") >= 3.0);
    assert!(
        sample(&after, "agenfleet_audit_append_seconds_count")
            > sample(&before, "agenfleet_audit_append_seconds_count")
    );
    assert_eq!(
        sample(
            &after,
            "agenfleet_incidents_open{party=\"client\",severity=\"critical\"}"
        ),
        1.0,
        "{after}"
    );
    // The same exposition from the CLI, for node_exporter's textfile collector.
    let out = d.cli(&["metrics"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(
        sample(
            &text,
            "agenfleet_agents{tenant=\"default\",state=\"running\"}"
        ),
        1.0
    );
}
