//! The confirmation dialog in front of restart, stop, start and reset.

use super::theme::Theme;
use agenfleet_protocol::AgentAction;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// The answer line of every confirmation.
pub fn yes_no(t: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled("y", t.key()),
        Span::raw(" / Enter: yes    "),
        Span::styled("n", t.key()),
        Span::raw(" / Esc: no"),
    ])
}

pub fn draw(f: &mut Frame, area: Rect, action: AgentAction, agent: &str, t: &Theme) {
    let r = super::centered(area, 56, 6);
    let what = match action {
        AgentAction::Restart => "Restart",
        AgentAction::Stop => "Stop",
        AgentAction::Start => "Start",
        AgentAction::Reset => "Reset and run",
    };
    let lines = vec![Line::from(format!("{what} {agent}?")), Line::from("")];
    dialog(f, r, lines, t);
}

/// A confirmation box at `r`: the question's lines, then the yes/no line.
pub fn dialog(f: &mut Frame, r: Rect, mut lines: Vec<Line<'_>>, t: &Theme) {
    lines.push(yes_no(t));
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: true })
            .block(Block::bordered().title(Span::styled(" Confirm ", t.title()))),
        r,
    );
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::render;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    #[test]
    fn confirm_dialog_names_action_and_agent() {
        let mut app = sample_app();
        app.on_key(KeyEvent::new(KeyCode::Char('r'), KeyModifiers::NONE));
        let t = render(&app, 80, 24);
        let text = crate::ui::testing::screen_text(&t);
        assert!(text.contains("Restart acme/crawler?"), "{text}");
    }
}
