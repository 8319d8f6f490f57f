//! The runs view: a table of runs (id, agent, state, trigger, how long, how long ago it
//! was queued, why it failed), failed ones in the failed colour, and under it the open run's timeline —
//! input and result, then each audit record of the run (start, tool decisions, model and
//! connection calls with tokens, end).

use super::theme::Theme;
use crate::app::{App, View};
use agenfleet_protocol::runs::{RunState, RunView};
use agenfleet_protocol::AgentState;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState, Wrap};
use ratatui::Frame;

/// A run's state in the fleet's colours: running as running, failed as failed.
fn state_style(s: RunState, t: &Theme) -> Style {
    match s {
        RunState::Running => t.state(AgentState::Running),
        RunState::Queued => t.state(AgentState::Pending),
        RunState::Succeeded => Style::default(),
        RunState::Failed | RunState::TimedOut => t.state(AgentState::Failed),
        RunState::Cancelled => t.dim(),
    }
}

/// How long it ran (or has run so far), or `-` before it started.
fn took(r: &RunView, now_ms: u64) -> String {
    match (r.started_ms, r.ended_ms) {
        (Some(s), Some(e)) => crate::fmt::duration_ms(e.saturating_sub(s)),
        (Some(s), None) => crate::fmt::duration_ms(now_ms.saturating_sub(s)),
        _ => "-".into(),
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let p = &app.runs;
    let whose = match &p.agent {
        Some((tenant, name)) => format!("{tenant}/{name}"),
        None => "all agents".into(),
    };
    let filter = app.filter_of(View::Runs);
    let visible = p.visible(filter);
    let title = format!(
        " Runs — {whose}{}{} ({}) ",
        if p.failed_only {
            " — failed only"
        } else {
            ""
        },
        if filter.is_empty() {
            String::new()
        } else {
            format!(" /{}", filter.text())
        },
        visible.len()
    );
    let block = Block::bordered().title(Span::styled(title, t.title()));
    let (list_area, timeline_area) = if p.timeline.is_some() {
        let [a, b] =
            Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(area);
        (a, Some(b))
    } else {
        (area, None)
    };
    match &p.list {
        None => f.render_widget(
            Paragraph::new(Span::styled("loading…", t.dim())).block(block),
            list_area,
        ),
        Some(Err(e)) => f.render_widget(
            Paragraph::new(Span::styled(format!("runs not loaded: {e}"), t.error())).block(block),
            list_area,
        ),
        Some(Ok(_)) if visible.is_empty() => {
            let why = if p.failed_only {
                "no failed runs"
            } else if !filter.is_empty() {
                "no run matches the filter"
            } else {
                "no runs yet — `agenfleet runs start AGENT`, a webhook or a schedule starts one"
            };
            f.render_widget(
                Paragraph::new(Span::styled(why, t.dim())).block(block),
                list_area,
            )
        }
        Some(Ok(_)) => {
            let rows: Vec<Row> = visible
                .iter()
                .map(|r| {
                    Row::new(vec![
                        Cell::from(r.id.to_string()),
                        Cell::from(r.agent_ref()),
                        Cell::from(Span::styled(r.state.as_str(), state_style(r.state, t))),
                        Cell::from(r.trigger.clone()),
                        Cell::from(took(r, app.now_ms)),
                        Cell::from(crate::fmt::duration_ms(
                            app.now_ms.saturating_sub(r.created_ms),
                        )),
                        Cell::from(r.error.clone().unwrap_or_default()),
                    ])
                })
                .collect();
            let table = Table::new(
                rows,
                [
                    Constraint::Length(7),
                    Constraint::Length(22),
                    Constraint::Length(10),
                    Constraint::Length(8),
                    Constraint::Length(6),
                    Constraint::Length(6),
                    Constraint::Fill(1),
                ],
            )
            .header(
                Row::new(vec![
                    "RUN", "AGENT", "STATE", "TRIGGER", "TOOK", "AGE", "ERROR",
                ])
                .style(t.title()),
            )
            .block(block)
            .row_highlight_style(t.selected())
            .highlight_symbol("▶ ");
            let mut state = TableState::default().with_selected(Some(p.selected));
            f.render_stateful_widget(table, list_area, &mut state);
        }
    }
    if let (Some(area), Some((id, timeline))) = (timeline_area, &p.timeline) {
        draw_timeline(f, area, app, *id, timeline.as_ref(), t);
    }
}

fn draw_timeline(
    f: &mut Frame,
    area: Rect,
    app: &App,
    id: u64,
    timeline: Option<&Result<Vec<agenfleet_protocol::AuditEntry>, String>>,
    t: &Theme,
) {
    let block = Block::bordered().title(Span::styled(format!(" Run {id} — timeline "), t.title()));
    let mut lines: Vec<Line> = vec![];
    let run = app
        .runs
        .list
        .as_ref()
        .and_then(|l| l.as_ref().ok())
        .and_then(|l| l.iter().find(|r| r.id == id));
    if let Some(r) = run {
        lines.push(Line::from(vec![
            Span::styled("by      ", t.dim()),
            Span::raw(format!("{} ({})", r.requested_by, r.trigger)),
        ]));
        lines.push(Line::from(vec![
            Span::styled("input   ", t.dim()),
            Span::raw(r.input_json.clone()),
        ]));
        if let Some(res) = &r.result_json {
            lines.push(Line::from(vec![
                Span::styled("result  ", t.dim()),
                Span::raw(res.clone()),
            ]));
        }
        if let Some(e) = &r.error {
            lines.push(Line::from(vec![
                Span::styled("error   ", t.dim()),
                Span::styled(e.clone(), t.error()),
            ]));
        }
    }
    match timeline {
        None => lines.push(Line::from(Span::styled("loading…", t.dim()))),
        Some(Err(e)) => lines.push(Line::from(Span::styled(
            format!("timeline not loaded: {e}"),
            t.error(),
        ))),
        Some(Ok(list)) if list.is_empty() => lines.push(Line::from(Span::styled(
            "no records of this run in the audit log",
            t.dim(),
        ))),
        Some(Ok(list)) => {
            for e in list {
                let outcome = match e.event.outcome.as_str() {
                    "ok" | "allow" | "allowed" => Style::default(),
                    "requested" | "cancelled" => t.dim(),
                    _ => t.error(),
                };
                // Time of day is enough here; the day is in the list above.
                let ts = crate::fmt::timestamp(e.time_ms);
                let time = ts
                    .split_once(' ')
                    .map(|(_, t)| t)
                    .unwrap_or(&ts)
                    .to_string();
                lines.push(Line::from(vec![
                    Span::styled(format!("{time}  "), t.dim()),
                    Span::raw(format!("{:<16} ", e.event.action)),
                    Span::styled(format!("{:<9} ", e.event.outcome), outcome),
                    Span::raw(crate::fmt::run_event_detail(&e.event.detail)),
                ]));
            }
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(block)
            .wrap(Wrap { trim: false })
            .scroll((app.runs.timeline_scroll as u16, 0)),
        area,
    );
}

#[cfg(test)]
pub mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{App, Effect, Msg, View};
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::runs::{RunState, RunView};
    use agenfleet_protocol::{AgentRef, AuditEntry, AuditEvent};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn key(c: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    pub fn run(id: u64, agent: &str, state: RunState, error: Option<&str>) -> RunView {
        let ended = state.ended().then_some(1_100_000 + id * 1000 + 2_500);
        RunView {
            id,
            tenant: "acme".into(),
            project: "default".into(),
            agent: agent.into(),
            trigger: if id.is_multiple_of(2) {
                "webhook"
            } else {
                "cli"
            }
            .into(),
            requested_by: "root (uid 0)".into(),
            state,
            input_json: format!("{{\"ticket\":{id}}}"),
            result_json: (state == RunState::Succeeded).then(|| "{\"ok\":true}".into()),
            error: error.map(str::to_string),
            created_ms: 1_100_000 + id * 1000,
            started_ms: (state != RunState::Queued).then_some(1_100_000 + id * 1000 + 100),
            ended_ms: ended,
            deadline_ms: None,
        }
    }

    /// Newest first, as the daemon answers: one running, one failed, one succeeded.
    pub fn sample_runs() -> Vec<RunView> {
        vec![
            run(7, "crawler", RunState::Running, None),
            run(
                6,
                "crawler",
                RunState::Failed,
                Some("tool web.fetch denied"),
            ),
            run(5, "summarizer", RunState::Succeeded, None),
        ]
    }

    fn record(seq: u64, action: &str, outcome: &str, detail: serde_json::Value) -> AuditEntry {
        AuditEntry {
            seq,
            time_ms: 1_106_000 + seq,
            hash: String::new(),
            event: AuditEvent {
                actor: "agent acme/crawler".into(),
                action: action.into(),
                tenant: Some("acme".into()),
                agent: Some("crawler".into()),
                outcome: outcome.into(),
                detail: detail.to_string(),
            },
        }
    }

    /// The runs view open on the sample runs (the load it asked for answered).
    pub fn with_runs(app: &mut App) {
        let fx = app.run_command("runs");
        let Some(Effect::LoadRuns { generation, .. }) = fx.first().cloned() else {
            panic!("opening the runs view loads them: {fx:?}");
        };
        app.on_msg(Msg::RunsList(generation, Ok(sample_runs())));
    }

    #[test]
    fn runs_are_listed_and_enter_shows_the_selected_runs_timeline() {
        let mut app = sample_app();
        let fx = app.run_command("runs");
        assert_eq!(app.view, View::Runs);
        let Some(Effect::LoadRuns {
            generation,
            agent: None,
            failed: false,
        }) = fx.first().cloned()
        else {
            panic!("the fleet's runs are loaded: {fx:?}");
        };
        // An older load's answer is dropped; this one's is shown.
        app.on_msg(Msg::RunsList(generation - 1, Ok(vec![])));
        assert!(app.runs.list.is_none());
        app.on_msg(Msg::RunsList(generation, Ok(sample_runs())));
        let text = screen_text(&render(&app, 120, 30));
        assert!(text.contains("Runs — all agents (3)"), "{text}");
        assert!(text.contains("acme/crawler") && text.contains("tool web.fetch denied"));
        assert!(text.contains("running") && text.contains("succeeded"));

        // j selects the failed run; Enter loads its timeline and shows it under the list.
        app.on_msg(key(KeyCode::Char('j')));
        let fx = app.on_msg(key(KeyCode::Enter));
        assert_eq!(fx, vec![Effect::LoadRunTimeline(6)]);
        app.on_msg(Msg::RunTimeline(
            6,
            Ok(vec![
                record(40, "run.start", "ok", serde_json::json!({"run": 6, "trigger": "webhook"})),
                record(
                    41,
                    "tool.decide",
                    "deny",
                    serde_json::json!({"run": 6, "tool": "web.fetch", "decision": "deny"}),
                ),
                record(
                    42,
                    "run.end",
                    "failed",
                    serde_json::json!({"run": 6, "state": "failed", "error": "tool web.fetch denied"}),
                ),
            ]),
        ));
        let text = screen_text(&render(&app, 120, 30));
        assert!(text.contains("Run 6 — timeline"), "{text}");
        assert!(text.contains("tool=web.fetch decision=deny"), "{text}");
        assert!(text.contains("input   {\"ticket\":6}"), "{text}");
        // The timeline follows the cursor; Enter on its run closes it.
        assert_eq!(
            app.on_msg(key(KeyCode::Char('j'))),
            vec![Effect::LoadRunTimeline(5)]
        );
        assert!(app.on_msg(key(KeyCode::Enter)).is_empty());
        assert!(app.runs.timeline.is_none());
    }

    #[test]
    fn failed_only_asks_the_daemon_again_and_run_news_reload_the_list() {
        let mut app = sample_app();
        with_runs(&mut app);
        let fx = app.on_msg(key(KeyCode::Char('f')));
        assert!(
            matches!(
                fx.as_slice(),
                [Effect::LoadRuns {
                    failed: true,
                    agent: None,
                    ..
                }]
            ),
            "{fx:?}"
        );
        assert!(screen_text(&render(&app, 100, 20)).contains("failed only"));
        // A run ending (recorded in the audit log) loads the list again; a request alone
        // or another record does not.
        let end = record(50, "run.end", "ok", serde_json::json!({"run": 9}));
        let fx = app.on_msg(Msg::Audit(vec![end], None));
        assert!(
            matches!(fx.as_slice(), [Effect::LoadRuns { failed: true, .. }]),
            "{fx:?}"
        );
        let asked = record(51, "run.start", "requested", serde_json::json!({}));
        let other = record(52, "agent.started", "ok", serde_json::json!({}));
        assert!(app.on_msg(Msg::Audit(vec![asked, other], None)).is_empty());
    }

    #[test]
    fn an_end_told_by_the_audit_log_wins_over_a_list_loaded_just_before_it_was_stored() {
        let mut app = sample_app();
        with_runs(&mut app);
        // Run 7 ends: the record comes first; the list loaded on it still says running.
        let end = record(
            60,
            "run.end",
            "ok",
            serde_json::json!({"run": 7, "state": "succeeded"}),
        );
        let fx = app.on_msg(Msg::Audit(vec![end], None));
        let Some(Effect::LoadRuns { generation, .. }) = fx.first().cloned() else {
            panic!("{fx:?}");
        };
        app.on_msg(Msg::RunsList(generation, Ok(sample_runs())));
        assert_eq!(
            app.runs.visible(app.filter_of(View::Runs))[0].state,
            RunState::Succeeded
        );
        let t = render(&app, 120, 20);
        let row: String = t.backend().buffer().content()[3 * 120..4 * 120]
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(row.contains("▶ 7") && row.contains("succeeded"), "{row}");
    }

    #[test]
    fn describe_u_opens_the_agents_runs_only() {
        let mut app = sample_app();
        app.run_command("describe acme/crawler");
        let fx = app.on_msg(key(KeyCode::Char('u')));
        assert_eq!(app.view, View::Runs);
        let crawler = AgentRef {
            tenant: Some("acme".into()),
            name: "crawler".into(),
        };
        // (Leaving describe stops following its pulse.)
        assert!(
            fx.iter().any(|e| matches!(e, Effect::LoadRuns { agent: Some(a), failed: false, .. } if *a == crawler)),
            "{fx:?}"
        );
        // Another agent's run ending does not concern this list.
        let mut e = record(60, "run.end", "ok", serde_json::json!({"run": 3}));
        e.event.agent = Some("summarizer".into());
        assert!(app.on_msg(Msg::Audit(vec![e], None)).is_empty());
        assert!(screen_text(&render(&app, 100, 20)).contains("Runs — acme/crawler"));
    }
}
