//! The bottom line: the filter being typed, a flash message, or the keys you can use.

use super::theme::Theme;
use crate::app::{App, Mode};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let line = if app.mode == Mode::Filter {
        Line::from(vec![
            Span::styled("/", t.key()),
            Span::raw(app.filter.clone()),
            Span::styled("▏", t.key()),
            Span::styled("  Enter keep · Esc clear", t.dim()),
        ])
    } else if let Some(fl) = &app.flash {
        Line::from(Span::styled(
            fl.text.clone(),
            if fl.error { t.error() } else { t.title() },
        ))
    } else {
        let mut spans = Vec::new();
        let mut key = |k: &str, what: &str| {
            spans.push(Span::styled(k.to_string(), t.key()));
            spans.push(Span::raw(format!(" {what} ")));
        };
        // Help and quit first: a narrow terminal cuts the end of the line.
        key("?", "help");
        key("q", "quit");
        let audit = app.view == crate::app::View::Audit;
        if app.view == crate::app::View::Incidents {
            key("1", "fleet");
            key("j/k", "select");
            if !app.readonly {
                key("a", "ack");
                key("R", "resolve");
                key("o", "reassign");
                key("S", "silence");
            }
            key("⏎", "agent");
            key("e", "evidence");
        } else if app.view == crate::app::View::Escalations {
            key("1", "fleet");
            key("j/k", "select");
            if !app.readonly {
                key("a", "approve");
                key("d", "deny");
            }
            key("2", "audit");
        } else if audit {
            key("1", "fleet");
            key("j/k", "scroll");
            key("G", "newest");
            key("/", "filter");
        } else {
            key("⏎", "detail");
            key("/", "filter");
            if !app.readonly {
                key("r", "restart");
                key("s", "stop");
                key("u", "start");
                key("x", "reset");
            }
            key("c", "creds");
            key("p", "scopes");
            key("y", "spec");
            key("t", "context");
            key("2", "audit");
            key("3", "escalations");
            key("4", "incidents");
        }
        Line::from(spans)
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
        for v in [View::Fleet, View::Audit, View::Escalations, View::Incidents] {
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
        app.filter = "acme".into();
        let filtering = crate::ui::testing::screen_text(&render_part(&app, 80, 1, super::draw));
        app.mode = Mode::Normal;
        app.flash("not connected to the daemon", true);
        let flash = crate::ui::testing::screen_text(&render_part(&app, 80, 1, super::draw));
        insta::assert_snapshot!(format!("{filtering}\n{flash}"));
    }
}
