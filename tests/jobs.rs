//! End-to-end: job agents (`runs.kind = "job"`) on the real daemon and engine, started by
//! the CLI and by a signed webhook. No container
//! between runs; each run gets a fresh hardened busybox container that reads its input from
//! `/run/agenfleet/run/input.json`, may ask its local API for its run and make tool calls
//! (recorded with the run's id), and exits: 0 succeeded, else failed with the code. The
//! container is gone afterwards, its output kept with the run (`runs logs`). A timeout and a
//! cancel stop the container; an incident raised meanwhile names the run; at most
//! `max_concurrent` run at once; a job running across a `kill -9` of the daemon is adopted
//! and ends from its own exit. The same story in swarm mode, where each run is a Swarm job
//! (its own service of one task, its own gateway token, its input as a config), all of
//! which go with the run.

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

fn job_agent(name: &str, image: &str, timeout_secs: u64) -> String {
    format!(
        r#"name = "{name}"
image = "{image}"
command = ["sh", "-c", '''
input=$(cat /run/agenfleet/run/input.json)
echo "run $AGENFLEET_RUN_ID input $input"
case "$input" in
  *fail*) echo "failing on purpose" >&2; exit 3 ;;
  *hang*) trap 'exit 0' TERM; sleep 300 & wait $! ;;
  *sleep*) sleep 4 ;;
  *ask*)
    resp=$(printf 'GET /v1/runs/next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' | nc 127.0.0.1 4180)
    id=$(echo "$resp" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
    echo "handed run $id"
    call='{{"tool":"lookup_ticket","args":{{}}}}'
    printf 'POST /v1/authorize HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "${{#call}}" "$call" | nc 127.0.0.1 4180 | tail -1
    body='{{"ok":true,"result":{{"answered":true}}}}'
    printf 'POST /v1/runs/%s/result HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$id" "${{#body}}" "$body" | nc 127.0.0.1 4180 >/dev/null
    ;;
esac
exit 0
''']
[runs]
kind = "job"
timeout_secs = {timeout_secs}
max_concurrent = 2
"#
    )
}

fn start(d: &Daemon, agent: &str, input: &str, wait: bool) -> (Option<i32>, Value) {
    d.run_start(agent, input, wait)
}

/// The containers (running or not) of run `id`.
fn run_containers(d: &Daemon, id: &str) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        &format!("label=agenfleet.instance={}", d.instance),
        "--filter",
        &format!("label=agenfleet.run={id}"),
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// The agents' containers (not the gateway endpoint's, in swarm mode).
fn agent_containers(d: &Daemon) -> Vec<String> {
    docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=agenfleet.instance={}", d.instance),
        "--filter",
        "label=agenfleet.agent",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

/// What of the engine holds run `id`: its containers, and in swarm mode its service, its
/// token's secret and its input's config.
fn run_holders(d: &ModeDaemon, id: &str) -> Vec<String> {
    let mut held = run_containers(d, id);
    if d.mode == Mode::Swarm {
        for what in ["service", "secret", "config"] {
            held.extend(
                docker(&[
                    what,
                    "ls",
                    "-q",
                    "--filter",
                    &format!("label=agenfleet.instance={}", d.instance),
                    "--filter",
                    &format!("label=agenfleet.run={id}"),
                ])
                .lines()
                .map(|l| format!("{what} {l}")),
            );
        }
    }
    held
}

/// The gateway token in a (running) job task's secret.
fn token_in(cid: &str) -> String {
    wait_for(WAIT, "the run's gateway token in its task", || {
        let t = sh_in(cid, "/bin/busybox cat /run/secrets/agenfleet-gateway");
        (t.trim().len() == 64).then(|| t.trim().to_string())
    })
}

fn logs(d: &Daemon, id: &str) -> String {
    let out = d.cli(&["runs", "logs", id]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn job_agents_run_each_run_in_a_fresh_container_and_keep_its_story() {
    job_story(
        Mode::Containers,
        "job_agents_run_each_run_in_a_fresh_container_and_keep_its_story",
    );
}

#[test]
fn job_agents_run_each_run_in_a_fresh_container_and_keep_its_story_in_swarm_mode() {
    job_story(
        Mode::Swarm,
        "job_agents_run_each_run_in_a_fresh_container_and_keep_its_story_in_swarm_mode",
    );
}

fn job_story(mode: Mode, test: &str) {
    let Some(image) = busybox_image(test) else {
        return;
    };
    let port = free_port();
    let Some(mut d) = mode.start(
        test,
        "jobs",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    ) else {
        return;
    };
    // A Swarm job takes longer to start (a service, a task placed): more room before the
    // timeout, so the runs meant to finish do.
    let timeout = if mode == Mode::Swarm { 12 } else { 5 };
    d.create(&job_agent("jobby", &image, timeout));
    // Ready for runs, with no container of its own.
    let v = d.wait_agent("jobby", "ready", WAIT, |v| v["state"] == "Running");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("container per run"),
        "{v}"
    );
    assert!(
        agent_containers(&d).is_empty(),
        "{:?}",
        agent_containers(&d)
    );

    // Exit 0: succeeded; its output kept; its container gone.
    let (code, v) = start(&d, "jobby", r#"{"n": 7}"#, true);
    assert_eq!((code, &v["state"]), (Some(0), &"succeeded".into()), "{v}");
    let id = v["id"].to_string();
    assert_eq!(v["result_json"], r#"{"exit_code":0}"#, "{v}");
    let text = logs(&d, &id);
    assert!(
        text.contains(&format!("run {id} input {{\"n\": 7}}")),
        "{text}"
    );
    wait_for(
        WAIT,
        "the run's container (service, token, input) gone",
        || run_holders(&d, &id).is_empty().then_some(()),
    );
    assert!(
        agent_containers(&d).is_empty(),
        "{:?}",
        agent_containers(&d)
    );

    // A signed webhook starts one the same way.
    d.json(&["vault", "init"]);
    let hook = d.json(&["triggers", "add", "jobby", "--webhook"]);
    let (secret, ts, body) = (
        hook["secret"].as_str().unwrap(),
        (now_ms() / 1000).to_string(),
        br#"{"from": "a webhook"}"#,
    );
    let (status, answer) = post(
        port,
        hook["path"].as_str().unwrap(),
        &[
            (
                "Authorization",
                format!("Bearer {}", hook["token"].as_str().unwrap()),
            ),
            ("X-AgenFleet-Timestamp", ts.clone()),
            (
                "X-AgenFleet-Signature",
                agenfleet_protocol::triggers::signature(secret.as_bytes(), &ts, body),
            ),
        ],
        body,
    );
    assert_eq!(status, 202, "{answer}");
    let run: Value = serde_json::from_str(&answer).unwrap();
    let id = run["run"].to_string();
    let v = d.json(&["runs", "show", &id, "--wait"]);
    assert_eq!(
        (&v["state"], &v["trigger"]),
        (&"succeeded".into(), &"webhook".into()),
        "{v}"
    );
    assert!(logs(&d, &id).contains("a webhook"));
    wait_for(WAIT, "the webhook run's container gone", || {
        run_holders(&d, &id).is_empty().then_some(())
    });

    // Exit 3: failed with the code; stderr kept as such.
    let (code, v) = start(&d, "jobby", r#"{"fail": 1}"#, true);
    assert_eq!((code, &v["state"]), (Some(14), &"failed".into()), "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("exited with code 3"),
        "{v}"
    );
    let text = logs(&d, &v["id"].to_string());
    assert!(text.contains("[stderr] failing on purpose"), "{text}");

    // It asks its API for its run, makes a tool call (the run's, in the audit log), and
    // posts a result, which is the run's.
    let (code, v) = start(&d, "jobby", r#"{"ask": 1}"#, true);
    assert_eq!((code, &v["state"]), (Some(0), &"succeeded".into()), "{v}");
    let id = v["id"].to_string();
    assert_eq!(v["result_json"], r#"{"answered":true}"#, "{v}");
    assert!(logs(&d, &id).contains(&format!("handed run {id}")));
    let story = d.json(&["runs", "show", &id]);
    let actions: Vec<&str> = story["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec!["run.start", "tool.decide", "run.end"],
        "{story}"
    );

    // A job that never ends: timed out, its container stopped and removed.
    let (code, v) = start(&d, "jobby", r#"{"hang": 1}"#, true);
    assert_eq!((code, &v["state"]), (Some(14), &"timed-out".into()), "{v}");
    let id = v["id"].to_string();
    wait_for(WAIT, "the timed-out job's container removed", || {
        run_holders(&d, &id).is_empty().then_some(())
    });

    // Cancelled while it runs: the container goes.
    let (_, v) = start(&d, "jobby", r#"{"hang": 2}"#, false);
    let id = v["id"].to_string();
    let cid = wait_for(WAIT, "the job's container", || {
        run_containers(&d, &id).into_iter().next()
    });
    // Hardened like a service agent's container.
    let c = inspect(&cid);
    assert_eq!(c["HostConfig"]["ReadonlyRootfs"], true, "{c}");
    assert_eq!(c["HostConfig"]["CapDrop"], serde_json::json!(["ALL"]));
    assert_ne!(c["Config"]["User"], "", "{c}");
    assert_ne!(c["Config"]["User"], "root", "{c}");
    if mode == Mode::Swarm {
        // A service of one task, never restarted, mounting nothing of this host; its
        // input a config, its gateway token a secret of its own.
        let svc = c["Config"]["Labels"]["com.docker.swarm.service.name"]
            .as_str()
            .unwrap()
            .to_string();
        let s = &serde_json::from_str::<Value>(&docker(&["service", "inspect", &svc])).unwrap()[0];
        let spec = &s["Spec"];
        assert_eq!(spec["Mode"]["Replicated"]["Replicas"], 1, "{s}");
        assert_eq!(spec["TaskTemplate"]["RestartPolicy"]["Condition"], "none");
        let cs = &spec["TaskTemplate"]["ContainerSpec"];
        assert!(!cs["Mounts"].to_string().contains("\"bind\""), "{cs}");
        assert!(
            cs["Configs"]
                .to_string()
                .contains("/run/agenfleet/run/input.json"),
            "{cs}"
        );
        assert_eq!(cs["Secrets"].as_array().unwrap().len(), 1, "{cs}");
        assert_eq!(run_holders(&d, &id).len(), 4, "{:?}", run_holders(&d, &id));
    }
    // (Swarm mode: the run's own gateway token, read in its task.)
    let run_token = (mode == Mode::Swarm).then(|| token_in(&cid));
    // An incident raised about the agent while it runs names the run, and is part of
    // the run's story.
    let inc = d.json(&[
        "incidents",
        "open",
        "--scenario",
        "api-key-leaked",
        "--agent",
        "jobby",
        "--summary",
        "key printed by a job",
    ]);
    assert_eq!(
        inc["runs"],
        serde_json::json!([id.parse::<u64>().unwrap()]),
        "{inc}"
    );
    let text =
        String::from_utf8_lossy(&d.cli(&["incidents", "show", &inc["id"].to_string()]).stdout)
            .to_string();
    assert!(text.contains(&format!("runs:       {id}")), "{text}");
    let c = d.json(&["runs", "cancel", &id]);
    assert_eq!(c["state"], "cancelled", "{c}");
    let story = d.json(&["runs", "show", &id]).to_string();
    assert!(story.contains("incident.trigger"), "{story}");
    wait_for(WAIT, "the cancelled job's container removed", || {
        run_holders(&d, &id).is_empty().then_some(())
    });
    if let Some(old) = run_token {
        // A run's token dies with its run: presented from another run's task, it is
        // refused and recorded; that run's own token is answered.
        let (_, v) = start(&d, "jobby", r#"{"hang": 3}"#, false);
        let other = v["id"].to_string();
        let cid = wait_for(WAIT, "the other run's container", || {
            run_containers(&d, &other).into_iter().next()
        });
        let own = token_in(&cid);
        assert_ne!(own, old);
        let ep = endpoint_address(&d.instance, "default", "jobby");
        let answer = health_through_endpoint(&cid, &ep, &own);
        assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
        let refused = || {
            d.json(&["audit", "search", "--action", "gateway.refused"])
                .to_string()
                .matches("not in force")
                .count()
        };
        let before = refused();
        let answer = health_through_endpoint(&cid, &ep, &old);
        assert!(
            answer.is_empty(),
            "the ended run's token answered: {answer}"
        );
        assert_eq!(refused(), before + 1, "the refusal on record");
        d.json(&["runs", "cancel", &other]);
        // Nothing to rotate for a job agent: the daemon says why.
        let out = d.cli(&["agents", "rotate-token", "jobby"]);
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("a gateway token of its own"),
            "{out:?}"
        );
        wait_for(WAIT, "the other run's container removed", || {
            run_holders(&d, &other).is_empty().then_some(())
        });
    }

    // At most two at once: a third waits queued until one ends.
    let ids: Vec<String> = (0..3)
        .map(|_| start(&d, "jobby", r#"{"sleep": 1}"#, false).1["id"].to_string())
        .collect();
    wait_for(WAIT, "two running, one queued", || {
        let states: Vec<String> = ids
            .iter()
            .map(|i| {
                d.json(&["runs", "show", i])["state"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let running = states.iter().filter(|s| *s == "running").count();
        let queued = states.iter().filter(|s| *s == "queued").count();
        (running == 2 && queued == 1).then_some(())
    });
    for i in &ids {
        let v = d.json(&["runs", "show", i, "--wait"]);
        assert_eq!(v["state"], "succeeded", "{v}");
    }

    // kill -9 of the daemon while a job runs: the container runs on, and after the
    // restart the run is adopted and ends from its own exit — not interrupted.
    let (_, v) = start(&d, "jobby", r#"{"sleep": 2}"#, false);
    let id = v["id"].to_string();
    let cid = wait_for(WAIT, "the job's container", || {
        run_containers(&d, &id).into_iter().next()
    });
    // Its program runs (it has printed its first line) before the daemon goes.
    wait_for(WAIT, "the job's first line", || {
        logs(&d, &id).contains("input").then_some(())
    });
    d.kill9();
    assert_eq!(inspect(&cid)["State"]["Running"], true);
    d.restart();
    let v = d.json(&["runs", "show", &id, "--wait"]);
    assert_eq!(v["state"], "succeeded", "{v}");
    wait_for(WAIT, "the adopted job's container removed", || {
        run_holders(&d, &id).is_empty().then_some(())
    });

    // Bad input changes nothing: a job agent cannot become a service in place.
    let spec = job_agent("jobby", &image, timeout).replace("kind = \"job\"\n", "");
    let path = d.file("service.toml", &spec);
    let out = d.cli(&["agents", "apply", "--file", &path]);
    assert_eq!(out.status.code(), Some(6), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("runs.kind"));
    assert!(
        agent_containers(&d).is_empty(),
        "{:?}",
        agent_containers(&d)
    );
}
