//! `agenfleet incidents list|show|ack|resolve|reassign|silence|open|matrix|routes|outbox|
//! export`: what broke, who owns it (the responsibility matrix), what to do next; the
//! lifecycle for scripts; where each party's incidents go and what waits to be delivered;
//! and the PagerDuty Events v2 shape for other tools.

use super::Out;
use crate::client::{CliError, Conn};
use agenfleet_protocol::incidents::{Incident, IncidentState, Party};
use agenfleet_protocol::AgentRef;
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum IncidentsCmd {
    /// Open incidents (`--all`: with resolved ones), optionally one party's.
    List {
        #[arg(long)]
        all: bool,
        /// platform | model_provider | tool_provider | client
        #[arg(long)]
        party: Option<String>,
    },
    /// One incident: what broke, who owns it, the next step, evidence, deliveries.
    Show { id: u64 },
    /// Acknowledge (stops its escalation steps).
    Ack {
        id: u64,
        #[arg(long, default_value = "")]
        note: String,
    },
    Resolve {
        id: u64,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Hand it to another party.
    Reassign {
        id: u64,
        party: String,
        #[arg(long)]
        reason: String,
    },
    /// Count new signals of it without delivering them for a while (90s, 15m, 12h, 7d).
    Silence {
        id: u64,
        #[arg(long = "for", default_value = "1h")]
        duration: String,
    },
    /// Open one by hand: `--scenario api-key-leaked [--agent A] --summary TEXT`.
    Open {
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        summary: String,
    },
    /// The responsibility matrix and every scenario with its party and severity.
    Matrix,
    /// The incident routes, and which route(s) each (party, tenant)'s incidents and each
    /// tenant's escalations go to.
    Routes,
    /// Notifications waiting to be delivered (or given up), newest first.
    Outbox {
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    /// Every open incident as PagerDuty Events v2 events (JSON lines).
    Export {
        #[arg(long, default_value = "pagerduty")]
        format: String,
        #[arg(long, default_value = "")]
        routing_key: String,
        #[arg(long)]
        all: bool,
    },
}

fn invalid(msg: impl Into<String>) -> CliError {
    CliError::new(6, "invalid_argument", msg)
}

fn party(s: &str) -> Result<Party, CliError> {
    Party::parse(s).ok_or_else(|| {
        invalid(format!(
            "unknown party `{s}` (platform, model_provider, tool_provider, client)"
        ))
    })
}

fn line(i: &Incident) -> String {
    let who = match (&i.tenant, &i.agent) {
        (Some(t), Some(a)) => format!("{t}/{a}"),
        _ => "platform".into(),
    };
    format!(
        "#{:<5} {:<12} {:<8} {:<14} {:<34} {:<20} ×{}{}",
        i.id,
        i.state,
        i.severity,
        i.party,
        i.title,
        who,
        i.count,
        if i.undelivered.is_empty() {
            String::new()
        } else {
            format!("  NOT DELIVERED: {}", i.undelivered.join("; "))
        }
    )
}

fn details(i: &Incident) -> String {
    let mut s = format!(
        "#{} {} — {} ({})\nwhat broke: {}\nowner:      {}{}{}\nnext step:  {}\ncount:      {} (first {}, last {})\n",
        i.id,
        i.title,
        i.state,
        i.severity,
        i.summary,
        i.party.label(),
        i.reassigned_from
            .map(|p| format!(" (reassigned from {})", p.label()))
            .unwrap_or_default(),
        if i.co_owners.is_empty() {
            String::new()
        } else {
            format!(
                ", shared with {}",
                i.co_owners.iter().map(|p| p.label()).collect::<Vec<_>>().join(", ")
            )
        },
        i.next_step,
        i.count,
        crate::fmt::timestamp(i.first_ms),
        crate::fmt::timestamp(i.last_ms),
    );
    if let Some(t) = i.time_to_ack_ms() {
        s += &format!(
            "acked:      by {} after {}\n",
            i.acked_by.as_deref().unwrap_or("?"),
            crate::fmt::duration_ms(t)
        );
    }
    if !i.runs.is_empty() {
        let runs: Vec<String> = i.runs.iter().map(|r| r.to_string()).collect();
        s += &format!("runs:       {} (agenfleet runs show ID)\n", runs.join(", "));
    }
    for e in &i.evidence {
        s += &format!("evidence:   audit #{} {}\n", e.seq, e.what);
    }
    for st in &i.escalation {
        s += &format!(
            "escalation: after {} notify {}{}\n",
            crate::fmt::duration_ms(st.after_ms),
            st.notify,
            if st.done_ms.is_some() { " (done)" } else { "" }
        );
    }
    for d in &i.deliveries {
        s += &format!(
            "delivery:   {} attempt {} {} {}\n",
            d.route,
            d.attempt,
            if d.ok { "ok" } else { "FAILED" },
            d.detail
        );
    }
    for u in &i.undelivered {
        s += &format!("NOT DELIVERED: {u}\n");
    }
    s.trim_end().to_string()
}

pub async fn run(conn: &Conn, out: &Out, cmd: &IncidentsCmd) -> Result<(), CliError> {
    let show = |i: Incident| out.print(&i, || details(&i));
    match cmd {
        IncidentsCmd::List { all, party: p } => {
            let p = p.as_deref().map(party).transpose()?;
            let list: Vec<Incident> = conn
                .client
                .incidents_list(conn.ctx(), *all)
                .await??
                .into_iter()
                .filter(|i| p.is_none_or(|p| i.party == p))
                .collect();
            out.print(&list, || {
                if list.is_empty() {
                    return "no open incident".into();
                }
                let mut by: Vec<&Incident> = list.iter().collect();
                by.sort_by_key(|i| (i.party, i.state, i.severity, std::cmp::Reverse(i.last_ms)));
                let mut lines = Vec::new();
                let mut current = None;
                for i in by {
                    if current != Some(i.party) {
                        current = Some(i.party);
                        lines.push(format!("== {} ==", i.party.label()));
                    }
                    lines.push(line(i));
                }
                lines.join("\n")
            })
        }
        IncidentsCmd::Show { id } => show(conn.client.incident_show(conn.ctx(), *id).await??),
        IncidentsCmd::Ack { id, note } => show(
            conn.client
                .incident_ack(conn.ctx(), *id, note.clone())
                .await??,
        ),
        IncidentsCmd::Resolve { id, note } => show(
            conn.client
                .incident_resolve(conn.ctx(), *id, note.clone())
                .await??,
        ),
        IncidentsCmd::Reassign {
            id,
            party: p,
            reason,
        } => show(
            conn.client
                .incident_reassign(conn.ctx(), *id, party(p)?, reason.clone())
                .await??,
        ),
        IncidentsCmd::Silence { id, duration } => show(
            conn.client
                .incident_silence(conn.ctx(), *id, super::duration_secs(duration)?)
                .await??,
        ),
        IncidentsCmd::Open {
            scenario,
            agent,
            summary,
        } => {
            let agent = agent
                .as_deref()
                .map(|a| AgentRef::parse(a).map_err(|e| invalid(format!("bad agent name: {e}"))))
                .transpose()?;
            show(
                conn.client
                    .incident_open(conn.ctx(), scenario.clone(), agent, summary.clone())
                    .await??,
            )
        }
        IncidentsCmd::Routes => {
            let r = conn.client.incidents_routes(conn.ctx()).await??;
            out.print(&r, || {
                let mut s = String::from("Routes\n");
                if r.routes.is_empty() {
                    s += "  (none: incidents are kept and shown, not delivered)\n";
                }
                for x in &r.routes {
                    let mut only = Vec::new();
                    for (k, v) in [
                        ("tenant", &x.tenant),
                        ("project", &x.project),
                        ("provider", &x.provider),
                        ("connection", &x.connection),
                    ] {
                        if let Some(v) = v {
                            only.push(format!("{k} {v}"));
                        }
                    }
                    if x.min_severity != agenfleet_protocol::incidents::Severity::Info {
                        only.push(format!("{}+", x.min_severity));
                    }
                    s += &format!(
                        "  {:<44} {:<15} {:<10} {}\n",
                        x.name,
                        x.party,
                        x.format,
                        only.join(", ")
                    );
                }
                s += "\nWhere incidents go (party, tenant → routes)\n";
                for x in &r.resolved {
                    s += &format!(
                        "  {:<15} {:<20} → {}\n",
                        x.party,
                        x.tenant.as_deref().unwrap_or("(any)"),
                        if x.routes.is_empty() {
                            "NO ROUTE".to_string()
                        } else {
                            x.routes.join(", ")
                        }
                    );
                }
                s
            })
        }
        IncidentsCmd::Outbox { limit } => {
            let rows = conn.client.incidents_outbox(conn.ctx(), *limit).await??;
            out.print(&rows, || {
                if rows.is_empty() {
                    return "Nothing waits to be delivered.\n".to_string();
                }
                let mut s = format!(
                    "{:<7} {:<8} {:<11} {:<7} {:<12} {:<8} {:>8}  {:<40} LAST ERROR\n",
                    "ROW", "STATE", "KIND", "ID", "EVENT", "TENANT", "ATTEMPTS", "ROUTE"
                );
                for r in &rows {
                    s += &format!(
                        "{:<7} {:<8} {:<11} {:<7} {:<12} {:<8} {:>8}  {:<40} {}\n",
                        r.id,
                        r.state,
                        r.kind,
                        r.ref_id,
                        r.event,
                        r.tenant.as_deref().unwrap_or("-"),
                        r.attempts,
                        r.route,
                        r.last_error
                    );
                }
                s
            })
        }
        IncidentsCmd::Matrix => {
            let m = conn.client.incidents_matrix(conn.ctx()).await??;
            out.print(&m, || {
                let mut s = String::from("Responsibility matrix\n");
                for a in &m.areas {
                    s += &format!("  {:<36} {}\n", a.name, a.owner.label());
                }
                s += "\nScenarios (incident response)\n";
                for sc in &m.scenarios {
                    let co = if sc.co_owners.is_empty() {
                        String::new()
                    } else {
                        format!(
                            " + {}",
                            sc.co_owners
                                .iter()
                                .map(|p| p.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        )
                    };
                    s += &format!(
                        "  {:<26} {:<40} {:<14}{:<9} {:<8} {}\n",
                        sc.id,
                        sc.title,
                        sc.primary.as_str(),
                        co,
                        sc.severity,
                        if sc.signal == "manual" {
                            "opened by hand".to_string()
                        } else {
                            format!("signal {}", sc.signal)
                        }
                    );
                }
                s.trim_end().to_string()
            })
        }
        IncidentsCmd::Export {
            format,
            routing_key,
            all,
        } => {
            if format != "pagerduty" {
                return Err(invalid(format!("format `{format}` is not pagerduty")));
            }
            let list = conn.client.incidents_list(conn.ctx(), *all).await??;
            for i in list
                .iter()
                .filter(|i| *all || i.state != IncidentState::Resolved)
            {
                out.raw(&i.pagerduty_event(routing_key, None).to_string());
            }
            Ok(())
        }
    }
}
