//! The audit retention sweep: every `audit_retention_check_secs`, the segments whose
//! every record is past its retention (see `audit::retention`) are removed — the removal
//! recorded first, then the anchor signed, then the files deleted. A sweep that cannot
//! record or sign removes nothing and tries again next time.

use super::Runtime;
use crate::audit::retention::{self, Cache, Plan, Policy};
use std::sync::Arc;

/// The platform's retention and each tenant's own.
pub fn policy(rt: &Runtime) -> Policy {
    Policy {
        default_days: rt.cfg.audit_retention_days,
        tenants: rt
            .store
            .tenant_audit_retention()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

/// What would go now, and when the next segment goes (for `agenfleet retention`).
pub async fn plan(rt: &Runtime, cache: Option<Cache>) -> Result<(Plan, Cache), String> {
    let policy = policy(rt);
    let dir = rt.audit.dir().to_path_buf();
    let mut cache = cache.unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        retention::plan(&dir, &policy, agenfleet_protocol::now_ms(), &mut cache)
            .map(|p| (p, cache))
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

fn remove(paths: &[std::path::PathBuf]) -> Result<(), String> {
    for p in paths {
        match std::fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", p.display())),
        }
    }
    if let Some(dir) = paths.first().and_then(|p| p.parent()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One sweep; answers the cache for the next.
pub async fn sweep(rt: &Runtime, cache: Option<Cache>) -> Cache {
    let (plan, cache) = match plan(rt, cache).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "audit retention: cannot survey the segments");
            return Cache::default();
        }
    };
    if !plan.leftovers.is_empty() {
        // A removal cut short: the anchor is in place, the files before it go now.
        if let Err(e) = remove(&plan.leftovers) {
            tracing::warn!(error = %e, "audit retention: cannot remove a segment before the anchor");
        }
    }
    let Some((seq, hash)) = plan.anchor else {
        return cache;
    };
    let detail = format!(
        "removing {} segment(s) of the audit log: {} records up to #{seq}, {:.1} MB, every one past its retention; the log starts after a signed anchor at #{seq}",
        plan.remove.len(),
        plan.records,
        plan.bytes as f64 / 1e6
    );
    // Recorded first: a removal the trail cannot show does not happen.
    if let Err(e) = rt
        .system_event("audit.retention", None, "ok", detail.clone())
        .await
    {
        tracing::warn!(error = %e.message, "audit retention: cannot record the removal; nothing removed");
        return cache;
    }
    if let Err(e) = rt.audit.anchor(seq, hash).await {
        tracing::warn!(error = %e, "audit retention: no anchor signed; nothing removed");
        return cache;
    }
    let paths = plan.remove.clone();
    match tokio::task::spawn_blocking(move || remove(&paths)).await {
        Ok(Ok(())) => tracing::info!("{detail}"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "audit retention: a segment stays until the next sweep")
        }
        Err(e) => tracing::warn!(error = %e, "audit retention: the removal stopped"),
    }
    cache
}

/// Runs the sweep every `audit_retention_check_secs` while anything can go.
pub fn spawn(rt: Arc<Runtime>) {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(rt.cfg.audit_retention_check_secs.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cache = None;
        loop {
            tick.tick().await;
            let p = policy(&rt);
            if !p.removes_anything() {
                continue;
            }
            cache = Some(sweep(&rt, cache.take()).await);
        }
    });
}
