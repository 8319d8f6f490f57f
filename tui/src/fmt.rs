//! Formatting shared by the CLI's tables and the console: durations, sizes, CPU, states.

use agenfleet_protocol::{AgentView, ExitInfo};

/// "45s", "3m12s", "2h05m", "3d04h".
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600)
    }
}

/// A duration written `90s`, `15m`, `12h` or `30d`, in seconds (too large: refused).
pub fn duration_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("bad duration `{s}` (use 90s, 15m, 12h or 30d)");
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    n.checked_mul(unit).ok_or_else(bad)
}

/// A progress bar `width` cells wide, `ratio` of it full: "▕████▌     ▏".
pub fn bar(ratio: f64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (ratio.clamp(0.0, 1.0) * (width * 8) as f64).round() as usize;
    let mut s = String::from("▕");
    for cell in 0..width {
        let filled = eighths.saturating_sub(cell * 8).min(8);
        s.push(if filled == 8 { '█' } else { PARTS[filled] });
    }
    s.push('▏');
    s
}

/// "512B", "12.3M", "1.5G" (binary units).
pub fn bytes(b: u64) -> String {
    const K: f64 = 1024.0;
    let f = b as f64;
    if f < K {
        format!("{b}B")
    } else if f < K * K {
        format!("{:.1}K", f / K)
    } else if f < K * K * K {
        format!("{:.1}M", f / (K * K))
    } else {
        format!("{:.1}G", f / (K * K * K))
    }
}

pub fn uptime(v: &AgentView, now_ms: u64) -> String {
    match v.started_at_ms {
        Some(s) if v.state == agenfleet_protocol::AgentState::Running => {
            duration_ms(now_ms.saturating_sub(s))
        }
        _ => "-".into(),
    }
}

pub fn cpu(v: &AgentView) -> String {
    v.cpu_percent
        .map(|c| format!("{c:.1}%"))
        .unwrap_or_else(|| "-".into())
}

pub fn memory(v: &AgentView) -> String {
    v.memory_bytes.map(bytes).unwrap_or_else(|| "-".into())
}

/// A count in a few characters: 999, 12.3k, 4.5M.
pub fn count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

/// An agent's model use today: `calls/errors tokens` ("-" when none).
pub fn model_today(u: &agenfleet_protocol::upstream::UsageTotals) -> String {
    if u.calls == 0 {
        return "-".into();
    }
    format!(
        "{}/{} {}",
        count(u.calls),
        count(u.errors),
        count(u.tokens())
    )
}

pub fn restarts(v: &AgentView) -> String {
    format!(
        "{} ({}/{})",
        v.restarts, v.restarts_in_window, v.restart_budget
    )
}

pub fn exit(v: &AgentView) -> String {
    match &v.last_exit {
        Some(e) if e.unhealthy => format!("unhealthy ({})", e.code),
        Some(e) if e.oom_killed => format!("OOM-killed ({})", e.code),
        Some(ExitInfo {
            reason: Some(why), ..
        }) => format!("no code: {why}"),
        Some(e) => format!("code {}", e.code),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_without_a_code_says_why() {
        let mut v = AgentView::new("t", "p", "a", "x:1", agenfleet_protocol::AgentState::Failed);
        v.last_exit = Some(ExitInfo {
            code: -1,
            oom_killed: false,
            unhealthy: false,
            at_ms: 1,
            reason: Some("Swarm: No such image: x:1".into()),
        });
        assert_eq!(exit(&v), "no code: Swarm: No such image: x:1");
        v.last_exit = Some(ExitInfo {
            code: 3,
            oom_killed: false,
            unhealthy: false,
            at_ms: 1,
            reason: None,
        });
        assert_eq!(exit(&v), "code 3");
    }

    #[test]
    fn a_bar_fills_by_eighths() {
        assert_eq!(bar(0.0, 4), "▕    ▏");
        assert_eq!(bar(0.5, 4), "▕██  ▏");
        assert_eq!(bar(0.3, 4), "▕█▎  ▏");
        assert_eq!(bar(1.0, 4), "▕████▏");
        assert_eq!(bar(7.0, 2), "▕██▏", "more than done is full");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration_secs("90s"), Ok(90));
        assert_eq!(duration_secs("2h"), Ok(7200));
        assert!(
            duration_secs("99999999999999999d").is_err(),
            "overflow is refused"
        );
        assert!(duration_secs("").is_err() && duration_secs("5x").is_err());
        assert_eq!(duration_ms(45_000), "45s");
        assert_eq!(duration_ms(192_000), "3m12s");
        assert_eq!(duration_ms(7_500_000), "2h05m");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3d04h");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5M");
    }
}

/// What an audit record is about: `tenant/agent`, `tenant`, or `-`.
pub fn audit_target(ev: &agenfleet_protocol::AuditEvent) -> String {
    match (&ev.tenant, &ev.agent) {
        (Some(t), Some(a)) => format!("{t}/{a}"),
        (Some(t), None) => t.clone(),
        _ => "-".into(),
    }
}

/// The telling fields of a run's timeline record (`tool=… decision=… tokens_in=…`), from
/// its detail JSON: what `runs show` and the console's runs view print after the action.
pub fn run_event_detail(detail: &str) -> String {
    let d: serde_json::Value = serde_json::from_str(detail).unwrap_or_default();
    let mut parts = Vec::new();
    for k in [
        "trigger",
        "tool",
        "decision",
        "reviewer",
        "provider",
        "connection",
        "model",
        "status",
        "tokens_in",
        "tokens_out",
        "latency_ms",
        "state",
        "error",
        "reason",
    ] {
        match d.get(k) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(x)) => parts.push(format!("{k}={x}")),
            Some(x) => parts.push(format!("{k}={x}")),
        }
    }
    parts.join(" ")
}

/// Unix ms → `2026-11-22 01:23:45.678Z` (UTC).
pub fn timestamp(ms: u64) -> String {
    agenfleet_protocol::time::rfc3339(ms).replacen('T', " ", 1)
}

/// Parses a time for `--since`/`--until`: Unix ms, `YYYY-MM-DD[THH:MM[:SS]]` (UTC), or an
/// age like `90s`, `15m`, `2h`, `3d` (that long before `now_ms`).
pub fn parse_time(s: &str, now_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(ms);
    }
    if let Some(unit) = s.chars().last().filter(|c| "smhd".contains(*c)) {
        if let Ok(n) = s[..s.len() - 1].parse::<u64>() {
            let mult = match unit {
                's' => 1_000,
                'm' => 60_000,
                'h' => 3_600_000,
                _ => 86_400_000,
            };
            return Ok(now_ms.saturating_sub(n.saturating_mul(mult)));
        }
    }
    let bad = || format!("`{s}` is not a time (use Unix ms, 2026-11-22T01:30, or an age like 15m)");
    let (date, time) = s.split_once(['T', ' ']).unwrap_or((s, "00:00:00"));
    let dp: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let tp: Vec<i64> = time
        .trim_end_matches('Z')
        .split(':')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if dp.len() != 3 || tp.is_empty() || tp.len() > 3 {
        return Err(bad());
    }
    let (y, m, d) = (dp[0], dp[1], dp[2]);
    if !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || tp[0] > 23
        || tp.get(1).is_some_and(|v| *v > 59)
    {
        return Err(bad());
    }
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400
        + tp[0] * 3600
        + tp.get(1).copied().unwrap_or(0) * 60
        + tp.get(2).copied().unwrap_or(0);
    if secs < 0 {
        return Err(bad());
    }
    Ok(secs as u64 * 1000)
}

#[cfg(test)]
mod time_tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00.000Z");
        assert_eq!(timestamp(1_709_251_200_123), "2024-03-01 00:00:00.123Z");
        assert_eq!(parse_time("2024-03-01", 0).unwrap(), 1_709_251_200_000);
        assert_eq!(
            parse_time("2024-03-01T00:00:01", 0).unwrap(),
            1_709_251_201_000
        );
        assert_eq!(parse_time("15m", 1_000_000).unwrap(), 100_000);
        assert_eq!(parse_time("1234", 0).unwrap(), 1234);
        assert!(parse_time("yesterday", 0).is_err());
        assert!(parse_time("2024-13-01", 0).is_err());
    }
}
