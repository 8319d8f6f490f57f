//! The `?` overlay: the keys of the view shown, everyone's keys and the `:` commands, all
//! read from the key table (`app::keys`), scrolled with j / k when taller than the screen.

use super::theme::Theme;
use crate::app::{keys, App, View};
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph};
use ratatui::Frame;

/// Width of the key column.
pub const KEY_WIDTH: usize = 16;

fn view_name(v: View) -> &'static str {
    match v {
        View::Fleet => "the fleet",
        View::Audit => "the audit trail",
        View::Escalations => "escalations",
        View::Incidents => "incidents",
        View::Logs => "the logs",
        View::Describe => "describe",
        View::Operators => "operators",
        View::Pulse => "the pulse",
        View::Runs => "runs",
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, scroll: u16, t: &Theme) {
    let rows = keys::help_lines(app.view);
    // Wide enough for the longest line (and its borders), as far as the terminal allows.
    let widest = rows
        .iter()
        .map(|(k, what)| KEY_WIDTH.max(k.chars().count() + 1) + what.chars().count())
        .max()
        .unwrap_or(0);
    let r = super::centered(area, widest as u16 + 2, rows.len() as u16 + 2);
    let room = r.height.saturating_sub(2) as usize;
    let more = rows.len() > room;
    let lines: Vec<Line> = rows
        .iter()
        .skip(scroll as usize)
        .map(|(k, what)| {
            let w = KEY_WIDTH.max(k.chars().count() + 1);
            Line::from(vec![
                Span::styled(format!("{k:<w$}"), t.key()),
                Span::raw(what.clone()),
            ])
        })
        .collect();
    let title = if more {
        format!(
            " Keys — {} — j/k scroll, any other key closes ",
            view_name(app.view)
        )
    } else {
        format!(" Keys — {} — any key closes ", view_name(app.view))
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(Span::styled(title, t.title()))),
        r,
    );
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{keys, View};
    use crate::ui::testing::{render_part, screen_text};

    /// The `?` overlay of every view at 80×24 (the first page) and whole at 120×60.
    #[test]
    fn help_of_every_view() {
        let mut app = sample_app();
        for v in View::ALL {
            app.view = v;
            for (w, h) in [(80, 24), (120, 60)] {
                let t = render_part(&app, w, h, |f, area, app, theme| {
                    super::draw(f, area, app, 0, theme)
                });
                insta::assert_snapshot!(format!("help_{v:?}_{w}x{h}"), t.backend());
            }
        }
    }

    /// Everything the key table binds in a view is on its help (no drift possible, but a
    /// merged line must not swallow a key).
    #[test]
    fn every_bound_key_is_in_the_help_of_its_view() {
        let mut app = sample_app();
        for v in View::ALL {
            app.view = v;
            let t = render_part(&app, 200, 80, |f, area, app, theme| {
                super::draw(f, area, app, 0, theme)
            });
            let text = screen_text(&t);
            for b in keys::table(v).iter().chain(keys::GLOBAL) {
                for k in b.keys {
                    assert!(
                        text.contains(k.label),
                        "{v:?}: `{}` is not in the help",
                        k.label
                    );
                }
            }
            for c in keys::COMMANDS {
                assert!(text.contains(&format!(":{}", c.name)), "{v:?}: :{}", c.name);
            }
        }
    }

    #[test]
    fn every_line_of_help_fits_an_80_column_terminal() {
        for v in View::ALL {
            for (k, what) in keys::help_lines(v) {
                let w = super::KEY_WIDTH.max(k.chars().count() + 1) + what.chars().count() + 2;
                assert!(w <= 80, "{v:?}: `{k}` needs {w} columns");
            }
        }
    }
}
