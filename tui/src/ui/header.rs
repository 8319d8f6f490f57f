//! The top line: the warnings first (DISCONNECTED, ENGINE DOWN, AUDIT CLOSED, SEALED — a
//! narrow terminal cuts the end, never them), then escalations, incidents, long
//! operations in progress, counts by state, who you are and the engine. Across contexts (`:ctx all`): each host's state.

use super::theme::Theme;
use crate::app::{App, ConnState};
use agenfleet_protocol::incidents::Party;
use agenfleet_protocol::AgentState;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// The daemon's alarms, in the order an on-call engineer acts on them.
fn alarms(d: &agenfleet_protocol::DaemonInfo) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !d.engine.connected {
        out.push(" ENGINE DOWN ");
    }
    if !d.audit_writable {
        out.push(" AUDIT CLOSED ");
    }
    if d.vault == agenfleet_protocol::VaultState::Sealed {
        out.push(" SEALED ");
    }
    out
}

/// `:ctx all`: each context's state, alarms, incidents and escalations.
fn hosts(spans: &mut Vec<Span<'static>>, app: &App, t: &Theme) {
    let Some(hosts) = &app.hosts else { return };
    spans.push(Span::styled(" ctx all ", t.title()));
    for (name, h) in hosts {
        match &h.conn {
            ConnState::Disconnected { .. } => {
                spans.push(Span::styled(format!(" {name} UNREACHABLE "), t.alert()))
            }
            ConnState::Connecting => spans.push(Span::raw(format!("│ {name} … "))),
            ConnState::Connected => {
                spans.push(Span::raw(format!("│ {name} {} ", app.host_agents(name))));
                for a in h.daemon.as_ref().map(alarms).unwrap_or_default() {
                    spans.push(Span::styled(a, t.alert()));
                }
                let esc = app.host_escalations(name);
                if esc > 0 {
                    spans.push(Span::styled(format!(" ⚑ {esc} "), t.alert()));
                }
                if !h.open_incidents.is_empty() {
                    spans.push(Span::styled(
                        format!(" INC {} ", h.open_incidents.len()),
                        t.alert(),
                    ));
                }
            }
        }
    }
    if app.readonly {
        spans.push(Span::styled(" READ-ONLY ", t.alert()));
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let mut spans = vec![Span::styled(" AgenFleet ", t.title())];
    if app.multi() {
        hosts(&mut spans, app, t);
        f.render_widget(
            Paragraph::new(Line::from(spans)).style(t.header_bar()),
            area,
        );
        return;
    }
    if let Some(c) = &app.ctx_current {
        spans.push(Span::styled(format!(" ctx {c} "), t.title()));
    }
    match &app.conn {
        ConnState::Connecting => spans.push(Span::raw("connecting to the daemon…")),
        ConnState::Disconnected { error } => {
            spans.push(Span::styled(" DISCONNECTED ", t.alert()));
            spans.push(Span::raw(format!(" reconnecting… ({error})")));
        }
        ConnState::Connected => {
            // Most important first: a narrow terminal cuts the end of the line. What this
            // client found checking the log itself comes before what the daemon says.
            if let Some(a) = &app.audit_alarm {
                let word = a.split(':').next().unwrap_or(a);
                spans.push(Span::styled(format!(" {word} "), t.alert()));
            }
            for a in app.daemon.as_ref().map(alarms).unwrap_or_default() {
                spans.push(Span::styled(a, t.alert()));
            }
            let count = |s: AgentState| app.agents.values().filter(|v| v.state == s).count();
            // Escalations first: a person is needed, whatever the view.
            let pending = app.pending_escalations();
            if pending > 0 {
                spans.push(Span::styled(
                    format!(
                        " ⚑ {pending} ESCALATION{} (3) ",
                        if pending == 1 { "" } else { "S" }
                    ),
                    t.alert(),
                ));
            }
            // Open incidents by responsible party.
            let by_party: Vec<String> = app
                .incident_counts()
                .into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(p, n)| {
                    let short = match p {
                        Party::Platform => "plat",
                        Party::ModelProvider => "model",
                        Party::ToolProvider => "tool",
                        Party::Client => "client",
                    };
                    format!("{short} {n}")
                })
                .collect();
            if !by_party.is_empty() {
                spans.push(Span::styled(
                    format!(" INC {} (4) ", by_party.join(" · ")),
                    t.alert(),
                ));
            }
            // Long operations in progress, with how far they have got.
            for o in app.daemon.iter().flat_map(|d| &d.operations) {
                spans.push(Span::styled(
                    format!(
                        " ⟳ {} {} {} ",
                        o.what,
                        crate::fmt::bar(o.ratio(), 10),
                        o.progress()
                    ),
                    t.title(),
                ));
            }
            spans.push(Span::raw(format!("│ {} agents: ", app.agents.len())));
            for s in [
                AgentState::Failed,
                AgentState::BackingOff,
                AgentState::Running,
                AgentState::Pending,
                AgentState::Stopped,
                AgentState::Unknown,
            ] {
                let n = count(s);
                if n > 0 {
                    spans.push(Span::styled(format!("{n} {s} "), t.state(s)));
                }
            }
            if app.readonly {
                spans.push(Span::styled(" READ-ONLY ", t.alert()));
            }
            if let Some((tn, p)) = &app.context {
                let mut label = match p {
                    Some(p) => format!("{tn}/{p}"),
                    None => tn.clone(),
                };
                if let Some(tier) = app.tenant_tiers.get(tn) {
                    label.push_str(&format!(" · {tier}"));
                }
                spans.push(Span::styled(format!(" in {label} "), t.title()));
            }
            if let Some(c) = &app.caller {
                let role = if c.role == "member" {
                    c.bindings
                        .iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                } else {
                    c.role.clone()
                };
                spans.push(Span::raw(format!("│ {} ({role}) ", c.operator)));
            }
            if let Some(d) = &app.daemon {
                if d.engine.connected {
                    spans.push(Span::raw(format!(
                        "│ engine {}",
                        d.engine.version.clone().unwrap_or_default()
                    )));
                }
            }
        }
    }
    f.render_widget(
        Paragraph::new(Line::from(spans)).style(t.header_bar()),
        area,
    );
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::render_part;

    #[test]
    fn header_100x2() {
        let app = sample_app();
        insta::assert_snapshot!(render_part(&app, 100, 2, super::draw).backend());
    }

    /// At 80 columns every warning is on the line: they come first.
    #[test]
    fn warnings_come_first_and_fit_80_columns() {
        let mut app = sample_app();
        if let Some(d) = app.daemon.as_mut() {
            d.engine.connected = false;
            d.audit_writable = false;
            d.vault = agenfleet_protocol::VaultState::Sealed;
        }
        let s = crate::ui::testing::screen_text(&render_part(&app, 80, 1, super::draw));
        assert!(
            s.contains("ENGINE DOWN") && s.contains("AUDIT CLOSED") && s.contains("SEALED"),
            "{s}"
        );
    }

    #[test]
    fn header_narrow_readonly_80x2() {
        let mut app = sample_app();
        app.readonly = true;
        insta::assert_snapshot!(render_part(&app, 80, 2, super::draw).backend());
    }

    /// A long operation shows with its bar and how far it got, after the warnings.
    #[test]
    fn a_long_operation_shows_its_progress() {
        let mut app = sample_app();
        if let Some(d) = app.daemon.as_mut() {
            d.vault = agenfleet_protocol::VaultState::Sealed;
            d.operations.push(agenfleet_protocol::Operation {
                id: 1,
                what: "unseal: the agents resync".into(),
                done: 30,
                total: 40,
                unit: "agents".into(),
                started_ms: 0,
            });
        }
        let s = crate::ui::testing::screen_text(&render_part(&app, 160, 1, super::draw));
        assert!(
            s.contains("⟳ unseal: the agents resync ▕███████▌  ▏ 30/40 agents"),
            "{s}"
        );
        assert!(s.find("SEALED") < s.find("⟳"), "{s}");
    }
}
