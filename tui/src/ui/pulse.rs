//! The pulse view (`:pulse`): the fleet's last ten minutes, one row per series — its name,
//! the figure now and the peak on the left, a sparkline of the 10-second buckets on the
//! right (the newest at the right end) — as tall as the screen allows.

use super::theme::Theme;
use crate::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Sparkline};
use ratatui::Frame;

/// The label column: name and figure.
const LABEL: u16 = 30;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(p) = &app.pulse else {
        let block = Block::bordered().title(Span::styled(" Pulse ", t.title()));
        f.render_widget(
            Paragraph::new(Span::styled("waiting for the daemon's history…", t.dim())).block(block),
            area,
        );
        return;
    };
    let block = Block::bordered();
    let inner = block.inner(area);
    // One column a bucket: as many of the newest as fit.
    let fit = (inner.width.saturating_sub(LABEL + 1) as usize).min(p.buckets.len());
    let title = format!(
        " Pulse — {} (newest at the right) ",
        crate::pulse::span(p.bucket_ms, fit)
    );
    f.render_widget(block.title(Span::styled(title, t.title())), area);
    let rows = crate::pulse::fleet(p);
    let each = (inner.height / rows.len().max(1) as u16).max(1);
    for (i, s) in rows.iter().enumerate() {
        let y = inner.y + i as u16 * each;
        if y >= inner.bottom() {
            break;
        }
        let row = Rect {
            y,
            height: each.min(inner.bottom() - y),
            ..inner
        };
        let [label, _, chart] = Layout::horizontal([
            Constraint::Length(LABEL),
            Constraint::Length(1),
            Constraint::Min(1),
        ])
        .areas(row);
        let figure = LABEL as usize - 18;
        let mut lines = vec![Line::from(vec![
            Span::styled(format!("{:<18}", s.label), t.tone(s.tone)),
            Span::raw(format!("{:>figure$}", s.now)),
        ])];
        if row.height > 1 {
            lines.push(Line::from(Span::styled(
                format!("{:<18}{:>figure$}", "  peak", s.peak),
                t.dim(),
            )));
        }
        f.render_widget(Paragraph::new(lines), label);
        // The newest buckets that fit, one column each.
        let shown = &s.values[s.values.len().saturating_sub(chart.width as usize)..];
        let chart = Rect {
            width: (shown.len() as u16).min(chart.width),
            ..chart
        };
        let peak = shown.iter().copied().max().unwrap_or(0).max(1);
        f.render_widget(
            Sparkline::default()
                .data(shown)
                .max(peak)
                .style(t.tone(s.tone)),
            chart,
        );
    }
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Effect, Msg, PulseOf, View};
    use crate::ui::testing::render;
    use agenfleet_protocol::pulse::{Pulse, PulseBucket};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn press(app: &mut crate::app::App, c: KeyCode) -> Vec<Effect> {
        app.on_key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    /// Ten quiet minutes, then a burst of denials and a failed agent in the last one.
    fn ten_minutes() -> Pulse {
        let buckets = (0..60u64)
            .map(|i| {
                let late = i >= 54;
                PulseBucket {
                    start_ms: 1_800_000_000_000 + i * 10_000,
                    running: if late { 3 } else { 4 },
                    failed: u32::from(late),
                    restarts: u32::from(i == 53 || i == 54),
                    allowed: (20 + i % 7) as u32,
                    denied: if late { 40 } else { 0 },
                    escalated: u32::from(i % 20 == 0),
                    incidents_opened: u32::from(i == 54),
                    tokens: 1_000 * (i % 5),
                    ..Default::default()
                }
            })
            .collect();
        Pulse {
            bucket_ms: 10_000,
            buckets,
        }
    }

    #[test]
    fn pulse_is_followed_while_shown_and_draws_each_series() {
        let mut app = sample_app();
        press(&mut app, KeyCode::Char(':'));
        for c in "pulse".chars() {
            press(&mut app, KeyCode::Char(c));
        }
        let fx = press(&mut app, KeyCode::Enter);
        assert_eq!(app.view, View::Pulse);
        assert_eq!(fx, vec![Effect::FollowPulse(Some(PulseOf::Fleet))]);
        app.dirty = false;
        app.on_msg(Msg::Pulse(ten_minutes()));
        assert!(app.dirty, "new history redraws");
        app.dirty = false;
        app.on_msg(Msg::Pulse(ten_minutes()));
        assert!(!app.dirty, "the same history again does not");

        let screen = format!("{:?}", render(&app, 120, 40).backend());
        for words in [
            "last 10m, 10s a bar",
            "agents running",
            "denied calls",
            "4.0/s",
            "incidents opened",
            "24.0k/min",
        ] {
            assert!(screen.contains(words), "{words} missing: {screen}");
        }
        insta::assert_snapshot!("pulse_120x40", render(&app, 120, 40).backend());
        insta::assert_snapshot!("pulse_80x24", render(&app, 80, 24).backend());

        // Esc goes back and stops following.
        let fx = press(&mut app, KeyCode::Esc);
        assert_eq!(app.view, View::Fleet);
        assert_eq!(fx, vec![Effect::FollowPulse(None)]);
    }
}
