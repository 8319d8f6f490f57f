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

pub(crate) enum Step<'a> {
    Ok(Record<'a>, usize),
    End,
    /// Not enough bytes left for the record the header announces, or a bad checksum on
    /// the last bytes of the file.
    Short(String),
    Bad(String),
}

/// The record at `pos` of `buf` (a segment's bytes after its header, or any part of them
/// that starts at a record).
pub(crate) fn parse(buf: &[u8], pos: usize) -> Step<'_> {
    parse_at(buf, pos)
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

/// Bytes read from a segment at a time. A block is read, split into records, hashed and
/// chain-checked while it is still in the processor's cache, and three blocks go round
/// between the reader and the checker, so memory is allocated (and faulted in) once: a
/// few MB, whatever the segment size.
const BLOCK: usize = 4 << 20;
/// The largest record, header included.
const MAX_RECORD: usize = RECORD_HEADER + BODY_FIXED + MAX_EVENT;

/// One record of a block, and the verdicts computed for it ahead of the in-order check.
#[derive(Clone, Copy)]
struct Pre {
    /// Where the record starts in its block.
    pos: usize,
    len: usize,
    seq: u64,
    crc_ok: bool,
    /// The record's `prev` is the hash of the record before it in the same batch of the
    /// parallel pass (false: not known there, the in-order pass compares the bytes).
    linked: bool,
    hash: Hash,
}

/// A piece of a segment handed from the reader thread to the checker.
struct Block {
    /// Index of the segment in the scan's list.
    seg: usize,
    /// Offset of `data[0]` in the segment file.
    base: usize,
    data: Vec<u8>,
    /// The whole records found in `data`, in order.
    recs: Vec<Pre>,
    /// Where the reader's walk over record lengths stopped in `data`; bytes after it (only
    /// in a segment's last block) are a torn record or damage, judged by the slow path.
    walked_to: usize,
    /// The segment's last block: the file ends here, or its lengths stop making sense.
    last: bool,
}

/// Splits `data` from `from` into records as far as their lengths are plausible and they
/// fit; returns where that stopped and whether it stopped at an impossible length.
fn walk(data: &[u8], from: usize, out: &mut Vec<Pre>) -> (usize, bool) {
    out.clear();
    let mut pos = from;
    while pos + RECORD_HEADER <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        if !(BODY_FIXED..=BODY_FIXED + MAX_EVENT).contains(&len) {
            return (pos, true);
        }
        if pos + RECORD_HEADER + len > data.len() {
            break;
        }
        out.push(Pre {
            pos,
            len,
            seq: 0,
            crc_ok: false,
            linked: false,
            hash: GENESIS,
        });
        pos += RECORD_HEADER + len;
    }
    (pos, false)
}

/// Checksum, hash, sequence number and in-batch link of each record, on all cores.
fn precompute(data: &[u8], recs: &mut [Pre]) {
    let work = |batch: &mut [Pre]| {
        let mut before: Option<Hash> = None;
        for p in batch {
            let crc = u32::from_le_bytes([
                data[p.pos + 4],
                data[p.pos + 5],
                data[p.pos + 6],
                data[p.pos + 7],
            ]);
            let body = &data[p.pos + RECORD_HEADER..p.pos + RECORD_HEADER + p.len];
            p.crc_ok = crc32fast::hash(body) == crc;
            if p.crc_ok {
                p.hash = Sha256::digest(body).into();
                p.seq = u64::from_le_bytes(body[0..8].try_into().unwrap_or([0; 8]));
                p.linked = before.is_some_and(|h| body[16..48] == h);
                before = Some(p.hash);
            } else {
                before = None;
            }
        }
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8);
    if threads < 2 || recs.len() < 4096 {
        work(recs);
        return;
    }
    // Small batches handed out on demand: a core that also runs the reader thread takes
    // fewer, and nobody waits long for the slowest at the end of a block.
    let batches = std::sync::Mutex::new(recs.chunks_mut(1024));
    let next = || batches.lock().ok().and_then(|mut b| b.next());
    std::thread::scope(|sc| {
        for _ in 1..threads {
            sc.spawn(|| {
                while let Some(b) = next() {
                    work(b);
                }
            });
        }
        while let Some(b) = next() {
            work(b);
        }
    });
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
/// `visit` sees each good record's sequence number and hash, in order. Stops at the first
/// bad record.
/// The chain starts after the retention anchor, if any (segments wholly before it, left
/// by a removal cut short, are skipped).
pub fn scan(dir: &Path, visit: impl FnMut(u64, &Hash)) -> std::io::Result<ScanReport> {
    scan_blocks(dir, BLOCK, visit)
}

fn scan_blocks(
    dir: &Path,
    block: usize,
    visit: impl FnMut(u64, &Hash),
) -> std::io::Result<ScanReport> {
    let start = match super::checkpoint::load_anchor(dir).map_err(std::io::Error::other)? {
        Some(a) => super::checkpoint::anchor_start(&a).map_err(std::io::Error::other)?,
        None => (0, GENESIS),
    };
    let mut segments = list_segments(dir)?;
    segments.retain(|(first, _)| *first > start.0);
    std::thread::scope(|sc| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<std::io::Result<Block>>(1);
        let (free_tx, free_rx) = std::sync::mpsc::channel::<Block>();
        let paths: Vec<PathBuf> = segments.iter().map(|(_, p)| p.clone()).collect();
        sc.spawn(move || read_blocks(&paths, block, &tx, &free_rx));
        check_blocks(&segments, start, rx, free_tx, visit)
    })
}

/// The reader thread: each segment in blocks of about `block` bytes, each block cut after
/// its last whole record (the rest starts the next block) and split into records.
fn read_blocks(
    paths: &[PathBuf],
    block: usize,
    tx: &std::sync::mpsc::SyncSender<std::io::Result<Block>>,
    free: &std::sync::mpsc::Receiver<Block>,
) {
    let mut made = 0;
    let mut carry = Vec::new();
    for (seg, path) in paths.iter().enumerate() {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        carry.clear();
        let mut base = 0;
        loop {
            // Three blocks go round; a fourth is never needed.
            let mut b = match free.try_recv() {
                Ok(b) => b,
                Err(_) if made < 3 => {
                    made += 1;
                    Block {
                        seg: 0,
                        base: 0,
                        data: Vec::with_capacity(block + MAX_RECORD),
                        recs: Vec::new(),
                        walked_to: 0,
                        last: false,
                    }
                }
                Err(_) => match free.recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            b.data.clear();
            b.data.extend_from_slice(&carry);
            // The carry is less than one record, for which the block has room.
            let want = block;
            let got = match (&mut file).take(want as u64).read_to_end(&mut b.data) {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            let eof = got < want;
            let from = if base == 0 {
                SEGMENT_HEADER.min(b.data.len())
            } else {
                0
            };
            let (walked_to, stopped) = walk(&b.data, from, &mut b.recs);
            carry.clear();
            if !eof && !stopped {
                carry.extend_from_slice(&b.data[walked_to..]);
                b.data.truncate(walked_to);
            }
            b.seg = seg;
            b.base = base;
            b.walked_to = walked_to;
            b.last = eof || stopped;
            base += b.data.len();
            let last = b.last;
            if tx.send(Ok(b)).is_err() {
                return;
            }
            if last {
                break;
            }
        }
    }
}

/// The checker: verdicts per record in parallel, then the chain in order. At the first
/// sign of trouble in a segment it hands over to `check_slowly`, which reads the whole
/// segment and names the problem exactly.
fn check_blocks(
    segments: &[(u64, PathBuf)],
    start: (u64, Hash),
    blocks: std::sync::mpsc::Receiver<std::io::Result<Block>>,
    free: std::sync::mpsc::Sender<Block>,
    mut visit: impl FnMut(u64, &Hash),
) -> std::io::Result<ScanReport> {
    let mut report = ScanReport {
        records: 0,
        bytes: 0,
        head_seq: start.0,
        head_hash: start.1,
        bad: None,
        torn_tail: None,
        end: None,
    };
    let n = segments.len();
    for (i, (first, path)) in segments.iter().enumerate() {
        let last_segment = i + 1 == n;
        let bytes_before = report.bytes;
        let slowly = |from: usize, mut report: ScanReport, visit: &mut _| {
            report.bytes = bytes_before;
            check_slowly(path, *first, from, last_segment, report, visit)
        };
        loop {
            let mut b = blocks
                .recv()
                .map_err(|_| std::io::Error::other("the segment reader stopped"))??;
            debug_assert_eq!(b.seg, i);
            if b.base == 0 {
                let header_ok = b.data.len() >= SEGMENT_HEADER
                    && &b.data[..8] == MAGIC
                    && u64::from_le_bytes(b.data[8..16].try_into().unwrap_or([0; 8])) == *first
                    && *first == report.head_seq + 1;
                if !header_ok {
                    return slowly(0, report, &mut visit);
                }
            }
            precompute(&b.data, &mut b.recs);
            for p in &b.recs {
                let linked = p.linked
                    || b.data[p.pos + RECORD_HEADER + 16..p.pos + RECORD_HEADER + 48]
                        == report.head_hash;
                if !p.crc_ok || p.seq != report.head_seq + 1 || !linked {
                    return slowly(b.base + p.pos, report, &mut visit);
                }
                visit(p.seq, &p.hash);
                report.records += 1;
                report.head_seq = p.seq;
                report.head_hash = p.hash;
            }
            report.bytes += b.data.len() as u64;
            if b.last {
                let end = b.base + b.walked_to;
                if b.walked_to < b.data.len() {
                    return slowly(end, report, &mut visit);
                }
                if last_segment {
                    report.end = Some((path.clone(), end as u64));
                }
                let _ = free.send(b);
                break;
            }
            let _ = free.send(b);
        }
    }
    Ok(report)
}

/// Checks one segment record by record from byte `from` on (everything before it has been
/// checked and visited): the exact verdict for a bad header, a torn tail or damage.
fn check_slowly(
    path: &Path,
    first: u64,
    from: usize,
    last_segment: bool,
    mut report: ScanReport,
    visit: &mut impl FnMut(u64, &Hash),
) -> std::io::Result<ScanReport> {
    let mut buf = Vec::new();
    File::open(path)?.read_to_end(&mut buf)?;
    report.bytes += buf.len() as u64;
    let bad = |report: &mut ScanReport, offset: usize, problem: String| {
        report.bad = Some(BadRecord {
            seq: report.head_seq + 1,
            segment: path.to_path_buf(),
            offset: offset as u64,
            problem,
        });
    };
    if from == 0 {
        if buf.len() < SEGMENT_HEADER || &buf[..8] != MAGIC {
            if last_segment
                && buf.len() < SEGMENT_HEADER
                && MAGIC.starts_with(&buf[..buf.len().min(8)])
            {
                // A segment whose header was being written when the process died.
                report.torn_tail = Some((path.to_path_buf(), 0));
                report.end = Some((path.to_path_buf(), 0));
                return Ok(report);
            }
            bad(&mut report, 0, "not an audit segment (bad header)".into());
            return Ok(report);
        }
        let header_first = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
        if header_first != first || header_first != report.head_seq + 1 {
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
    }
    let mut pos = from.max(SEGMENT_HEADER);
    loop {
        match parse_at(&buf, pos) {
            Step::End => break,
            Step::Ok(rec, used) => {
                if rec.seq != report.head_seq + 1 {
                    bad(
                        &mut report,
                        pos,
                        format!(
                            "holds sequence number {} (records were removed, reordered or inserted)",
                            rec.seq
                        ),
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
                visit(rec.seq, &rec.hash);
                report.records += 1;
                report.head_seq = rec.seq;
                report.head_hash = rec.hash;
                pos += used;
            }
            Step::Short(why) => {
                if last_segment && !valid_record_after(&buf, pos) {
                    report.torn_tail = Some((path.to_path_buf(), pos as u64));
                    report.end = Some((path.to_path_buf(), pos as u64));
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
        report.end = Some((path.to_path_buf(), pos as u64));
    }
    Ok(report)
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
