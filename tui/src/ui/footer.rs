//! The bottom line: the filter, command or search being typed, a flash message, or the
//! keys of the view shown (read from the key table, so it says what the keys do).

use super::theme::Theme;
use crate::app::{keys, App, Mode};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

/// A line being typed: the prompt, the text, a cursor, and a dim note.
fn typing(prompt: &str, text: &str, note: String, t: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(prompt.to_string(), t.key()),
        Span::raw(text.to_string()),
        Span::styled("▏", t.key()),
        Span::styled(note, t.dim()),
    ])
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let line = match &app.mode {
        Mode::Filter => {
            let note = match app.filter().problem() {
                Some(why) => format!("  not a regex ({why}): matched as text"),
                None => "  regex · !inverse · Enter keep · Esc clear".to_string(),
            };
            typing("/", app.filter().text(), note, t)
        }
        Mode::Command { input, .. } => {
            let c = app.completions(input);
            let note = match c.len() {
                0 if input.is_empty() => "  Tab completes · ↑↓ history · :help".to_string(),
                0 => String::new(),
                1..=6 => format!("  {}", c.join(" ")),
                n => format!("  {} … ({n})", c[..6].join(" ")),
            };
            typing(":", input, note, t)
        }
        Mode::Search => typing(
            "/",
            &app.logs_pane.search,
            "  regex · Enter search · Esc drop".to_string(),
            t,
        ),
        _ => match &app.flash {
            Some(fl) => Line::from(Span::styled(
                fl.text.clone(),
                if fl.error { t.error() } else { t.title() },
            )),
            None => {
                let mut spans = Vec::new();
                for (k, what) in keys::hints(app.view, app.readonly) {
                    spans.push(Span::styled(k, t.key()));
                    spans.push(Span::raw(format!(" {what} ")));
                }
                Line::from(spans)
            }
        },
    };
    f.render_widget(Paragraph::new(line), area);
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Mode, View};
    use crate::ui::testing::render_part;

    #[test]
    fn footer_of_each_view_100x1() {
        let mut app = sample_app();
        let mut shots = Vec::new();
        for v in View::ALL {
            app.view = v;
            let t = render_part(&app, 100, 1, super::draw);
            shots.push(format!("{v:?}: {}", crate::ui::testing::screen_text(&t)));
        }
        insta::assert_snapshot!(shots.join("\n"));
    }

    #[test]
    fn footer_while_filtering_and_with_a_flash_80x1() {
        let mut app = sample_app();
        app.mode = Mode::Filter;
        app.filter_mut().set("acme");
        let filtering = crate::ui::testing::screen_text(&render_part(&app, 80, 1, super::draw));
        app.mode = Mode::Normal;
        app.flash("not connected to the daemon", true);
        let flash = crate::ui::testing::screen_text(&render_part(&app, 80, 1, super::draw));
        insta::assert_snapshot!(format!("{filtering}\n{flash}"));
    }
}
