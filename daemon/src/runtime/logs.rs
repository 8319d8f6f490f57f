//! Per-agent log ring: the last N lines of an agent's output with sequence numbers, a drop
//! counter, and a notification for followers (`logs -f`, the console's detail pane).
//! A credential value of the agent that shows up in its output is replaced by
//! `[redacted:NAME vN]` before the line is taken in: it never reaches the ring, nor
//! anything that reads it.

use agenfleet_protocol::{LogChunk, LogLine, LogStream};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Ring {
    lines: VecDeque<LogLine>,
    cap: usize,
    next_seq: u64,
    dropped: u64,
    /// Timestamp (engine ns) of the newest line taken in, to skip lines seen before when
    /// the log stream is re-read after a restart of the container or of the daemon.
    last_ts_ns: i128,
}

/// A bounded ring of log lines; cheap to clone.
#[derive(Clone)]
pub struct LogRing {
    ring: Arc<Mutex<Ring>>,
    notify: Arc<tokio::sync::watch::Sender<u64>>,
    /// (value, label) of every credential value of the agent seen so far, longest first.
    secrets: Arc<std::sync::RwLock<Vec<(String, String)>>>,
}

/// Values shorter than this are not looked for (they would blank out ordinary words).
pub const MIN_REDACTED_LEN: usize = 4;

impl LogRing {
    pub fn new(cap: usize) -> LogRing {
        let (tx, _) = tokio::sync::watch::channel(0);
        LogRing {
            ring: Arc::new(Mutex::new(Ring {
                lines: VecDeque::with_capacity(cap.min(1024)),
                cap: cap.max(1),
                next_seq: 0,
                dropped: 0,
                last_ts_ns: i128::MIN,
            })),
            notify: Arc::new(tx),
            secrets: Arc::default(),
        }
    }

    /// Adds credential values to redact: (name, version, value). Values seen before stay
    /// (an old version may still be printed after a rotation).
    pub fn learn_secrets(&self, values: impl IntoIterator<Item = (String, u32, String)>) {
        let mut s = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        for (name, version, value) in values {
            if value.len() >= MIN_REDACTED_LEN && !s.iter().any(|(v, _)| *v == value) {
                s.push((value, format!("[redacted:{name} v{version}]")));
            }
        }
        // Longest first, so a value that contains another is replaced whole.
        s.sort_by_key(|(v, _)| std::cmp::Reverse(v.len()));
    }

    fn redact(&self, text: String) -> String {
        let s = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        if s.iter().all(|(v, _)| !text.contains(v.as_str())) {
            return text;
        }
        let mut out = text;
        for (v, label) in s.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), label);
            }
        }
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes in one line stamped now (later than every line before it).
    pub fn push_now(&self, stream: LogStream, text: String) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        let ts = now.max(self.lock().last_ts_ns.saturating_add(1));
        self.push(ts, stream, text);
    }

    /// Takes in one line. `ts_ns` is the engine's timestamp; lines not newer than the last
    /// one taken in are skipped (they were seen already).
    pub fn push(&self, ts_ns: i128, stream: LogStream, text: String) {
        let text = self.redact(text);
        let seq = {
            let mut r = self.lock();
            if ts_ns <= r.last_ts_ns {
                return;
            }
            r.last_ts_ns = ts_ns;
            let seq = r.next_seq;
            r.next_seq += 1;
            if r.lines.len() == r.cap {
                r.lines.pop_front();
                r.dropped += 1;
            }
            r.lines.push_back(LogLine {
                seq,
                ts_ms: (ts_ns / 1_000_000).max(0) as u64,
                stream,
                text,
            });
            seq
        };
        self.notify.send_replace(seq + 1);
    }

    /// Every line held, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        self.lock().lines.iter().cloned().collect()
    }

    fn chunk(&self, since: u64, max_lines: usize) -> LogChunk {
        let r = self.lock();
        let first = r.lines.front().map(|l| l.seq).unwrap_or(r.next_seq);
        let missed = first.saturating_sub(since);
        let lines: Vec<LogLine> = r
            .lines
            .iter()
            .filter(|l| l.seq >= since)
            .take(max_lines)
            .cloned()
            .collect();
        let next_seq = lines
            .last()
            .map(|l| l.seq + 1)
            .unwrap_or(r.next_seq.max(since.min(r.next_seq)));
        LogChunk {
            lines,
            next_seq,
            missed,
            dropped_total: r.dropped,
        }
    }

    /// Lines with seq ≥ `since` (at most `max_lines`); waits up to `max_wait` for one.
    pub async fn read(&self, since: u64, max_lines: usize, max_wait: Duration) -> LogChunk {
        let mut rx = self.notify.subscribe();
        let c = self.chunk(since, max_lines);
        if !c.lines.is_empty() || max_wait.is_zero() {
            return c;
        }
        let _ = tokio::time::timeout(max_wait, async {
            loop {
                if *rx.borrow_and_update() > since {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        self.chunk(since, max_lines)
    }
}

/// Parses the RFC 3339 timestamp the engine puts before each line (`timestamps=true`)
/// into nanoseconds since the epoch. Returns the timestamp and the rest of the line.
pub fn split_timestamp(line: &str) -> Option<(i128, &str)> {
    let (ts, rest) = line.split_once(' ')?;
    // 2024-01-02T03:04:05.123456789Z
    let b = ts.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' || !ts.ends_with('Z') {
        return None;
    }
    let num = |s: &str| s.parse::<i64>().ok();
    let year = num(&ts[0..4])?;
    let month = num(&ts[5..7])?;
    let day = num(&ts[8..10])?;
    let hour = num(&ts[11..13])?;
    let min = num(&ts[14..16])?;
    let sec = num(&ts[17..19])?;
    let frac = &ts[19..ts.len() - 1];
    let nanos: i64 = if let Some(digits) = frac.strip_prefix('.') {
        let mut d = digits.to_string();
        d.truncate(9);
        while d.len() < 9 {
            d.push('0');
        }
        d.parse().ok()?
    } else {
        0
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
    Some((i128::from(secs) * 1_000_000_000 + i128::from(nanos), rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 timestamp (as in container inspect) into Unix ms.
pub fn rfc3339_ms(ts: &str) -> Option<u64> {
    let (ns, _) = split_timestamp(&format!("{ts} x"))?;
    if ns <= 0 {
        return None;
    }
    Some((ns / 1_000_000) as u64)
}

#[cfg(test)]
mod tests {

    #[test]
    fn credential_values_are_redacted_before_they_are_kept() {
        let ring = LogRing::new(10);
        ring.learn_secrets([("api-key".to_string(), 1, "sk-live-0123456789".to_string())]);
        ring.push(1, LogStream::Stdout, "using sk-live-0123456789 now".into());
        // After a rotation both the new and the old value are caught; short values are not.
        ring.learn_secrets([
            ("api-key".to_string(), 2, "sk-live-ABCDEFGHIJ".to_string()),
            ("pin".to_string(), 1, "42".to_string()),
        ]);
        ring.push(
            2,
            LogStream::Stderr,
            "old sk-live-0123456789 new sk-live-ABCDEFGHIJ 42".into(),
        );
        let c = ring.chunk(0, 10);
        let texts: Vec<&str> = c.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "using [redacted:api-key v1] now",
                "old [redacted:api-key v1] new [redacted:api-key v2] 42"
            ]
        );
    }
    use super::*;

    #[test]
    fn timestamps_parse() {
        let (ns, rest) = split_timestamp("1970-01-01T00:00:01.5Z hello world").unwrap();
        assert_eq!(ns, 1_500_000_000);
        assert_eq!(rest, "hello world");
        assert_eq!(rfc3339_ms("2024-03-01T00:00:00Z"), Some(1_709_251_200_000));
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None);
        assert!(split_timestamp("garbage").is_none());
    }

    #[tokio::test]
    async fn ring_drops_oldest_and_counts() {
        let r = LogRing::new(3);
        for i in 0..5 {
            r.push(i + 1, LogStream::Stdout, format!("l{i}"));
        }
        r.push(2, LogStream::Stdout, "old, skipped".into());
        let c = r.read(0, 100, Duration::ZERO).await;
        assert_eq!(
            c.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
            ["l2", "l3", "l4"]
        );
        assert_eq!(c.missed, 2);
        assert_eq!(c.dropped_total, 2);
        assert_eq!(c.next_seq, 5);
        let c = r.read(5, 100, Duration::from_millis(10)).await;
        assert!(c.lines.is_empty());
        assert_eq!(c.next_seq, 5);
    }

    #[tokio::test]
    async fn follower_wakes_on_new_line() {
        let r = LogRing::new(10);
        let r2 = r.clone();
        let t = tokio::spawn(async move { r2.read(0, 10, Duration::from_secs(5)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        r.push(1, LogStream::Stderr, "x".into());
        let c = t.await.unwrap();
        assert_eq!(c.lines.len(), 1);
        assert_eq!(c.lines[0].stream, LogStream::Stderr);
    }
}

/// A container's output (the engine's frames) cut into lines, per stream: a line is
/// complete at its newline; what is left at the end is a last line without one.
#[derive(Default)]
pub struct LineSplitter {
    partial: std::collections::HashMap<bool, String>,
}

impl LineSplitter {
    /// The lines one frame completes, with their stream.
    pub fn push(&mut self, out: bollard::container::LogOutput) -> Vec<(LogStream, String)> {
        let (is_err, bytes) = match out {
            bollard::container::LogOutput::StdErr { message } => (true, message),
            bollard::container::LogOutput::StdOut { message }
            | bollard::container::LogOutput::Console { message } => (false, message),
            bollard::container::LogOutput::StdIn { .. } => return vec![],
        };
        let buf = self.partial.entry(is_err).or_default();
        buf.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines = Vec::new();
        while let Some(pos) = buf.find('\n') {
            let line: String = buf.drain(..=pos).collect();
            lines.push((
                stream_of(is_err),
                line.trim_end_matches(['\n', '\r']).to_string(),
            ));
        }
        lines
    }

    /// The last lines without their newline, once the output has ended.
    pub fn finish(self) -> Vec<(LogStream, String)> {
        self.partial
            .into_iter()
            .filter(|(_, rest)| !rest.is_empty())
            .map(|(is_err, rest)| (stream_of(is_err), rest))
            .collect()
    }
}

fn stream_of(is_err: bool) -> LogStream {
    if is_err {
        LogStream::Stderr
    } else {
        LogStream::Stdout
    }
}

#[cfg(test)]
mod splitter_tests {
    use super::*;
    use bollard::container::LogOutput;

    #[test]
    fn frames_are_cut_into_lines_per_stream_and_a_last_partial_line_is_kept() {
        let mut s = LineSplitter::default();
        let out = |t: &str| LogOutput::StdOut {
            message: t.as_bytes().to_vec().into(),
        };
        let err = |t: &str| LogOutput::StdErr {
            message: t.as_bytes().to_vec().into(),
        };
        assert!(s.push(out("hel")).is_empty());
        assert_eq!(
            s.push(err("oops\r\nhalf")),
            vec![(LogStream::Stderr, "oops".to_string())]
        );
        assert_eq!(
            s.push(out("lo\nworld\nta")),
            vec![
                (LogStream::Stdout, "hello".to_string()),
                (LogStream::Stdout, "world".to_string())
            ]
        );
        let mut rest = s.finish();
        rest.sort_by_key(|(st, _)| *st == LogStream::Stderr);
        assert_eq!(
            rest,
            vec![
                (LogStream::Stdout, "ta".to_string()),
                (LogStream::Stderr, "half".to_string())
            ]
        );
    }
}
