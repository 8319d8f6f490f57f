//! End-to-end: the audit log of a real daemon — tamper trials (each detected and the first
//! bad record named), torn tails, crash trials (`kill -9` while 64 clients write: every
//! acknowledged record survives), and failing closed when its disk refuses writes.

use agenfleet_e2e::*;
use agenfleet_protocol::{transport, AuditQuery, Checkpoint, DEFAULT_MAX_FRAME_BYTES};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn notes(d: &Daemon, n: usize) {
    for i in 0..n {
        let out = d.cli(&["audit", "note", &format!("note {i}")]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn segment(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v.pop().expect("a segment")
}

/// Byte offsets of the records in a segment.
fn offsets(buf: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut pos = 16;
    while pos + 8 <= buf.len() {
        v.push(pos);
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        pos += 8 + len;
    }
    v
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `agenfleetd verify-audit DIR [--checkpoint FILE]`: (valid, report JSON, stderr).
fn verify_offline(dir: &Path, checkpoint: Option<&Path>) -> (bool, serde_json::Value, String) {
    let mut c = Command::new(bin("agenfleetd"));
    c.arg("verify-audit").arg(dir);
    if let Some(p) = checkpoint {
        c.arg("--checkpoint").arg(p);
    }
    let out = c.output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let ok = out.status.success();
    if !ok {
        assert_eq!(out.status.code(), Some(12), "invalid must exit 12");
    }
    (ok, v, String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn tamper_trials_are_detected_and_name_the_first_bad_record() {
    if !docker_available("tamper_trials_are_detected_and_name_the_first_bad_record") {
        return;
    }
    let mut d = Daemon::start("tamper", "audit_checkpoint_every = 10");
    notes(&d, 40);
    // What a careful client keeps: the newest signed checkpoint.
    let st = d.json(&["audit", "status"]);
    let kept: Checkpoint =
        serde_json::from_value(st["last_checkpoint"].clone()).expect("a checkpoint");
    assert!(kept.seq >= 30, "{st}");
    let kept_file = d.dir.join("kept.json");
    std::fs::write(&kept_file, serde_json::to_vec(&kept).unwrap()).unwrap();
    let older = d.dir.join("older-copy");
    copy_dir(&d.dir.join("state/audit"), &older);
    notes(&d, 20);
    let st = d.json(&["audit", "status"]);
    let kept2: Checkpoint = serde_json::from_value(st["last_checkpoint"].clone()).unwrap();
    let kept2_file = d.dir.join("kept2.json");
    std::fs::write(&kept2_file, serde_json::to_vec(&kept2).unwrap()).unwrap();
    d.kill9();
    let audit = d.dir.join("state/audit");
    let (ok, v, _) = verify_offline(&audit, Some(&kept2_file));
    assert!(ok, "the untouched log verifies: {v}");
    let good = std::fs::read(segment(&audit)).unwrap();
    let o = offsets(&good);
    let work = d.dir.join("work");
    let trial = |name: &str,
                 mutate: &dyn Fn(&mut Vec<u8>),
                 expect_seq: Option<u64>,
                 checkpoint: Option<&Path>| {
        copy_dir(&audit, &work);
        let seg = segment(&work);
        let mut b = good.clone();
        mutate(&mut b);
        std::fs::write(&seg, &b).unwrap();
        let (ok, v, err) = verify_offline(&work, checkpoint);
        assert!(!ok, "{name}: not detected: {v}");
        if let Some(seq) = expect_seq {
            let first_bad = v["first_bad"].as_str().unwrap_or("");
            assert!(
                first_bad.contains(&format!("record {seq} ")),
                "{name}: should name record {seq}: {first_bad} / {err}"
            );
        }
    };
    // Flip one byte: in a record header, in a body's fixed part, in an event's JSON.
    for (i, at) in [o[5] + 1, o[17] + 12, o[33] + 70, good.len() - 200]
        .into_iter()
        .enumerate()
    {
        let rec = o.iter().rposition(|x| *x <= at).unwrap() as u64 + 1;
        trial(
            &format!("flip #{i} at byte {at}"),
            &|b| b[at] ^= 0x20,
            Some(rec),
            None,
        );
    }
    // Delete record 10.
    trial(
        "delete",
        &|b| {
            b.drain(o[9]..o[10]);
        },
        Some(10),
        None,
    );
    // Swap records 20 and 21.
    trial(
        "swap",
        &|b| {
            let r20 = good[o[19]..o[20]].to_vec();
            let r21 = good[o[20]..o[21]].to_vec();
            let mut s = r21;
            s.extend(r20);
            b.splice(o[19]..o[21], s);
        },
        Some(20),
        None,
    );
    // Truncate the tail by whole records: self-consistent, caught by the kept checkpoint.
    trial(
        "truncate",
        &|b| b.truncate(o[o.len() - 15]),
        None,
        Some(&kept2_file),
    );
    // Replace the whole log with an older copy: caught by the kept checkpoint.
    copy_dir(&older, &work);
    let (ok, v, _) = verify_offline(&work, Some(&kept2_file));
    assert!(!ok, "rollback to an older copy not detected: {v}");
    assert!(
        v["checkpoint_check"]
            .as_str()
            .unwrap_or("")
            .contains("truncated or rolled back"),
        "{v}"
    );

    // Online: damage in the middle stops writes, with a message naming the record; reads go on.
    let seg = segment(&audit);
    let mut b = good.clone();
    for x in &mut b[o[12] + 20..o[12] + 60] {
        *x = 0;
    }
    std::fs::write(&seg, &b).unwrap();
    d.restart();
    let st = d.json(&["audit", "status"]);
    assert_eq!(st["writable"], false, "{st}");
    assert!(
        st["problem"].as_str().unwrap().contains("record 13"),
        "{st}"
    );
    let out = d.cli(&["audit", "note", "should be refused"]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = d.dir.join("refused.toml");
    std::fs::write(&p, healthy("refused")).unwrap();
    let out = d.cli(&["agents", "create", "-f", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(9));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.containers().is_empty(),
        "a refused create must not create a container"
    );
    // Reads still work, and nothing was rewritten behind the operator's back.
    assert_eq!(d.json(&["agents", "list"]), serde_json::json!([]));
    let out = d.cli(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(12));
    assert!(String::from_utf8_lossy(&out.stdout).contains("record 13"));
    assert_eq!(std::fs::read(&seg).unwrap(), b);
}

#[test]
fn torn_tail_is_truncated_and_the_truncation_recorded() {
    if !docker_available("torn_tail_is_truncated_and_the_truncation_recorded") {
        return;
    }
    let mut d = Daemon::start("torn", "");
    notes(&d, 10);
    d.kill9();
    let seg = segment(&d.dir.join("state/audit"));
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 9).unwrap();
    drop(f);
    d.restart();
    let found = d.json(&["audit", "search", "--action", "audit.truncated"]);
    let detail = found[0]["event"]["detail"]
        .as_str()
        .expect("a truncation record")
        .to_string();
    assert!(detail.contains("torn tail"), "{detail}");
    let st = d.json(&["audit", "status"]);
    assert_eq!(st["writable"], true);
    let v = d.json(&["audit", "verify"]);
    assert_eq!(v["valid"], true, "{v}");
}

#[test]
fn crash_trials_keep_every_acknowledged_record() {
    if !docker_available("crash_trials_keep_every_acknowledged_record") {
        return;
    }
    let mut d = Daemon::start("crash", "");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut total_acked = 0usize;
    for trial in 0..20 {
        let socket = d.socket.clone();
        // 64 clients write notes as fast as they can; each keeps what was acknowledged.
        // The kill comes at a varied moment after the first acknowledgement (whenever that
        // is on a busy machine), so every trial kills the daemon in the middle of writes.
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let acked = rt.block_on(async move {
            let mut tasks = Vec::new();
            for w in 0..64 {
                let socket = socket.clone();
                let count = count.clone();
                tasks.push(tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let Ok(c) = transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES).await else {
                        return acked;
                    };
                    for i in 0.. {
                        let text = format!("t{trial}-w{w}-n{i}");
                        let ctx = transport::context_with_timeout(Duration::from_secs(5));
                        match c.audit_note(ctx, text.clone()).await {
                            Ok(Ok(seq)) => {
                                acked.push((seq, text));
                                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            _ => break,
                        }
                    }
                    acked
                }));
            }
            let first = tokio::time::timeout(Duration::from_secs(60), async {
                while count.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
            assert!(
                first.is_ok(),
                "trial {trial}: no write acknowledged within 60 s"
            );
            tokio::time::sleep(Duration::from_millis((trial as u64 % 5) * 40)).await;
            tasks
        });
        d.kill9();
        let acked: Vec<(u64, String)> = rt.block_on(async {
            let mut all = Vec::new();
            for t in acked {
                all.extend(t.await.unwrap());
            }
            all
        });
        assert!(!acked.is_empty(), "trial {trial}: nothing was acknowledged");
        total_acked += acked.len();
        d.restart();
        // Every acknowledged note is in the log, at the sequence number it was given.
        let socket = d.socket.clone();
        let found = rt.block_on(async move {
            let c = transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES)
                .await
                .unwrap();
            let mut found = std::collections::HashMap::new();
            let mut after = 0;
            loop {
                let q = AuditQuery {
                    action: Some("operator.note".into()),
                    after_seq: after,
                    limit: 5000,
                    ..Default::default()
                };
                let page = c
                    .audit_query(
                        transport::context_with_timeout(Duration::from_secs(30)),
                        q,
                        0,
                    )
                    .await
                    .unwrap()
                    .unwrap();
                if page.is_empty() {
                    break found;
                }
                for e in page {
                    after = e.seq;
                    found.insert(e.seq, e.event.detail);
                }
            }
        });
        for (seq, text) in &acked {
            assert_eq!(
                found.get(seq),
                Some(text),
                "trial {trial}: acknowledged record {seq} ({text}) lost"
            );
        }
        let v = d.json(&["audit", "verify", "--no-remember"]);
        assert_eq!(v["valid"], true, "trial {trial}: {v}");
    }
    eprintln!("crash trials: 20 kills, {total_acked} acknowledged records, none lost");
}

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_closes_the_log_and_mutations_are_refused() {
    if !docker_available("a_full_disk_closes_the_log_and_mutations_are_refused") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agf-e2e-full-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=512k", "tmpfs"])
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        assert!(
            std::env::var("CI").map(|v| v != "true").unwrap_or(true),
            "CI must be able to mount a small tmpfs (runs as root)"
        );
        eprintln!("!!! SKIPPED a_full_disk_closes_the_log_and_mutations_are_refused: cannot mount a tmpfs (needs root) !!!");
        return;
    }
    let _m = Mount(dir.clone());
    let d = Daemon::start("full", &format!("audit_dir = {:?}", dir.join("audit")));
    d.create(&healthy("before-full"));
    // Fill the small disk, leaving a few KiB for the log.
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .args([
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=4k",
            "count=200",
        ])
        .output();
    let free_blocks = |n: u64| -> bool {
        let _ = Command::new("dd")
            .args([
                "if=/dev/zero",
                &format!("of={}", dir.join(format!("f{n}")).display()),
                "bs=4k",
                "count=1",
            ])
            .output();
        true
    };
    for n in 0..200 {
        free_blocks(n);
    }
    // Write until the log refuses.
    let mut refused = None;
    for i in 0..2000 {
        let out = d.cli(&["audit", "note", &format!("filling {i} {}", "x".repeat(200))]);
        if !out.status.success() {
            refused = Some(out);
            break;
        }
    }
    let out = refused.expect("the log never refused a write on a full disk");
    assert_eq!(
        out.status.code(),
        Some(9),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = d.json(&["audit", "status"]);
    assert_eq!(st["writable"], false);
    assert!(
        st["problem"].as_str().unwrap().contains("No space left"),
        "{st}"
    );
    // Mutations are refused and change nothing; reads still work.
    let out = d.cli(&["agents", "stop", "before-full"]);
    assert_eq!(out.status.code(), Some(9));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit log"));
    let v = d.agent("before-full");
    assert_eq!(v["state"], "Running");
    let st = d.json(&["status"]);
    assert_eq!(st["daemon"]["audit_writable"], false);
    let tail = d.json(&["audit", "search", "--action", "agent.create"]);
    assert!(!tail.as_array().unwrap().is_empty());
}

/// The smallest sequence number of the records `audit search ARGS` finds (None: none).
fn first_seq(d: &Daemon, args: &[&str]) -> Option<u64> {
    let mut a = vec!["audit", "search", "--limit", "100000"];
    a.extend_from_slice(args);
    d.json(&a)
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .min()
}

#[test]
fn retention_removes_whole_old_segments_behind_a_signed_anchor() {
    if !docker_available("retention_removes_whole_old_segments_behind_a_signed_anchor") {
        return;
    }
    // 0.00003 days: 2.6 s.
    // The running tamper check every second, so that it sees segments go under it.
    let mut d = Daemon::start(
        "retention",
        "audit_segment_bytes = 65536\naudit_retention_days = 0.00003\naudit_retention_check_secs = 1\naudit_checkpoint_secs = 1\n",
    );
    let note = "x".repeat(3000);
    let write = |d: &Daemon, n: usize| {
        for _ in 0..n {
            let out = d.cli(&["audit", "note", &note]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    write(&d, 60);
    let (_, kept_file) = d.keep_checkpoint();
    // Old segments go; the log then starts after a signed anchor.
    let r = wait_for(Duration::from_secs(60), "a retention anchor", || {
        let r = d.json(&["retention"]);
        (!r["audit_anchor"].is_null()).then_some(r)
    });
    let anchor = r["audit_anchor"]["seq"].as_u64().unwrap();
    assert!(anchor >= 10, "{r}");
    // Recorded before it happened, naming where the log now starts.
    let removals = d.json(&["audit", "search", "--action", "audit.retention"]);
    assert!(
        removals
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event"]["detail"]
                .as_str()
                .unwrap_or("")
                .contains(&format!("#{anchor}"))),
        "{removals}"
    );
    let oldest = first_seq(&d, &[]).unwrap();
    assert!(
        oldest > anchor,
        "record {oldest} is older than the anchor {anchor}"
    );
    // The kept log verifies from the anchor, a checkpoint kept from before included.
    d.assert_verifies_against(&kept_file);
    let audit_dir = d.dir.join("state").join("audit");
    let (ok, report, err) = verify_offline(&audit_dir, None);
    assert!(ok, "{err} {report}");

    // A tenant that keeps its records for ever holds back its segment (and so every later
    // one: only the oldest segments go).
    d.create(&scoped_spec("keep", "p", "k1", false));
    let out = d.cli(&["tenants", "set", "keep", "--audit-retention-days", "0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let keep_seq = first_seq(&d, &["--agent", "keep/k1"]).expect("keep/k1's records");
    write(&d, 60);
    let r = wait_for(
        Duration::from_secs(60),
        "retention up to the kept tenant",
        || {
            let r = d.json(&["retention"]);
            let stuck =
                r["next_audit_removal_ms"].is_null() && r["audit_segments"].as_u64() >= Some(3);
            stuck.then_some(r)
        },
    );
    assert!(r["audit_anchor"]["seq"].as_u64().unwrap() < keep_seq, "{r}");
    assert_eq!(first_seq(&d, &["--agent", "keep/k1"]), Some(keep_seq));
    let text = String::from_utf8_lossy(&d.cli(&["retention"]).stdout).to_string();
    assert!(
        text.contains("tenant keep") && text.contains("kept for ever"),
        "{text}"
    );
    // Back to the platform's: that segment goes too.
    let out = d.cli(&[
        "tenants",
        "set",
        "keep",
        "--audit-retention-days",
        "default",
    ]);
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(60),
        "the kept tenant's segment removed",
        || {
            let r = d.json(&["retention"]);
            (r["audit_anchor"]["seq"].as_u64().unwrap_or(0) >= keep_seq).then_some(())
        },
    );
    assert!(first_seq(&d, &["--agent", "keep/k1"]).unwrap_or(u64::MAX) > keep_seq);
    // The running tamper check followed the removals; it raised nothing.
    let incidents = d.json(&["incidents", "list", "--all"]);
    assert!(
        !incidents.to_string().contains("audit-tampering"),
        "retention is not tampering: {incidents}"
    );
    // A restart opens the log from its anchor.
    d.restart();
    let v = d.cli(&["audit", "verify"]);
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stdout));
    // Without its anchor the kept log is a log with its start missing: invalid.
    let copy = d.dir.join("audit-copy");
    copy_dir(&audit_dir, &copy);
    std::fs::remove_file(copy.join("anchor.json")).unwrap();
    let (ok, _, err) = verify_offline(&copy, None);
    assert!(!ok, "a log without its anchor must not verify");
    assert!(err.contains("record"), "{err}");
    // A backup of a log that starts at an anchor restores and verifies.
    let archive = d.dir.join("anchored.tar");
    let out = d.cli(&["backup", "--out", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = restore_cmd(&archive, &d.dir.join("restored"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.dir.join("restored/audit/anchor.json").exists());
    // Bad input changes nothing.
    let out = d.cli(&["tenants", "set", "keep", "--audit-retention-days=-1"]);
    assert_eq!(out.status.code(), Some(6));
    let out = d.cli(&["tenants", "set", "nobody", "--audit-retention-days", "5"]);
    assert_eq!(out.status.code(), Some(5));
}

/// `agenfleet ARGS` with this client's own state dir (its pins): (exit code, stdout,
/// stderr).
fn pinned_cli(d: &Daemon, state: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = d
        .cli_cmd()
        .env("XDG_STATE_HOME", state)
        .args(args)
        .output()
        .expect("agenfleet");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Waits until the daemon's newest signed checkpoint is past record `seq` (asked by a
/// client that keeps no pin: each call starts from an empty state dir).
fn checkpoint_past(d: &Daemon, seq: u64) -> u64 {
    let scratch = tempdir("pin-scratch");
    let found = wait_for(Duration::from_secs(30), "a newer signed checkpoint", || {
        let _ = std::fs::remove_dir_all(scratch.join("agenfleet"));
        let (_, out, _) = pinned_cli(d, &scratch, &["--json", "audit", "status"]);
        let st: serde_json::Value = serde_json::from_str(&out).ok()?;
        st["last_checkpoint"]["seq"].as_u64().filter(|s| *s > seq)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    found
}

#[test]
fn the_client_pins_the_audit_key_and_calls_out_a_rollback_and_a_new_key() {
    if !docker_available("the_client_pins_the_audit_key_and_calls_out_a_rollback_and_a_new_key") {
        return;
    }
    let fast = "audit_checkpoint_every = 5\naudit_checkpoint_secs = 1\n";
    let mut a = Daemon::start("pin-a", fast);
    let state = tempdir("pin-client");
    notes(&a, 6);
    checkpoint_past(&a, 0);
    // First contact pins the key; the pin names it and the newest checkpoint.
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "status"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, pin, _) = pinned_cli(&a, &state, &["--json", "audit", "pin"]);
    let pin: serde_json::Value = serde_json::from_str(&pin).expect("pin json");
    let (_, st, _) = pinned_cli(&a, &state, &["--json", "audit", "status"]);
    let key =
        serde_json::from_str::<serde_json::Value>(&st).expect("status")["signing"].to_string();
    let pinned = pin["public_key"].as_str().unwrap_or("?");
    assert!(
        key.contains(&pinned[..16.min(pinned.len())]),
        "{pin} vs {key}"
    );
    // A copy of the log as it is now, then the log grows and the client follows it.
    a.kill9();
    let audit = a.dir.join("state/audit");
    let old = a.dir.join("audit-before");
    copy_dir(&audit, &old);
    a.restart();
    notes(&a, 15);
    let newest = checkpoint_past(&a, pin["newest"]["seq"].as_u64().unwrap_or(0) + 10);
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "status"]);
    assert_eq!(code, Some(0), "{err}");
    let (_, pin, _) = pinned_cli(&a, &state, &["--json", "audit", "pin"]);
    let kept: u64 = serde_json::from_str::<serde_json::Value>(&pin).expect("pin")["newest"]["seq"]
        .as_u64()
        .unwrap_or(0);
    assert!(kept >= newest, "the pin follows the log: {kept} < {newest}");

    // The log is put back as it was: the daemon starts on it, the client says no.
    a.kill9();
    copy_dir(&old, &audit);
    a.restart();
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "status"]);
    assert_eq!(code, Some(12), "{err}");
    assert!(err.contains("AUDIT ROLLBACK"), "{err}");
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "verify"]);
    assert_eq!(code, Some(12), "{err}");
    // The console says it too, first in its header.
    let cmd = format!(
        "env XDG_STATE_HOME={} {} --socket {}",
        state.display(),
        bin("agenfleet").display(),
        a.socket.display()
    );
    let t = Tmux::start_sized(&cmd, 80, 24);
    t.wait_screen("the rollback banner", |s| {
        s.lines()
            .next()
            .is_some_and(|l| l.contains("AUDIT ROLLBACK"))
    });
    drop(t);
    // Grown back past the kept checkpoint, the rewritten log is still called out: the
    // record the client verified has another hash now.
    notes(&a, 30);
    checkpoint_past(&a, kept);
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "status"]);
    assert_eq!(code, Some(12), "{err}");
    assert!(err.contains("rewritten"), "{err}");

    // `audit pin --forget` accepts what is there; another daemon (another key) answering
    // at the same socket is KEY CHANGED.
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "pin", "--forget"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, _, err) = pinned_cli(&a, &state, &["audit", "status"]);
    assert_eq!(code, Some(0), "{err}");
    a.kill9();
    let b = Daemon::start(
        "pin-b",
        &format!("{fast}socket = {:?}\n", a.socket.display().to_string()),
    );
    notes(&b, 6);
    checkpoint_past(&b, 0);
    let (code, _, err) = pinned_cli(&b, &state, &["audit", "status"]);
    assert_eq!(code, Some(12), "{err}");
    assert!(err.contains("KEY CHANGED"), "{err}");

    // Offline, no daemon: the directory checked against the pinned checkpoint — A's log
    // passes, the copy from before it grew is behind the pinned checkpoint.
    drop(b);
    let offline = |dir: &Path| {
        pinned_cli(
            &a,
            &state,
            &["audit", "verify", "--offline", dir.to_str().unwrap_or("")],
        )
    };
    let (code, out, err) = offline(&audit);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = offline(&old);
    assert_eq!(code, Some(12), "{out}{err}");
    let _ = std::fs::remove_dir_all(&state);
}
