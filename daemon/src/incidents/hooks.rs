//! Where the rest of the daemon reaches incidents and reviewers: the audit log closing or
//! being tampered with while running raises an incident, and every escalation event goes
//! to the reviewers' routes (and an escalation that ends without a person is recorded).

use super::Incidents;
use std::sync::Arc;

/// Raises an incident when the audit log closes for writing while running (an I/O error,
/// a full disk), and runs the tamper checks (`audit::watch`) on a thread of their own:
/// the tail every checkpoint interval, the whole log every `audit_verify_secs`.
pub fn watch_audit(
    cfg: &crate::config::Config,
    audit: &crate::audit::AuditLog,
    incidents: &Arc<Incidents>,
) {
    let mut closed = audit.closed();
    let weak = Arc::downgrade(incidents);
    tokio::spawn(async move {
        while closed.changed().await.is_ok() {
            let why = closed.borrow_and_update().clone();
            let (Some(why), Some(inc)) = (why, weak.upgrade()) else {
                continue;
            };
            inc.signal(super::detect::Signal::AuditClosed { why });
        }
    });
    let dir = audit.dir().to_path_buf();
    let every = std::time::Duration::from_secs(cfg.audit_checkpoint_secs.max(1));
    let full = std::time::Duration::from_secs(cfg.audit_verify_secs);
    let weak = Arc::downgrade(incidents);
    let weak_stop = weak.clone();
    let handle = tokio::runtime::Handle::current();
    let log = audit.clone();
    let spawned = std::thread::Builder::new()
        .name("audit-watch".into())
        .spawn(move || {
            crate::audit::watch::run(
                dir,
                every,
                full,
                || log.head(),
                || weak_stop.strong_count() == 0,
                |problem| {
                    tracing::error!(%problem, "audit log tampering found while running");
                    if let Some(inc) = weak.upgrade() {
                        handle.spawn(async move {
                            inc.signal(super::detect::Signal::AuditInvalid { problem });
                        });
                    }
                },
            )
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the audit tamper checks");
    }
}

/// Escalations reach their reviewers: every event (opened, reminder, approved, denied,
/// timed_out, abandoned) goes to the reviewers' routes through the outbox; an escalation
/// that ends without a person is also recorded (`escalation.timeout|abandon`).
pub fn tell_reviewers(
    policy: &crate::policy::PolicyEngine,
    incidents: &Arc<Incidents>,
    audit: &crate::audit::AuditLog,
) {
    let weak = Arc::downgrade(incidents);
    let audit = audit.clone();
    policy.escalations.set_hook(Box::new(move |v, event| {
        let who = format!(
            "a tenant_admin of {t}, a project_admin or project_contributor of {t}/{p}, or a platform operator",
            t = v.tenant,
            p = v.project
        );
        if let Some(inc) = weak.upgrade() {
            let n = inc.notify_reviewers(v, event, &who);
            if n == 0 && event == "opened" {
                tracing::info!(escalation = v.id, tenant = %v.tenant, "no reviewers route for this tenant: the escalation waits in the console");
            }
        }
        let action = match event {
            "timed_out" => "escalation.timeout",
            "abandoned" => "escalation.abandon",
            _ => return,
        };
        let ev = agenfleet_protocol::AuditEvent {
            actor: "agenfleetd".into(),
            action: action.into(),
            tenant: Some(v.tenant.clone()),
            agent: Some(v.agent.clone()),
            outcome: "deny".into(),
            detail: serde_json::json!({
                "escalation": v.id,
                "tool": v.tool,
                "request_hash": v.request_hash,
                "deadline": agenfleet_protocol::time::rfc3339(v.deadline_ms),
                "reason": if event == "timed_out" { "nobody decided before the deadline: denied" } else { "the agent was deleted before anyone decided" },
            })
            .to_string(),
        };
        let audit = audit.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                if let Err(e) = audit.record(&ev).await {
                    tracing::error!(error = %e, "cannot record the end of an escalation");
                }
            });
        }
    }));
}
