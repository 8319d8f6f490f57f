//! The audit retention sweep: every `audit_retention_check_secs`, the segments whose
//! every record is past its retention (see `audit::retention`) are removed — the removal
//! recorded first, then the anchor signed, then the files deleted. A sweep that cannot
//! record or sign removes nothing and tries again next time. The surveys of sealed
//! segments are kept between sweeps (and shared with `agenfleet retention`).

use super::Runtime;
use crate::audit::retention::{self, Cache, Plan, Policy};
use std::sync::{Arc, Mutex};

/// Surveys of sealed segments, kept between plans.
#[derive(Default)]
pub struct Surveys(Mutex<Cache>);

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

/// What would go now, and when the next segment goes. With nothing ever removed, no
/// segment is read: only counted.
pub async fn plan(rt: &Runtime) -> Result<Plan, String> {
    let policy = policy(rt);
    let dir = rt.audit.dir().to_path_buf();
    if !policy.removes_anything() {
        let kept = crate::audit::format::list_segments(&dir)
            .map_err(|e| e.to_string())?
            .len();
        return Ok(Plan {
            kept,
            ..Default::default()
        });
    }
    let mut cache = std::mem::take(&mut *rt.retention.0.lock().unwrap_or_else(|p| p.into_inner()));
    let (plan, cache) = tokio::task::spawn_blocking(move || {
        // A sweep may remove a segment between the listing and its reading (the anchor
        // then moved too): plan again from a fresh listing.
        let mut tries = 0;
        loop {
            let p = retention::plan(&dir, &policy, agenfleet_protocol::now_ms(), &mut cache);
            tries += 1;
            match p {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => continue,
                p => return (p, cache),
            }
        }
    })
    .await
    .map_err(|e| e.to_string())?;
    *rt.retention.0.lock().unwrap_or_else(|p| p.into_inner()) = cache;
    plan.map_err(|e| e.to_string())
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

/// One sweep.
pub async fn sweep(rt: &Runtime) {
    let plan = match plan(rt).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "audit retention: cannot survey the segments");
            return;
        }
    };
    if !plan.leftovers.is_empty() {
        // A removal cut short: the anchor is in place, the files before it go now.
        if let Err(e) = remove(&plan.leftovers) {
            tracing::warn!(error = %e, "audit retention: cannot remove a segment before the anchor");
        }
    }
    let Some((seq, hash)) = plan.anchor else {
        return;
    };
    if !rt.audit.is_signed() {
        tracing::info!("audit retention waits for the signing key (`agenfleet vault unseal`)");
        return;
    }
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
        return;
    }
    if let Err(e) = rt.audit.anchor(seq, hash).await {
        tracing::warn!(error = %e, "audit retention: no anchor signed; nothing removed");
        return;
    }
    let paths = plan.remove.clone();
    match tokio::task::spawn_blocking(move || remove(&paths)).await {
        Ok(Ok(())) => tracing::info!("{detail}"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "audit retention: a segment stays until the next sweep")
        }
        Err(e) => tracing::warn!(error = %e, "audit retention: the removal stopped"),
    }
}

/// Runs the sweep every `audit_retention_check_secs` while anything can go.
pub fn spawn(rt: Arc<Runtime>) {
    tokio::spawn(async move {
        let every = std::time::Duration::from_secs(rt.cfg.audit_retention_check_secs.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if policy(&rt).removes_anything() {
                sweep(&rt).await;
            }
        }
    });
}
