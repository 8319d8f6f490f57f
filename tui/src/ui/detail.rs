//! The detail pane: the selected agent's facts and the tail of its log.

use super::theme::Theme;
use crate::app::App;
use crate::fmt;
use agenfleet_protocol::LogStream;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(v) = app.selected_agent() else {
        f.render_widget(Block::bordered().title(" Detail "), area);
        return;
    };
    let block =
        Block::bordered().title(Span::styled(format!(" {} ", v.qualified_name()), t.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [facts, logs] = Layout::vertical([Constraint::Length(4), Constraint::Min(1)]).areas(inner);
    let mut lines = vec![
        Line::from(vec![
            Span::raw("state "),
            Span::styled(v.state.as_str(), t.state(v.state)),
            Span::raw(format!(
                "  uptime {}  restarts {} ({}/{} in window)  last exit {}",
                fmt::uptime(v, app.now_ms),
                v.restarts,
                v.restarts_in_window,
                v.restart_budget,
                fmt::exit(v)
            )),
        ]),
        Line::from(format!(
            "cpu {}  mem {} of {}  container {}",
            fmt::cpu(v),
            fmt::memory(v),
            fmt::bytes(v.memory_limit_bytes),
            v.container_id
                .as_deref()
                .map(|c| &c[..c.len().min(12)])
                .unwrap_or("-")
        )),
        Line::from(format!("image {}", v.image)),
    ];
    if let Some(m) = &v.message {
        lines.push(Line::from(Span::styled(m.clone(), t.dim())));
    }
    f.render_widget(Paragraph::new(lines).wrap(Wrap { trim: true }), facts);
    let height = logs.height.saturating_sub(1) as usize; // one line is the "log" title
    let mut log_lines: Vec<Line> = Vec::new();
    if app.logs_missed > 0 {
        log_lines.push(Line::from(Span::styled(
            format!("[{} earlier lines dropped]", app.logs_missed),
            t.dim(),
        )));
    }
    log_lines.extend(app.logs.iter().map(|l| match l.stream {
        LogStream::Stdout => Line::from(l.text.clone()),
        LogStream::Stderr => Line::from(Span::styled(l.text.clone(), t.error())),
    }));
    if log_lines.is_empty() {
        log_lines.push(Line::from(Span::styled("(no log lines yet)", t.dim())));
    }
    let skip = log_lines.len().saturating_sub(height);
    let shown: Vec<Line> = log_lines.into_iter().skip(skip).collect();
    f.render_widget(
        Paragraph::new(shown).block(Block::default().title(Span::styled("log", t.dim()))),
        logs,
    );
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::render;
    use agenfleet_protocol::{LogChunk, LogLine, LogStream};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    #[test]
    fn detail_pane_with_log_tail() {
        let mut app = sample_app();
        app.on_key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::NONE));
        app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
        let key = ("acme".to_string(), "flaky-bot".to_string());
        let lines = (0..12)
            .map(|i| LogLine {
                seq: i,
                ts_ms: 0,
                stream: if i == 11 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                text: format!("about to crash #{i}"),
            })
            .collect();
        app.apply_logs(
            &key,
            LogChunk {
                lines,
                next_seq: 12,
                missed: 0,
                dropped_total: 0,
            },
        );
        let t = render(&app, 80, 24);
        insta::assert_snapshot!(t.backend());
    }
}
