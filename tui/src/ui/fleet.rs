//! The fleet table: tenant/project, agent, state, uptime, restarts, CPU, memory, and —
//! once any agent calls a model through its providers — its calls/errors and tokens today.

use super::theme::Theme;
use crate::app::{App, Column, View};
use crate::fmt;
use ratatui::layout::{Constraint, Rect};
use ratatui::text::Span;
use ratatui::widgets::{Block, Cell, Row, Table, TableState};
use ratatui::Frame;

/// The state, and in red what an operator must not miss: a failing health check, egress
/// around the gateway.
fn state_cell<'a>(v: &'a agenfleet_protocol::AgentView, t: &Theme) -> ratatui::text::Line<'a> {
    let alarm = t.state(agenfleet_protocol::AgentState::Failed);
    let mut spans = vec![Span::styled(v.state.as_str(), t.state(v.state))];
    if v.health.as_deref() == Some("unhealthy") {
        spans.push(Span::styled(" unhealthy", alarm));
    }
    if v.ungoverned_egress {
        spans.push(Span::styled(" UNGOVERNED EGRESS", alarm));
    }
    ratatui::text::Line::from(spans)
}

/// The table's headings, by the column they sort (Shift + the column's letter).
const HEADINGS: [(Column, &str); 7] = [
    (Column::Project, "TENANT/PROJECT"),
    (Column::Name, "AGENT"),
    (Column::State, "STATE"),
    (Column::Age, "UPTIME"),
    (Column::Restarts, "RST"),
    (Column::Cpu, "CPU"),
    (Column::Memory, "MEM"),
];

/// The first row on screen: where it was, moved just enough to show the selection.
fn window_start(app: &App, rows: usize, total: usize) -> usize {
    let mut off = app.fleet_offset.get();
    if let Some(sel) = app.selected_index() {
        if sel < off {
            off = sel;
        } else if rows > 0 && sel >= off + rows {
            off = sel + 1 - rows;
        }
    }
    let off = off.min(total.saturating_sub(rows));
    app.fleet_offset.set(off);
    off
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let keys = app.visible_keys();
    let total = keys.len();
    // Across contexts (`:ctx all`) each row names its host first.
    let multi = app.multi();
    // Which optional marks and columns the table needs, from the whole fleet (so columns
    // do not come and go as the view scrolls). The model column appears once any agent
    // has used a model today.
    let (mut models, mut unhealthy, mut ungoverned, mut nodes) = (false, false, false, false);
    for v in app.agents.values() {
        models |= v.usage_today.calls > 0;
        // Swarm mode: the node each task runs on.
        nodes |= v.node.is_some();
        unhealthy |= v.health.as_deref() == Some("unhealthy");
        ungoverned |= v.ungoverned_egress;
    }
    // Only the rows that fit are built (borders and heading take three lines).
    let room = area.height.saturating_sub(3) as usize;
    app.fleet_rows.set(room);
    let from = window_start(app, room, total);
    let vis: Vec<&agenfleet_protocol::AgentView> = keys[from..(from + room).min(total)]
        .iter()
        .filter_map(|k| app.agents.get(k))
        .collect();
    let rows: Vec<Row> = vis
        .iter()
        .map(|v| {
            let (host, tenant) = crate::app::split_host(&v.tenant);
            let mut cells = Vec::with_capacity(9);
            if multi {
                cells.push(Cell::from(host.unwrap_or("-").to_string()));
            }
            cells.extend([
                Cell::from(format!("{tenant}/{}", v.project)),
                Cell::from(v.name.as_str()),
                Cell::from(state_cell(v, t)),
                Cell::from(fmt::uptime(v, app.now_ms)),
                Cell::from(format!("{}", v.restarts)),
                Cell::from(fmt::cpu(v)),
                Cell::from(fmt::memory(v)),
            ]);
            if nodes {
                cells.push(Cell::from(v.node.clone().unwrap_or_else(|| "-".into())));
            }
            if models {
                let style = if v.usage_today.errors > 0 {
                    t.state(agenfleet_protocol::AgentState::BackingOff)
                } else {
                    ratatui::style::Style::default()
                };
                cells.push(Cell::from(Span::styled(
                    fmt::model_today(&v.usage_today),
                    style,
                )));
            }
            Row::new(cells)
        })
        .collect();
    let filter = app.filter_of(View::Fleet);
    let title = if filter.is_empty() {
        format!(" Fleet ({total}) ")
    } else {
        format!(
            " Fleet ({total} of {}) filter: {} ",
            app.agents.len(),
            filter.text()
        )
    };
    let empty = rows.is_empty();
    let mut widths = Vec::with_capacity(9);
    if multi {
        widths.push(Constraint::Fill(2));
    }
    widths.extend([
        Constraint::Fill(3),
        Constraint::Fill(3),
        // Room for the UNGOVERNED EGRESS mark when an agent carries it.
        Constraint::Length(11 + if unhealthy { 10 } else { 0 } + if ungoverned { 19 } else { 0 }),
        Constraint::Length(7),
        Constraint::Length(4),
        Constraint::Length(6),
        Constraint::Length(7),
    ]);
    if nodes {
        widths.push(Constraint::Fill(2));
    }
    if models {
        widths.push(Constraint::Length(16));
    }
    let table = Table::new(rows, widths)
        .header({
            // The sorted column carries ↑ (ascending) or ↓.
            let mut h: Vec<String> = multi.then(|| "HOST".to_string()).into_iter().collect();
            h.extend(HEADINGS.iter().map(|(col, name)| match app.sort {
                Some((c, rev)) if c == *col => format!("{name}{}", if rev { "↓" } else { "↑" }),
                _ => name.to_string(),
            }));
            if nodes {
                h.push("NODE".into());
            }
            if models {
                h.push("CALLS/ERR TOK".into());
            }
            Row::new(h).style(t.title())
        })
        .block(Block::bordered().title(Span::styled(title, t.title())))
        .row_highlight_style(t.selected())
        .highlight_symbol("▶ ");
    let mut state =
        TableState::default().with_selected(app.selected_index().and_then(|i| i.checked_sub(from)));
    f.render_stateful_widget(table, area, &mut state);
    if empty {
        let msg = if app.agents.is_empty() {
            "no agents yet — `agenfleet agents create -f SPEC.toml`"
        } else {
            "no agent matches the filter (Esc clears it)"
        };
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1.min(area.height.saturating_sub(3)),
        };
        f.render_widget(ratatui::widgets::Paragraph::new(msg).style(t.dim()), inner);
    }
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::render;

    #[test]
    fn fleet_view_80x24() {
        let app = sample_app();
        let t = render(&app, 80, 24);
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn model_use_today_gets_a_column_once_an_agent_has_some() {
        let mut app = sample_app();
        let t = render(&app, 100, 24);
        let screen = format!("{:?}", t.backend().buffer());
        assert!(
            !screen.contains("CALLS/ERR"),
            "no column without model calls"
        );
        let name = {
            let v = app.agents.values_mut().next().expect("an agent");
            v.usage_today = agenfleet_protocol::upstream::UsageTotals {
                calls: 1234,
                errors: 3,
                tokens_in: 40_000,
                tokens_out: 2_100,
            };
            v.name.clone()
        };
        let t = render(&app, 100, 24);
        let buf = t.backend().buffer();
        let lines: Vec<String> = (0..24)
            .map(|y| (0..100).map(|x| buf[(x, y)].symbol().to_string()).collect())
            .collect();
        assert!(
            lines.iter().any(|l| l.contains("CALLS/ERR TOK")),
            "{lines:#?}"
        );
        let row = lines.iter().find(|l| l.contains(&name)).expect("its row");
        assert!(row.contains("1.2k/3 42.1k"), "{row}");
    }

    #[test]
    fn swarm_nodes_get_a_column_once_a_task_is_placed() {
        let mut app = sample_app();
        let screen = crate::ui::testing::screen_text(&render(&app, 110, 24));
        assert!(!screen.contains("NODE"), "no column in container mode");
        let name = {
            let v = app.agents.values_mut().next().expect("an agent");
            v.node = Some("worker-eu-1".into());
            v.name.clone()
        };
        let screen = crate::ui::testing::screen_text(&render(&app, 110, 24));
        assert!(screen.contains("NODE"), "{screen}");
        let row = screen.lines().find(|l| l.contains(&name)).expect("its row");
        assert!(row.contains("worker-eu-1"), "{row}");
    }

    #[test]
    fn fleet_view_colours_failed_red() {
        let app = sample_app();
        let t = render(&app, 80, 24);
        let buf = t.backend().buffer();
        // Find the "failed" cell of flaky-bot's row and check its colour.
        let mut found = false;
        for y in 0..24 {
            let line: String = (0..80).map(|x| buf[(x, y)].symbol().to_string()).collect();
            if line.contains("flaky-bot") {
                let x = line.find("failed").expect("state cell") as u16;
                assert_eq!(buf[(x, y)].fg, ratatui::style::Color::Red);
                found = true;
            }
        }
        assert!(found, "flaky-bot row not drawn");
    }

    #[test]
    fn an_agent_around_the_gateway_is_marked_ungoverned_in_red() {
        let mut app = sample_app();
        let name = {
            let v = app.agents.values_mut().next().expect("an agent");
            v.ungoverned_egress = true;
            v.name.clone()
        };
        let t = render(&app, 100, 24);
        let buf = t.backend().buffer();
        let row = (0..24)
            .map(|y| {
                (
                    y,
                    (0..100)
                        .map(|x| buf[(x, y)].symbol().to_string())
                        .collect::<String>(),
                )
            })
            .find(|(_, l)| l.contains(&name))
            .expect("the agent's row");
        let x = row
            .1
            .find("UNGOVERNED EGRESS")
            .unwrap_or_else(|| panic!("no mark in {:?}", row.1)) as u16;
        assert_eq!(buf[(x, row.0)].fg, ratatui::style::Color::Red);
        // The other rows carry no mark.
        let marks = (0..24)
            .filter(|y| {
                (0..100)
                    .map(|x| buf[(x, *y)].symbol().to_string())
                    .collect::<String>()
                    .contains("UNGOVERNED")
            })
            .count();
        assert_eq!(marks, 1);
    }

    #[test]
    fn no_color_draws_no_colours() {
        let mut app = sample_app();
        app.color = false;
        let t = render(&app, 80, 24);
        let buf = t.backend().buffer();
        for cell in buf.content() {
            assert_eq!(cell.fg, ratatui::style::Color::Reset);
            assert_eq!(cell.bg, ratatui::style::Color::Reset);
        }
    }

    #[test]
    fn disconnected_banner() {
        let mut app = sample_app();
        app.on_disconnected("connection refused".into());
        let t = render(&app, 80, 24);
        insta::assert_snapshot!(t.backend());
    }
}
