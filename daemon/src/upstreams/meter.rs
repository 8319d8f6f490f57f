//! Model usage totals per agent and per tenant, in fixed memory: 60 minute buckets and 720
//! hour buckets each (a ring indexed by the minute or hour number, a stale bucket reset
//! when it comes round again), so a million calls cost no more than one. The budgets of an
//! agent's spec are held against them: calls in the current minute, tokens since 00:00
//! UTC. The per-call truth is the `model.call` audit record; these are what `usage`,
//! `status` and the console read. A tenant's series are saved (`snapshot`) with the audit
//! sequence number they are complete up to, and at start loaded and brought up to date
//! from the records after it (`persist.rs`).

use agenfleet_protocol::upstream::{UsageRow, UsageTotals};
use std::collections::HashMap;
use std::sync::Mutex;

const MINUTES: usize = 60;
const HOURS: usize = 720;

#[derive(Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
struct Bucket {
    /// The minute (or hour) number since the epoch this bucket counts; a bucket whose
    /// number is not the one asked for is empty.
    at: u64,
    t: UsageTotals,
}

struct Series {
    minutes: Box<[Bucket; MINUTES]>,
    hours: Box<[Bucket; HOURS]>,
}

impl Default for Series {
    fn default() -> Self {
        Series {
            minutes: Box::new([Bucket::default(); MINUTES]),
            hours: Box::new([Bucket::default(); HOURS]),
        }
    }
}

fn bump(b: &mut Bucket, at: u64, add: &UsageTotals) {
    if b.at > at {
        return; // older than what the ring holds in this place: out of every window
    }
    if b.at != at {
        *b = Bucket {
            at,
            t: UsageTotals::default(),
        };
    }
    b.t.add(add);
}

impl Series {
    fn record(&mut self, now_ms: u64, add: &UsageTotals) {
        let m = now_ms / 60_000;
        let h = now_ms / 3_600_000;
        bump(&mut self.minutes[m as usize % MINUTES], m, add);
        bump(&mut self.hours[h as usize % HOURS], h, add);
    }

    /// Totals of minute buckets in [from, to] (minute numbers).
    fn minutes_between(&self, from: u64, to: u64) -> UsageTotals {
        let mut t = UsageTotals::default();
        for b in self.minutes.iter().filter(|b| b.at >= from && b.at <= to) {
            t.add(&b.t);
        }
        t
    }

    fn hours_between(&self, from: u64, to: u64) -> UsageTotals {
        let mut t = UsageTotals::default();
        for b in self.hours.iter().filter(|b| b.at >= from && b.at <= to) {
            t.add(&b.t);
        }
        t
    }

    fn row(&self, tenant: &str, agent: &str, now_ms: u64) -> UsageRow {
        let m = now_ms / 60_000;
        let h = now_ms / 3_600_000;
        let day_start = now_ms / 86_400_000 * 24;
        UsageRow {
            tenant: tenant.into(),
            agent: agent.into(),
            last_hour: self.minutes_between(m.saturating_sub(MINUTES as u64 - 1), m),
            last_day: self.hours_between(h.saturating_sub(23), h),
            last_30_days: self.hours_between(h.saturating_sub(HOURS as u64 - 1), h),
            today: self.hours_between(day_start, h),
        }
    }
}

/// (tenant, agent); agent "" is the tenant's total.
type Key = (String, String);

#[derive(Default)]
pub struct Meter {
    series: Mutex<HashMap<Key, Series>>,
    /// Tenants counted since their last snapshot.
    dirty: Mutex<std::collections::HashSet<String>>,
}

/// One tenant's series as saved: (agent, minute buckets, hour buckets), empty ones left out.
type Saved = Vec<(String, Vec<Bucket>, Vec<Bucket>)>;

/// Why a call may not go out now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget(pub String);

impl Meter {
    /// Counts one finished call for the agent and its tenant.
    pub fn record(&self, tenant: &str, agent: &str, now_ms: u64, add: &UsageTotals) {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for k in [(tenant, agent), (tenant, "")] {
            let key = (k.0.to_string(), k.1.to_string());
            s.entry(key).or_default().record(now_ms, add);
        }
        drop(s);
        self.mark(tenant);
    }

    fn mark(&self, tenant: &str) {
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        if !d.contains(tenant) {
            d.insert(tenant.to_string());
        }
    }

    /// The tenants counted since their last snapshot (and forgets them).
    pub fn take_dirty(&self) -> Vec<String> {
        let mut d = self.dirty.lock().unwrap_or_else(|p| p.into_inner());
        d.drain().collect()
    }

    /// A tenant's series, as JSON.
    pub fn snapshot(&self, tenant: &str) -> String {
        let s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let used = |b: &&Bucket| b.at != 0;
        let saved: Saved = s
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, a), series)| {
                (
                    a.clone(),
                    series.minutes.iter().filter(used).copied().collect(),
                    series.hours.iter().filter(used).copied().collect(),
                )
            })
            .collect();
        serde_json::to_string(&saved).unwrap_or_else(|_| "[]".into())
    }

    /// Puts back a tenant's series from `snapshot`'s JSON (a bad one is an error).
    pub fn restore(&self, tenant: &str, json: &str) -> Result<(), String> {
        let saved: Saved = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        for (agent, minutes, hours) in saved {
            let series = s.entry((tenant.to_string(), agent)).or_default();
            for b in minutes {
                series.minutes[b.at as usize % MINUTES] = b;
            }
            for b in hours {
                series.hours[b.at as usize % HOURS] = b;
            }
        }
        Ok(())
    }

    /// Admits one call against the agent's budget — calls this minute, tokens since 00:00
    /// UTC — and counts it as a call at once, under one lock, so calls made at the same
    /// time cannot all slip under `calls_per_minute`. Its tokens and whether it failed are
    /// counted when it ends (`record` with `calls: 0`).
    pub fn admit(
        &self,
        tenant: &str,
        agent: &str,
        budget: &agenfleet_protocol::spec::Budget,
        now_ms: u64,
    ) -> Result<(), OverBudget> {
        let mut s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(series) = s.get(&(tenant.to_string(), agent.to_string())) {
            let row = series.row(tenant, agent, now_ms);
            let m = now_ms / 60_000;
            let this_minute = series.minutes_between(m, m).calls;
            if budget.calls_per_minute > 0 && this_minute >= u64::from(budget.calls_per_minute) {
                return Err(OverBudget(format!(
                    "budget: {this_minute} model calls this minute, the spec allows {} (calls_per_minute)",
                    budget.calls_per_minute
                )));
            }
            if budget.tokens_per_day > 0 && row.today.tokens() >= budget.tokens_per_day {
                return Err(OverBudget(format!(
                    "budget: {} tokens used today (UTC), the spec allows {} (tokens_per_day)",
                    row.today.tokens(),
                    budget.tokens_per_day
                )));
            }
        }
        let one = UsageTotals {
            calls: 1,
            ..UsageTotals::default()
        };
        for k in [agent, ""] {
            s.entry((tenant.to_string(), k.to_string()))
                .or_default()
                .record(now_ms, &one);
        }
        drop(s);
        self.mark(tenant);
        Ok(())
    }

    /// Rows of the keys `keep` admits, tenants' totals included.
    pub fn rows(&self, now_ms: u64, keep: impl Fn(&str, &str) -> bool) -> Vec<UsageRow> {
        let s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<UsageRow> = s
            .iter()
            .filter(|((t, a), _)| keep(t, a))
            .map(|((t, a), series)| series.row(t, a, now_ms))
            .collect();
        out.sort_by(|a, b| (&a.tenant, &a.agent).cmp(&(&b.tenant, &b.agent)));
        out
    }

    /// One agent's row (zeros when it made no call).
    pub fn row(&self, tenant: &str, agent: &str, now_ms: u64) -> UsageRow {
        let s = self.series.lock().unwrap_or_else(|p| p.into_inner());
        match s.get(&(tenant.to_string(), agent.to_string())) {
            Some(series) => series.row(tenant, agent, now_ms),
            None => UsageRow {
                tenant: tenant.into(),
                agent: agent.into(),
                ..UsageRow::default()
            },
        }
    }

    /// Drops every series of a tenant (it was deleted).
    pub fn forget_tenant(&self, tenant: &str) {
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(t, _), _| t != tenant);
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tenant);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenfleet_protocol::spec::Budget;

    fn call(tokens: u64, error: bool) -> UsageTotals {
        UsageTotals {
            calls: 1,
            errors: u64::from(error),
            tokens_in: tokens,
            tokens_out: tokens,
        }
    }

    #[test]
    fn windows_count_what_falls_in_them() {
        let m = Meter::default();
        let day = 86_400_000u64;
        let now = 100 * day + 12 * 3_600_000; // noon
        m.record("t", "a", now - 2 * 3_600_000, &call(5, false)); // 10:00 today
        m.record("t", "a", now - 13 * 3_600_000, &call(7, true)); // 23:00 yesterday
        m.record("t", "a", now - 10 * day, &call(11, false));
        m.record("t", "a", now - 40 * day, &call(13, false)); // out of every window
        m.record("t", "a", now - 60_000, &call(1, false));
        let r = m.row("t", "a", now);
        assert_eq!(r.last_hour.calls, 1);
        assert_eq!(r.today.tokens(), 12);
        assert_eq!(r.last_day.calls, 3);
        assert_eq!(r.last_day.errors, 1);
        assert_eq!(r.last_30_days.tokens(), 2 * (5 + 7 + 11 + 1));
        let tenant = m.row("t", "", now);
        assert_eq!(tenant.last_30_days, r.last_30_days);
    }

    #[test]
    fn a_bucket_coming_round_again_starts_empty() {
        let m = Meter::default();
        let now = 1_000 * 3_600_000u64;
        m.record("t", "a", now - 720 * 3_600_000, &call(100, false));
        m.record("t", "a", now, &call(1, false));
        assert_eq!(m.row("t", "a", now).last_30_days.tokens(), 2);
    }

    #[test]
    fn a_snapshot_restores_every_window() {
        let m = Meter::default();
        let now = 77 * 86_400_000u64 + 5 * 3_600_000;
        m.record("t", "a", now - 3 * 86_400_000, &call(4, true));
        m.record("t", "a", now - 60_000, &call(2, false));
        m.record("u", "b", now, &call(9, false));
        let mut dirty = m.take_dirty();
        dirty.sort();
        assert_eq!(dirty, ["t", "u"]);
        assert!(m.take_dirty().is_empty());
        let back = Meter::default();
        back.restore("t", &m.snapshot("t")).unwrap();
        assert_eq!(back.row("t", "a", now), m.row("t", "a", now));
        assert_eq!(back.row("t", "", now), m.row("t", "", now));
        assert_eq!(
            back.row("u", "b", now).last_hour.calls,
            0,
            "another tenant's stays out"
        );
        assert!(back.restore("t", "{").is_err());
    }

    #[test]
    fn budgets_hold() {
        let m = Meter::default();
        let now = 50 * 86_400_000u64 + 30_000;
        let b = Budget {
            tokens_per_day: 0,
            calls_per_minute: 2,
        };
        assert!(m.admit("t", "a", &b, now).is_ok());
        assert!(m.admit("t", "a", &b, now).is_ok());
        let e = m
            .admit("t", "a", &b, now)
            .expect_err("third call in a minute");
        assert!(e.0.contains("calls_per_minute"), "{}", e.0);
        assert_eq!(
            m.row("t", "a", now).last_hour.calls,
            2,
            "a refused call is not counted"
        );
        assert!(m.admit("t", "a", &b, now + 60_000).is_ok());
        let b = Budget {
            tokens_per_day: 10,
            calls_per_minute: 0,
        };
        m.record("t", "a", now, &call(5, false));
        let e = m.admit("t", "a", &b, now).expect_err("10 tokens used");
        assert!(e.0.contains("tokens_per_day"), "{}", e.0);
        assert!(m.admit("t", "a", &b, now + 86_400_000).is_ok());
    }
}
