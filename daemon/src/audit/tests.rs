//! Tests of the audit log: group commit under concurrent writers, paging, reopening after a torn tail, damage, rollback detection.

use super::*;

fn ev(i: u64) -> AuditEvent {
    AuditEvent {
        actor: "tester".into(),
        action: if i.is_multiple_of(2) {
            "agent.create".into()
        } else {
            "operator.note".into()
        },
        tenant: Some("t".into()),
        agent: Some(format!("a{}", i % 3)),
        outcome: "ok".into(),
        detail: format!("event {i}"),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("agf-audit-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_get_distinct_durable_sequence_numbers() {
    let d = tmp("conc");
    let opts = Options {
        checkpoint_every: 50,
        ..Default::default()
    };
    let (log, _) = AuditLog::open(&d, Some(Signer::ephemeral()), "test".into(), opts).unwrap();
    let mut tasks = Vec::new();
    for w in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..25 {
                seqs.push(log.record(&ev(w * 100 + i)).await.unwrap());
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    assert_eq!(all, (1..=400).collect::<Vec<_>>());
    let r = verify_dir(&d, None);
    assert!(r.valid, "{r:?}");
    assert_eq!(r.records, 400);
    assert!(r.checkpoints_verified >= 1, "{r:?}");
    let q = log
        .query(
            &AuditQuery {
                action: Some("agent.".into()),
                agent: Some("t/a1".into()),
                limit: 5,
                newest: true,
                ..Default::default()
            },
            &|_| true,
        )
        .unwrap();
    assert_eq!(q.len(), 5);
    assert!(q.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(q
        .iter()
        .all(|e| e.event.action == "agent.create" && e.event.agent.as_deref() == Some("a1")));
}

#[tokio::test]
async fn queries_page_across_segments() {
    let d = tmp("pages");
    let opts = Options {
        segment_bytes: 2048,
        ..Default::default()
    };
    let (log, _) = AuditLog::open(&d, None, "none".into(), opts).unwrap();
    for i in 0..200 {
        log.record(&ev(i)).await.unwrap();
    }
    assert!(
        format::list_segments(&d).unwrap().len() > 5,
        "several segments"
    );
    let page = |after: u64| {
        log.query(
            &AuditQuery {
                after_seq: after,
                limit: 30,
                ..Default::default()
            },
            &|_| true,
        )
        .unwrap()
    };
    let mut all = Vec::new();
    let mut after = 0;
    loop {
        let p = page(after);
        if p.is_empty() {
            break;
        }
        after = p.last().unwrap().seq;
        all.extend(p.into_iter().map(|e| e.seq));
    }
    assert_eq!(all, (1..=200).collect::<Vec<_>>());
    let newest = log
        .query(
            &AuditQuery {
                limit: 7,
                newest: true,
                ..Default::default()
            },
            &|_| true,
        )
        .unwrap();
    assert_eq!(
        newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (194..=200).collect::<Vec<_>>()
    );
    assert!(verify_dir(&d, None).valid);
}

#[tokio::test]
async fn reopen_continues_the_chain_and_truncates_a_torn_tail() {
    let d = tmp("reopen");
    {
        let (log, _) = AuditLog::open(&d, None, "none".into(), Options::default()).unwrap();
        for i in 0..10 {
            log.record(&ev(i)).await.unwrap();
        }
    }
    // Tear the last record.
    let (_, seg) = format::list_segments(&d).unwrap().pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 5).unwrap();
    let (log, report) = AuditLog::open(&d, None, "none".into(), Options::default()).unwrap();
    assert_eq!(report.records, 9);
    assert!(report.truncated.is_some());
    assert_eq!(log.record(&ev(99)).await.unwrap(), 10);
    let r = verify_dir(&d, None);
    assert!(r.valid, "{r:?}");
    assert_eq!(r.records, 10);
}

#[tokio::test]
async fn damage_closes_the_log_for_writing() {
    let d = tmp("damage");
    {
        let (log, _) = AuditLog::open(&d, None, "none".into(), Options::default()).unwrap();
        for i in 0..10 {
            log.record(&ev(i)).await.unwrap();
        }
    }
    let (_, seg) = format::list_segments(&d).unwrap().pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    b[60] ^= 0xff;
    std::fs::write(&seg, &b).unwrap();
    let (log, report) = AuditLog::open(&d, None, "none".into(), Options::default()).unwrap();
    assert!(
        report.damage.as_ref().unwrap().contains("record 1"),
        "{report:?}"
    );
    assert!(!log.status().writable);
    assert!(matches!(
        log.record(&ev(1)).await,
        Err(AuditError::Closed(_))
    ));
    // The damaged file was not rewritten.
    assert_eq!(std::fs::read(&seg).unwrap(), b);
}

#[tokio::test]
async fn a_kept_checkpoint_detects_rollback() {
    let d = tmp("rollback");
    let opts = Options {
        checkpoint_every: 5,
        ..Default::default()
    };
    let signer = Signer::ephemeral();
    let (log, _) = AuditLog::open(&d, Some(signer), "test".into(), opts.clone()).unwrap();
    for i in 0..5 {
        log.record(&ev(i)).await.unwrap();
    }
    let old = std::fs::read(format::list_segments(&d).unwrap()[0].1.clone()).unwrap();
    for i in 5..10 {
        log.record(&ev(i)).await.unwrap();
    }
    // The checkpoint is written right after the batch is acknowledged.
    let mut kept = None;
    for _ in 0..200 {
        kept = log.status().last_checkpoint.filter(|c| c.seq == 10);
        if kept.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let kept = kept.expect("checkpoint at 10");
    drop(log);
    // Replace the whole log (and its checkpoints) with an older copy.
    std::fs::write(&format::list_segments(&d).unwrap()[0].1, &old).unwrap();
    std::fs::remove_file(d.join(checkpoint::CHECKPOINTS_FILE)).unwrap();
    let plain = verify_dir(&d, None);
    assert!(plain.valid, "an older copy is self-consistent");
    let r = verify_dir(&d, Some(&kept));
    assert!(!r.valid);
    assert!(r
        .checkpoint_check
        .unwrap()
        .contains("truncated or rolled back"));
}

/// Rewrites record `seq`'s event in place with another of the same length and a fresh
/// checksum — the edit a careful attacker makes; answers the segment's path.
fn forge(dir: &Path, seq: u64) -> PathBuf {
    let (_, path) = format::list_segments(dir).unwrap().pop().unwrap();
    let mut buf = std::fs::read(&path).unwrap();
    let mut pos = format::SEGMENT_HEADER;
    loop {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        let body = pos + format::RECORD_HEADER;
        let s = u64::from_le_bytes(buf[body..body + 8].try_into().unwrap());
        if s == seq {
            let ev = body + format::BODY_FIXED;
            let text = String::from_utf8(buf[ev..body + len].to_vec()).unwrap();
            let forged = text.replace("tester", "intrdr");
            assert_eq!(forged.len(), text.len());
            buf[ev..body + len].copy_from_slice(forged.as_bytes());
            let crc = crc32fast::hash(&buf[body..body + len]);
            buf[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
            std::fs::write(&path, &buf).unwrap();
            return path;
        }
        pos = body + len;
    }
}

#[tokio::test]
async fn the_running_check_finds_a_record_changed_after_it_was_written() {
    let d = tmp("watch");
    let (log, _) = AuditLog::open(&d, None, "test".into(), Options::default()).unwrap();
    for i in 0..5 {
        log.record(&ev(i)).await.unwrap();
    }
    let start = watch::start(&d).unwrap();
    let h5 = log.head().expect("a head");
    assert_eq!(h5.0, 5);
    let first = watch::check(&d, &start, &[h5]).expect("an intact log checks");
    assert_eq!(first.seq, 5);
    let e = watch::check(&d, &start, &[(9, h5.1)]).unwrap_err();
    assert!(
        e.contains("the log ends at record 5 but record 9 was written"),
        "{e}"
    );
    for i in 5..8 {
        log.record(&ev(i)).await.unwrap();
    }
    let h8 = log.head().unwrap();
    let second = watch::check(&d, &start, &[h5, h8]).expect("appends are fine");
    assert_eq!(second.seq, 8);
    // The newest record, rewritten with a valid checksum: only the hash the writer gave
    // it can tell.
    forge(&d, 8);
    let e = watch::check(&d, &first, &[h5, h8]).unwrap_err();
    assert!(e.contains("record 8 changed since it was written"), "{e}");
    // A record in the middle breaks the chain.
    forge(&d, 6);
    let e = watch::check(&d, &first, &[]).unwrap_err();
    assert!(e.contains("record 7 does not chain to record 6"), "{e}");
    // Truncation below what was checked.
    let path = format::list_segments(&d).unwrap().pop().unwrap().1;
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(second.offset - 10).unwrap();
    let e = watch::check(&d, &second, &[]).unwrap_err();
    assert!(e.contains("truncated"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_under_writers_is_a_signed_prefix_that_verifies_alone() {
    let d = tmp("cut");
    let opts = Options {
        segment_bytes: 4096,
        ..Default::default()
    };
    let (log, _) = AuditLog::open(&d, Some(Signer::ephemeral()), "test".into(), opts).unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    log.record(&ev(w * 1000 + i)).await.unwrap();
                }
            })
        })
        .collect();
    // Cut while the writers run.
    while log.status().head_seq < 150 {
        tokio::task::yield_now().await;
    }
    let cut = log.cut().await.unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(log.status().head_seq, 400);
    assert!(
        cut.checkpoint.seq >= 150 && cut.checkpoint.seq < 400,
        "{cut:?}"
    );
    checkpoint::verify_signature(&cut.checkpoint, None).unwrap();
    // Copy the segments up to the cut, the last one only up to its length there.
    let copy = tmp("cut-copy");
    std::fs::create_dir_all(&copy).unwrap();
    let (current, len) = cut.segment.clone().unwrap();
    for (_, path) in format::list_segments(&d).unwrap() {
        let mut bytes = std::fs::read(&path).unwrap();
        if path == current {
            bytes.truncate(len as usize);
        }
        std::fs::write(copy.join(path.file_name().unwrap()), bytes).unwrap();
        if path == current {
            break;
        }
    }
    let r = verify_dir(&copy, Some(&cut.checkpoint));
    assert!(r.valid, "{r:?}");
    assert_eq!(
        r.head_seq, cut.checkpoint.seq,
        "the copy ends exactly at the cut"
    );
    assert!(r.torn_tail.is_none(), "{r:?}");
    // A log without a signing key refuses a cut.
    let unsigned = tmp("cut-unsigned");
    let (log, _) = AuditLog::open(&unsigned, None, "none".into(), Options::default()).unwrap();
    log.record(&ev(1)).await.unwrap();
    assert!(
        log.cut().await.is_err(),
        "no key, no checkpoint to vouch for a copy"
    );
    for p in [d, copy, unsigned] {
        let _ = std::fs::remove_dir_all(p);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_check_takes_a_head_expected_twice_and_follows_retention() {
    let d = tmp("watch-twice");
    let opts = Options {
        segment_bytes: 4096,
        ..Default::default()
    };
    let (log, _) = AuditLog::open(&d, Some(Signer::ephemeral()), "test".into(), opts).unwrap();
    let from = watch::start(&d).unwrap();
    for i in 0..5 {
        log.record(&ev(i)).await.unwrap();
    }
    // The head did not move between two checks: it is expected twice.
    let head = log.head().unwrap();
    let end = watch::check(&d, &from, &[head, head]).unwrap();
    assert_eq!(end.seq, 5);
    // Segments removed under the check (retention): it goes on from the anchor.
    for i in 0..200 {
        log.record(&ev(i)).await.unwrap();
    }
    let segs = format::list_segments(&d).unwrap();
    assert!(segs.len() >= 3, "{segs:?}");
    let survey = retention::survey(&segs[1].1).unwrap();
    log.anchor(survey.last_seq, survey.last_hash).await.unwrap();
    for (_, p) in &segs[..2] {
        std::fs::remove_file(p).unwrap();
    }
    let end = watch::check(&d, &end, &[log.head().unwrap()]).unwrap();
    assert_eq!(end.seq, 205);
    let r = verify_dir(&d, None);
    assert!(r.valid, "{r:?}");
    assert_eq!(r.records, 205 - survey.last_seq);
    // Without the anchor, the start is missing.
    std::fs::remove_file(d.join(checkpoint::ANCHOR_FILE)).unwrap();
    assert!(!verify_dir(&d, None).valid);
    let _ = std::fs::remove_dir_all(&d);
}
