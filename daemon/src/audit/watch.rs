//! Tamper checks while the daemon runs. Every checkpoint interval the records appended
//! since the check before last are read back from disk and checked — checksums, sequence
//! numbers, the chain, and the hashes the writer itself gave the newest records (kept in
//! memory, never read back from disk) — so a record altered, removed or truncated after
//! it was written is found within one interval (cheap: only the tail is read). Every `full_every` the whole log is verified as `audit verify` does,
//! for older records. A problem is reported once per check that finds it.

use super::format::{self, Hash, Step, SEGMENT_HEADER};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A place in the log: just after record `seq`, whose hash is `hash` (None: not known yet;
/// the next record's `prev` is taken as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub segment: u64,
    pub offset: u64,
    pub seq: u64,
    pub hash: Option<Hash>,
}

/// The start of the newest segment (where a watch begins).
pub fn start(dir: &Path) -> std::io::Result<Mark> {
    let segs = format::list_segments(dir)?;
    let first = segs.last().map(|(s, _)| *s).unwrap_or(1);
    Ok(Mark {
        segment: first,
        offset: SEGMENT_HEADER as u64,
        seq: first.saturating_sub(1),
        hash: None,
    })
}

/// Checks every record after `from`, through the newest segment. `expect`: (sequence
/// number, hash) pairs the writer gave records — each must be on disk with that hash.
/// Answers the mark after the last whole record (a record being written right now is
/// left for next time).
pub fn check(dir: &Path, from: &Mark, expect: &[(u64, Hash)]) -> Result<Mark, String> {
    let segs = format::list_segments(dir).map_err(|e| format!("cannot list the audit log: {e}"))?;
    let mut from = from.clone();
    let i = match segs.iter().position(|(s, _)| *s == from.segment) {
        Some(i) => i,
        None => {
            // Retention may have removed it: then the check goes on from the signed
            // anchor, past the place it had reached.
            let anchor = super::checkpoint::load_anchor(dir)?
                .filter(|a| a.seq >= from.seq)
                .map(|a| super::checkpoint::anchor_start(&a))
                .transpose()?;
            let next = anchor.and_then(|(seq, hash)| {
                let i = segs.iter().position(|(s, _)| *s == seq + 1)?;
                Some((i, seq, hash))
            });
            let Some((i, seq, hash)) = next else {
                return Err(format!(
                    "segment {} is gone from {}",
                    format::segment_name(from.segment),
                    dir.display()
                ));
            };
            from = Mark {
                segment: seq + 1,
                offset: SEGMENT_HEADER as u64,
                seq,
                hash: Some(hash),
            };
            i
        }
    };
    let from = &from;
    let mut at = from.clone();
    let mut unseen: Vec<&(u64, Hash)> = expect.iter().filter(|(seq, _)| *seq > from.seq).collect();
    for (n, (first, path)) in segs[i..].iter().enumerate() {
        let offset = if n == 0 {
            at.offset
        } else {
            SEGMENT_HEADER as u64
        };
        let buf = read_from(path, offset)?;
        if n > 0 && *first != at.seq + 1 {
            return Err(format!(
                "{} starts at record {first}, not {}",
                path.display(),
                at.seq + 1
            ));
        }
        let mut pos = 0;
        loop {
            match format::parse(&buf, pos) {
                Step::Ok(rec, used) => {
                    if rec.seq != at.seq + 1 {
                        return Err(format!(
                            "record {} follows record {} in {}",
                            rec.seq,
                            at.seq,
                            path.display()
                        ));
                    }
                    if let Some(h) = at.hash {
                        if rec.prev != h {
                            return Err(format!(
                                "record {} does not chain to record {}: one of them was changed",
                                rec.seq, at.seq
                            ));
                        }
                    }
                    at = Mark {
                        segment: *first,
                        offset: offset + (pos + used) as u64,
                        seq: rec.seq,
                        hash: Some(rec.hash),
                    };
                    // (The same record may be expected twice: the head did not move
                    // between two checks.)
                    if unseen
                        .iter()
                        .any(|(seq, hash)| *seq == rec.seq && *hash != rec.hash)
                    {
                        return Err(format!("record {} changed since it was written", rec.seq));
                    }
                    unseen.retain(|(seq, _)| *seq != rec.seq);
                    pos += used;
                }
                Step::End | Step::Short(_) => break,
                Step::Bad(why) => {
                    return Err(format!("{} after record {}: {why}", path.display(), at.seq))
                }
            }
        }
    }
    if let Some((seq, _)) = unseen.first() {
        return Err(format!(
            "the log ends at record {} but record {seq} was written",
            at.seq
        ));
    }
    Ok(at)
}

fn read_from(path: &PathBuf, offset: u64) -> Result<Vec<u8>, String> {
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    if len < offset {
        return Err(format!(
            "{} is {len} bytes, shorter than the {offset} already checked: it was truncated",
            path.display()
        ));
    }
    f.seek(SeekFrom::Start(offset))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = Vec::with_capacity((len - offset) as usize);
    f.read_to_end(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

/// Runs the checks every `every` (and a full verification every `full_every`, if not
/// zero) until `stop` says so. `head` is the writer's newest (sequence number, hash);
/// `found` hears each problem (once, until the check passes again).
pub fn run(
    dir: PathBuf,
    every: Duration,
    full_every: Duration,
    head: impl Fn() -> Option<(u64, Hash)>,
    stop: impl Fn() -> bool,
    found: impl Fn(String),
) {
    let Ok(mut window) = start(&dir) else {
        return;
    };
    let mut last_end: Option<Mark> = None;
    let mut last_head: Option<(u64, Hash)> = None;
    let mut last_full = Instant::now();
    let mut reported: Option<String> = None;
    loop {
        std::thread::sleep(every);
        if stop() {
            return;
        }
        // Read before the disk: what the writer had then is on disk by now.
        let now_head = head();
        let expect: Vec<(u64, Hash)> = last_head.into_iter().chain(now_head).collect();
        let mut problem = None;
        match check(&dir, &window, &expect) {
            Ok(end) => {
                // The next window starts where this check's interval began.
                if let Some(prev) = last_end.take() {
                    window = prev;
                }
                last_end = Some(end);
                last_head = now_head;
            }
            Err(e) => problem = Some(e),
        }
        if problem.is_none() && !full_every.is_zero() && last_full.elapsed() >= full_every {
            last_full = Instant::now();
            let r = super::verify_dir(&dir, None);
            if !r.valid {
                problem = Some(
                    r.first_bad
                        .or(r.checkpoint_check)
                        .unwrap_or_else(|| "the log does not verify".into()),
                );
            }
        }
        match problem {
            Some(p) if reported.as_ref() != Some(&p) => {
                found(p.clone());
                reported = Some(p);
            }
            Some(_) => {}
            None => reported = None,
        }
    }
}
