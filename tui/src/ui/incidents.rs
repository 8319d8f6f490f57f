//! The incidents view: open incidents grouped by the responsible party, triggered first,
//! each with what broke, who owns it (and who shares it), how often it happened and for how
//! long; under it the selected one's summary, the next step in plain words, its evidence and
//! its deliveries (failed ones in red). Also the reassign and resolve dialogs.

use super::theme::Theme;
use crate::app::{App, Mode};
use crate::fmt;
use agenfleet_protocol::incidents::{IncidentState, Severity};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

fn severity_style(t: &Theme, s: Severity) -> Style {
    match s {
        Severity::Critical => t.alert(),
        Severity::Error => t.error(),
        Severity::Warning => t.key(),
        Severity::Info => t.dim(),
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let open = app.open_incidents();
    let block = Block::bordered().title(Span::styled(
        format!(" Incidents — {} open, by responsible party ", open.len()),
        t.title(),
    ));
    let inner = block.inner(area);
    f.render_widget(block, area);
    if open.is_empty() {
        f.render_widget(Paragraph::new("No open incident.").style(t.dim()), inner);
        return;
    }
    let [list, detail] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Min(6)]).areas(inner);
    let mut lines: Vec<Line> = Vec::new();
    let mut selected_line = 0;
    let mut party = None;
    for (i, inc) in open.iter().enumerate() {
        if party != Some(inc.party) {
            party = Some(inc.party);
            let n = open.iter().filter(|x| x.party == inc.party).count();
            lines.push(Line::from(Span::styled(
                format!("{} — {n}", inc.party.label()),
                t.title(),
            )));
        }
        if i == app.inc_selected {
            selected_line = lines.len();
        }
        let who = match (&inc.tenant, &inc.agent) {
            (Some(tn), Some(a)) => format!("{tn}/{a}"),
            (Some(tn), None) => tn.clone(),
            _ => "platform".into(),
        };
        let state = match inc.state {
            IncidentState::Triggered => "TRIGGERED",
            IncidentState::Acknowledged => "acked",
            IncidentState::Resolved => "resolved",
        };
        let mut spans = vec![
            Span::styled(format!(" #{:<4}", inc.id), Style::default()),
            Span::styled(
                format!("{state:<10}"),
                if inc.state == IncidentState::Triggered {
                    t.alert()
                } else {
                    t.dim()
                },
            ),
            Span::styled(
                format!("{:<9}", inc.severity.as_str()),
                severity_style(t, inc.severity),
            ),
            Span::raw(format!("{:<32.32} ", inc.title)),
            Span::raw(format!("{who:<16.16} ")),
            Span::raw(format!("×{:<4} ", inc.count)),
            Span::styled(
                fmt::duration_ms(app.now_ms.saturating_sub(inc.first_ms)),
                t.dim(),
            ),
        ];
        if !inc.co_owners.is_empty() {
            let co: Vec<&str> = inc.co_owners.iter().map(|p| p.as_str()).collect();
            spans.push(Span::styled(format!("  + {}", co.join(", ")), t.dim()));
        }
        if !inc.undelivered.is_empty() {
            spans.push(Span::styled("  ✗ NOT DELIVERED", t.error()));
        }
        let mut line = Line::from(spans);
        if i == app.inc_selected {
            line = line.style(t.selected());
        }
        lines.push(line);
    }
    let height = list.height as usize;
    let skip = (selected_line + 1).saturating_sub(height);
    f.render_widget(Paragraph::new(lines).scroll((skip as u16, 0)), list);

    if let Some(inc) = app.selected_incident() {
        let mut d = vec![
            Line::from(vec![
                Span::styled("what broke: ", t.title()),
                Span::raw(inc.summary.clone()),
            ]),
            Line::from(vec![
                Span::styled("owner: ", t.title()),
                Span::raw(inc.party.label()),
                Span::raw(
                    inc.reassigned_from
                        .map(|p| format!(" (reassigned from {})", p.label()))
                        .unwrap_or_default(),
                ),
                Span::raw(if inc.co_owners.is_empty() {
                    String::new()
                } else {
                    format!(
                        " · shared with {}",
                        inc.co_owners
                            .iter()
                            .map(|p| p.label())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
            ]),
            Line::from(vec![
                Span::styled("next step: ", t.title()),
                Span::raw(inc.next_step.clone()),
            ]),
            Line::from(vec![
                Span::styled("evidence: ", t.title()),
                Span::raw(
                    inc.evidence
                        .iter()
                        .rev()
                        .take(6)
                        .map(|e| format!("#{} {}", e.seq, e.what))
                        .collect::<Vec<_>>()
                        .join(" · "),
                ),
            ]),
        ];
        if !inc.runs.is_empty() {
            d.push(Line::from(vec![
                Span::styled("in runs: ", t.title()),
                Span::raw(
                    inc.runs
                        .iter()
                        .rev()
                        .take(6)
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                ),
                Span::styled("  (:runs AGENT, Enter: the timeline)", t.dim()),
            ]));
        }
        let mut when = vec![
            Span::styled("escalation: ", t.title()),
            Span::raw(if inc.escalation.is_empty() {
                "none (console only)".to_string()
            } else {
                inc.escalation
                    .iter()
                    .map(|s| {
                        format!(
                            "+{} {}{}",
                            fmt::duration_ms(s.after_ms),
                            s.notify,
                            if s.done_ms.is_some() { " ✓" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" · ")
            }),
        ];
        if let (Some(by), Some(after)) = (&inc.acked_by, inc.time_to_ack_ms()) {
            when.push(Span::raw(format!(
                "  — acknowledged by {by} after {}",
                fmt::duration_ms(after)
            )));
        }
        d.push(Line::from(when));
        let mut delivery = vec![Span::styled("delivery: ", t.title())];
        if inc.deliveries.is_empty() && inc.undelivered.is_empty() {
            delivery.push(Span::styled("nothing sent yet", t.dim()));
        }
        if let Some(last) = inc.deliveries.last() {
            delivery.push(Span::styled(
                format!("{} attempt {} {} ", last.route, last.attempt, last.detail),
                if last.ok { t.added() } else { t.error() },
            ));
        }
        for u in &inc.undelivered {
            delivery.push(Span::styled(format!("✗ {u} "), t.error()));
        }
        d.push(Line::from(delivery));
        d.push(Line::from(vec![
            Span::styled("a", t.key()),
            Span::raw(" ack  "),
            Span::styled("R", t.key()),
            Span::raw(" resolve  "),
            Span::styled("o", t.key()),
            Span::raw(" reassign  "),
            Span::styled("S", t.key()),
            Span::raw(" silence 1h  "),
            Span::styled("⏎", t.key()),
            Span::raw(" agent  "),
            Span::styled("e", t.key()),
            Span::raw(" evidence"),
        ]));
        f.render_widget(
            Paragraph::new(d)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(Span::styled(
                    format!(" #{} {} ", inc.id, inc.title),
                    t.title(),
                ))),
            detail,
        );
    }
    match &app.mode {
        Mode::Reassign { id, party, reason } => {
            let r = super::centered(f.area(), 66, 6);
            f.render_widget(Clear, r);
            f.render_widget(
                Paragraph::new(vec![
                    Line::from(vec![
                        Span::raw(format!("Reassign incident #{id} to ")),
                        Span::styled(party.label(), t.key()),
                        Span::styled("  (Tab: next party)", t.dim()),
                    ]),
                    Line::from(Span::styled(format!("reason: {reason}▏"), t.key())),
                    Line::from(Span::styled("Enter confirm · Esc cancel", t.dim())),
                ])
                .block(Block::bordered().title(Span::styled(" Reassign ", t.title()))),
                r,
            );
        }
        Mode::ResolveIncident { id } => {
            let lines = vec![Line::from(format!("Mark incident #{id} resolved?"))];
            super::confirm::dialog(f, super::centered(f.area(), 50, 5), lines, t);
        }
        Mode::SilenceFor { id, typed } => super::input_box(
            f,
            "Silence",
            format!("Silence incident #{id}'s notifications for (90s, 30m, 2h, 1d; empty: 1h):"),
            typed,
            t,
        ),
        Mode::IncidentNote { id, text } => super::input_box(
            f,
            "Note",
            format!("Note on incident #{id} (recorded in the audit log):"),
            text,
            t,
        ),
        _ => {}
    }
}

#[cfg(test)]
pub mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Effect, IncidentAction, Mode};
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::incidents::{Evidence, Incident, Party, Severity};
    use agenfleet_protocol::{Change, WatchReply};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    pub fn incident(
        id: u64,
        party: Party,
        severity: Severity,
        title: &str,
        agent: Option<&str>,
    ) -> Incident {
        Incident {
            id,
            dedup_key: format!("k{id}"),
            scenario: "crash-loop".into(),
            title: title.into(),
            summary: format!("{title}: details"),
            party,
            co_owners: if party == Party::ToolProvider {
                vec![Party::Client]
            } else {
                vec![]
            },
            severity,
            next_step: "Do the obvious thing.".into(),
            tenant: agent.map(|_| "acme".into()),
            project: agent.map(|_| "research".into()),
            agent: agent.map(str::to_string),
            count: id as u32,
            first_ms: 1_100_000,
            last_ms: 1_150_000,
            evidence: vec![Evidence {
                seq: 40 + id,
                what: "agent.exited (code 3)".into(),
            }],
            undelivered: if id == 3 {
                vec!["client webhook http://hooks.local/x".into()]
            } else {
                vec![]
            },
            ..Incident::probe()
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    pub fn with_incidents() -> crate::app::App {
        let mut app = sample_app();
        app.apply_watch(WatchReply {
            epoch: 1,
            revision: 9,
            reset: false,
            changes: vec![
                Change::Incident(Box::new(incident(
                    1,
                    Party::Platform,
                    Severity::Critical,
                    "Container engine unreachable",
                    None,
                ))),
                Change::Incident(Box::new(incident(
                    2,
                    Party::ToolProvider,
                    Severity::Error,
                    "Webhook endpoint is down",
                    Some("crawler"),
                ))),
                Change::Incident(Box::new(incident(
                    3,
                    Party::Client,
                    Severity::Error,
                    "Agent crash-loops",
                    Some("crawler"),
                ))),
                Change::Incident(Box::new(incident(
                    4,
                    Party::ModelProvider,
                    Severity::Error,
                    "Model provider API is down",
                    Some("crawler"),
                ))),
            ],
        });
        app
    }

    #[test]
    fn incidents_grouped_by_party_100x30() {
        let mut app = with_incidents();
        app.on_key(key(KeyCode::Char('4')));
        let t = render(&app, 100, 30);
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn silence_takes_a_typed_duration_and_notes_go_to_the_audit_log() {
        let mut app = with_incidents();
        app.on_key(key(KeyCode::Char('4')));
        let shift_s = KeyEvent::new(KeyCode::Char('S'), KeyModifiers::SHIFT);
        app.on_key(shift_s);
        for c in "soon".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(app.on_key(key(KeyCode::Enter)).is_empty());
        assert!(app.flash.as_ref().unwrap().text.contains("bad duration"));
        for _ in 0..4 {
            app.on_key(key(KeyCode::Backspace));
        }
        for c in "30m".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            vec![Effect::Incident(1, IncidentAction::Silence(1800))]
        );
        app.on_key(shift_s);
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            vec![Effect::Incident(1, IncidentAction::Silence(3600))],
            "empty is an hour"
        );
        app.on_key(key(KeyCode::Char('n')));
        for c in "paged the vendor".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        let text = screen_text(&render(&app, 100, 30));
        assert!(text.contains("Note on incident #1"), "{text}");
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            vec![Effect::NoteIncident(1, "paged the vendor".into())]
        );
    }

    #[test]
    fn keys_act_on_the_selected_incident_and_jump_to_its_agent_and_evidence() {
        let mut app = with_incidents();
        app.on_key(key(KeyCode::Char('4')));
        // Platform first, then model provider, tool provider, client.
        assert_eq!(app.selected_incident().map(|i| i.id), Some(1));
        app.on_key(key(KeyCode::Char('j')));
        assert_eq!(app.selected_incident().map(|i| i.id), Some(4));
        assert_eq!(
            app.on_key(key(KeyCode::Char('a'))),
            vec![Effect::Incident(4, IncidentAction::Ack)]
        );
        app.on_key(key(KeyCode::Char('o')));
        assert!(
            matches!(
                app.mode,
                Mode::Reassign {
                    id: 4,
                    party: Party::ToolProvider,
                    ..
                }
            ),
            "{:?}",
            app.mode
        );
        app.on_key(key(KeyCode::Tab));
        for c in "ours".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(
            app.on_key(key(KeyCode::Enter)),
            vec![Effect::Incident(
                4,
                IncidentAction::Reassign(Party::Client, "ours".into())
            )]
        );
        app.on_key(key(KeyCode::Char('e')));
        assert_eq!(app.view, crate::app::View::Audit);
        assert_eq!(app.filter().text(), "#44");
        app.on_key(key(KeyCode::Char('4')));
        let fx = app.on_key(key(KeyCode::Enter));
        assert_eq!(app.view, crate::app::View::Fleet);
        assert!(app.detail_open);
        assert!(
            matches!(fx.as_slice(), [Effect::FollowLogs(Some(r))] if r.name == "crawler"),
            "{fx:?}"
        );
        let text = screen_text(&render(&app, 100, 30));
        assert!(
            text.contains("INC"),
            "the counter stays in the header: {text}"
        );
    }
}
