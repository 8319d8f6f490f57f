//! The confirmation dialog in front of restart, stop, start, reset and delete (only `y`
//! confirms; Enter is "no").

use super::theme::Theme;
use crate::app::AgentOp;
use agenfleet_protocol::AgentAction;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

/// The answer line of every confirmation.
pub fn yes_no(t: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled("y", t.key()),
        Span::raw(": yes    "),
        Span::styled("n", t.key()),
        Span::raw(" / Esc / Enter: no"),
    ])
}

pub fn draw(f: &mut Frame, area: Rect, op: AgentOp, agent: &str, t: &Theme) {
    let r = super::centered(area, 56, if op == AgentOp::Delete { 7 } else { 6 });
    let what = match op {
        AgentOp::Act(AgentAction::Restart) => "Restart",
        AgentOp::Act(AgentAction::Stop) => "Stop",
        AgentOp::Act(AgentAction::Start) => "Start",
        AgentOp::Act(AgentAction::Reset) => "Reset and run",
        AgentOp::Act(AgentAction::RotateToken) => "Rotate the gateway token of",
        AgentOp::Delete => "Delete",
    };
    let mut lines = vec![Line::from(format!("{what} {agent}?"))];
    if op == AgentOp::Delete {
        lines.push(Line::from(Span::styled(
            "its container goes now, its data after the purge delay",
            t.dim(),
        )));
    }
    lines.push(Line::from(""));
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
