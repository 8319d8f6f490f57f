//! End-to-end: the real `agenfleet` console in a real terminal (tmux) against a real
//! daemon — the live fleet, the detail pane with logs, the filter, a confirmed restart,
//! surviving a daemon restart, and quitting; and the k9s habits (command mode, sort,
//! regex filters, describe, full-screen logs with search, a shell, Ctrl-D).

use agenfleet_e2e::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn console_shows_the_live_fleet_and_acts_on_it() {
    console_live_fleet(Mode::Containers);
}

#[test]
fn console_shows_the_live_fleet_and_acts_on_it_in_swarm_mode() {
    console_live_fleet(Mode::Swarm);
}

fn console_live_fleet(mode: Mode) {
    let Some(mut d) = mode.start("console_shows_the_live_fleet_and_acts_on_it", "console", "")
    else {
        return;
    };
    let _ = Command::new("tmux")
        .arg("-V")
        .output()
        .expect("tmux is required for this test");
    d.create(&healthy("alpha"));
    d.create(&healthy("bravo"));
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start(&cmd);

    let s = t.wait_screen("both agents running", |s| {
        s.contains("alpha") && s.contains("bravo") && s.matches("running").count() >= 2
    });
    assert!(s.contains("2 agents"), "{s}");
    if mode == Mode::Swarm {
        // Each agent's task is placed on a node, which the fleet names.
        let node = docker(&["info", "--format", "{{.Name}}"]);
        let s = t.wait_screen("the node column", |s| {
            s.contains("NODE") && s.matches(node.as_str()).count() >= 2
        });
        assert!(s.contains("NODE"), "{s}");
    }

    // Detail pane with the selected agent's log.
    t.keys(&["Enter"]);
    t.wait_screen("alpha's log in the detail pane", |s| {
        s.contains("default/alpha") && s.contains("alpha working")
    });
    t.keys(&["j"]);
    t.wait_screen("bravo's log after moving down", |s| {
        s.contains("default/bravo") && s.contains("bravo working")
    });
    t.keys(&["Escape"]);
    t.wait_screen("the detail pane closed", |s| !s.contains("in window)"));

    // Filter.
    t.keys(&["/", "a", "l", "p", "Enter"]);
    let s = t.wait_screen("filtered to alpha", |s| s.contains("Fleet (1 of 2)"));
    assert!(!s.contains("bravo"), "{s}");
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| s.contains("Fleet (2)"));

    // A confirmed restart really restarts the container.
    let before = d.wait_agent(
        "alpha",
        "running, with its start time",
        Duration::from_secs(30),
        |v| v["state"] == "Running" && v["started_at_ms"].is_u64(),
    )["started_at_ms"]
        .as_u64()
        .unwrap_or(0);
    t.keys(&["g", "r"]);
    t.wait_screen("confirmation dialog", |s| {
        s.contains("Restart default/alpha?")
    });
    t.keys(&["y"]);
    // A container is running again when the call returns; a new task is placed by Swarm
    // a moment later (pending first).
    let reported = match mode {
        Mode::Containers => "restart default/alpha: now running",
        Mode::Swarm => "restart default/alpha: now",
    };
    t.wait_screen("restart reported", |s| s.contains(reported));
    d.wait_agent("alpha", "running again", Duration::from_secs(30), |v| {
        v["state"] == "Running" && v["started_at_ms"].as_u64().is_some_and(|a| a > before)
    });

    // The audit view: the trail (with the restart just made) and its health at a glance.
    let out = d.cli(&["audit", "note", "console-test-note"]);
    assert!(out.status.success());
    t.keys(&["2"]);
    let s = t.wait_screen("the audit view", |s| {
        s.contains("Audit trail") && s.contains("operator.note")
    });
    assert!(s.contains("audit log writable"), "{s}");
    assert!(s.contains("agent.restart"), "{s}");
    t.keys(&["/", "n", "o", "t", "e", "Enter"]);
    t.wait_screen("filtered audit view", |s| s.contains("Audit trail (1 of"));
    // (Escape and the next key apart: together a terminal reads them as Alt-key.)
    t.keys(&["Escape"]);
    t.wait_screen("audit filter cleared", |s| {
        s.contains("Audit trail (") && !s.contains("filter: note")
    });
    t.keys(&["1"]);
    t.wait_screen("back to the fleet", |s| s.contains("Fleet (2)"));

    // Help overlay.
    t.keys(&["?"]);
    t.wait_screen("help", |s| s.contains("Keys — the fleet"));
    t.keys(&["x"]);
    t.wait_screen("help closed", |s| !s.contains("Keys — the fleet"));

    // The daemon goes away: the console says so, then reconnects by itself.
    d.kill9();
    t.wait_screen("DISCONNECTED banner", |s| s.contains("DISCONNECTED"));
    d.restart();
    t.wait_screen("reconnected", |s| {
        !s.contains("DISCONNECTED") && s.contains("alpha") && s.contains("running")
    });

    t.keys(&["q"]);
    wait_for(Duration::from_secs(5), "the console to exit", || {
        (!t.alive()).then_some(())
    });
}

/// Types `text` literally (tmux `send-keys -l`).
fn typed(t: &Tmux, text: &str) {
    t.keys(&["-l", text]);
}

#[test]
fn k9s_habits_drive_the_fleet() {
    let test = "k9s_habits_drive_the_fleet";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let d = Daemon::start("k9s", "");
    d.create(&healthy("alpha"));
    d.create(&format!(
        "name = \"shelly\"\nimage = \"{image}\"\n\
         command = [\"sh\", \"-c\", \"i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.2; done\"]\n"
    ));
    d.running_container("shelly", Duration::from_secs(60));
    let cmd = format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 120, 40);
    t.wait_screen("both agents", |s| {
        s.contains("alpha") && s.contains("shelly") && s.matches("running").count() >= 2
    });

    // Command mode reaches every view; Tab completes; Esc goes back the way it came.
    t.keys(&[":"]);
    typed(&t, "au");
    t.keys(&["Tab"]);
    t.wait_screen("completed to :audit", |s| s.contains(":audit"));
    t.keys(&["Enter"]);
    t.wait_screen("the audit view", |s| s.contains("Audit trail ("));
    t.keys(&[":"]);
    typed(&t, "inc");
    t.keys(&["Enter"]);
    t.wait_screen("the incidents view", |s| s.contains("Incidents — "));
    t.keys(&[":"]);
    typed(&t, "esc");
    t.keys(&["Enter"]);
    t.wait_screen("the escalations view", |s| s.contains("Escalations — "));
    t.keys(&[":"]);
    typed(&t, "nonsense");
    t.keys(&["Enter"]);
    t.wait_screen("an unknown command is named", |s| {
        s.contains("unknown command `:nonsense`")
    });
    t.keys(&["Escape"]);
    t.wait_screen("back to incidents", |s| s.contains("Incidents — "));
    t.keys(&["Escape"]);
    t.wait_screen("back to audit", |s| s.contains("Audit trail ("));
    t.keys(&["Escape"]);
    t.wait_screen("back to the fleet", |s| s.contains("Fleet (2)"));

    // The pulse: followed live, it shows both agents running once a bucket has closed
    // with them up (the daemon answers as each 10 s bucket closes).
    t.keys(&[":"]);
    typed(&t, "pulse");
    t.keys(&["Enter"]);
    t.wait_screen_for(
        Duration::from_secs(40),
        "the pulse view with both agents running",
        |s| {
            s.contains("Pulse — last")
                && s.lines().any(|l| {
                    l.contains("agents running") && l.split_whitespace().nth(2) == Some("2")
                })
        },
    );
    t.keys(&["Escape"]);
    t.wait_screen("back to the fleet from the pulse", |s| {
        s.contains("Fleet (2)")
    });

    // Sort by name, then the other way round (the heading carries the direction).
    t.keys(&["N"]);
    let s = t.wait_screen("sorted by name", |s| s.contains("AGENT↑"));
    assert!(s.find("alpha") < s.find("shelly"), "{s}");
    t.keys(&["N"]);
    let s = t.wait_screen("sorted by name, reversed", |s| s.contains("AGENT↓"));
    assert!(s.find("shelly") < s.find("alpha"), "{s}");

    // A regex filter, then its inverse.
    t.keys(&["/"]);
    typed(&t, "^default/s.+y ");
    t.keys(&["Enter"]);
    // (The filter applies as it is typed: wait for Enter to close its prompt too.)
    let s = t.wait_screen("filtered by regex", |s| {
        s.contains("Fleet (1 of 2) filter: ^default/s.+y") && !s.contains("Enter keep")
    });
    assert!(s.contains("shelly") && !s.contains("alpha"), "{s}");
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| s.contains("Fleet (2)"));
    t.keys(&["/"]);
    typed(&t, "!shelly");
    t.keys(&["Enter"]);
    let s = t.wait_screen("inverse filter", |s| {
        s.contains("Fleet (1 of 2) filter: !shelly ") && !s.contains("Enter keep")
    });
    // (shelly is named once: in the filter shown in the title.)
    assert!(
        s.contains("alpha") && s.matches("shelly").count() == 1,
        "{s}"
    );

    // Describe alpha: the spec in force, its network, its scopes.
    t.keys(&["d"]);
    let s = t.wait_screen("alpha described", |s| {
        s.contains("Describe default/alpha") && s.contains("Spec         v1")
    });
    assert!(s.contains("Network      gateway"), "{s}");
    assert!(s.contains("Scopes       "), "{s}");
    // No shell in the built-in image (FROM scratch): said so, nothing suspended.
    t.keys(&["Escape"]);
    t.wait_screen("fleet again", |s| s.contains("Fleet (1 of 2)"));
    t.keys(&["s"]);
    t.wait_screen("no shell in a scratch image", |s| {
        s.contains("default/alpha has no shell")
    });
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| s.contains("Fleet (2)"));

    // Full-screen logs of shelly, searched.
    t.keys(&[":"]);
    typed(&t, "logs shelly");
    t.keys(&["Enter"]);
    t.wait_screen("shelly's logs", |s| {
        s.contains("Logs of default/shelly") && s.contains("following") && s.contains("tick ")
    });
    t.keys(&["/"]);
    typed(&t, "tick 3$");
    t.keys(&["Enter"]);
    let s = t.wait_screen("the search stands on a match", |s| {
        s.contains("search: tick 3$") && s.contains("match 1 of")
    });
    assert!(s.contains("paused"), "{s}");
    t.keys(&["Escape"]);
    t.wait_screen("back to the fleet", |s| s.contains("Fleet (2)"));

    // A shell in shelly's container, and back to the console; recorded first.
    t.keys(&["/"]);
    typed(&t, "shelly");
    t.keys(&["Enter"]);
    t.wait_screen("shelly selected", |s| {
        s.contains("Fleet (1 of 2) filter: shelly ")
    });
    t.keys(&["s"]);
    t.wait_screen("the shell", |s| s.contains("shell in default/shelly"));
    typed(&t, "echo inside-$((6*7)) $(id -u)");
    t.keys(&["Enter"]);
    t.wait_screen("the command ran inside", |s| s.contains("inside-42 65534"));
    typed(&t, "exit");
    t.keys(&["Enter"]);
    t.wait_screen("back in the console", |s| {
        s.contains("back from the shell in default/shelly") && s.contains("Fleet (1 of 2)")
    });
    t.keys(&["Escape"]);
    t.wait_screen("filter cleared", |s| s.contains("Fleet (2)"));
    let notes = d
        .json(&["audit", "search", "--action", "operator.note"])
        .to_string();
    assert!(
        notes.contains("shell opened into default/shelly"),
        "{notes}"
    );

    // Operators and their roles: one added, a grant typed, asked, made by the daemon,
    // then the operator removed (Enter cancels, `y` removes).
    t.keys(&[":"]);
    typed(&t, "operators");
    t.keys(&["Enter"]);
    t.wait_screen("the operators", |s| s.contains("Operators ("));
    t.keys(&["+"]);
    typed(&t, "4242 val");
    t.keys(&["Enter"]);
    t.wait_screen("val added", |s| {
        s.contains("val (uid 4242): no roles") && s.contains("Operators (")
    });
    t.keys(&["G"]);
    let s = t.screen();
    let row = s
        .lines()
        .find(|l| l.contains("▶"))
        .unwrap_or_default()
        .to_string();
    if !row.contains("val") {
        t.keys(&["k"]);
    }
    t.wait_screen("val selected", |s| {
        s.lines().any(|l| l.contains("▶") && l.contains("val"))
    });
    t.keys(&["a"]);
    typed(&t, "project_viewer default/default");
    t.keys(&["Enter"]);
    t.wait_screen("the grant asked", |s| {
        s.contains("Grant project_viewer on default/default to uid 4242?")
    });
    t.keys(&["y"]);
    // (The dialog names the binding too: wait for the daemon's answer in the footer.)
    t.wait_screen("the grant made", |s| {
        s.contains("val (uid 4242): project_viewer on default/default")
    });
    let ops = d.json(&["operators", "list"]).to_string();
    assert!(ops.contains("project_viewer"), "{ops}");
    t.keys(&["C-d"]);
    t.wait_screen("the removal asked", |s| {
        s.contains("Remove operator val (uid 4242)")
    });
    t.keys(&["Enter"]);
    t.wait_screen("the removal cancelled", |s| s.contains("cancelled"));
    assert!(d.json(&["operators", "list"]).to_string().contains("4242"));
    t.keys(&["C-d"]);
    t.wait_screen("the removal asked again", |s| {
        s.contains("Remove operator val (uid 4242)")
    });
    t.keys(&["y"]);
    t.wait_screen("val removed", |s| {
        s.contains("uid 4242 is no longer an operator")
    });
    let ops = d.json(&["operators", "list"]).to_string();
    assert!(!ops.contains("4242"), "{ops}");
    t.keys(&["Escape"]);
    t.wait_screen("back to the fleet", |s| s.contains("Fleet (2)"));

    // The tenant's Cedar policy, edited in place: the daemon checks each keystroke, the
    // bad line is marked, a fix is diffed and published.
    t.keys(&[":"]);
    typed(&t, "policy default");
    t.keys(&["Enter"]);
    t.wait_screen("the policy pane", |s| {
        s.contains("Policy of tenant default") && s.contains("none published")
    });
    t.keys(&["e"]);
    t.wait_screen("the editor", |s| s.contains("editing"));
    t.keys(&["Down", "End", "Enter"]);
    typed(
        &t,
        "forbid (principal, action == AgenFleet::Action::\"call\",",
    );
    t.wait_screen("the problem, with its line", |s| s.contains("✗ line 2"));
    typed(
        &t,
        " resource == AgenFleet::Tool::\"http_request\") when { context.method == \"DELETE\" }",
    );
    // (A `;` at the end of a tmux argument is tmux's own separator: sent escaped.)
    t.keys(&["\\;"]);
    t.wait_screen("valid again", |s| s.contains("✓ valid policy"));
    t.keys(&["C-s"]);
    t.wait_screen("the diff", |s| {
        s.contains("Publish this policy as a new version?")
    });
    t.keys(&["y"]);
    t.wait_screen("published", |s| s.contains("v1 in force"));
    let shown = d.json(&["policy", "show", "default"]).to_string();
    assert!(shown.contains("context.method"), "{shown}");
    // Its test cases run from the pane against the version in force: a case that holds
    // and one that does not (alpha has no scopes: every call is denied).
    let cases = d.file(
        "cases.toml",
        "[[case]]\nname = \"no-deletes\"\nagent = \"alpha\"\ntool = \"http_request\"\n\
         args = { method = \"DELETE\", url = \"https://x.example.com/a\" }\nexpect = \"deny\"\n\
         [[case]]\nname = \"reads\"\nagent = \"alpha\"\ntool = \"http_request\"\n\
         args = { method = \"GET\", url = \"https://x.example.com/a\" }\nexpect = \"allow\"\n",
    );
    t.keys(&["t"]);
    t.wait_screen("the cases file asked", |s| s.contains("Test the policy"));
    typed(&t, &cases);
    t.keys(&["Enter"]);
    t.wait_screen("the cases' results", |s| {
        s.contains("PASS no-deletes") && s.contains("FAIL reads") && s.contains("1 failed")
    });
    t.keys(&["Escape"]);
    t.wait_screen("the fleet", |s| {
        s.contains("Fleet (2)") && !s.contains("Policy of")
    });

    // Ctrl-D: Enter cancels, y deletes.
    t.keys(&["g"]);
    t.keys(&["C-d"]);
    let s = t.wait_screen("the delete dialog", |s| s.contains("Delete default/"));
    let victim = if s.contains("Delete default/shelly?") {
        "shelly"
    } else {
        "alpha"
    };
    t.keys(&["Enter"]);
    t.wait_screen("cancelled", |s| {
        s.contains("delete default/") && s.contains("cancelled")
    });
    assert!(d.json(&["agents", "list"]).to_string().contains(victim));
    t.keys(&["C-d"]);
    t.wait_screen("the delete dialog again", |s| s.contains("Delete default/"));
    t.keys(&["y"]);
    t.wait_screen("deleted", |s| {
        s.contains(&format!("deleted default/{victim}")) && s.contains("Fleet (1)")
    });
    assert!(!d
        .json(&["agents", "list"])
        .to_string()
        .contains(&format!("\"{victim}\"")));

    // Ctrl-L redraws (the screen is whole afterwards); q quits.
    t.keys(&["C-l"]);
    t.wait_screen("redrawn", |s| {
        s.contains("Fleet (1)") && s.contains("? help")
    });
    t.keys(&["q"]);
    wait_for(Duration::from_secs(5), "the console to exit", || {
        (!t.alive()).then_some(())
    });
}

#[test]
fn readonly_console_refuses_mutations() {
    if !docker_available("readonly_console_refuses_mutations") {
        return;
    }
    let d = Daemon::start("readonly", "");
    d.create(&healthy("calm"));
    let cmd = format!(
        "{} --readonly --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    );
    let t = Tmux::start(&cmd);
    t.wait_screen("agent listed", |s| {
        s.contains("calm") && s.contains("READ-ONLY")
    });
    let before = d.agent("calm")["started_at_ms"].as_u64();
    t.keys(&["o"]);
    t.wait_screen("refusal", |s| {
        s.contains("read-only console: stop is turned off")
    });
    std::thread::sleep(Duration::from_millis(500));
    let v = d.agent("calm");
    assert_eq!(v["state"], "Running");
    assert_eq!(v["started_at_ms"].as_u64(), before);
    t.keys(&["q"]);
}

#[test]
fn demo_shows_its_fleet_and_leaves_nothing_behind() {
    if !docker_available("demo_shows_its_fleet_and_leaves_nothing_behind") {
        return;
    }
    let cmd = format!("{} demo", bin("agenfleet").display());
    let t = Tmux::start(&cmd);
    // The crash-looper ends Failed, the memory hog is OOM-killed into Failed, the rest run.
    let s = t.wait_screen_for(Duration::from_secs(90), "the demo fleet settled", |s| {
        s.contains("5 agents") && s.contains("2 failed") && s.contains("3 running")
    });
    assert!(s.contains("flaky-bot") && s.contains("memory-hog"), "{s}");
    // This demo's own daemon: its socket sits in a directory named after the console's pid.
    let pid = t.pane_pid().expect("the console's pid");
    let demo_dir = format!("/tmp/agenfleet-demo-{pid}");
    let st = Command::new(bin("agenfleet"))
        .args([
            "--json",
            "--socket",
            &format!("{demo_dir}/agenfleet.sock"),
            "status",
        ])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("demo status");
    let instance = st["daemon"]["instance_id"]
        .as_str()
        .expect("instance")
        .to_string();
    // triage-bot's refund waits for a person: the counter, then the queue.
    t.wait_screen_for(Duration::from_secs(30), "the escalation counter", |s| {
        s.contains("1 ESCALATION")
    });
    t.keys(&["3"]);
    t.wait_screen("the refund in the queue", |s| {
        s.contains("acme/triage-bot") && s.contains("payments are reviewed by a person")
    });
    t.keys(&["1"]);
    // The crash-looper and the memory hog are the client's incidents.
    t.keys(&["4"]);
    t.wait_screen("the client's incidents", |s| {
        s.contains("Client —") && s.contains("Agent crash-loops") && s.contains("acme/flaky-bot")
    });
    t.keys(&["1"]);
    // The OOM kill is visible in the memory hog's detail pane.
    t.keys(&["/", "h", "o", "g", "Enter", "Enter"]);
    t.wait_screen("memory-hog's detail", |s| s.contains("OOM-killed"));
    t.keys(&["q"]);
    wait_for(Duration::from_secs(30), "the demo to exit", || {
        (!t.alive()).then_some(())
    });
    // Nothing of the demo is left: no containers, no daemon, no state dir.
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=agenfleet.instance={instance}"),
    ]);
    assert!(left.is_empty(), "demo containers left behind: {left}");
    let ps = Command::new("pgrep")
        .args(["-f", &demo_dir])
        .output()
        .unwrap();
    assert!(
        ps.stdout.is_empty(),
        "the demo daemon is still running: {}",
        String::from_utf8_lossy(&ps.stdout)
    );
    assert!(
        !std::path::Path::new(&demo_dir).exists(),
        "{demo_dir} left behind"
    );
}

/// The client as a user on another machine would run it: its own config dir (contexts),
/// ssh through the test's sshd, no socket from the environment.
struct Client {
    config: std::path::PathBuf,
    ssh: String,
}

impl Client {
    fn cmd(&self) -> Command {
        let mut c = Command::new(bin("agenfleet"));
        c.env_remove("AGENFLEET_SOCKET")
            .env_remove("AGENFLEET_CONTEXT")
            .env("XDG_CONFIG_HOME", &self.config)
            .env("AGENFLEET_SSH_COMMAND", &self.ssh);
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd().args(args).output().expect("run agenfleet")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.run(&[&["--json"], args].concat());
        assert!(
            out.status.success(),
            "agenfleet {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// The console's command line, for tmux.
    fn console(&self) -> String {
        format!(
            "env -u AGENFLEET_SOCKET XDG_CONFIG_HOME={} AGENFLEET_SSH_COMMAND='{}' {}",
            self.config.display(),
            self.ssh,
            bin("agenfleet").display()
        )
    }
}

#[test]
fn contexts_reach_daemons_locally_and_over_ssh() {
    let test = "contexts_reach_daemons_locally_and_over_ssh";
    if !docker_available(test) {
        return;
    }
    let Some(sshd) = Sshd::start(test) else {
        return;
    };
    let a = Daemon::start("ctx-a", "");
    let mut b = Daemon::start("ctx-b", "");
    a.create(&healthy("alpha"));
    b.create(&healthy("bravo"));
    let c = Client {
        config: tempdir("ctx-client"),
        ssh: sshd.ssh_command(),
    };
    let agenfleet = bin("agenfleet");
    let remote_bin = agenfleet.to_str().expect("path");
    let a_url = format!("unix://{}", a.socket.display());
    let b_url = format!("ssh://fleet-b{}", b.socket.display());
    c.json(&["context", "add", "a", &a_url]);
    c.json(&[
        "context",
        "add",
        "b",
        &b_url,
        "--remote-bin",
        remote_bin,
        "--use",
    ]);
    let list = c.json(&["context", "list"]);
    assert_eq!(list[1]["name"], "b", "{list}");
    assert_eq!(list[1]["current"], true, "{list}");
    let file = read(&c.config.join("agenfleet/contexts.toml"));
    assert!(
        file.contains("current = \"b\"") && file.contains(&a_url),
        "{file}"
    );

    // The current context is b, over ssh: its fleet, and the ssh user's uid.
    let agents = c.json(&["agents", "list"]).to_string();
    assert!(
        agents.contains("bravo") && !agents.contains("alpha"),
        "{agents}\n{}",
        sshd.log()
    );
    let me = c.json(&["whoami"]);
    assert_eq!(me["uid"], 0, "the remote daemon sees the ssh user: {me}");
    let shown = c.json(&["context", "show"]);
    assert_eq!(shown["context"], "b");
    // --context picks another; --context all asks both at once.
    let agents = c.json(&["--context", "a", "agents", "list"]).to_string();
    assert!(
        agents.contains("alpha") && !agents.contains("bravo"),
        "{agents}"
    );
    let all = c.json(&["--context", "all", "agents", "list"]);
    assert_eq!(all[0]["context"], "a", "{all}");
    assert!(all[0]["result"].to_string().contains("alpha"), "{all}");
    assert!(all[1]["result"].to_string().contains("bravo"), "{all}");
    let text = String::from_utf8_lossy(&c.run(&["--context", "all", "status"]).stdout).to_string();
    assert!(
        text.contains("── a (unix://") && text.contains("── b (ssh://fleet-b"),
        "{text}"
    );
    // A change through --context all is refused, naming why.
    let out = c.run(&["--context", "all", "agents", "stop", "alpha"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only read"));

    // The console on the current context (b, over ssh) shows b's fleet live.
    let t = Tmux::start_sized(&c.console(), 120, 30);
    t.wait_screen("b's fleet through ssh", |s| {
        s.contains("ctx b") && s.contains("bravo") && s.contains("running")
    });
    let s = t.screen();
    assert!(!s.contains("alpha"), "{s}");
    // Every context at once: a HOST column, each host's state in the header.
    t.keys(&[":"]);
    typed(&t, "ctx all");
    t.keys(&["Enter"]);
    let s = t.wait_screen("both hosts", |s| {
        s.contains("ctx all") && s.contains("alpha") && s.contains("bravo") && s.contains("HOST")
    });
    assert!(s.contains("│ a 1") && s.contains("│ b 1"), "{s}");

    // b goes away: the console names it unreachable and a stays live beside it.
    b.kill9();
    t.wait_screen("b unreachable", |s| {
        s.contains("b UNREACHABLE") && s.contains("alpha")
    });
    let out = a.cli(&["agents", "stop", "alpha"]);
    assert!(out.status.success());
    t.wait_screen("a still live", |s| {
        s.contains("stopped") && s.contains("b UNREACHABLE")
    });
    // `all` on the CLI: a answers, b is named unreachable, exit 3.
    let out = c.run(&["--json", "--context", "all", "agents", "list"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert!(all[0]["result"].to_string().contains("alpha"), "{all}");
    let err = all[1]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        err.contains("ssh says") && err.contains("dial-stdio"),
        "{all}"
    );
    // One context again.
    t.keys(&[":"]);
    typed(&t, "ctx a");
    t.keys(&["Enter"]);
    let s = t.wait_screen("context a alone", |s| {
        s.contains(" ctx a ") && s.contains("alpha")
    });
    assert!(!s.contains("bravo") && !s.contains("UNREACHABLE"), "{s}");
    t.keys(&["q"]);
    drop(t);
    // A host ssh cannot reach is named with ssh's own reason.
    c.json(&[
        "context",
        "add",
        "nowhere",
        "ssh://127.0.0.1:1",
        "--remote-bin",
        remote_bin,
    ]);
    let out = c.run(&["--context", "nowhere", "status"]);
    assert_eq!(out.status.code(), Some(3));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("ssh says") && said.contains("refused"),
        "{said}"
    );
    b.restart();
    let _ = std::fs::remove_dir_all(&c.config);
}
