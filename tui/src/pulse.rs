//! The series drawn from the daemon's short histories, shared by the console's `:pulse`
//! and describe views and `agenfleet pulse`: what each row is called, its values per
//! bucket, the figure now and the peak in words, and how loud it is. The console draws
//! the values with ratatui's sparkline; the CLI with `sparkline` below.

use agenfleet_protocol::pulse::{AgentHistory, Pulse, PulseBucket};

/// How a series is coloured: quiet, good news, a warning, bad news.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

/// One row of a picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    pub label: &'static str,
    /// One value per bucket, oldest first.
    pub values: Vec<u64>,
    /// The newest bucket's figure, in words ("3", "1.2/s", "35.0%", "12.4M").
    pub now: String,
    /// The largest, in the same words.
    pub peak: String,
    pub tone: Tone,
}

fn series(
    label: &'static str,
    values: Vec<u64>,
    words: impl Fn(u64) -> String,
    tone: Tone,
) -> Series {
    let now = words(values.last().copied().unwrap_or(0));
    let peak = words(values.iter().copied().max().unwrap_or(0));
    Series {
        label,
        values,
        now,
        peak,
        tone,
    }
}

/// The fleet's rows: agents by state, restarts, decisions per second by verdict,
/// incidents opened, model tokens per minute.
pub fn fleet(p: &Pulse) -> Vec<Series> {
    let secs = (p.bucket_ms.max(1) as f64) / 1000.0;
    let col = |f: fn(&PulseBucket) -> u64| p.buckets.iter().map(f).collect::<Vec<u64>>();
    let count = |n: u64| n.to_string();
    let per_sec = move |n: u64| format!("{:.1}/s", n as f64 / secs);
    let per_min =
        move |n: u64| format!("{}/min", crate::fmt::count((n as f64 * 60.0 / secs) as u64));
    vec![
        series(
            "agents running",
            col(|b| b.running.into()),
            count,
            Tone::Good,
        ),
        series(
            "backing off",
            col(|b| b.backing_off.into()),
            count,
            Tone::Warn,
        ),
        series("failed", col(|b| b.failed.into()), count, Tone::Bad),
        series("restarts", col(|b| b.restarts.into()), count, Tone::Warn),
        series(
            "allowed calls",
            col(|b| b.allowed.into()),
            per_sec,
            Tone::Good,
        ),
        series("denied calls", col(|b| b.denied.into()), per_sec, Tone::Bad),
        series(
            "escalated calls",
            col(|b| b.escalated.into()),
            per_sec,
            Tone::Warn,
        ),
        series(
            "incidents opened",
            col(|b| b.incidents_opened.into()),
            count,
            Tone::Bad,
        ),
        series("model tokens", col(|b| b.tokens), per_min, Tone::Plain),
    ]
}

/// One agent's rows: CPU (tenths of a percent) and memory peaks per bucket.
pub fn agent(h: &AgentHistory) -> Vec<Series> {
    let cpu = h
        .points
        .iter()
        .map(|p| p.cpu_percent.map_or(0, |c| (c * 10.0).round() as u64))
        .collect();
    let mem = h
        .points
        .iter()
        .map(|p| p.memory_bytes.unwrap_or(0))
        .collect();
    vec![
        series(
            "cpu",
            cpu,
            |t| format!("{:.1}%", t as f64 / 10.0),
            Tone::Plain,
        ),
        series("memory", mem, crate::fmt::bytes, Tone::Plain),
    ]
}

/// The span a picture covers, in words ("last 10m, 10s a bar").
pub fn span(bucket_ms: u64, buckets: usize) -> String {
    format!(
        "last {}, {} a bar",
        crate::fmt::duration_ms(bucket_ms * buckets as u64).replace("m00s", "m"),
        crate::fmt::duration_ms(bucket_ms)
    )
}

/// `values` as block characters, the tallest one full (all zeros: a flat line), the
/// newest `width` of them.
pub fn sparkline(values: &[u64], width: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let shown = &values[values.len().saturating_sub(width)..];
    let max = shown.iter().copied().max().unwrap_or(0);
    shown
        .iter()
        .map(|&v| {
            if max == 0 {
                '▁'
            } else if v == 0 {
                ' '
            } else {
                // Any non-zero value shows at least the lowest bar.
                BARS[((v * 8).div_ceil(max)).clamp(1, 8) as usize]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenfleet_protocol::pulse::AgentPoint;

    #[test]
    fn a_sparkline_scales_to_its_tallest_and_keeps_small_values_visible() {
        assert_eq!(sparkline(&[0, 1, 4, 8], 10), " ▁▄█");
        assert_eq!(sparkline(&[1, 1000], 10), "▁█");
        assert_eq!(sparkline(&[0, 0, 0], 10), "▁▁▁");
        assert_eq!(sparkline(&[9, 0, 8], 2), " █", "only the newest `width`");
    }

    #[test]
    fn fleet_rows_say_rates_per_second_and_tokens_per_minute() {
        let b = |allowed, tokens| PulseBucket {
            allowed,
            tokens,
            running: 3,
            ..Default::default()
        };
        let p = Pulse {
            bucket_ms: 10_000,
            buckets: vec![b(50, 0), b(12, 1000)],
        };
        let rows = fleet(&p);
        let row = |l: &str| rows.iter().find(|s| s.label == l).cloned();
        let allowed = row("allowed calls").expect("allowed row");
        assert_eq!(
            (allowed.now.as_str(), allowed.peak.as_str()),
            ("1.2/s", "5.0/s")
        );
        assert_eq!(row("model tokens").map(|s| s.now), Some("6.0k/min".into()));
        assert_eq!(row("agents running").map(|s| s.values), Some(vec![3, 3]));
        assert_eq!(span(10_000, 60), "last 10m, 10s a bar");
    }

    #[test]
    fn agent_rows_show_cpu_and_memory_peaks() {
        let h = AgentHistory {
            bucket_ms: 10_000,
            points: vec![
                AgentPoint {
                    start_ms: 0,
                    cpu_percent: Some(35.0),
                    memory_bytes: Some(2 << 20),
                },
                AgentPoint::default(),
            ],
        };
        let rows = agent(&h);
        assert_eq!(rows[0].peak, "35.0%");
        assert_eq!(rows[0].now, "0.0%");
        assert_eq!(rows[1].peak, "2.0M");
    }
}
