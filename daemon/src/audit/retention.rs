//! Audit retention: which whole segments may go. Records of all tenants share segments and
//! one hash chain, so nothing is cut out of a segment: a segment goes when every record in
//! it is past its own retention (its tenant's setting, else the platform's; platform
//! records take the platform's), oldest first, never the one being written. The removal is
//! recorded first; then the writer signs an anchor for the last removed record and the
//! chain is checked from there (see `checkpoint::ANCHOR_FILE`); then the files go.

use super::format::{self, Hash};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const DAY_MS: f64 = 86_400_000.0;

/// How long records are kept: days, 0 = for ever.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub default_days: f64,
    pub tenants: HashMap<String, f64>,
}

impl Policy {
    /// How long a record of `tenant` is kept (None: for ever).
    fn keep_ms(&self, tenant: Option<&str>) -> Option<u64> {
        let days = tenant
            .and_then(|t| self.tenants.get(t))
            .copied()
            .unwrap_or(self.default_days);
        (days > 0.0).then_some((days * DAY_MS) as u64)
    }

    /// Whether anything can ever go.
    pub fn removes_anything(&self) -> bool {
        self.default_days > 0.0 || self.tenants.values().any(|d| *d > 0.0)
    }
}

/// What one sealed segment holds, as far as retention cares.
#[derive(Debug, Clone)]
pub struct Survey {
    pub last_seq: u64,
    pub last_hash: Hash,
    pub records: u64,
    pub bytes: u64,
    /// The newest record's time per tenant (None: platform records).
    newest: HashMap<Option<String>, u64>,
}

#[derive(serde::Deserialize)]
struct TenantOnly {
    #[serde(default)]
    tenant: Option<String>,
}

/// Reads a segment for its tenants and its last record.
pub fn survey(path: &Path) -> std::io::Result<Survey> {
    let mut s = Survey {
        last_seq: 0,
        last_hash: format::GENESIS,
        records: 0,
        bytes: std::fs::metadata(path)?.len(),
        newest: HashMap::new(),
    };
    format::read_segment(path, |r| {
        let tenant = serde_json::from_slice::<TenantOnly>(r.event)
            .ok()
            .and_then(|t| t.tenant);
        let t = s.newest.entry(tenant).or_insert(0);
        *t = (*t).max(r.time_ms);
        s.last_seq = r.seq;
        s.last_hash = r.hash;
        s.records += 1;
    })?;
    Ok(s)
}

impl Survey {
    /// When every record in it is past its retention (None: never).
    pub fn expires_ms(&self, policy: &Policy) -> Option<u64> {
        let mut when = 0u64;
        for (tenant, newest) in &self.newest {
            when = when.max(newest + policy.keep_ms(tenant.as_deref())?);
        }
        Some(when)
    }
}

/// What a sweep would remove now, and when the next segment goes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Segments to remove, oldest first.
    pub remove: Vec<PathBuf>,
    /// The last removed record: the new anchor.
    pub anchor: Option<(u64, Hash)>,
    pub records: u64,
    pub bytes: u64,
    /// Segments left behind by a removal cut short (wholly before the anchor).
    pub leftovers: Vec<PathBuf>,
    /// When the oldest segment kept may go (None: never, or only the one being written).
    pub next_ms: Option<u64>,
    /// Segments kept (the one being written included).
    pub kept: usize,
}

/// Surveys of sealed segments never change: kept by first sequence number.
pub type Cache = HashMap<u64, Survey>;

/// Decides what goes at `now_ms`.
pub fn plan(dir: &Path, policy: &Policy, now_ms: u64, cache: &mut Cache) -> std::io::Result<Plan> {
    let anchor_seq = super::checkpoint::load_anchor(dir)
        .map_err(std::io::Error::other)?
        .map(|a| a.seq)
        .unwrap_or(0);
    let segments = format::list_segments(dir)?;
    let mut plan = Plan::default();
    let live: Vec<&(u64, PathBuf)> = segments
        .iter()
        .filter(|(first, path)| {
            if *first <= anchor_seq {
                plan.leftovers.push(path.clone());
                false
            } else {
                true
            }
        })
        .collect();
    cache.retain(|first, _| live.iter().any(|(f, _)| f == first));
    let mut stopped = false;
    for (i, (first, path)) in live.iter().enumerate() {
        // The segment being written never goes; neither does one after a kept one.
        let sealed = i + 1 < live.len();
        if !sealed || stopped {
            continue;
        }
        let s = match cache.get(first) {
            Some(s) => s.clone(),
            None => {
                let s = survey(path)?;
                cache.insert(*first, s.clone());
                s
            }
        };
        match s.expires_ms(policy) {
            Some(t) if t <= now_ms && s.records > 0 => {
                plan.remove.push(path.clone());
                plan.anchor = Some((s.last_seq, s.last_hash));
                plan.records += s.records;
                plan.bytes += s.bytes;
            }
            next => {
                plan.next_ms = next;
                stopped = true;
            }
        }
    }
    plan.kept = live.len() - plan.remove.len();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_goes_when_every_record_in_it_is_past_its_own_retention() {
        let mut newest = HashMap::new();
        newest.insert(None, 1_000u64);
        newest.insert(Some("acme".to_string()), 2_000u64);
        let s = Survey {
            last_seq: 10,
            last_hash: format::GENESIS,
            records: 10,
            bytes: 100,
            newest,
        };
        let day = DAY_MS as u64;
        let mut p = Policy {
            default_days: 1.0,
            tenants: HashMap::new(),
        };
        assert_eq!(
            s.expires_ms(&p),
            Some(2_000 + day),
            "the newest record decides"
        );
        p.tenants.insert("acme".into(), 30.0);
        assert_eq!(
            s.expires_ms(&p),
            Some(2_000 + 30 * day),
            "acme keeps its records longer"
        );
        p.tenants.insert("acme".into(), 0.0);
        assert_eq!(
            s.expires_ms(&p),
            None,
            "acme keeps them for ever: the segment stays"
        );
        p.tenants.clear();
        p.default_days = 0.0;
        assert_eq!(s.expires_ms(&p), None, "platform records kept for ever");
    }
}
