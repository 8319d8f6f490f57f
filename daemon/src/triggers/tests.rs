//! Tests of triggers: every webhook check (token, subscription, timestamp, signature,
//! replay, rate, body), rotation with and without overlap, revocation, what survives a
//! reload, the rejections' records and their cap; schedules' cron parsing, due times and
//! what a restart after missed due times does (skip or once).

use super::schedule::Due;
use super::*;
use crate::audit::{AuditLog, Options};
use crate::store::AgentRecord;
use agenfleet_protocol::triggers::signature;
use agenfleet_protocol::AgentSpec;

struct Fixture {
    triggers: Arc<Triggers>,
    runs: Arc<Runs>,
    store: Store,
    vault: Arc<Vault>,
    audit: AuditLog,
    key: AgentKey,
}

fn setup(dir: &std::path::Path) -> Fixture {
    crate::keyring::join_for_this_thread().expect("a session keyring for this test thread");
    let store = Store::open(&dir.join("agenfleet.db")).unwrap();
    for name in ["a", "b"] {
        let spec = AgentSpec::from_toml(&format!(
            "name = \"{name}\"\ntenant = \"t\"\nimage = \"agenfleet/agent\"\n[runs]\nqueue = 3\n"
        ))
        .unwrap();
        store.insert_agent(&AgentRecord::new(spec, 1)).unwrap();
    }
    let vault = Arc::new(Vault::open(
        store.clone(),
        format!("test{:08x}", rand::random::<u32>()),
    ));
    vault.init().unwrap();
    let (audit, _) =
        AuditLog::open(&dir.join("audit"), None, "none".into(), Options::default()).unwrap();
    let runs = Arc::new(Runs::new(store.clone(), audit.clone()));
    let triggers = reload(&store, &vault, &audit, &runs);
    Fixture {
        triggers,
        runs,
        store,
        vault,
        audit,
        key: AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        },
    }
}

impl Fixture {
    /// The same store, vault, log and runs, with the triggers loaded again (a restart).
    fn reopened(&self) -> Fixture {
        Fixture {
            triggers: reload(&self.store, &self.vault, &self.audit, &self.runs),
            runs: self.runs.clone(),
            store: self.store.clone(),
            vault: self.vault.clone(),
            audit: self.audit.clone(),
            key: self.key.clone(),
        }
    }
}

fn reload(store: &Store, vault: &Arc<Vault>, audit: &AuditLog, runs: &Arc<Runs>) -> Arc<Triggers> {
    let t = Arc::new(Triggers::new(
        store.clone(),
        vault.clone(),
        audit.clone(),
        runs.clone(),
        Limits {
            skew_secs: 300,
            max_body_bytes: 65536,
        },
    ));
    t.load().unwrap();
    t
}

struct Hook {
    view: TriggerView,
    token: String,
    secret: String,
}

fn webhook(f: &Fixture, key: &AgentKey, rate: u32) -> Hook {
    let (view, token, secret) = f
        .triggers
        .add(
            key,
            "default",
            "ann",
            &TriggerNew::Webhook { rate_per_min: rate },
        )
        .unwrap();
    let s = |v: Option<SecretValue>| String::from_utf8(v.unwrap().expose().to_vec()).unwrap();
    Hook {
        view,
        token: s(token),
        secret: s(secret),
    }
}

/// A request to `h`, signed with `secret` at `ts` over `signed`, carrying `body`.
fn check(
    f: &Fixture,
    h: &Hook,
    token: Option<&str>,
    secret: &str,
    ts: i64,
    signed: &[u8],
    body: &[u8],
) -> Result<TriggerView, Rejection> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let sig = signature(secret.as_bytes(), &ts.to_string(), signed);
    let req = Request {
        id: &h.view.id,
        authorization: auth.as_deref(),
        timestamp: Some(&ts.to_string()),
        signature: Some(&sig),
        body,
        source: "127.0.0.1".into(),
    };
    f.triggers.verify(&req, now_ms())
}

fn now_s() -> i64 {
    (now_ms() / 1000) as i64
}

fn records(audit: &AuditLog, action: &str) -> Vec<serde_json::Value> {
    audit
        .query(
            &agenfleet_protocol::AuditQuery {
                action: Some(action.into()),
                ..Default::default()
            },
            &|_| true,
        )
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_str(&e.event.detail).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn a_webhook_passes_only_with_its_token_a_fresh_timestamp_and_a_signature_seen_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = setup(dir.path());
    let h = webhook(&f, &f.key, 0);
    let other = webhook(
        &f,
        &AgentKey {
            tenant: "t".into(),
            name: "b".into(),
        },
        0,
    );
    let body = br#"{"ticket": 42}"#;
    let t = Some(h.token.as_str());
    let ok = check(&f, &h, t, &h.secret, now_s(), body, body).unwrap();
    assert_eq!(ok.id, h.view.id);
    assert_eq!(h.view.rate_per_min, 60, "the default rate");
    // The same request again is a replay; re-signed a second later it is new.
    let ts = now_s();
    check(&f, &h, t, &h.secret, ts - 1, body, body).unwrap();
    assert_eq!(
        check(&f, &h, t, &h.secret, ts - 1, body, body),
        Err(Rejection::Replay)
    );
    // Each failed check, with its status.
    let cases: Vec<(Result<TriggerView, Rejection>, Rejection)> = vec![
        (
            check(&f, &h, None, &h.secret, ts, body, body),
            Rejection::NoToken,
        ),
        (
            check(&f, &h, Some("agfw_nope"), &h.secret, ts, body, body),
            Rejection::BadToken,
        ),
        (
            check(&f, &h, Some(&other.token), &h.secret, ts, body, body),
            Rejection::OtherSubscription,
        ),
        (
            check(&f, &h, t, &h.secret, ts - 301, body, body),
            Rejection::Timestamp,
        ),
        (
            check(&f, &h, t, &h.secret, ts + 301, body, body),
            Rejection::Timestamp,
        ),
        (
            check(&f, &h, t, &other.secret, ts, body, body),
            Rejection::Signature,
        ),
        (
            check(&f, &h, t, &h.secret, ts, body, br#"{"ticket": 43}"#),
            Rejection::Signature,
        ),
        (
            check(&f, &h, t, &h.secret, ts, b"nope", b"nope"),
            Rejection::NotJson,
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got.map(|v| v.id), Err(want));
    }
    assert_eq!(
        [401, 403, 413, 429, 400],
        [
            Rejection::Signature.status(),
            Rejection::OtherSubscription.status(),
            Rejection::TooLarge.status(),
            Rejection::RateLimited.status(),
            Rejection::NotJson.status()
        ]
    );
    // A timestamp 299 s off either way passes (±300 s).
    check(&f, &h, t, &h.secret, ts - 299, b"{}", b"{}").unwrap();
    check(&f, &h, t, &h.secret, ts + 299, b"{}", b"{}").unwrap();

    // Revoked: at once, and after a reload.
    f.triggers.revoke(&h.view).unwrap();
    assert_eq!(
        check(&f, &h, t, &h.secret, now_s(), b"{ }", b"{ }").map(|v| v.id),
        Err(Rejection::BadToken)
    );
    let f2 = f.reopened();
    assert_eq!(
        check(&f2, &h, t, &h.secret, now_s(), b"{ }", b"{ }").map(|v| v.id),
        Err(Rejection::BadToken)
    );
    // The other subscription survived the reload (its token is kept only as a digest).
    check(
        &f2,
        &other,
        Some(&other.token),
        &other.secret,
        now_s(),
        b"{}",
        b"{}",
    )
    .unwrap();
    let row: (Option<String>, Vec<u8>) = f
        .store
        .with(|c| {
            c.query_row(
                "SELECT token_sha256, secret_sealed FROM triggers WHERE id = ?1",
                [&other.view.id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
        })
        .unwrap();
    assert_ne!(row.0.as_deref(), Some(other.token.as_str()));
    let hay = String::from_utf8_lossy(&row.1);
    assert!(!hay.contains(&other.secret[6..]), "the secret is sealed");
    // A sealed vault: nothing verifies (503), nothing is revealed.
    f.vault.seal();
    assert_eq!(
        check(
            &f2,
            &other,
            Some(&other.token),
            &other.secret,
            now_s(),
            b"[1]",
            b"[1]"
        )
        .map(|v| v.id),
        Err(Rejection::Sealed)
    );
}

#[tokio::test]
async fn the_rate_counts_only_requests_that_passed_and_a_rotation_overlaps_as_asked() {
    let dir = tempfile::tempdir().unwrap();
    let f = setup(dir.path());
    let h = webhook(&f, &f.key, 2);
    let t = Some(h.token.as_str());
    // Bad signatures do not use up the rate…
    for i in 0..10 {
        let b = format!("[{i}]");
        assert_eq!(
            check(
                &f,
                &h,
                t,
                "whsec_wrong",
                now_s(),
                b.as_bytes(),
                b.as_bytes()
            )
            .map(|v| v.id),
            Err(Rejection::Signature)
        );
    }
    // …two good ones do; the third is over it.
    check(&f, &h, t, &h.secret, now_s(), b"[1]", b"[1]").unwrap();
    check(&f, &h, t, &h.secret, now_s(), b"[2]", b"[2]").unwrap();
    assert_eq!(
        check(&f, &h, t, &h.secret, now_s(), b"[3]", b"[3]").map(|v| v.id),
        Err(Rejection::RateLimited)
    );

    let h = webhook(&f, &f.key, 1000);
    let t = Some(h.token.as_str());
    let (_, s2) = f.triggers.rotate_secret(&h.view, 3600).unwrap();
    let s2 = String::from_utf8(s2.expose().to_vec()).unwrap();
    // Both verify during the overlap…
    check(&f, &h, t, &h.secret, now_s(), b"[1]", b"[1]").unwrap();
    check(&f, &h, t, &s2, now_s(), b"[2]", b"[2]").unwrap();
    // …and after a reload.
    let f2 = f.reopened();
    check(&f2, &h, t, &h.secret, now_s(), b"[3]", b"[3]").unwrap();
    // Rotated again with no overlap: only the newest verifies, at once.
    let (_, s3) = f2.triggers.rotate_secret(&h.view, 0).unwrap();
    let s3 = String::from_utf8(s3.expose().to_vec()).unwrap();
    assert_eq!(
        check(&f2, &h, t, &s2, now_s(), b"[4]", b"[4]").map(|v| v.id),
        Err(Rejection::Signature)
    );
    check(&f2, &h, t, &s3, now_s(), b"[5]", b"[5]").unwrap();
    let sched = f2
        .triggers
        .add(
            &f.key,
            "default",
            "ann",
            &TriggerNew::Schedule {
                cron: "0 * * * *".into(),
                input_json: "{}".into(),
                catch_up: CatchUp::Skip,
                overlap: false,
            },
        )
        .unwrap()
        .0;
    assert!(
        f2.triggers.rotate_secret(&sched, 0).is_err(),
        "a schedule has no secret"
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_are_recorded_without_the_body_and_a_flood_is_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let f = setup(dir.path());
    let h = webhook(&f, &f.key, 0);
    let body = br#"{"canary": "c4n4ry-body"}"#;
    for _ in 0..25 {
        let req = Request {
            id: &h.view.id,
            authorization: Some("Bearer agfw_wrong"),
            timestamp: None,
            signature: None,
            body,
            source: "192.0.2.7".into(),
        };
        f.triggers
            .record_rejection(&req, body.len(), Rejection::BadToken)
            .await;
    }
    let recs = records(&f.audit, "webhook.rejected");
    assert_eq!(recs.len(), 20, "20 one by one, the rest counted");
    assert_eq!(recs[0]["reason"], "bad-token");
    assert_eq!(recs[0]["subscription"], h.view.id.as_str());
    assert_eq!(recs[0]["source"], "192.0.2.7");
    assert_eq!(recs[0]["body_bytes"], body.len());
    let all = serde_json::to_string(&recs).unwrap();
    assert!(!all.contains("c4n4ry"), "never the body");
    // The window's summary says how many more.
    tokio::time::advance(std::time::Duration::from_millis(REJECTION_WINDOW_MS + 10)).await;
    let summary = loop {
        let recs = records(&f.audit, "webhook.rejected");
        if recs.len() > 20 {
            break recs[20].clone();
        }
        // (Time is paused: a sleep lets the runtime go on to the audit writer's work.)
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    };
    assert_eq!(summary["suppressed"], 5, "{summary}");
}

#[tokio::test]
async fn schedules_parse_cron_start_runs_when_due_and_handle_missed_times_as_asked() {
    assert!(parse_cron("*/5 * * * *").is_ok());
    assert!(parse_cron("*/2 * * * * *").is_ok());
    for bad in ["* * * *", "61 * * * *", "a b c d e", "* * * * * * * *"] {
        assert!(parse_cron(bad).is_err(), "{bad}");
    }
    let c = parse_cron("*/2 * * * * *").unwrap();
    assert_eq!(next_due(&c, 1_000), Some(2_000));
    assert_eq!(next_due(&c, 2_000), Some(4_000), "strictly after");

    let dir = tempfile::tempdir().unwrap();
    let f = setup(dir.path());
    let add = |catch_up| {
        f.triggers
            .add(
                &f.key,
                "default",
                "ann",
                &TriggerNew::Schedule {
                    cron: "*/2 * * * * *".into(),
                    input_json: r#"{"tick": true}"#.into(),
                    catch_up,
                    overlap: true,
                },
            )
            .unwrap()
            .0
    };
    let skip = add(CatchUp::Skip);
    let once = add(CatchUp::Once);
    // Nothing due at once.
    assert!(f.triggers.due(now_ms()).is_empty());
    // Ten seconds on: each is due once, the due times between counted as missed.
    let later = now_ms() + 10_000;
    let due = f.triggers.due(later);
    assert_eq!(due.len(), 2);
    for (_, d) in &due {
        assert!((3..=4).contains(&d.missed), "{}", d.missed);
        assert!(!d.late);
    }
    // As after a restart with the daemon down 10 s: skip records, once starts a run.
    let past = now_ms() - 10_000;
    f.store
        .tenant("t")
        .with(|c| c.execute("UPDATE t_triggers SET last_due_ms = ?1", [past as i64]))
        .unwrap();
    let t2 = reload(&f.store, &f.vault, &f.audit, &f.runs);
    for (v, d) in t2.due(now_ms()) {
        assert!(d.late);
        t2.handle(&v, d).await;
    }
    let missed = records(&f.audit, "trigger.missed");
    assert_eq!(missed.len(), 1, "{missed:?}");
    assert!(missed[0]["missed"].as_u64().unwrap() >= 4, "{missed:?}");
    assert_eq!(records(&f.audit, "trigger.catch-up").len(), 1);
    let started: Vec<_> = records(&f.audit, "run.start")
        .into_iter()
        .filter(|d| d["run"].is_u64())
        .collect();
    assert_eq!(started.len(), 1, "one run, the catch-up's: {started:?}");
    assert_eq!(started[0]["subscription"], once.id.as_str());
    assert_eq!(started[0]["catch_up"], true);
    assert_ne!(started[0]["subscription"], skip.id.as_str());
    // The due time handled is stored: a second restart misses nothing more.
    let t3 = reload(&f.store, &f.vault, &f.audit, &f.runs);
    assert!(t3.due(now_ms()).is_empty());
    // Without overlap, a schedule whose last run is still open skips (recorded).
    let v = f
        .triggers
        .add(
            &f.key,
            "default",
            "ann",
            &TriggerNew::Schedule {
                cron: "*/2 * * * * *".into(),
                input_json: "{}".into(),
                catch_up: CatchUp::Skip,
                overlap: false,
            },
        )
        .unwrap()
        .0;
    let d = || Due {
        due: now_ms(),
        missed: 0,
        late: false,
    };
    f.triggers.handle(&v, d()).await;
    f.triggers.handle(&v, d()).await;
    assert_eq!(f.runs.open_by(&format!("trigger {}", v.id)), 1);
    assert_eq!(records(&f.audit, "trigger.skipped").len(), 1);
}
