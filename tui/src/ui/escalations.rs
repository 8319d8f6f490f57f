//! The escalations queue: tool calls a policy sent to a person — who (the agent), which
//! tool, the arguments, which policy asked and why, how long until the call is denied by
//! itself — and the dialog that approves or denies the selected one with a reason.

use super::theme::Theme;
use crate::app::{App, Mode};
use crate::fmt;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let block = Block::bordered().title(Span::styled(
        format!(
            " Escalations — {} waiting for a person ",
            app.escalations.len()
        ),
        t.title(),
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if app.escalations.is_empty() {
        f.render_widget(
            Paragraph::new("No tool call is waiting for a person.").style(t.dim()),
            inner,
        );
        return;
    }
    let [list, detail] =
        Layout::vertical([Constraint::Percentage(55), Constraint::Min(5)]).areas(inner);
    let rows: Vec<Row> = app
        .escalations
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let left = e.deadline_ms.saturating_sub(app.now_ms);
            Row::new(vec![
                Cell::from(format!("#{}", e.id)),
                Cell::from(format!("{}/{}", e.tenant, e.agent)),
                Cell::from(e.tool.clone()),
                Cell::from(e.policies.join(",")),
                Cell::from(fmt::duration_ms(left)),
                Cell::from(e.args_json.clone()),
            ])
            .style(if i == app.esc_selected {
                t.selected()
            } else {
                ratatui::style::Style::default()
            })
        })
        .collect();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Length(7),
                Constraint::Length(18),
                Constraint::Length(13),
                Constraint::Length(14),
                Constraint::Length(7),
                Constraint::Fill(1),
            ],
        )
        .header(
            Row::new(vec![
                "ID",
                "AGENT",
                "TOOL",
                "POLICY",
                "DENY IN",
                "ARGUMENTS",
            ])
            .style(t.title()),
        ),
        list,
    );
    if let Some(e) = app.escalations.get(app.esc_selected) {
        let lines = vec![
            Line::from(vec![
                Span::styled("why: ", t.title()),
                Span::raw(e.reason.clone()),
            ]),
            Line::from(vec![
                Span::styled("arguments: ", t.title()),
                Span::raw(e.args_json.clone()),
            ]),
            Line::from(vec![
                Span::styled("request: ", t.title()),
                Span::raw(e.request_hash.clone()),
            ]),
            Line::from(vec![
                Span::styled("a", t.key()),
                Span::raw(" approve (this exact request)  "),
                Span::styled("d", t.key()),
                Span::raw(" deny  "),
                Span::styled("j/k", t.key()),
                Span::raw(" select"),
            ]),
        ];
        f.render_widget(
            Paragraph::new(lines)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(Span::styled(format!(" #{} ", e.id), t.title()))),
            detail,
        );
    }
    if let Mode::Decide {
        id,
        approve,
        reason,
    } = &app.mode
    {
        let d = super::centered(f.area(), 64, 6);
        f.render_widget(Clear, d);
        let what = if *approve { "Approve" } else { "Deny" };
        f.render_widget(
            Paragraph::new(vec![
                Line::from(format!(
                    "{what} escalation #{id}. Reason (recorded in the audit log):"
                )),
                Line::from(Span::styled(format!("{reason}▏"), t.key())),
                Line::from(Span::styled("Enter confirm · Esc cancel", t.dim())),
            ])
            .wrap(Wrap { trim: false })
            .block(Block::bordered().title(Span::styled(format!(" {what} "), t.title()))),
            d,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::policy::{EscalationState, EscalationView};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    pub fn escalation(id: u64, agent: &str) -> EscalationView {
        EscalationView {
            id,
            tenant: "acme".into(),
            project: "research".into(),
            agent: agent.into(),
            tool: "http_request".into(),
            args_json: r#"{"method":"POST","url":"https://pay.example.com/charge"}"#.into(),
            request_hash: format!("{id:064x}"),
            policies: vec!["payments".into()],
            reason: "payments are reviewed by a person".into(),
            created_ms: 1_190_000,
            deadline_ms: 1_250_000,
            state: EscalationState::Pending,
            reviewer: None,
            review_reason: None,
            decided_ms: None,
            approval_expires_ms: None,
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn escalations_view_80x24() {
        let mut app = sample_app();
        app.on_key(key(KeyCode::Char('3')));
        app.apply_escalations(vec![
            escalation(41, "crawler"),
            escalation(42, "triage-bot"),
        ]);
        let t = render(&app, 80, 24);
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn deciding_asks_for_a_reason_and_binds_the_request() {
        let mut app = sample_app();
        app.on_key(key(KeyCode::Char('3')));
        app.apply_escalations(vec![
            escalation(41, "crawler"),
            escalation(42, "triage-bot"),
        ]);
        app.on_key(key(KeyCode::Char('j')));
        assert!(app.on_key(key(KeyCode::Char('a'))).is_empty());
        assert!(
            app.on_key(key(KeyCode::Enter)).is_empty(),
            "no reason, no decision"
        );
        for c in "checked".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        let text = screen_text(&render(&app, 80, 24));
        assert!(text.contains("Approve escalation #42"), "{text}");
        let fx = app.on_key(key(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![crate::app::Effect::Decide {
                id: 42,
                request_hash: format!("{:064x}", 42),
                approve: true,
                reason: "checked".into()
            }]
        );
    }

    #[test]
    fn the_counter_is_in_the_header_of_every_view_and_readonly_cannot_decide() {
        let mut app = sample_app();
        let mut v = app.agents.values().next().cloned().expect("an agent");
        v.escalations = 2;
        app.apply_watch(agenfleet_protocol::WatchReply {
            epoch: 1,
            revision: 5,
            reset: false,
            changes: vec![agenfleet_protocol::Change::Agent(Box::new(v))],
        });
        for view in ['1', '2', '3'] {
            app.on_key(key(KeyCode::Char(view)));
            let text = screen_text(&render(&app, 80, 24));
            assert!(text.contains("2 ESCALATIONS"), "view {view}: {text}");
        }
        app.readonly = true;
        app.apply_escalations(vec![escalation(41, "crawler")]);
        app.on_key(key(KeyCode::Char('a')));
        assert_eq!(app.mode, crate::app::Mode::Normal);
        assert!(app
            .flash
            .as_ref()
            .is_some_and(|f| f.text.contains("read-only")));
    }
}
