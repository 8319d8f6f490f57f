//! The on-disk format of the audit log, and reading and verifying it.
//!
//! A segment file (`audit-<first seq, 20 digits>.seg`) starts with an 8-byte magic and the
//! sequence number of its first record. Each record is
//! `len: u32 LE | crc32(body): u32 LE | body`, where
//! `body = seq: u64 LE | time_ms: u64 LE | prev_hash: [u8; 32] | event (JSON)`.
//! A record's hash is SHA-256(body); each body carries the hash of the record before it, so
//! the records form a chain: editing, removing, reordering or inserting one breaks it.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

pub const MAGIC: &[u8; 8] = b"AGFAUD01";
pub const SEGMENT_HEADER: usize = 16;
pub const RECORD_HEADER: usize = 8;
pub const BODY_FIXED: usize = 8 + 8 + 32;
/// Largest event accepted (JSON bytes).
pub const MAX_EVENT: usize = 256 * 1024;
/// The hash before the first record.
pub const GENESIS: [u8; 32] = [0u8; 32];

pub type Hash = [u8; 32];

/// Appends the encoding of one record to `out`; returns its hash.
pub fn encode(out: &mut Vec<u8>, seq: u64, time_ms: u64, prev: &Hash, event: &[u8]) -> Hash {
    let body_len = BODY_FIXED + event.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0u8; 4]);
    let body_start = out.len();
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&time_ms.to_le_bytes());
    out.extend_from_slice(prev);
    out.extend_from_slice(event);
    let body = &out[body_start..];
    let crc = crc32fast::hash(body);
    let hash: Hash = Sha256::digest(body).into();
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    hash
}

pub fn segment_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.seg")
}

pub fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&first_seq.to_le_bytes());
    h
}

/// The segment files in `dir`, ordered by their first sequence number.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().to_string();
        if let Some(n) = name
            .strip_prefix("audit-")
            .and_then(|s| s.strip_suffix(".seg"))
        {
            if let Ok(first) = n.parse::<u64>() {
                out.push((first, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One record as read back (borrowing its event bytes from the read buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub seq: u64,
    pub time_ms: u64,
    pub prev: Hash,
    pub hash: Hash,
    pub event: &'a [u8],
}

/// What is wrong with the first bad record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The sequence number the record at that place should have.
    pub seq: u64,
    pub segment: PathBuf,
    pub offset: u64,
    pub problem: String,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "record {} ({} at byte {}): {}",
            self.seq,
            self.segment
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default(),
            self.offset,
            self.problem
        )
    }
}

/// The outcome of reading a whole log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Records that verified, in order.
    pub records: u64,
    pub bytes: u64,
    /// Sequence number and hash of the last good record (0 and GENESIS when empty).
    pub head_seq: u64,
    pub head_hash: Hash,
    /// The first record that failed, if any.
    pub bad: Option<BadRecord>,
    /// A partly written record at the very end (a torn write): segment and offset where
    /// the good data ends.
    pub torn_tail: Option<(PathBuf, u64)>,
    /// Where the last segment's good data ends (for appending).
    pub end: Option<(PathBuf, u64)>,
}

enum Step<'a> {
    Ok(Record<'a>, usize),
    End,
    /// Not enough bytes left for the record the header announces, or a bad checksum on
    /// the last bytes of the file.
    Short(String),
    Bad(String),
}

fn parse_at(buf: &[u8], pos: usize) -> Step<'_> {
    let rest = &buf[pos..];
    if rest.is_empty() {
        return Step::End;
    }
    if rest.len() < RECORD_HEADER {
        return Step::Short(format!("only {} bytes left of a record header", rest.len()));
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
    if !(BODY_FIXED..=BODY_FIXED + MAX_EVENT).contains(&len) {
        if RECORD_HEADER + len > rest.len() && len <= BODY_FIXED + MAX_EVENT {
            return Step::Short(format!(
                "record of {len} bytes but only {} left",
                rest.len() - RECORD_HEADER
            ));
        }
        return Step::Bad(format!("impossible record length {len}"));
    }
    if RECORD_HEADER + len > rest.len() {
        return Step::Short(format!(
            "record of {len} bytes but only {} left",
            rest.len() - RECORD_HEADER
        ));
    }
    let body = &rest[RECORD_HEADER..RECORD_HEADER + len];
    if crc32fast::hash(body) != crc {
        if RECORD_HEADER + len == rest.len() {
            return Step::Short("checksum mismatch in the last record of the file".into());
        }
        return Step::Bad("checksum mismatch (the record's bytes were changed)".into());
    }
    let seq = u64::from_le_bytes(body[0..8].try_into().unwrap_or([0; 8]));
    let time_ms = u64::from_le_bytes(body[8..16].try_into().unwrap_or([0; 8]));
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&body[16..48]);
    let hash: Hash = Sha256::digest(body).into();
    Step::Ok(
        Record {
            seq,
            time_ms,
            prev,
            hash,
            event: &body[48..],
        },
        RECORD_HEADER + len,
    )
}

/// One record's place and the verdicts computed for it ahead of the in-order chain check.
#[derive(Clone, Copy)]
struct Pre {
    pos: usize,
    len: usize,
    crc_ok: bool,
    hash: Hash,
}

/// Record boundaries of a segment (as far as the length fields are plausible), with each
/// record's checksum verdict and hash computed in parallel on all cores into `out` (reused
/// from segment to segment). The chain itself is then checked in order by `scan`.
fn precompute(buf: &[u8], out: &mut Vec<Pre>) {
    out.clear();
    let mut pos = SEGMENT_HEADER;
    while pos + RECORD_HEADER <= buf.len() {
        let len = u32::from_le_bytes([buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]]) as usize;
        if !(BODY_FIXED..=BODY_FIXED + MAX_EVENT).contains(&len)
            || pos + RECORD_HEADER + len > buf.len()
        {
            break;
        }
        out.push(Pre {
            pos,
            len,
            crc_ok: false,
            hash: [0u8; 32],
        });
        pos += RECORD_HEADER + len;
    }
    let work = |chunk: &mut [Pre]| {
        for p in chunk {
            let crc = u32::from_le_bytes([
                buf[p.pos + 4],
                buf[p.pos + 5],
                buf[p.pos + 6],
                buf[p.pos + 7],
            ]);
            let body = &buf[p.pos + RECORD_HEADER..p.pos + RECORD_HEADER + p.len];
            p.crc_ok = crc32fast::hash(body) == crc;
            if p.crc_ok {
                p.hash = Sha256::digest(body).into();
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads < 2 || out.len() < 4096 {
        work(out);
        return;
    }
    let per = out.len().div_ceil(threads);
    std::thread::scope(|sc| {
        for chunk in out.chunks_mut(per) {
            sc.spawn(move || work(chunk));
        }
    });
}

fn record_at(buf: &[u8], pos: usize, len: usize, hash: Hash) -> Record<'_> {
    let body = &buf[pos + RECORD_HEADER..pos + RECORD_HEADER + len];
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&body[16..48]);
    Record {
        seq: u64::from_le_bytes(body[0..8].try_into().unwrap_or([0; 8])),
        time_ms: u64::from_le_bytes(body[8..16].try_into().unwrap_or([0; 8])),
        prev,
        hash,
        event: &body[48..],
    }
}

/// Reads the records of one segment in order, checking each checksum but not the chain
/// (that is `scan`'s job): for queries, which start at the segment they need.
pub fn read_segment(path: &Path, mut visit: impl FnMut(&Record<'_>)) -> std::io::Result<()> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    if buf.len() < SEGMENT_HEADER || &buf[..8] != MAGIC {
        return Ok(());
    }
    let mut pos = SEGMENT_HEADER;
    while let Step::Ok(rec, used) = parse_at(&buf, pos) {
        visit(&rec);
        pos += used;
    }
    Ok(())
}

/// Whether any valid record starts after `from` (then a short record is damage in the
/// middle, not a torn tail).
fn valid_record_after(buf: &[u8], from: usize) -> bool {
    (from + 1..buf.len().saturating_sub(RECORD_HEADER + BODY_FIXED))
        .any(|p| matches!(parse_at(buf, p), Step::Ok(..)))
}

/// Reads every segment in `dir`, checking checksums, sequence numbers and the hash chain.
/// `visit` sees each good record in order. Stops at the first bad record.
pub fn scan(dir: &Path, visit: impl FnMut(&Record<'_>)) -> std::io::Result<ScanReport> {
    let segments = list_segments(dir)?;
    // Read the next segment while this one is being checked; two buffers go back and
    // forth, so each is allocated (and faulted in) once.
    std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Vec<u8>>>(1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let paths: Vec<PathBuf> = segments.iter().map(|(_, p)| p.clone()).collect();
        sc.spawn(move || {
            for p in paths {
                let mut buf = free_rx.try_recv().unwrap_or_default();
                buf.clear();
                let r = File::open(&p).and_then(|mut f| {
                    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
                    buf.reserve(len);
                    f.read_to_end(&mut buf)
                });
                if tx.send(r.map(|_| buf)).is_err() {
                    return;
                }
            }
        });
        scan_segments(&segments, rx, free_tx, visit)
    })
}

fn scan_segments(
    segments: &[(u64, PathBuf)],
    bufs: std::sync::mpsc::Receiver<std::io::Result<Vec<u8>>>,
    free: std::sync::mpsc::Sender<Vec<u8>>,
    mut visit: impl FnMut(&Record<'_>),
) -> std::io::Result<ScanReport> {
    let mut report = ScanReport {
        records: 0,
        bytes: 0,
        head_seq: 0,
        head_hash: GENESIS,
        bad: None,
        torn_tail: None,
        end: None,
    };
    let n = segments.len();
    let mut pre = Vec::new();
    for (i, (first, path)) in segments.iter().enumerate() {
        let last_segment = i + 1 == n;
        let buf = bufs
            .recv()
            .map_err(|_| std::io::Error::other("the segment reader stopped"))??;
        report.bytes += buf.len() as u64;
        let bad = |report: &mut ScanReport, offset: usize, problem: String| {
            report.bad = Some(BadRecord {
                seq: report.head_seq + 1,
                segment: path.clone(),
                offset: offset as u64,
                problem,
            });
        };
        if buf.len() < SEGMENT_HEADER || &buf[..8] != MAGIC {
            if last_segment
                && buf.len() < SEGMENT_HEADER
                && MAGIC.starts_with(&buf[..buf.len().min(8)])
            {
                // A segment whose header was being written when the process died.
                report.torn_tail = Some((path.clone(), 0));
                report.end = Some((path.clone(), 0));
                return Ok(report);
            }
            bad(&mut report, 0, "not an audit segment (bad header)".into());
            return Ok(report);
        }
        let header_first = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
        if header_first != *first || header_first != report.head_seq + 1 {
            let next = report.head_seq + 1;
            bad(
                &mut report,
                8,
                format!(
                    "segment starts at record {header_first} but the log continues at {next} (a segment is missing, renamed or out of order)"
                ),
            );
            return Ok(report);
        }
        precompute(&buf, &mut pre);
        let mut next_pre = 0;
        let mut pos = SEGMENT_HEADER;
        loop {
            let step = match pre.get(next_pre) {
                Some(&Pre {
                    pos: p,
                    len,
                    crc_ok: ok,
                    hash,
                }) if p == pos => {
                    next_pre += 1;
                    if ok {
                        Step::Ok(record_at(&buf, pos, len, hash), RECORD_HEADER + len)
                    } else if pos + RECORD_HEADER + len == buf.len() {
                        Step::Short("checksum mismatch in the last record of the file".into())
                    } else {
                        Step::Bad("checksum mismatch (the record's bytes were changed)".into())
                    }
                }
                _ => parse_at(&buf, pos),
            };
            match step {
                Step::End => break,
                Step::Ok(rec, used) => {
                    if rec.seq != report.head_seq + 1 {
                        bad(
                            &mut report,
                            pos,
                            format!("holds sequence number {} (records were removed, reordered or inserted)", rec.seq),
                        );
                        return Ok(report);
                    }
                    if rec.prev != report.head_hash {
                        bad(
                            &mut report,
                            pos,
                            "does not chain to the record before it (hash mismatch)".into(),
                        );
                        return Ok(report);
                    }
                    visit(&rec);
                    report.records += 1;
                    report.head_seq = rec.seq;
                    report.head_hash = rec.hash;
                    pos += used;
                }
                Step::Short(why) => {
                    if last_segment && !valid_record_after(&buf, pos) {
                        report.torn_tail = Some((path.clone(), pos as u64));
                        report.end = Some((path.clone(), pos as u64));
                        return Ok(report);
                    }
                    bad(&mut report, pos, why);
                    return Ok(report);
                }
                Step::Bad(why) => {
                    bad(&mut report, pos, why);
                    return Ok(report);
                }
            }
        }
        if last_segment {
            report.end = Some((path.clone(), pos as u64));
        }
        let _ = free.send(buf);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
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
        let r = scan(&d, |_| seen += 1).unwrap();
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
            let r = scan(&d, |_| {}).unwrap();
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
        let bad = scan(&d, |_| {}).unwrap().bad.expect("removal detected");
        assert_eq!(bad.seq, 3);
        assert!(bad.problem.contains("sequence number 4"), "{bad}");
        // Swap records 2 and 3.
        let mut b = good[..o[1]].to_vec();
        b.extend_from_slice(&good[o[2]..o[3]]);
        b.extend_from_slice(&good[o[1]..o[2]]);
        b.extend_from_slice(&good[o[3]..]);
        std::fs::write(&path, &b).unwrap();
        let bad = scan(&d, |_| {}).unwrap().bad.expect("swap detected");
        assert_eq!(bad.seq, 2);
    }

    #[test]
    fn torn_tail_versus_damage_in_the_middle() {
        let d = tmp("torn");
        let good = write_log(&d, 6);
        let path = d.join(segment_name(1));
        let o = offsets(&good);
        // Cut bytes off the last record: a torn tail, the 5 before it are fine.
        std::fs::write(&path, &good[..good.len() - 7]).unwrap();
        let r = scan(&d, |_| {}).unwrap();
        assert!(r.bad.is_none());
        assert_eq!(r.records, 5);
        assert_eq!(r.torn_tail.as_ref().unwrap().1, o[5] as u64);
        // Zero a block in the middle: damage, named, not mistaken for a torn tail.
        let mut b = good.clone();
        for x in &mut b[o[2] + 2..o[2] + 30] {
            *x = 0;
        }
        std::fs::write(&path, &b).unwrap();
        let r = scan(&d, |_| {}).unwrap();
        assert!(r.torn_tail.is_none());
        assert_eq!(r.bad.unwrap().seq, 3);
    }
}
