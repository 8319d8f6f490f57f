//! Metrics for the monitoring people already run, in the Prometheus/OpenMetrics text
//! format (`prometheus-client`): counters and histograms the hot paths add to (decisions
//! and their latency, audit appends, agent exits), and at each scrape the state as it is
//! (agents by state, restarts, pending escalations, open incidents, the audit log, the
//! vault, the engine, watch clients). Served on `metrics_listen` (off by default;
//! platform-level: tenant names are label values) and by `agenfleet metrics`.
//!
//! Cardinality: per tenant, 7 agent states + 1 restarts + 1 escalations series; incidents
//! at most 4 parties × 4 severities; decisions 4 series × the histogram's 14 buckets.

use crate::runtime::Runtime;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock};

// Hot-path label sets hold static strings: counting a decision allocates nothing.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Decision {
    verdict: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AgentLabels {
    tenant: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Tenant {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IncidentLabels {
    party: String,
    severity: String,
}

/// What the hot paths count (process-wide; cheap: atomics).
pub struct Counters {
    decisions: Family<Decision, Counter>,
    decision_seconds: Histogram,
    audit_append_seconds: Histogram,
    exits: Family<Reason, Counter>,
}

/// The process's counters.
pub fn counters() -> &'static Counters {
    static C: OnceLock<Counters> = OnceLock::new();
    C.get_or_init(|| Counters {
        decisions: Family::default(),
        // 10 µs … ~160 ms.
        decision_seconds: Histogram::new(exponential_buckets(0.000_01, 2.0, 14)),
        // 50 µs … ~800 ms.
        audit_append_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
        exits: Family::default(),
    })
}

impl Counters {
    /// A tool-call decision (the policies' verdict, and the outcome after any person).
    pub fn decision(
        &self,
        verdict: agenfleet_protocol::policy::Verdict,
        allowed: bool,
        latency_us: u64,
    ) {
        self.decisions
            .get_or_create(&Decision {
                verdict: verdict.as_str(),
                decision: if allowed { "allow" } else { "deny" },
            })
            .inc();
        self.decision_seconds.observe(latency_us as f64 / 1e6);
    }

    /// One durable audit append, from request to durable.
    pub fn audit_append(&self, seconds: f64) {
        self.audit_append_seconds.observe(seconds);
    }

    /// An agent's container exited: `oom`, `error` (non-zero) or `clean`.
    pub fn exit(&self, code: i64, oom: bool) {
        let reason = if oom {
            "oom"
        } else if code != 0 {
            "error"
        } else {
            "clean"
        };
        self.exits.get_or_create(&Reason { reason }).inc();
    }
}

fn gauge_family<L>(
    reg: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) where
    L: Clone + std::fmt::Debug + std::hash::Hash + Eq + EncodeLabelSet + Send + Sync + 'static,
{
    let f: Family<L, Gauge> = Family::default();
    for (l, v) in values {
        f.get_or_create(&l).inc_by(v);
    }
    reg.register(name, help, f);
}

fn gauge(reg: &mut Registry, name: &str, help: &str, v: i64) {
    let g: Gauge = Gauge::default();
    g.set(v);
    reg.register(name, help, g);
}

/// The whole exposition, as of now.
pub fn render(rt: &Arc<Runtime>) -> String {
    let mut reg = Registry::with_prefix("agenfleet");
    let c = counters();
    reg.register(
        "decisions",
        "Tool-call decisions by policy verdict and outcome",
        c.decisions.clone(),
    );
    reg.register(
        "decision_seconds",
        "Time to decide a tool call (scopes and policies, in the daemon)",
        c.decision_seconds.clone(),
    );
    reg.register(
        "audit_append_seconds",
        "Time from an audit record's request to its durable write (group commit)",
        c.audit_append_seconds.clone(),
    );
    reg.register(
        "agent_exits",
        "Agent container exits by reason (oom, error, clean)",
        c.exits.clone(),
    );
    let (_, daemon, agents) = rt.fleet.snapshot(|_| true);
    let mut by_state: std::collections::HashMap<AgentLabels, i64> = Default::default();
    let mut restarts: std::collections::HashMap<Tenant, i64> = Default::default();
    let mut escalations: std::collections::HashMap<Tenant, i64> = Default::default();
    for a in &agents {
        *by_state
            .entry(AgentLabels {
                tenant: a.tenant.clone(),
                state: format!("{:?}", a.state).to_lowercase(),
            })
            .or_default() += 1;
        let t = Tenant {
            tenant: a.tenant.clone(),
        };
        *restarts.entry(t.clone()).or_default() += a.restarts as i64;
        *escalations.entry(t).or_default() += a.escalations as i64;
    }
    gauge_family(&mut reg, "agents", "Agents by tenant and state", by_state);
    gauge_family(
        &mut reg,
        "agent_restarts",
        "Restarts of the agents that exist now, by tenant",
        restarts,
    );
    gauge_family(
        &mut reg,
        "escalations_pending",
        "Tool calls waiting for a person, by tenant",
        escalations,
    );
    let mut open: std::collections::HashMap<IncidentLabels, i64> = Default::default();
    for i in rt.incidents.list(false, |_| true) {
        *open
            .entry(IncidentLabels {
                party: i.party.as_str().into(),
                severity: i.severity.as_str().into(),
            })
            .or_default() += 1;
    }
    gauge_family(
        &mut reg,
        "incidents_open",
        "Open incidents by responsible party and severity",
        open,
    );
    gauge(
        &mut reg,
        "audit_writable",
        "1 while the audit log takes records; 0 once it closed (every mutation refused)",
        rt.audit.status().writable as i64,
    );
    gauge(
        &mut reg,
        "vault_sealed",
        "1 while the vault is sealed (credentialed agents wait)",
        (daemon.vault == agenfleet_protocol::VaultState::Sealed) as i64,
    );
    gauge(
        &mut reg,
        "engine_up",
        "1 while the container engine answers",
        daemon.engine.connected as i64,
    );
    gauge(
        &mut reg,
        "watch_clients",
        "Clients long-polling for fleet changes now (consoles, `agenfleet watch`)",
        rt.fleet.watchers() as i64,
    );
    gauge(
        &mut reg,
        "deliveries_pending",
        "Incident and escalation notifications waiting in the outbox",
        rt.incidents.pending_deliveries() as i64,
    );
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &reg) {
        tracing::error!(error = %e, "cannot encode the metrics");
    }
    out
}

/// Serves `GET /metrics` on `addr` (plain HTTP/1.1; anything else is 404).
pub async fn serve(rt: Arc<Runtime>, addr: std::net::SocketAddr) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let rt = rt.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let rt = rt.clone();
                    async move {
                        let res = if req.uri().path() == "/metrics" {
                            hyper::Response::builder()
                                .header(
                                    hyper::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )
                                .body(Full::new(Bytes::from(render(&rt))))
                        } else {
                            hyper::Response::builder()
                                .status(404)
                                .body(Full::new(Bytes::from_static(b"GET /metrics\n")))
                        };
                        res
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                // A scraper that opens a connection and sends nothing is cut off.
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(10))
                    .serve_connection(io, svc)
                    .await;
            });
        }
    });
    Ok(())
}
