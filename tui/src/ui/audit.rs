//! The audit view: the log's health at a glance (writable or closed and why, head, last
//! signed checkpoint, signing key) over the trail itself, newest at the bottom, filtered
//! by `/`, scrolled with j/k.

use super::theme::Theme;
use crate::app::{App, View};
use crate::fmt;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let [status, trail] = Layout::vertical([Constraint::Length(2), Constraint::Min(3)]).areas(area);
    let line1 = match &app.audit_status {
        // What this client found checking the checkpoints itself, above all else.
        _ if app.audit_alarm.is_some() => Line::from(Span::styled(
            format!(" {} ", app.audit_alarm.clone().unwrap_or_default()),
            t.alert(),
        )),
        None => Line::from(Span::styled(
            "audit status: waiting for the daemon…",
            t.dim(),
        )),
        Some(st) if !st.writable => Line::from(vec![
            Span::styled(" AUDIT LOG CLOSED ", t.alert()),
            Span::raw(format!(" {}", st.problem.clone().unwrap_or_default())),
        ]),
        Some(st) => Line::from(vec![
            Span::styled(
                "audit log writable",
                t.state(agenfleet_protocol::AgentState::Running),
            ),
            Span::raw(format!(
                " · head #{} · chain verified to #{} at daemon start",
                st.head_seq, st.verified_to
            )),
        ]),
    };
    let line2 = match &app.audit_status {
        Some(st) => Line::from(Span::styled(
            format!(
                "last checkpoint {} · {}",
                st.last_checkpoint
                    .as_ref()
                    .map(|c| format!("#{} at {}", c.seq, fmt::timestamp(c.time_ms)))
                    .unwrap_or_else(|| "none yet".into()),
                st.signing
            ),
            t.dim(),
        )),
        None => Line::from(""),
    };
    f.render_widget(Paragraph::new(vec![line1, line2]), status);

    let vis = app.audit_visible();
    let inner_rows = trail.height.saturating_sub(3) as usize;
    let end = vis.len().saturating_sub(app.audit_scroll);
    let start = end.saturating_sub(inner_rows);
    let rows: Vec<Row> = vis[start..end]
        .iter()
        .map(|e| {
            let ev = &e.event;
            let target = fmt::audit_target(ev);
            let outcome_style = match ev.outcome.as_str() {
                "refused" | "failed" => t.error(),
                "requested" => t.dim(),
                _ => ratatui::style::Style::default(),
            };
            Row::new(vec![
                Cell::from(format!("#{}", e.seq)),
                Cell::from(fmt::timestamp(e.time_ms)[11..19].to_string()),
                Cell::from(ev.actor.clone()),
                Cell::from(ev.action.clone()),
                Cell::from(target),
                Cell::from(Span::styled(ev.outcome.clone(), outcome_style)),
                Cell::from(ev.detail.clone()),
            ])
        })
        .collect();
    let filter = app.filter_of(View::Audit);
    let title = if filter.is_empty() {
        format!(" Audit trail ({}) ", vis.len())
    } else {
        format!(
            " Audit trail ({} of {}) filter: {} ",
            vis.len(),
            app.audit.len(),
            filter.text()
        )
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(8),
            Constraint::Length(12),
            Constraint::Length(13),
            Constraint::Length(13),
            Constraint::Length(9),
            Constraint::Fill(1),
        ],
    )
    .header(
        Row::new(vec![
            "SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OUTCOME", "DETAIL",
        ])
        .style(t.title()),
    )
    .block(Block::bordered().title(Span::styled(title, t.title())));
    f.render_widget(table, trail);
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::View;
    use crate::ui::testing::render;
    use agenfleet_protocol::{AuditEntry, AuditEvent, AuditStatus, Checkpoint};

    fn entry(seq: u64, action: &str, outcome: &str, detail: &str) -> AuditEntry {
        AuditEntry {
            seq,
            time_ms: 1_795_308_800_000 + seq * 1000,
            hash: format!("{seq:064x}"),
            event: AuditEvent {
                actor: if action.starts_with("agent.e") {
                    "agenfleetd".into()
                } else {
                    "root (uid 0)".into()
                },
                action: action.into(),
                tenant: Some("acme".into()),
                agent: Some("flaky-bot".into()),
                outcome: outcome.into(),
                detail: detail.into(),
            },
        }
    }

    fn audit_app(writable: bool) -> crate::app::App {
        let mut app = sample_app();
        app.view = View::Audit;
        app.apply_audit(
            vec![
                entry(41, "agent.create", "requested", "image agenfleet/agent"),
                entry(42, "agent.create", "ok", "image agenfleet/agent"),
                entry(43, "agent.exited", "observed", "exit code 3"),
                entry(
                    44,
                    "rpc.refused",
                    "refused",
                    "agent_action: no agent named `ghost`",
                ),
            ],
            Some(AuditStatus {
                writable,
                problem: (!writable).then(|| {
                    "damage found at record 13 (audit-…1.seg at byte 3120): checksum mismatch"
                        .into()
                }),
                head_seq: 44,
                head_hash: "ab".repeat(32),
                verified_to: 40,
                last_checkpoint: Some(Checkpoint {
                    seq: 40,
                    hash: "cd".repeat(32),
                    time_ms: 1_795_308_830_000,
                    public_key: "ef".repeat(32),
                    signature: "00".repeat(64),
                }),
                signing: "ed25519 key 2ad87a8f6b584b55… in the kernel keyring".into(),
            }),
        );
        app
    }

    #[test]
    fn audit_view_80x24() {
        let t = render(&audit_app(true), 80, 24);
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn closed_audit_log_is_shown_at_a_glance() {
        let t = render(&audit_app(false), 80, 24);
        let text = crate::ui::testing::screen_text(&t);
        assert!(text.contains("AUDIT LOG CLOSED"), "{text}");
        assert!(text.contains("record 13"));
    }

    #[test]
    fn audit_filter_narrows_the_trail() {
        let mut app = audit_app(true);
        app.filters.entry(View::Audit).or_default().set("refused");
        assert_eq!(app.audit_visible().len(), 1);
        let t = render(&app, 80, 24);
        let text = crate::ui::testing::screen_text(&t);
        assert!(text.contains("(1 of 4)"), "{text}");
    }
}
