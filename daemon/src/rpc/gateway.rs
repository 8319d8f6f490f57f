//! Agent gateways: one Unix socket per agent, in a directory bind-mounted (read-only) into
//! that agent's container alone. The socket names the agent; on every connection the
//! daemon also checks, from the peer's pid, that the caller runs inside that agent's
//! current container — a process anywhere else (another agent's container, the host) gets
//! nothing, and the attempt is audited. Serves the `Gateway` service: credential delivery,
//! tool-call decisions (scopes + Cedar, escalations that wait for a person, each decision
//! durable in the audit log before the agent hears it) and the agent's reports.

use crate::policy::escalations::Outcome;
use crate::runtime::Runtime;
use crate::store::AgentKey;
use agenfleet_protocol::gateway::{
    DeliveredCredential, Gateway, GatewayHello, GATEWAY_SOCKET_NAME,
};
use agenfleet_protocol::policy::{
    AgentReport, Decision, EscalationState, EscalationView, ReportKind, ReportOutcome, ToolCall,
    Verdict,
};
use agenfleet_protocol::{ApiError, AuditEvent, PROTOCOL_VERSION};
use futures::StreamExt;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use tarpc::context::Context;
use tarpc::server::{BaseChannel, Channel};

/// Frames from agents are small; keep the limit tight.
const GATEWAY_MAX_FRAME: usize = 1024 * 1024;
/// Connections one agent holds open at once, per socket: its gateway (the shim and its
/// tools), its local API, its egress proxy (a program fetching in parallel). Each socket
/// has its own budget, so a program that floods one cannot starve the others.
const GATEWAY_MAX_CONNECTIONS: usize = 32;
const API_MAX_CONNECTIONS: usize = 32;
const PROXY_MAX_CONNECTIONS: usize = 64;

/// Whether process `pid` runs inside the container with id `container_id`.
fn pid_in_container(pid: i32, container_id: &str) -> bool {
    if container_id.len() < 12 {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|c| c.lines().any(|l| l.contains(container_id)))
        .unwrap_or(false)
}

#[derive(Clone)]
pub(super) struct GatewayService {
    rt: Arc<Runtime>,
    key: AgentKey,
    /// The agent's project, read once per connection (an agent never changes project).
    project: String,
    /// Why this connection may not use the gateway (None: it may).
    refused: Option<String>,
    /// The job run whose container connected (None: the agent's own container).
    job: Option<u64>,
    /// The run a request names (`X-AgenFleet-Run`, checked: one the agent is running).
    named: Option<u64>,
}

impl GatewayService {
    /// A Swarm task's connection, its token checked (`swarm_gateway.rs`): the agent's
    /// task, or the task of its job run `job` (whose token names it).
    pub(super) fn for_task(rt: Arc<Runtime>, key: AgentKey, job: Option<u64>) -> GatewayService {
        let project = rt.fleet.get(&key).map(|v| v.project).unwrap_or_default();
        GatewayService {
            rt,
            key,
            project,
            refused: None,
            job,
            named: None,
        }
    }

    pub(super) fn runtime(&self) -> &Arc<Runtime> {
        &self.rt
    }

    pub(super) fn key(&self) -> &AgentKey {
        &self.key
    }

    pub(super) fn project(&self) -> &str {
        &self.project
    }

    /// The run a call belongs to: the one the request names (`X-AgenFleet-Run`), else the
    /// job run whose container this is, else the run the agent works on when it runs
    /// exactly one.
    pub(super) fn run(&self) -> Option<u64> {
        self.named
            .or(self.job)
            .or_else(|| self.rt.runs.current_of(&self.key))
    }

    /// The job run whose container this connection comes from.
    pub(super) fn job_run(&self) -> Option<u64> {
        self.job
    }

    /// This service for a request naming run `id` as the one it works on: only a run the
    /// agent is running now (and, from a job's container, only its own).
    pub(super) fn naming_run(&self, id: u64) -> Result<GatewayService, ApiError> {
        let ok =
            self.job.is_none_or(|j| j == id) && self.rt.runs.running_of(&self.key).contains(&id);
        if !ok {
            return Err(ApiError::precondition(format!(
                "X-AgenFleet-Run: run {id} is not one this agent is running"
            )));
        }
        let mut s = self.clone();
        s.named = Some(id);
        Ok(s)
    }

    pub(super) fn check(&self) -> Result<(), ApiError> {
        match &self.refused {
            Some(why) => Err(ApiError::denied(why.clone())),
            None => Ok(()),
        }
    }

    /// (tenant, agent name).
    pub(super) fn agent(&self) -> (&str, &str) {
        (&self.key.tenant, &self.key.name)
    }

    /// Records `ev`; answers its sequence number (None: it could not be recorded).
    pub(super) async fn audit(&self, ev: AuditEvent) -> Option<u64> {
        self.rt.audit_event(ev).await.ok()
    }

    /// Whether the rule admitting (method, host, port, path) lets the host resolve to a
    /// private address.
    pub(super) fn allows_private(&self, request: (&str, &str, u16, &str)) -> bool {
        self.rt
            .policy
            .allows_private(&self.key, &self.project, request)
    }

    /// One credential's current version and value, its delivery audited first (None: the
    /// agent has no credential of that name).
    pub(super) async fn credential(
        &self,
        name: &str,
    ) -> Result<Option<(u32, agenfleet_protocol::SecretValue)>, ApiError> {
        self.check()?;
        // One the spec hands over as a file or a variable is not served here too.
        let elsewhere = self.rt.fleet.get(&self.key).and_then(|v| {
            v.credentials
                .into_iter()
                .find(|c| c.name == name && c.delivery != agenfleet_protocol::Delivery::Api)
        });
        if let Some(c) = elsewhere {
            return Err(ApiError::not_found(format!(
                "credential `{name}` is delivered as {} (the spec's `as`), not through the local API",
                c.describe()
            )));
        }
        let values =
            self.rt.vault.current_values(&self.key).map_err(|e| {
                ApiError::precondition(format!("credentials cannot be delivered: {e}"))
            })?;
        let Some((n, version, value)) = values.into_iter().find(|(n, _, _)| n == name) else {
            return Ok(None);
        };
        // Audit before effect: the delivery is recorded before the value leaves.
        self.rt
            .system_event(
                "creds.deliver",
                Some(&self.key),
                "ok",
                format!("{n} v{version} (local API)"),
            )
            .await?;
        self.teach_log_ring(std::slice::from_ref(&(n, version, value.clone())));
        Ok(Some((version, value)))
    }

    /// Tells the agent's log ring the values about to be delivered, so that the agent
    /// cannot print a value before the ring redacts it (the ring also learns on every
    /// change in the vault, but that races with a delivery).
    fn teach_log_ring(&self, values: &[(String, u32, agenfleet_protocol::SecretValue)]) {
        if let Some(ring) = self.rt.logs(&self.key) {
            ring.learn_secrets(values.iter().filter_map(|(n, v, val)| {
                Some((
                    n.clone(),
                    *v,
                    String::from_utf8(val.expose().to_vec()).ok()?,
                ))
            }));
        }
    }

    fn event(&self, action: &str, outcome: &str, detail: String) -> AuditEvent {
        AuditEvent {
            actor: format!("agent {}", self.key),
            action: action.into(),
            tenant: Some(self.key.tenant.clone()),
            agent: Some(self.key.name.clone()),
            outcome: outcome.into(),
            detail,
        }
    }

    /// The decision on an evaluated call: its verdict, or for an escalation a live
    /// approval of this exact request or a person's answer. (allowed, reviewer, reason)
    async fn decide(
        &self,
        call: &ToolCall,
        ev: &crate::policy::Evaluation,
    ) -> Result<(bool, Option<String>, String), ApiError> {
        Ok(match ev.verdict {
            Verdict::Allow => (true, None, ev.reason.clone()),
            Verdict::Deny => (false, None, ev.reason.clone()),
            Verdict::Escalate => match self
                .rt
                .policy
                .escalations
                .approval(&self.key, &ev.request_hash)
            {
                Some((reviewer, esc)) => {
                    let why = format!(
                        "approved by {reviewer} in escalation {esc} (bound to this exact request)"
                    );
                    (true, Some(reviewer), why)
                }
                // Boxed: the rare wait for a person would otherwise size every call's future.
                None => Box::pin(self.escalate(call, ev)).await?,
            },
        })
    }

    /// The durable `tool.decide` record; answers its sequence number (the decision id).
    async fn record_decision(
        &self,
        call: &ToolCall,
        ev: &crate::policy::Evaluation,
        allowed: bool,
        reviewer: &Option<String>,
        reason: &str,
    ) -> Result<u64, ApiError> {
        let detail = serde_json::json!({
            "tool": call.tool,
            "args_sha256": ev.args_digest,
            "request_hash": ev.request_hash,
            "decision": if allowed { "allow" } else { "deny" },
            "verdict": ev.verdict.to_string(),
            "policy_version": ev.policy_version,
            "policies": ev.policies,
            "reviewer": reviewer,
            "latency_us": ev.latency_us,
            "reason": reason,
            "run": self.run(),
        })
        .to_string();
        let outcome = if allowed { "allow" } else { "deny" };
        self.rt
            .audit_event(self.event("tool.decide", outcome, detail))
            .await
    }

    /// Tells the incident detectors (denial spikes, permissions granted but never used).
    fn signal_decision(&self, tool: &str, allowed: bool, decision_id: u64) {
        let (key, project) = (&self.key, &self.project);
        if self
            .rt
            .incidents
            .decision(key, project, tool, allowed, decision_id)
        {
            let granted = self.rt.policy.granted_tools(key, project);
            self.rt.incidents.check_usage(key, project, &granted);
        }
    }

    /// Opens an escalation (its record first: the id is that record's sequence number),
    /// or joins the pending one of this same request (the agent's retry), and waits for a
    /// person or the deadline. Answers (allowed, reviewer, reason).
    async fn escalate(
        &self,
        call: &ToolCall,
        ev: &crate::policy::Evaluation,
    ) -> Result<(bool, Option<String>, String), ApiError> {
        let queue = &self.rt.policy.escalations;
        let waiter = match queue.attach(&self.key, &ev.request_hash) {
            Some(w) => {
                tracing::info!(agent = %self.key, id = w.id, tool = %call.tool, "retried call joins its pending escalation");
                w
            }
            None => {
                let now = agenfleet_protocol::now_ms();
                let detail = serde_json::json!({
                    "tool": call.tool,
                    "args_sha256": ev.args_digest,
                    "request_hash": ev.request_hash,
                    "policies": ev.policies,
                    "policy_version": ev.policy_version,
                    "reason": ev.reason,
                    "timeout_ms": ev.timeout_ms,
                })
                .to_string();
                let id = self
                    .rt
                    .audit_event(self.event("tool.escalate", "pending", detail))
                    .await?;
                tracing::info!(agent = %self.key, id, tool = %call.tool, "tool call escalated to a person");
                queue.open(EscalationView {
                    id,
                    tenant: self.key.tenant.clone(),
                    project: self.project.clone(),
                    agent: self.key.name.clone(),
                    tool: call.tool.clone(),
                    args_json: call.args_json.clone(),
                    request_hash: ev.request_hash.clone(),
                    policies: ev.policies.clone(),
                    reason: ev.reason.clone(),
                    created_ms: now,
                    deadline_ms: now + ev.timeout_ms,
                    state: EscalationState::Pending,
                    reviewer: None,
                    review_reason: None,
                    decided_ms: None,
                    approval_expires_ms: None,
                })
            }
        };
        let (id, deadline_ms) = (waiter.id, waiter.deadline_ms);
        let publish = |n| self.rt.fleet.set_escalations(&self.key, n);
        let svc = self.clone();
        let gone = move |id| {
            // This call is gone (its denial is recorded); the escalation stays pending
            // and a decision applies to the agent's retry of the same request.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let ev = svc.event(
                        "tool.decide",
                        "deny",
                        format!("{{\"escalation\":{id},\"reason\":\"the agent's call went away before anyone decided; the escalation stays pending until its deadline and a decision applies to the same request's retry\"}}"),
                    );
                    let _ = svc.rt.audit_event(ev).await;
                });
            }
        };
        let outcome = queue.wait(waiter, publish, gone).await;
        Ok(match outcome {
            Outcome::Decided(res) => (
                res.approved,
                Some(res.reviewer.clone()),
                format!(
                    "{} by {} in escalation {id}: {}",
                    if res.approved { "approved" } else { "denied" },
                    res.reviewer,
                    res.reason
                ),
            ),
            Outcome::TimedOut => (
                false,
                None,
                format!(
                    "escalation {id} timed out at its deadline ({}) with nobody deciding: denied",
                    agenfleet_protocol::time::rfc3339(deadline_ms)
                ),
            ),
        })
    }

    /// The decision on one call, durable before it is answered (see `authorize`).
    pub(super) async fn decide_call(&self, call: &ToolCall) -> Result<Decision, ApiError> {
        let ev = self
            .rt
            .policy
            .evaluate(&self.key, &self.project, call, None);
        let (allowed, reviewer, reason) = self.decide(call, &ev).await?;
        // Audit before effect: the agent hears "allow" only once this record is durable.
        let decision_id = self
            .record_decision(call, &ev, allowed, &reviewer, &reason)
            .await?;
        self.signal_decision(&call.tool, allowed, decision_id);
        crate::metrics::counters().decision(ev.verdict, allowed, ev.latency_us);
        crate::pulse::history().decision(
            &self.key.tenant,
            &self.project,
            ev.verdict,
            agenfleet_protocol::now_ms(),
        );
        Ok(Decision {
            decision_id,
            allowed,
            verdict: ev.verdict,
            reason,
            policies: ev.policies,
            policy_version: ev.policy_version,
            reviewer,
            latency_us: ev.latency_us,
            request_hash: ev.request_hash,
        })
    }
}

impl Gateway for GatewayService {
    async fn hello(self, _: Context, protocol_version: u32) -> Result<GatewayHello, ApiError> {
        self.check()?;
        if protocol_version != PROTOCOL_VERSION {
            return Err(ApiError::new(
                agenfleet_protocol::ErrorCode::VersionMismatch,
                format!("gateway protocol {PROTOCOL_VERSION}, shim speaks {protocol_version}"),
            ));
        }
        Ok(GatewayHello {
            protocol_version: PROTOCOL_VERSION,
            tenant: self.key.tenant.clone(),
            agent: self.key.name.clone(),
        })
    }

    async fn wait_credentials(
        self,
        ctx: Context,
        held: Vec<(String, u32)>,
        max_wait_ms: u64,
    ) -> Result<Option<Vec<DeliveredCredential>>, ApiError> {
        self.check()?;
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_millis(max_wait_ms.min(agenfleet_protocol::MAX_WAIT_MS));
        let mut changes = self.rt.credential_changes(&self.key);
        loop {
            let now_held: Vec<(String, u32)> = self
                .rt
                .vault
                .list(&self.key)
                .map_err(|e| ApiError::precondition(e.to_string()))?
                .into_iter()
                .filter_map(|c| c.current_version.map(|v| (c.name, v)))
                .collect();
            let mut a = now_held.clone();
            let mut b = held.clone();
            a.sort();
            b.sort();
            if a != b {
                return self.credentials(ctx).await.map(Some);
            }
            let Some(rx) = changes.as_mut() else {
                return Ok(None);
            };
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(None),
            }
        }
    }

    /// evaluate → decide (a person, for an escalation) → audit → signal → answer.
    async fn authorize(self, _: Context, call: ToolCall) -> Result<Decision, ApiError> {
        self.check()?;
        if call.tool == agenfleet_protocol::policy::TOOL_MODEL {
            return Err(ApiError::invalid(format!(
                "`{}` is decided by the gateway itself when the agent calls a provider at {}/providers/NAME/…; it cannot be asked for",
                call.tool,
                agenfleet_protocol::upstream::LOCAL_API_BASE
            )));
        }
        self.decide_call(&call).await
    }

    async fn report(self, _: Context, report: AgentReport) -> Result<u64, ApiError> {
        self.check()?;
        if report.provider.is_empty() || report.provider.len() > 256 {
            return Err(ApiError::invalid("report: provider must be 1 to 256 bytes"));
        }
        if report.detail.len() > 2048 {
            return Err(ApiError::invalid(
                "report: detail must be at most 2048 bytes",
            ));
        }
        let detail = serde_json::json!({
            "kind": report.kind,
            "provider": report.provider,
            "status": report.status,
            "latency_ms": report.latency_ms,
            "fallback_used": report.fallback_used,
            "detail": report.detail,
        })
        .to_string();
        let outcome = serde_json::to_value(report.outcome)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let seq = self
            .rt
            .audit_event(self.event("agent.report", &outcome, detail))
            .await?;
        let project = self.project.clone();
        // Only a model's rate limit depends on the spec (its fallbacks, or the fallback
        // chain of the bound provider it names): read it then only.
        let has_fallback = report.kind == ReportKind::ModelCall
            && report.outcome == ReportOutcome::RateLimited
            && self.rt.agent_spec(&self.key).is_some_and(|s| {
                !s.model_fallbacks.is_empty()
                    || (s.providers.contains(&report.provider)
                        && self
                            .rt
                            .upstreams
                            .exists(&self.key.tenant, &report.provider)
                            .ok()
                            .flatten()
                            .is_some_and(|v| !v.spec.fallbacks.is_empty()))
            });
        self.rt
            .incidents
            .signal(crate::incidents::detect::Signal::Report {
                key: self.key.clone(),
                project,
                report,
                has_fallback,
                seq,
            });
        Ok(seq)
    }

    async fn credentials(self, _: Context) -> Result<Vec<DeliveredCredential>, ApiError> {
        self.check()?;
        let values =
            self.rt.vault.current_values(&self.key).map_err(|e| {
                ApiError::precondition(format!("credentials cannot be delivered: {e}"))
            })?;
        let names: Vec<String> = values.iter().map(|(n, v, _)| format!("{n} v{v}")).collect();
        // Audit before effect: the delivery is recorded before the values leave.
        self.rt
            .system_event(
                "creds.deliver",
                Some(&self.key),
                "ok",
                if names.is_empty() {
                    "no credentials".into()
                } else {
                    names.join(", ")
                },
            )
            .await?;
        self.teach_log_ring(&values);
        Ok(values
            .into_iter()
            .map(|(name, version, value)| DeliveredCredential {
                name,
                version,
                value,
            })
            .collect())
    }
}

/// Which of an agent's sockets a connection came in on.
pub(super) enum Conn {
    Gateway,
    Api,
    Proxy,
}

/// Creates the agent's gateway socket, its local API socket and (in `gateway` network
/// mode) its egress proxy socket, replacing stale ones, and serves them until the
/// returned task is aborted.
pub fn start(rt: Arc<Runtime>, key: AgentKey) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let dir = crate::runtime::container::gateway_dir(&rt.cfg.state_dir, &key);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join(GATEWAY_SOCKET_NAME);
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    // The agent runs as an unprivileged uid; only its own container can reach this path.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    // The local API (HTTP + JSON) beside it, for agents in any language.
    let api_path = dir.join(agenfleet_protocol::gateway::API_SOCKET_NAME);
    let _ = std::fs::remove_file(&api_path);
    let api_listener = tokio::net::UnixListener::bind(&api_path)?;
    std::fs::set_permissions(&api_path, std::fs::Permissions::from_mode(0o666))?;
    // The egress proxy, for an agent whose only way out is the gateway.
    let proxy_path = dir.join(agenfleet_protocol::gateway::PROXY_SOCKET_NAME);
    let _ = std::fs::remove_file(&proxy_path);
    let gateway_mode = rt
        .agent_spec(&key)
        .is_some_and(|s| s.network.mode == agenfleet_protocol::NetworkMode::Gateway);
    let proxy_listener = if gateway_mode {
        let l = tokio::net::UnixListener::bind(&proxy_path)?;
        std::fs::set_permissions(&proxy_path, std::fs::Permissions::from_mode(0o666))?;
        Some(l)
    } else {
        None
    };
    // The TLS inspection CA, for an agent with an inspected connection.
    if let Some(spec) = rt.agent_spec(&key) {
        if rt.upstreams.inspects(&key.tenant, &spec) {
            match rt.upstreams.inspect_ca(&rt.instance) {
                Ok(ca) => {
                    let p = dir.join(crate::upstreams::INSPECT_BUNDLE_FILE);
                    std::fs::write(&p, &ca.bundle_pem)?;
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
                }
                Err(e) => {
                    tracing::warn!(agent = %key, error = %e, "no TLS inspection CA for the agent yet")
                }
            }
        }
    }
    let timeouts = super::conn::Timeouts::gateway(&rt.cfg);
    // One agent's socket: its shim and its tools hold a few connections; a flood of them
    // is closed at once instead of eating the daemon's descriptors.
    let budget = |n| super::conn::Admission::new(n, n);
    let admissions = [
        budget(GATEWAY_MAX_CONNECTIONS),
        budget(API_MAX_CONNECTIONS),
        budget(PROXY_MAX_CONNECTIONS),
    ];
    let mut refusals = super::conn::RefusalLog::default();
    Ok(tokio::spawn(async move {
        loop {
            let proxy_accept = async {
                match &proxy_listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            };
            let (accepted, kind) = tokio::select! {
                r = listener.accept() => (r, Conn::Gateway),
                r = api_listener.accept() => (r, Conn::Api),
                r = proxy_accept => (r, Conn::Proxy),
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            };
            let (i, what, limit) = match kind {
                Conn::Gateway => (0, "gateway", GATEWAY_MAX_CONNECTIONS),
                Conn::Api => (1, "local API", API_MAX_CONNECTIONS),
                Conn::Proxy => (2, "egress proxy", PROXY_MAX_CONNECTIONS),
            };
            let permit = match admissions[i].admit(0) {
                Ok(p) => p,
                Err(_) => {
                    refusals.note(
                        0,
                        &format!("{what} of agent {key}: {limit} connections already open"),
                    );
                    continue;
                }
            };
            let pid = stream.peer_cred().ok().and_then(|c| c.pid()).unwrap_or(-1);
            // The agent's own container, or one of its job runs' (which names the run).
            let own = rt
                .container_of(&key)
                .is_some_and(|cid| pid > 0 && pid_in_container(pid, &cid));
            let run = if own || pid <= 0 {
                None
            } else {
                rt.jobs
                    .containers_of(&key)
                    .into_iter()
                    .find(|(_, cid)| pid_in_container(pid, cid))
                    .map(|(run, _)| run)
            };
            let refused = (!own && run.is_none()).then(|| format!(
                "not permitted: this gateway belongs to agent {key} and the caller (pid {pid}) does not run in its container"
            ));
            // Read once per connection: an agent never changes project.
            let project = rt.fleet.get(&key).map(|v| v.project).unwrap_or_default();
            if let Some(why) = &refused {
                tracing::warn!(agent = %key, pid, "gateway connection from outside the agent's container refused");
                let seq = record_refused(&rt, &key, format!("pid {pid}"), why.clone()).await;
                if let Ok(seq) = seq {
                    rt.incidents
                        .signal(crate::incidents::detect::Signal::CrossAgent {
                            key: key.clone(),
                            project: project.clone(),
                            caller: format!("pid {pid}, outside {key}'s container"),
                            seq,
                        });
                }
            }
            let service = GatewayService {
                rt: rt.clone(),
                key: key.clone(),
                project,
                refused,
                job: run,
                named: None,
            };
            tokio::spawn(serve_conn(kind, stream, service, timeouts, Some(permit)));
        }
    }))
}

/// Records a gateway connection refused on agent `key`'s behalf (`gateway.refused`),
/// `actor` naming the caller; answers the record's sequence number.
pub(super) async fn record_refused(
    rt: &Runtime,
    key: &AgentKey,
    actor: String,
    detail: String,
) -> Result<u64, ApiError> {
    rt.audit_event(AuditEvent {
        actor,
        action: "gateway.refused".into(),
        tenant: Some(key.tenant.clone()),
        agent: Some(key.name.clone()),
        outcome: "refused".into(),
        detail,
    })
    .await
}

/// Serves one accepted connection of an agent's: its gateway (tarpc), its local API or
/// its egress proxy; the permit, if any, is its place in the socket's budget.
pub(super) async fn serve_conn(
    kind: Conn,
    stream: tokio::net::UnixStream,
    service: GatewayService,
    timeouts: super::conn::Timeouts,
    permit: Option<super::conn::Permit>,
) {
    match kind {
        Conn::Api => {
            super::local_api::serve(stream, service, timeouts.frame).await;
            drop(permit);
        }
        Conn::Proxy => {
            super::egress::serve(stream, service, timeouts.frame).await;
            drop(permit);
        }
        Conn::Gateway => {
            let stream = super::conn::Guarded::new(stream, timeouts, permit);
            let transport =
                agenfleet_protocol::transport::server_transport(stream, GATEWAY_MAX_FRAME);
            BaseChannel::with_defaults(transport)
                .max_concurrent_requests(super::conn::MAX_IN_FLIGHT)
                .execute(service.serve())
                .for_each(|fut| async {
                    tokio::spawn(fut);
                })
                .await;
        }
    }
}
