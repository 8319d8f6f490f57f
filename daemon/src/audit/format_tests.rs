//! Tests of the audit log format: verdicts on damaged and forged logs, at every block size.

use super::*;
use std::io::Write;

fn write_log(dir: &Path, n: u64) -> Vec<u8> {
    std::fs::create_dir_all(dir).unwrap();
    let mut buf = segment_header(1).to_vec();
    let mut prev = GENESIS;
    for seq in 1..=n {
        prev = encode(
            &mut buf,
            seq,
            1000 + seq,
            &prev,
            format!("{{\"n\":{seq}}}").as_bytes(),
        );
    }
    std::fs::File::create(dir.join(segment_name(1)))
        .unwrap()
        .write_all(&buf)
        .unwrap();
    buf
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("agf-audit-fmt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn offsets(buf: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut pos = SEGMENT_HEADER;
    while pos < buf.len() {
        v.push(pos);
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        pos += RECORD_HEADER + len;
    }
    v
}

#[test]
fn a_good_log_verifies() {
    let d = tmp("good");
    write_log(&d, 50);
    let mut seen = 0;
    let r = scan(&d, |_, _| seen += 1).unwrap();
    assert_eq!((r.records, r.head_seq, seen), (50, 50, 50));
    assert!(r.bad.is_none() && r.torn_tail.is_none());
}

#[test]
fn every_flipped_byte_is_detected() {
    let d = tmp("flip");
    let good = write_log(&d, 5);
    let path = d.join(segment_name(1));
    for i in 0..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x01;
        std::fs::write(&path, &b).unwrap();
        let r = scan(&d, |_, _| {}).unwrap();
        assert!(
            r.bad.is_some() || r.records < 5,
            "flipping byte {i} went unnoticed: {r:?}"
        );
    }
}

#[test]
fn removed_and_swapped_records_are_named() {
    let d = tmp("swap");
    let good = write_log(&d, 6);
    let path = d.join(segment_name(1));
    let o = offsets(&good);
    // Remove record 3.
    let mut b = good[..o[2]].to_vec();
    b.extend_from_slice(&good[o[3]..]);
    std::fs::write(&path, &b).unwrap();
    let bad = scan(&d, |_, _| {}).unwrap().bad.expect("removal detected");
    assert_eq!(bad.seq, 3);
    assert!(bad.problem.contains("sequence number 4"), "{bad}");
    // Swap records 2 and 3.
    let mut b = good[..o[1]].to_vec();
    b.extend_from_slice(&good[o[2]..o[3]]);
    b.extend_from_slice(&good[o[1]..o[2]]);
    b.extend_from_slice(&good[o[3]..]);
    std::fs::write(&path, &b).unwrap();
    let bad = scan(&d, |_, _| {}).unwrap().bad.expect("swap detected");
    assert_eq!(bad.seq, 2);
}

/// Writes records `from..=to` as one segment chained to `prev`; returns the last hash.
fn write_segment(dir: &Path, from: u64, to: u64, mut prev: Hash) -> Hash {
    std::fs::create_dir_all(dir).unwrap();
    let mut buf = segment_header(from).to_vec();
    for seq in from..=to {
        let event = format!(
            "{{\"n\":{seq},\"pad\":\"{}\"}}",
            "x".repeat(seq as usize % 50)
        );
        prev = encode(&mut buf, seq, 1000 + seq, &prev, event.as_bytes());
    }
    std::fs::write(dir.join(segment_name(from)), &buf).unwrap();
    prev
}

/// Recomputes the checksum of the record at `o` (a forger's edit, not damage).
fn reseal(b: &mut [u8], o: usize) {
    let len = u32::from_le_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let crc = crc32fast::hash(&b[o + RECORD_HEADER..o + RECORD_HEADER + len]);
    b[o + 4..o + 8].copy_from_slice(&crc.to_le_bytes());
}

#[test]
fn the_block_size_changes_no_verdict() {
    // Records cross block boundaries (blocks of 37 and 150 bytes) and segments: every
    // flipped byte gets the same report, visits and all, as with whole-segment blocks.
    let d = tmp("blocks");
    let h = write_segment(&d, 1, 6, GENESIS);
    write_segment(&d, 7, 11, h);
    let paths = [d.join(segment_name(1)), d.join(segment_name(7))];
    let goods: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let run = |block| {
        let mut seen = Vec::new();
        let r = scan_blocks(&d, block, |seq, h| seen.push((seq, *h))).unwrap();
        (r, seen)
    };
    let whole = run(BLOCK);
    assert_eq!(whole.0.records, 11);
    assert!(whole.0.bad.is_none() && whole.0.torn_tail.is_none());
    for small in [37, 150] {
        assert_eq!(run(small), whole);
    }
    for (p, good) in paths.iter().zip(&goods) {
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x10;
            std::fs::write(p, &b).unwrap();
            let whole = run(BLOCK);
            assert!(whole.0.bad.is_some() || whole.0.records < 11, "byte {i}");
            for small in [37, 150] {
                assert_eq!(
                    run(small),
                    whole,
                    "byte {i} of {}, blocks of {small}",
                    p.display()
                );
            }
        }
        // Cut short: a torn tail in the last segment, damage in the first.
        for cut in [1, 9, 60] {
            std::fs::write(p, &good[..good.len() - cut]).unwrap();
            let whole = run(BLOCK);
            for small in [37, 150] {
                assert_eq!(run(small), whole, "cut {cut}, blocks of {small}");
            }
        }
        std::fs::write(p, good).unwrap();
    }
}

#[test]
fn forged_records_are_found_across_parallel_batches() {
    // Enough records for the parallel pass (batches of 1024): a record whose `prev`
    // was rewritten with a fresh checksum is caught at a batch's first record and in
    // the middle of one; a clean log still verifies in full.
    let d = tmp("batches");
    write_segment(&d, 1, 9000, GENESIS);
    let path = d.join(segment_name(1));
    let good = std::fs::read(&path).unwrap();
    let o = offsets(&good);
    let r = scan(&d, |_, _| {}).unwrap();
    assert_eq!((r.records, r.head_seq), (9000, 9000));
    assert!(r.bad.is_none());
    for seq in [1025usize, 3000, 9000] {
        let mut b = good.clone();
        let at = o[seq - 1] + RECORD_HEADER + 16;
        b[at] ^= 0xff;
        reseal(&mut b, o[seq - 1]);
        std::fs::write(&path, &b).unwrap();
        let mut last = 0;
        let r = scan(&d, |s, _| last = s).unwrap();
        let bad = r.bad.expect("forgery detected");
        assert_eq!((bad.seq, bad.offset), (seq as u64, o[seq - 1] as u64));
        assert!(bad.problem.contains("does not chain"), "{bad}");
        assert_eq!((r.records, last), (seq as u64 - 1, seq as u64 - 1));
    }
}

#[test]
fn torn_tail_versus_damage_in_the_middle() {
    let d = tmp("torn");
    let good = write_log(&d, 6);
    let path = d.join(segment_name(1));
    let o = offsets(&good);
    // Cut bytes off the last record: a torn tail, the 5 before it are fine.
    std::fs::write(&path, &good[..good.len() - 7]).unwrap();
    let r = scan(&d, |_, _| {}).unwrap();
    assert!(r.bad.is_none());
    assert_eq!(r.records, 5);
    assert_eq!(r.torn_tail.as_ref().unwrap().1, o[5] as u64);
    // Zero a block in the middle: damage, named, not mistaken for a torn tail.
    let mut b = good.clone();
    for x in &mut b[o[2] + 2..o[2] + 30] {
        *x = 0;
    }
    std::fs::write(&path, &b).unwrap();
    let r = scan(&d, |_, _| {}).unwrap();
    assert!(r.torn_tail.is_none());
    assert_eq!(r.bad.unwrap().seq, 3);
}
