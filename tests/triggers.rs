//! End-to-end: triggers on the real daemon and engine. Signed webhooks sent over TCP to
//! the daemon's `[http]` listener start runs of a busybox service agent (and the shipped
//! `send-webhook.sh` sender, openssl + curl, does too); every kind of bad request is
//! refused with its status before any run or container exists, and recorded without its
//! body; the automation token works nowhere else; revocation and secret rotation act at
//! once and survive `kill -9`. Schedules start runs on time and, after the daemon was
//! down across due times, skip them or run once, as each asks.

use agenfleet_e2e::*;
use agenfleet_protocol::triggers::signature;
use serde_json::Value;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A request's headers: (name, value).
type Headers = Vec<(&'static str, String)>;

struct Hook {
    path: String,
    token: String,
    secret: String,
}

impl Hook {
    fn from(v: &Value) -> Hook {
        Hook {
            path: v["path"].as_str().expect("path").to_string(),
            token: v["token"].as_str().expect("token").to_string(),
            secret: v["secret"].as_str().expect("secret").to_string(),
        }
    }

    /// Headers of a request signed with `secret` at `ts` over `signed`.
    fn headers(
        &self,
        token: Option<&str>,
        secret: &str,
        ts: i64,
        signed: &[u8],
    ) -> Vec<(&'static str, String)> {
        let mut h = vec![
            ("X-AgenFleet-Timestamp", ts.to_string()),
            (
                "X-AgenFleet-Signature",
                signature(secret.as_bytes(), &ts.to_string(), signed),
            ),
        ];
        if let Some(t) = token {
            h.push(("Authorization", format!("Bearer {t}")));
        }
        h
    }
}

fn now_s() -> i64 {
    (now_ms() / 1000) as i64
}

fn run_count(d: &Daemon) -> usize {
    d.json(&["runs", "list", "--limit", "1000"])
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0)
}

#[test]
fn signed_webhooks_start_runs_and_every_bad_request_is_refused_before_any_run() {
    let test = "signed_webhooks_start_runs_and_every_bad_request_is_refused_before_any_run";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let port = free_port();
    let mut d = Daemon::start(
        "triggers",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    d.create(&service_agent("svc", &image, 30));
    d.create(&format!(
        "name = \"mute\"\nimage = \"{image}\"\n\
         command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done\"]\n"
    ));
    d.running_container("svc", WAIT);
    d.running_container("mute", WAIT);
    // A webhook's signing secret is sealed by the vault.
    let out = d.cli(&["triggers", "add", "svc", "--webhook"]);
    assert_eq!(out.status.code(), Some(9), "no vault yet");
    assert!(String::from_utf8_lossy(&out.stderr).contains("vault init"));
    d.json(&["vault", "init"]);

    let added = d.json(&["triggers", "add", "svc", "--webhook"]);
    let hook = Hook::from(&added);
    assert_eq!(
        added["url"].as_str().unwrap(),
        format!("http://127.0.0.1:{port}{}", hook.path)
    );
    assert!(hook.token.starts_with("agfw_") && hook.secret.starts_with("whsec_"));
    let other = Hook::from(&d.json(&[
        "triggers",
        "add",
        "mute",
        "--webhook",
        "--rate-per-min",
        "2",
    ]));
    // Shown once: never again, in no listing.
    let shown = d.cli(&["--json", "triggers", "list"]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        !text.contains(&hook.token) && !text.contains(&hook.secret[6..]),
        "{text}"
    );

    // A signed request: 202 with the run; the agent answers it.
    let body = br#"{"ticket": 42}"#;
    let tok = Some(hook.token.as_str());
    let (status, answer) = post(
        port,
        &hook.path,
        &hook.headers(tok, &hook.secret, now_s(), body),
        body,
    );
    assert_eq!(status, 202, "{answer}");
    let run: Value = serde_json::from_str(&answer).unwrap();
    let run = d.json(&["runs", "show", &run["run"].to_string(), "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "webhook");
    assert_eq!(run["input_json"], r#"{"ticket": 42}"#);
    let id = added["trigger"]["id"].as_str().unwrap();
    assert_eq!(run["requested_by"], format!("trigger {id}"));

    // The shipped sender (openssl + curl) is accepted too.
    let out = std::process::Command::new(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples/send-webhook.sh"),
    )
    .arg(r#"{"from": "sh"}"#)
    .env("AGENFLEET_HOOK_URL", added["url"].as_str().unwrap())
    .env("AGENFLEET_HOOK_TOKEN", &hook.token)
    .env("AGENFLEET_HOOK_SECRET", &hook.secret)
    .output()
    .expect("send-webhook.sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = d.json(&["runs", "show", &sent["run"].to_string(), "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");

    // Every bad request: its status, and nothing started.
    let runs_before = run_count(&d);
    let containers_before = d.containers().len();
    // (Two seconds back: not the first request's signature, which was seen.)
    let ts = now_s() - 2;
    let valid = hook.headers(tok, &hook.secret, ts, body);
    assert_eq!(post(port, &hook.path, &valid, body).0, 202);
    let runs_before = runs_before + 1;
    let mut altered = body.to_vec();
    altered[12] = b'3';
    let big = format!(
        r#"{{"pad": "{}", "canary": "c4n4ry-big"}}"#,
        "x".repeat(70_000)
    );
    let canary = br#"{"canary": "c4n4ry-small"}"#;
    let cases: Vec<(&str, Headers, Vec<u8>, u16)> = vec![
        ("replayed", valid.clone(), body.to_vec(), 401),
        (
            "bad signature",
            hook.headers(tok, &other.secret, ts, canary),
            canary.to_vec(),
            401,
        ),
        (
            "body changed by one byte",
            hook.headers(tok, &hook.secret, ts, body),
            altered,
            401,
        ),
        (
            "301 s old",
            hook.headers(tok, &hook.secret, ts - 301, body),
            body.to_vec(),
            401,
        ),
        (
            "301 s ahead",
            hook.headers(tok, &hook.secret, now_s() + 301, body),
            body.to_vec(),
            401,
        ),
        (
            "no token",
            hook.headers(None, &hook.secret, ts, body),
            body.to_vec(),
            401,
        ),
        (
            "wrong token",
            hook.headers(Some("agfw_0_00"), &hook.secret, ts, body),
            body.to_vec(),
            401,
        ),
        (
            "another subscription's token",
            hook.headers(Some(&other.token), &hook.secret, ts, body),
            body.to_vec(),
            403,
        ),
        (
            "oversized",
            hook.headers(tok, &hook.secret, ts, big.as_bytes()),
            big.into_bytes(),
            413,
        ),
    ];
    for (what, headers, b, want) in &cases {
        let (got, answer) = post(port, &hook.path, headers, b);
        assert_eq!(got, *want, "{what}: {answer}");
        assert!(answer.is_empty(), "{what}: no detail: {answer}");
    }
    // The rate: mute's subscription starts 2 a minute.
    let otok = Some(other.token.as_str());
    for i in 0..2 {
        let b = format!(r#"{{"n": {i}}}"#);
        let h = other.headers(otok, &other.secret, now_s(), b.as_bytes());
        assert_eq!(post(port, &other.path, &h, b.as_bytes()).0, 202);
    }
    let h = other.headers(otok, &other.secret, now_s(), b"{}");
    assert_eq!(post(port, &other.path, &h, b"{}").0, 429);
    assert_eq!(
        run_count(&d),
        runs_before + 2,
        "only the two within the rate"
    );
    assert_eq!(
        d.containers().len(),
        containers_before,
        "no container started"
    );

    // Each rejection recorded: reason, subscription, source, digest — never the body.
    let rejected = d.json(&[
        "audit",
        "search",
        "--action",
        "webhook.rejected",
        "--limit",
        "100",
    ]);
    let details: Vec<Value> = rejected
        .as_array()
        .unwrap()
        .iter()
        .map(|e| serde_json::from_str(e["event"]["detail"].as_str().unwrap()).unwrap())
        .collect();
    let mut reasons: Vec<&str> = details
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        vec![
            "bad-token",
            "no-token",
            "other-subscription",
            "rate",
            "replay",
            "signature",
            "signature",
            "timestamp",
            "timestamp",
            "too-large"
        ],
        "{rejected}"
    );
    assert!(
        details.iter().all(|d| d["source"] == "127.0.0.1"),
        "{rejected}"
    );
    assert!(
        !rejected.to_string().contains("c4n4ry"),
        "a body in the audit log: {rejected}"
    );

    // The automation token is good for nothing else.
    let out = d
        .cli_cmd()
        .args(["agents", "list"])
        .env("AGENFLEET_TOKEN", &hook.token)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the webhook token listed agents");

    // Rotation: the old secret verifies through the overlap; with none, it stops at once.
    let rotated = d.json(&["triggers", "rotate-secret", id]);
    let s2 = rotated["secret"].as_str().unwrap().to_string();
    assert!(rotated["token"].is_null(), "the token is not shown again");
    for (secret, n) in [(&hook.secret, 1), (&s2, 2)] {
        let b = format!(r#"{{"rot": {n}}}"#);
        let h = hook.headers(tok, secret, now_s(), b.as_bytes());
        assert_eq!(
            post(port, &hook.path, &h, b.as_bytes()).0,
            202,
            "secret {n}"
        );
    }
    let s3 = d.json(&["triggers", "rotate-secret", id, "--overlap", "0s"])["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let h = hook.headers(tok, &s2, now_s(), b"[3]");
    assert_eq!(
        post(port, &hook.path, &h, b"[3]").0,
        401,
        "s2 after a rotation with no overlap"
    );

    // kill -9: the subscription, its newest secret and the revocation of another survive.
    let other_id = d.json(&["triggers", "list", "mute"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let revoked = d.json(&["triggers", "revoke", &other_id]);
    assert!(revoked["revoked_ms"].is_u64(), "{revoked}");
    let h = other.headers(otok, &other.secret, now_s(), b"[4]");
    assert_eq!(
        post(port, &other.path, &h, b"[4]").0,
        401,
        "revoked: at once"
    );
    d.kill9();
    d.restart();
    let h = hook.headers(tok, &s3, now_s(), b"[5]");
    assert_eq!(post(port, &hook.path, &h, b"[5]").0, 202, "after kill -9");
    let h = other.headers(otok, &other.secret, now_s(), b"[6]");
    assert_eq!(post(port, &other.path, &h, b"[6]").0, 401, "still revoked");
    // The changes are in the trail.
    for action in ["trigger.add", "trigger.rotate-secret", "trigger.revoke"] {
        let recs = d.json(&["audit", "search", "--action", action]);
        assert!(
            recs.as_array()
                .unwrap()
                .iter()
                .any(|r| r["event"]["outcome"] == "ok"),
            "{action}: {recs}"
        );
        assert!(
            !recs.to_string().contains(&s3[6..]),
            "a secret in the audit log"
        );
    }
    // Bad adds change nothing.
    let out = d.cli(&["triggers", "add", "svc", "--cron", "61 * * * *"]);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.cli(&["triggers", "add", "nobody", "--webhook"]);
    assert_eq!(out.status.code(), Some(5));
}

/// The run.start records (with a run id) of trigger `id`.
fn started_by(d: &Daemon, id: &str) -> Vec<Value> {
    d.json(&[
        "audit",
        "search",
        "--action",
        "run.start",
        "--limit",
        "1000",
    ])
    .as_array()
    .unwrap()
    .iter()
    .filter(|e| e["event"]["outcome"] == "ok")
    .filter_map(|e| serde_json::from_str::<Value>(e["event"]["detail"].as_str()?).ok())
    .filter(|d| d["subscription"] == id)
    .collect()
}

#[test]
fn schedules_run_on_time_and_after_downtime_skip_or_run_once() {
    let test = "schedules_run_on_time_and_after_downtime_skip_or_run_once";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let mut d = Daemon::start("schedules", "");
    d.create(&service_agent("svc", &image, 30));
    d.running_container("svc", WAIT);

    // Every 2 s for 10 s: five runs (the window's ends may add or lose one).
    let t0 = now_ms();
    let every = d.json(&["triggers", "add", "svc", "--cron", "*/2 * * * * *"]);
    let id = every["trigger"]["id"].as_str().unwrap().to_string();
    assert!(every["trigger"]["next_due_ms"].as_u64().unwrap() > t0);
    // (The period itself is what is measured: wait until it has passed.)
    wait_for(Duration::from_secs(30), "ten seconds", || {
        (now_ms() >= t0 + 10_000).then_some(())
    });
    d.json(&["triggers", "revoke", &id]);
    let runs = d.json(&["runs", "list", "svc", "--limit", "100"]);
    let in_window: Vec<&Value> = runs
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"] == "schedule")
        .filter(|r| r["created_ms"].as_u64().unwrap() <= t0 + 10_000)
        .collect();
    assert!(
        (4..=6).contains(&in_window.len()),
        "{} runs in 10 s: {runs}",
        in_window.len()
    );
    for r in &in_window {
        let r = d.json(&["runs", "show", &r["id"].to_string(), "--wait"]);
        assert_eq!(r["state"], "succeeded", "{r}");
    }
    let after = started_by(&d, &id).len();

    // Down across due times: the skip schedule records them missed, the once one runs once.
    let skip = d.json(&["triggers", "add", "svc", "--cron", "*/2 * * * * *"])["trigger"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let once = d.json(&[
        "triggers",
        "add",
        "svc",
        "--cron",
        "*/2 * * * * *",
        "--catch-up",
        "once",
    ])["trigger"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    d.kill9();
    let down = now_ms();
    wait_for(Duration::from_secs(30), "two due times to pass", || {
        (now_ms() >= down + 5_000).then_some(())
    });
    d.restart();
    let missed = wait_for(WAIT, "trigger.missed", || {
        let v = d.json(&["audit", "search", "--action", "trigger.missed"]);
        v.as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["actor"] == format!("trigger {skip}"))
            .cloned()
    });
    let detail: Value = serde_json::from_str(missed["event"]["detail"].as_str().unwrap()).unwrap();
    assert!(detail["missed"].as_u64().unwrap() >= 2, "{detail}");
    let caught = wait_for(WAIT, "the catch-up run", || {
        started_by(&d, &once)
            .into_iter()
            .find(|s| s["catch_up"] == true)
    });
    let run = d.json(&["runs", "show", &caught["run"].to_string(), "--wait"]);
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(
        started_by(&d, &skip).iter().all(|s| s["catch_up"] == false),
        "the skip schedule made up for nothing"
    );
    let recs = d.json(&["audit", "search", "--action", "trigger.catch-up"]);
    assert_eq!(recs.as_array().unwrap().len(), 1, "{recs}");
    // The revoked schedule started nothing after its revocation, across the restart too.
    assert_eq!(started_by(&d, &id).len(), after);
}
