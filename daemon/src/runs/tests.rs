//! Tests of runs: the queue, the concurrency limit, results, timeouts, cancels, waiting
//! for an end, and what a restart does to queued and running runs.

use super::*;
use crate::audit::{AuditLog, Options};
use crate::store::AgentRecord;
use agenfleet_protocol::AgentSpec;

fn setup(dir: &std::path::Path) -> (Arc<Runs>, Store, AuditLog, AgentKey) {
    let store = Store::open(&dir.join("agenfleet.db")).unwrap();
    let spec = AgentSpec::from_toml("name = \"a\"\ntenant = \"t\"\nimage = \"agenfleet/agent\"\n")
        .unwrap();
    let _ = store.insert_agent(&AgentRecord::new(spec, 1));
    let (audit, _) =
        AuditLog::open(&dir.join("audit"), None, "none".into(), Options::default()).unwrap();
    let runs = Arc::new(Runs::new(store.clone(), audit.clone()));
    let key = AgentKey {
        tenant: "t".into(),
        name: "a".into(),
    };
    (runs, store, audit, key)
}

/// How many `run.end` records the log holds.
fn run_ends(audit: &AuditLog) -> usize {
    audit
        .query(
            &agenfleet_protocol::AuditQuery {
                action: Some("run.end".into()),
                ..Default::default()
            },
            &|_| true,
        )
        .unwrap()
        .len()
}

fn spec(max_concurrent: u32, timeout_secs: u64, queue: u32) -> RunsSpec {
    RunsSpec {
        max_concurrent,
        timeout_secs,
        queue,
        ..RunsSpec::default()
    }
}

#[tokio::test]
async fn runs_queue_go_to_their_agent_in_order_within_its_limit_and_end_with_a_result() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, _, audit, key) = setup(dir.path());
    runs.recover(|_| false).await.unwrap();
    let sp = spec(1, 60, 2);
    let r1 = runs
        .start(&key, "p", &sp, "cli", "ann", r#"{"n":1}"#)
        .unwrap();
    let r2 = runs
        .start(&key, "p", &sp, "cli", "ann", r#"{"n":2}"#)
        .unwrap();
    assert!(r2.id > r1.id);
    // The queue's limit, and input that is not JSON or too large: refused with the reason.
    let e = runs.start(&key, "p", &sp, "cli", "ann", "{}").unwrap_err();
    assert!(e.message.contains("runs.queue = 2"), "{}", e.message);
    let e = runs
        .start(&key, "p", &spec(1, 60, 9), "cli", "ann", "{")
        .unwrap_err();
    assert!(e.message.contains("not JSON"), "{}", e.message);
    let big = format!("\"{}\"", "x".repeat(MAX_RUN_INPUT));
    assert!(runs
        .start(&key, "p", &spec(1, 60, 9), "cli", "ann", &big)
        .is_err());
    // The oldest first; one at a time (max_concurrent = 1).
    let got = runs.next(&key, &sp, Duration::ZERO).await.unwrap().unwrap();
    assert_eq!((got.id, got.state), (r1.id, RunState::Running));
    assert!(got.deadline_ms.unwrap() > got.started_ms.unwrap());
    assert!(runs
        .next(&key, &sp, Duration::from_millis(50))
        .await
        .unwrap()
        .is_none());
    // Another agent cannot answer it; its own agent can, once.
    let other = AgentKey {
        tenant: "t".into(),
        name: "b".into(),
    };
    let e = runs
        .end(r1.id, Some(&other), RunState::Succeeded, None, None)
        .await
        .unwrap_err();
    assert!(e.message.contains("no run"), "{}", e.message);
    let done = runs
        .end(
            r1.id,
            Some(&key),
            RunState::Succeeded,
            Some(r#"{"ok":1}"#.into()),
            None,
        )
        .await
        .unwrap();
    assert_eq!(done.state, RunState::Succeeded);
    let e = runs
        .end(r1.id, Some(&key), RunState::Failed, None, None)
        .await
        .unwrap_err();
    assert!(e.message.contains("ended already"), "{}", e.message);
    // The queued one cannot be answered before it is handed out.
    let e = runs
        .end(r2.id, Some(&key), RunState::Succeeded, None, None)
        .await
        .unwrap_err();
    assert!(e.message.contains("not handed to you"), "{}", e.message);
    // Stored: read back as it ended; its end recorded.
    let back = runs.get(r1.id).unwrap().unwrap();
    assert_eq!(back.result_json.as_deref(), Some(r#"{"ok":1}"#));
    assert_eq!(run_ends(&audit), 1);
    // A waiting agent is woken by a new run, not by a clock.
    let waiter = {
        let (runs, key, sp) = (runs.clone(), key.clone(), sp);
        tokio::spawn(async move { runs.next(&key, &sp, Duration::from_secs(30)).await })
    };
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        got.id, r2.id,
        "the second run, handed out once the first ended"
    );
}

#[tokio::test]
async fn a_run_times_out_is_cancelled_and_a_restart_interrupts_the_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, store, audit, key) = setup(dir.path());
    runs.recover(|_| false).await.unwrap();
    let quick = spec(2, 1, 10);
    let r = runs.start(&key, "p", &quick, "cli", "ann", "{}").unwrap();
    runs.next(&key, &quick, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    let ended = runs
        .wait_end(r.id, Duration::from_secs(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ended.state, RunState::TimedOut);
    assert!(ended.error.unwrap().contains("no result within 1 s"));
    // Cancelled while queued: never handed out.
    let c = runs.start(&key, "p", &quick, "cli", "ann", "{}").unwrap();
    let v = runs
        .end(c.id, None, RunState::Cancelled, None, Some("by ann".into()))
        .await
        .unwrap();
    assert_eq!(v.state, RunState::Cancelled);
    assert!(runs
        .next(&key, &quick, Duration::ZERO)
        .await
        .unwrap()
        .is_none());
    // One running, one queued, then the daemon goes (a new registry on the same store).
    let slow = spec(1, 600, 10);
    let running = runs.start(&key, "p", &slow, "cli", "ann", "{}").unwrap();
    let queued = runs.start(&key, "p", &slow, "cli", "ann", "{}").unwrap();
    runs.next(&key, &slow, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    drop(runs);
    let again = Arc::new(Runs::new(store, audit));
    assert_eq!(again.recover(|_| false).await.unwrap(), (1, 1));
    let r = again.get(running.id).unwrap().unwrap();
    assert_eq!(r.state, RunState::Failed);
    assert!(r.error.unwrap().contains("interrupted"));
    let next = again
        .next(&key, &slow, Duration::ZERO)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.id, queued.id);
    // New ids go on after the old ones.
    let n = again.start(&key, "p", &slow, "cli", "ann", "{}").unwrap();
    assert!(n.id > queued.id);
    // Listed newest first; --failed shows the failed and timed-out ones.
    let all = again.list(&RunQuery::default(), |_| true).unwrap();
    assert_eq!(all.first().map(|v| v.id), Some(n.id));
    let failed = again
        .list(
            &RunQuery {
                failed: true,
                ..Default::default()
            },
            |_| true,
        )
        .unwrap();
    let states: Vec<RunState> = failed.iter().map(|v| v.state).collect();
    assert_eq!(states, vec![RunState::Failed, RunState::TimedOut]);
}

#[tokio::test]
async fn two_ends_of_one_run_at_once_leave_one_end_and_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let (runs, _, audit, key) = setup(dir.path());
    runs.recover(|_| false).await.unwrap();
    let sp = spec(1, 600, 10);
    for _ in 0..20 {
        let r = runs.start(&key, "p", &sp, "cli", "ann", "{}").unwrap();
        runs.next(&key, &sp, Duration::ZERO).await.unwrap().unwrap();
        let (a, b) = tokio::join!(
            runs.end(r.id, Some(&key), RunState::Succeeded, None, None),
            runs.end(r.id, None, RunState::TimedOut, None, Some("late".into())),
        );
        assert!(a.is_ok() != b.is_ok(), "exactly one end: {a:?} {b:?}");
        let stored = runs.get(r.id).unwrap().unwrap();
        let won = if a.is_ok() {
            RunState::Succeeded
        } else {
            RunState::TimedOut
        };
        assert_eq!(stored.state, won);
    }
    assert_eq!(run_ends(&audit), 20, "one record per run");
}
