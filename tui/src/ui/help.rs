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
    ("r / s / u", "restart / stop / start the agent (asks first)"),
    ("x", "reset a failed agent's budget and run it (asks first)"),
    ("c", "credentials of the agent (R rotates, masked)"),
    ("p", "scopes: e edits (checked as you type), R rolls back"),
    ("y", "spec in force, its versions; j/k diffs one with it"),
    ("t", "switch context: all, each tenant, each project"),
    (
        "1 2 3 4 / Tab",
        "fleet / audit / escalations / incidents / next",
    ),
    ("a / d", "escalations: approve / deny the selected call"),
    (
        "a R o S",
        "incidents: ack / resolve / reassign / silence 1 h",
    ),
    (
        "⏎ / e",
        "incidents: go to the agent / to the audit evidence",
    ),
    ("?", "this help"),
    ("q, Ctrl-C", "quit (agents keep running)"),
];

/// Width of the key column.
const KEY_WIDTH: usize = 16;

pub fn draw(f: &mut Frame, area: Rect, t: &Theme) {
    // Wide enough for the longest line (and its borders), as far as the terminal allows.
    let widest = KEYS
        .iter()
        .map(|(_, what)| KEY_WIDTH + what.chars().count())
        .max()
        .unwrap_or(0);
    let r = super::centered(area, widest as u16 + 2, KEYS.len() as u16 + 2);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:<KEY_WIDTH$}"), t.key()),
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

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::render_part;

    #[test]
    fn help_overlay_80x24() {
        let app = sample_app();
        let t = render_part(&app, 80, 24, |f, area, _, theme| {
            super::draw(f, area, theme)
        });
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn every_line_of_help_fits_an_80_column_terminal() {
        for (k, what) in super::KEYS {
            let w = super::KEY_WIDTH + what.chars().count() + 2;
            assert!(w <= 80, "`{k}` needs {w} columns");
        }
    }
}
