//! Detectors: real signals in (agent exits and failures, the engine, the vault, the audit
//! log, gateway refusals, refused cross-tenant lookups, tool-call decisions, what agents
//! report about providers), raises out — which scenario's signal, the dedup detail, what to
//! say and the audit records that show it. Windows (crash loops, denial spikes) and tool
//! usage (excessive permissions) are kept here; this module does no I/O.

use crate::store::AgentKey;
use agenfleet_protocol::incidents::{Evidence, Party};
use agenfleet_protocol::policy::{AgentReport, ReportKind, ReportOutcome};
use std::collections::{HashMap, HashSet, VecDeque};

/// Something that happened, with the audit record that shows it.
#[derive(Debug, Clone)]
pub enum Signal {
    AgentExit {
        key: AgentKey,
        project: String,
        code: i64,
        oom: bool,
        seq: u64,
    },
    EngineDown {
        why: String,
    },
    EngineUp,
    VaultSealed {
        held_back: u32,
    },
    VaultOpen,
    AuditInvalid {
        problem: String,
    },
    /// The audit log stopped taking records (an I/O error, a full disk).
    AuditClosed {
        why: String,
    },
    DaemonUnclean {
        last_seq: u64,
        last_action: String,
        last_ms: u64,
    },
    CrossAgent {
        key: AgentKey,
        project: String,
        /// Who tried, as the incident names them (`pid 42, outside t/a's container`, `a
        /// task on t/b's network with t/a's token`).
        caller: String,
        seq: u64,
    },
    CrossTenant {
        actor: String,
        target: String,
        seq: u64,
    },
    Report {
        key: AgentKey,
        project: String,
        report: AgentReport,
        has_fallback: bool,
        seq: u64,
    },
    /// What the gateway itself saw of a provider or connection call (no self-report).
    Observed {
        key: AgentKey,
        project: String,
        /// `model.call` or `connection.call`: the record that shows it.
        action: &'static str,
        /// Whether the upstreams are providers (else connections).
        provider: bool,
        /// Connections of kind `workflow` (n8n and the like): built by the client.
        workflow: bool,
        seen: Vec<(String, Seen)>,
        seq: u64,
    },
}

/// One thing the gateway saw an upstream do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// 401 or 403: the key is wrong, revoked or lacks the right (the client's).
    KeyRejected(u16),
    /// 429; `absorbed`: a fallback answered instead.
    RateLimited { absorbed: bool },
    /// 5xx, a timeout, no connection; `absorbed` as above.
    Failed {
        what: String,
        timeout: bool,
        /// No connection could be made (refused, no route, TLS failed).
        unreachable: bool,
        absorbed: bool,
    },
    /// The agent's own budget stopped the call.
    OverBudget(String),
}

/// What a detector raises: the signal name of a scenario and the incident's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raise {
    pub signal: &'static str,
    /// Makes the dedup key together with the scenario (e.g. the agent, the provider).
    pub dedup: String,
    pub summary: String,
    pub tenant: Option<String>,
    pub project: Option<String>,
    pub agent: Option<String>,
    pub evidence: Vec<Evidence>,
    /// The provider or connection it is about (routes can key on them).
    pub provider: Option<String>,
    pub connection: Option<String>,
    /// Co-owners of this raise when they differ from the scenario's.
    pub co_owners: Option<Vec<Party>>,
}

fn for_agent(
    signal: &'static str,
    key: &AgentKey,
    project: &str,
    dedup: String,
    summary: String,
    evidence: Vec<Evidence>,
) -> Raise {
    Raise {
        signal,
        dedup,
        summary,
        tenant: Some(key.tenant.clone()),
        project: Some(project.to_string()),
        agent: Some(key.name.clone()),
        evidence,
        provider: None,
        connection: None,
        co_owners: None,
    }
}

fn platform(signal: &'static str, dedup: &str, summary: String, evidence: Vec<Evidence>) -> Raise {
    Raise {
        signal,
        dedup: dedup.into(),
        summary,
        tenant: None,
        project: None,
        agent: None,
        evidence,
        provider: None,
        connection: None,
        co_owners: None,
    }
}

pub struct Detector {
    crash_exits: usize,
    crash_window_ms: u64,
    denials: usize,
    denial_window_ms: u64,
    exits: HashMap<AgentKey, VecDeque<u64>>,
    denied: HashMap<AgentKey, VecDeque<u64>>,
    /// Tools an agent was allowed to call (since the daemon started or its scopes changed).
    used: HashMap<AgentKey, (HashSet<String>, u64)>,
}

impl Detector {
    pub fn new(
        crash_exits: u32,
        crash_window_ms: u64,
        denials: u32,
        denial_window_ms: u64,
    ) -> Detector {
        Detector {
            crash_exits: crash_exits as usize,
            crash_window_ms,
            denials: denials as usize,
            denial_window_ms,
            exits: HashMap::new(),
            denied: HashMap::new(),
            used: HashMap::new(),
        }
    }

    /// The raises for one signal at time `now_ms`.
    pub fn observe(&mut self, s: Signal, now_ms: u64) -> Vec<Raise> {
        let mut out = Vec::new();
        match s {
            Signal::AgentExit {
                key,
                project,
                code,
                oom,
                seq,
            } => {
                let ev = vec![Evidence {
                    seq,
                    what: format!("agent.exited (code {code}{})", if oom { ", OOM-killed" } else { "" }),
                }];
                if oom {
                    out.push(for_agent(
                        "oom_kill",
                        &key,
                        &project,
                        key.to_string(),
                        format!("{key} was killed for using more memory than its limit"),
                        ev.clone(),
                    ));
                }
                let w = self.exits.entry(key.clone()).or_default();
                w.push_back(now_ms);
                while w.front().is_some_and(|t| now_ms.saturating_sub(*t) > self.crash_window_ms) {
                    w.pop_front();
                }
                if w.len() >= self.crash_exits {
                    out.push(for_agent(
                        "crash_loop",
                        &key,
                        &project,
                        key.to_string(),
                        format!(
                            "{key} exited {} times within {} s (last exit code {code})",
                            w.len(),
                            self.crash_window_ms / 1000
                        ),
                        ev,
                    ));
                }
            }
            Signal::EngineDown { why } => out.push(platform(
                "engine_down",
                "engine",
                format!("the container engine is unreachable: {why}"),
                vec![],
            )),
            Signal::VaultSealed { held_back } => out.push(platform(
                "vault_sealed",
                "vault",
                format!("the vault is sealed; {held_back} agent(s) needing credentials are held back"),
                vec![],
            )),
            Signal::AuditInvalid { problem } => out.push(platform(
                "audit_invalid",
                "audit",
                format!("the audit log is not valid: {problem}"),
                vec![],
            )),
            Signal::AuditClosed { why } => out.push(platform(
                "audit_closed",
                "audit-closed",
                format!("the audit log refuses new records, so every recorded action is refused: {why}"),
                vec![],
            )),
            Signal::DaemonUnclean {
                last_seq,
                last_action,
                last_ms,
            } => out.push(platform(
                "daemon_down",
                &format!("down-after-{last_seq}"),
                format!(
                    "agenfleetd stopped without a clean shutdown: its last record was #{last_seq} ({last_action}) at {}",
                    agenfleet_protocol::time::rfc3339(last_ms)
                ),
                vec![Evidence {
                    seq: last_seq,
                    what: format!("last record before the restart ({last_action})"),
                }],
            )),
            Signal::CrossAgent {
                key,
                project,
                caller,
                seq,
            } => out.push(for_agent(
                "cross_agent",
                &key,
                &project,
                key.to_string(),
                format!("{caller}, connected to its gateway and was refused"),
                vec![Evidence {
                    seq,
                    what: "gateway.refused".into(),
                }],
            )),
            Signal::CrossTenant { actor, target, seq } => out.push(platform(
                "cross_tenant",
                &format!("{actor}->{target}"),
                format!("{actor} reached for {target}, which belongs to a tenant they hold no role in, and was refused"),
                vec![Evidence {
                    seq,
                    what: "rpc.refused".into(),
                }],
            )),
            Signal::Report {
                key,
                project,
                report,
                has_fallback,
                seq,
            } => {
                let ev = vec![Evidence {
                    seq,
                    what: format!(
                        "agent.report (self-reported by the agent: {} {})",
                        report.provider, report.outcome
                    ),
                }];
                let status = report.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
                let p = &report.provider;
                let raise = |signal: &'static str, summary: String| Raise {
                    signal,
                    dedup: p.clone(),
                    summary,
                    tenant: Some(key.tenant.clone()),
                    project: Some(project.clone()),
                    agent: Some(key.name.clone()),
                    evidence: ev.clone(),
                    provider: (report.kind == ReportKind::ModelCall).then(|| p.clone()),
                    connection: None,
                    co_owners: None,
                };
                match (report.kind, report.outcome) {
                    (_, ReportOutcome::Ok) => {}
                    (ReportKind::ModelCall, ReportOutcome::RateLimited) => {
                        if has_fallback || report.fallback_used {
                            out.push(raise(
                                "rate_limit_with_fallback",
                                format!("model provider {p} rate-limits {key}{status}; its fallback took over"),
                            ));
                        } else {
                            out.push(raise(
                                "rate_limit_no_fallback",
                                format!("model provider {p} rate-limits {key}{status} and the agent has no fallback configured"),
                            ));
                        }
                    }
                    (ReportKind::ModelCall, o) => out.push(raise(
                        "model_outage",
                        format!("model provider {p} fails for {key}: {o}{status}"),
                    )),
                    (ReportKind::ToolCall, ReportOutcome::Malicious) => out.push(raise(
                        "tool_malicious",
                        format!("{key} flagged data from tool endpoint {p} as malicious: {}", report.detail),
                    )),
                    (ReportKind::ToolCall, ReportOutcome::Timeout) => out.push(raise(
                        "tool_timeout",
                        format!("tool endpoint {p} timed out for {key}"),
                    )),
                    (ReportKind::ToolCall, o) => out.push(raise(
                        "tool_down",
                        format!("tool endpoint {p} is down for {key}: {o}{status}"),
                    )),
                }
            }
            Signal::Observed {
                key,
                project,
                action,
                provider,
                workflow,
                seen,
                seq,
            } => {
                for (up, s) in seen {
                    let what = if provider { "model provider" } else { "connection" };
                    let ev = vec![Evidence {
                        seq,
                        what: format!("{action} (observed by the gateway: {up})"),
                    }];
                    let r = |signal: &'static str, summary: String| {
                        let mut r = for_agent(signal, &key, &project, up.clone(), summary, ev.clone());
                        if provider {
                            r.provider = Some(up.clone());
                        } else {
                            r.connection = Some(up.clone());
                        }
                        r
                    };
                    // A workflow the client built (n8n…) is the client's when it fails;
                    // the tool provider shares it only when its endpoint was unreachable.
                    if let (true, Seen::Failed { what: w, timeout, unreachable, .. }) = (workflow, &s) {
                        let mut raise = r(
                            "workflow_failed",
                            format!("workflow {up} fails for {key}: {w}"),
                        );
                        if *unreachable || *timeout {
                            raise.co_owners = Some(vec![Party::ToolProvider]);
                        }
                        out.push(raise);
                        continue;
                    }
                    out.push(match s {
                        Seen::KeyRejected(status) => r(
                            "key_rejected",
                            format!("{what} {up} rejected the key of tenant {} (HTTP {status}) for {key}: rotate or re-issue it (`agenfleet {} set {up} --key-stdin`)", key.tenant, if provider { "providers" } else { "connections" }),
                        ),
                        Seen::RateLimited { absorbed: true } => r(
                            "rate_limit_with_fallback",
                            format!("model provider {up} rate-limits {key} (HTTP 429); its fallback took over"),
                        ),
                        Seen::RateLimited { absorbed: false } if provider => r(
                            "rate_limit_no_fallback",
                            format!("model provider {up} rate-limits {key} (HTTP 429) and no fallback took over"),
                        ),
                        Seen::RateLimited { absorbed: false } => r(
                            "tool_down",
                            format!("connection {up} rate-limits {key} (HTTP 429)"),
                        ),
                        Seen::Failed { what: w, absorbed, .. } if provider => r(
                            "model_outage",
                            format!("model provider {up} fails for {key}: {w}{}", if absorbed { " (a fallback answered)" } else { "" }),
                        ),
                        Seen::Failed { what: w, timeout: true, .. } => r(
                            "tool_timeout",
                            format!("connection {up} timed out for {key}: {w}"),
                        ),
                        Seen::Failed { what: w, .. } => r(
                            "tool_down",
                            format!("connection {up} is down for {key}: {w}"),
                        ),
                        Seen::OverBudget(why) => r(
                            "budget_exceeded",
                            format!("{key} is over its budget and its model calls are refused: {why}"),
                        ),
                    });
                }
            }
            Signal::EngineUp | Signal::VaultOpen => {}
        }
        out
    }

    /// A tool-call decision. Answers a denial spike when one is under way, and whether
    /// the agent's tool usage is due for a check against its scopes.
    pub fn decision(
        &mut self,
        key: &AgentKey,
        project: &str,
        tool: &str,
        allowed: bool,
        seq: u64,
        now_ms: u64,
    ) -> (Option<Raise>, bool) {
        if allowed {
            let (used, n) = self.used.entry(key.clone()).or_default();
            if !used.contains(tool) {
                used.insert(tool.to_string());
            }
            *n += 1;
            return (None, *n % 20 == 0);
        }
        let w = self.denied.entry(key.clone()).or_default();
        w.push_back(now_ms);
        while w
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > self.denial_window_ms)
        {
            w.pop_front();
        }
        if w.len() >= self.denials {
            let r = for_agent(
                "denial_spike",
                key,
                project,
                key.to_string(),
                format!(
                    "{key} had {} tool calls denied within {} s",
                    w.len(),
                    self.denial_window_ms / 1000
                ),
                vec![Evidence {
                    seq,
                    what: "tool.decide (deny)".into(),
                }],
            );
            return (Some(r), false);
        }
        (None, false)
    }

    /// Compares what the agent used with what its scopes grant: many granted tools, most
    /// of them never used, is "excessive permissions".
    pub fn usage(&self, key: &AgentKey, project: &str, granted: &[String]) -> Option<Raise> {
        let (used, n) = self.used.get(key)?;
        let unused: Vec<&String> = granted.iter().filter(|t| !used.contains(*t)).collect();
        if granted.len() >= 4 && unused.len() * 2 > granted.len() {
            Some(for_agent(
                "excessive_permissions",
                key,
                project,
                key.to_string(),
                format!(
                    "{key} may call {} tools but used {} of them in {n} allowed calls; never used: {}",
                    granted.len(),
                    granted.len() - unused.len(),
                    unused.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
                vec![],
            ))
        } else {
            None
        }
    }

    /// The agent's scopes changed (or it is gone): start counting its usage again.
    pub fn reset_usage(&mut self, key: &AgentKey) {
        self.used.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AgentKey {
        AgentKey {
            tenant: "t".into(),
            name: "a".into(),
        }
    }

    fn exit(oom: bool) -> Signal {
        Signal::AgentExit {
            key: key(),
            project: "p".into(),
            code: 1,
            oom,
            seq: 9,
        }
    }

    #[test]
    fn crash_loops_need_enough_exits_in_the_window() {
        let mut d = Detector::new(3, 1000, 5, 1000);
        assert!(d.observe(exit(false), 0).is_empty());
        assert!(d.observe(exit(false), 10).is_empty());
        let r = d.observe(exit(false), 20);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].signal, "crash_loop");
        // Spread out: the window forgets.
        assert!(d.observe(exit(false), 5000).is_empty());
        let r = d.observe(exit(true), 5010);
        assert_eq!(
            r.iter().map(|r| r.signal).collect::<Vec<_>>(),
            vec!["oom_kill"]
        );
    }

    #[test]
    fn denial_spikes_and_unused_scopes() {
        let mut d = Detector::new(3, 1000, 3, 1000);
        let k = key();
        assert!(d.decision(&k, "p", "x", false, 1, 0).0.is_none());
        assert!(d.decision(&k, "p", "x", false, 2, 1).0.is_none());
        assert_eq!(
            d.decision(&k, "p", "x", false, 3, 2).0.map(|r| r.signal),
            Some("denial_spike")
        );
        let granted: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut due = false;
        for i in 0..20 {
            due = d.decision(&k, "p", "a", true, 10 + i, 3).1;
        }
        assert!(due, "the 20th allowed call is a check point");
        let r = d.usage(&k, "p", &granted).expect("4 of 5 tools unused");
        assert!(r.summary.contains("used 1 of them"), "{}", r.summary);
        assert!(d.usage(&k, "p", &granted[..2]).is_none(), "few tools: fine");
    }

    #[test]
    fn rate_limits_go_to_the_client_without_a_fallback() {
        let mut d = Detector::new(3, 1000, 3, 1000);
        let report = |outcome| AgentReport {
            kind: ReportKind::ModelCall,
            provider: "anthropic".into(),
            outcome,
            status: Some(429),
            latency_ms: 5,
            fallback_used: false,
            detail: String::new(),
        };
        let sig = |outcome, has_fallback| Signal::Report {
            key: key(),
            project: "p".into(),
            report: report(outcome),
            has_fallback,
            seq: 1,
        };
        assert_eq!(
            d.observe(sig(ReportOutcome::RateLimited, false), 0)[0].signal,
            "rate_limit_no_fallback"
        );
        assert_eq!(
            d.observe(sig(ReportOutcome::RateLimited, true), 0)[0].signal,
            "rate_limit_with_fallback"
        );
        assert_eq!(
            d.observe(sig(ReportOutcome::ServerError, false), 0)[0].signal,
            "model_outage"
        );
        assert!(d.observe(sig(ReportOutcome::Ok, false), 0).is_empty());
    }

    #[test]
    fn a_workflow_is_the_clients_and_a_key_rejected_names_its_tenant() {
        let mut d = Detector::new(3, 1000, 3, 1000);
        let seen = |provider: bool, workflow: bool, s: Seen| Signal::Observed {
            key: key(),
            project: "p".into(),
            action: "connection.call",
            provider,
            workflow,
            seen: vec![("flow".into(), s)],
            seq: 9,
        };
        let failed = |unreachable: bool| Seen::Failed {
            what: "HTTP 500".into(),
            timeout: false,
            unreachable,
            absorbed: false,
        };
        // The n8n row: a workflow that answers with an error is the client's alone.
        let r = d.observe(seen(false, true, failed(false)), 0).remove(0);
        assert_eq!(r.signal, "workflow_failed");
        assert_eq!(r.co_owners, None, "the scenario's owners: the client");
        assert_eq!(r.connection.as_deref(), Some("flow"));
        // Its endpoint unreachable: the tool provider hosting it shares it.
        let r = d.observe(seen(false, true, failed(true)), 0).remove(0);
        assert_eq!(r.signal, "workflow_failed");
        assert_eq!(r.co_owners, Some(vec![Party::ToolProvider]));
        // Any other connection down: the webhook row (tool provider + client).
        assert_eq!(
            d.observe(seen(false, false, failed(false)), 0)[0].signal,
            "tool_down"
        );
        // A provider's 401: the key is the client's; the incident names the provider.
        let r = d
            .observe(seen(true, false, Seen::KeyRejected(401)), 0)
            .remove(0);
        assert_eq!(r.signal, "key_rejected");
        assert_eq!(r.provider.as_deref(), Some("flow"));
        assert!(r.summary.contains("providers set flow"), "{}", r.summary);
    }
}
