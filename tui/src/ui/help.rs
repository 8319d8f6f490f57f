//! The `?` overlay: every key of the console.

use super::theme::Theme;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

pub const KEYS: &[(&str, &str)] = &[
    ("j / ↓, k / ↑", "move the selection"),
    ("g / G", "first / last agent"),
    ("Enter", "open the detail pane and follow the log"),
    ("Esc", "close the detail pane, or clear the filter"),
    ("/", "filter by tenant, project, name or state"),
    ("r", "restart the agent (asks first)"),
    ("s", "stop the agent (asks first)"),
    ("u", "start a stopped agent (asks first)"),
    ("x", "reset a failed agent's budget and run it (asks first)"),
    ("c", "credentials of the agent (R rotates, masked)"),
    (
        "p",
        "scopes of the agent: e edits (checked as you type), R rolls back",
    ),
    ("t", "switch context: all, each tenant, each project"),
    ("1 / 2 / 3 / Tab", "fleet / audit / escalations view / next"),
    (
        "a / d",
        "escalations view: approve / deny the selected call",
    ),
    ("?", "this help"),
    ("q, Ctrl-C", "quit (agents keep running)"),
];

pub fn draw(f: &mut Frame, area: Rect, t: &Theme) {
    let r = super::centered(area, 70, KEYS.len() as u16 + 4);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<16}"), t.key()),
                Span::raw(*what),
            ])
        })
        .collect();
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(" Keys — any key closes ", t.title()))),
        r,
    );
}
