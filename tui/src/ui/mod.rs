//! Drawing the console: one file per view and widget. `draw` lays out header, body (fleet
//! table, and the detail pane when open), footer, and overlays (help, confirmation).
//! Everything is a function of `App`, so views are tested on ratatui's `TestBackend`.

pub mod audit;
pub mod confirm;
pub mod creds;
pub mod describe;
pub mod detail;
pub mod escalations;
pub mod fleet;
pub mod footer;
pub mod header;
pub mod help;
pub mod incidents;
pub mod logs;
pub mod operators;
pub mod pulse;
pub mod runs;
pub mod scopes;
pub mod spec;
pub mod theme;

use crate::app::{App, Mode, View};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::Frame;

pub fn draw(f: &mut Frame, app: &App) {
    let theme = theme::Theme::new(app.color);
    let [head, body, foot] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(f.area());
    header::draw(f, head, app, &theme);
    if app.view == View::Audit {
        audit::draw(f, body, app, &theme);
    } else if app.view == View::Escalations {
        escalations::draw(f, body, app, &theme);
    } else if app.view == View::Incidents {
        incidents::draw(f, body, app, &theme);
    } else if app.view == View::Logs {
        logs::draw(f, body, app, &theme);
    } else if app.view == View::Describe {
        describe::draw(f, body, app, &theme);
    } else if app.view == View::Operators {
        operators::draw(f, body, app, &theme);
    } else if app.view == View::Pulse {
        pulse::draw(f, body, app, &theme);
    } else if app.view == View::Runs {
        runs::draw(f, body, app, &theme);
    } else if app.detail_open {
        let [top, bottom] =
            Layout::vertical([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(body);
        fleet::draw(f, top, app, &theme);
        detail::draw(f, bottom, app, &theme);
    } else {
        fleet::draw(f, body, app, &theme);
    }
    footer::draw(f, foot, app, &theme);
    match &app.mode {
        Mode::Help { scroll } => help::draw(f, f.area(), app, *scroll, &theme),
        Mode::Confirm { op, agent } => confirm::draw(f, f.area(), *op, agent, &theme),
        Mode::Creds
        | Mode::RotateInput { .. }
        | Mode::RotateConfirm { .. }
        | Mode::RevokeInput { .. }
        | Mode::RevokeConfirm { .. } => creds::draw(f, f.area(), app, &theme),
        Mode::Scopes
        | Mode::ScopesEdit
        | Mode::ScopesConfirm
        | Mode::ScopesRollback { .. }
        | Mode::PolicyTestInput { .. } => scopes::draw(f, f.area(), app, &theme),
        Mode::Spec => spec::draw(f, f.area(), app, &theme),
        _ => {}
    }
}

/// One line of a unified diff, coloured: added, removed, or context and headers dimmed.
pub fn diff_line(l: &str, t: &theme::Theme) -> ratatui::text::Line<'static> {
    let style = if l.starts_with('+') && !l.starts_with("+++") {
        t.added()
    } else if l.starts_with('-') && !l.starts_with("---") {
        t.removed()
    } else {
        t.dim()
    };
    ratatui::text::Line::from(ratatui::text::Span::styled(l.to_string(), style))
}

/// One row of a version history (scopes, specs): `*` on the version in force, the
/// version, when (month-day hour:minute), and `label`; highlighted when selected.
pub fn history_row(
    version: u32,
    current: u32,
    created_ms: u64,
    label: &str,
    selected: bool,
    t: &theme::Theme,
) -> ratatui::text::Line<'static> {
    let mark = if version == current { "*" } else { " " };
    let line = format!(
        "{mark}v{version:<3} {} {label}",
        &crate::fmt::timestamp(created_ms)[5..16]
    );
    let style = if selected {
        t.selected()
    } else {
        ratatui::style::Style::default()
    };
    ratatui::text::Line::from(ratatui::text::Span::styled(line, style))
}

/// A one-line input box at the centre: the question, what is typed, and the keys.
pub fn input_box(f: &mut Frame, title: &str, question: String, typed: &str, t: &theme::Theme) {
    use ratatui::text::{Line, Span};
    use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
    let r = centered(f.area(), 66, 6);
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(vec![
            Line::from(question),
            Line::from(Span::styled(format!("{typed}▏"), t.key())),
            Line::from(Span::styled("Enter confirm · Esc cancel", t.dim())),
        ])
        .wrap(Wrap { trim: true })
        .block(Block::bordered().title(Span::styled(format!(" {title} "), t.title()))),
        r,
    );
}

/// A rectangle of at most `w`×`h` centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    }
}

#[cfg(test)]
mod every_view {
    use crate::app::{Msg, View};
    use agenfleet_protocol::{AgentRef, OperatorInfo, VaultState};

    /// Every view at 80×24 and 120×40, with the daemon's three alarms up: each view is
    /// drawn whole and the header shows the warnings first.
    #[test]
    fn every_view_at_80x24_and_120x40_with_the_warnings_first() {
        let mut app = crate::ui::incidents::tests::with_incidents();
        if let Some(d) = app.daemon.as_mut() {
            d.engine.connected = false;
            d.audit_writable = false;
            d.vault = VaultState::Sealed;
        }
        app.on_msg(Msg::Operators(Ok(vec![OperatorInfo {
            uid: 0,
            name: "root".into(),
            platform_admin: true,
            bindings: vec![],
        }])));
        let crawler = AgentRef {
            tenant: Some("acme".into()),
            name: "crawler".into(),
        };
        for v in View::ALL {
            app.view = v;
            if v == View::Describe {
                app.run_command("describe acme/crawler");
            }
            if v == View::Logs {
                app.run_command(&format!("logs {crawler}"));
            }
            if v == View::Runs {
                crate::ui::runs::tests::with_runs(&mut app);
            }
            for (w, h) in [(80, 24), (120, 40)] {
                let t = super::testing::render(&app, w, h);
                let first = super::testing::screen_text(&t)
                    .chars()
                    .take(w as usize)
                    .collect::<String>();
                assert!(
                    first.contains("ENGINE DOWN")
                        && first.contains("AUDIT CLOSED")
                        && first.contains("SEALED"),
                    "{v:?} {w}x{h}: {first}"
                );
                insta::assert_snapshot!(format!("view_{v:?}_{w}x{h}"), t.backend());
            }
        }
    }
}

#[cfg(test)]
pub mod testing {
    use super::*;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    /// Everything drawn on the terminal, as one string.
    pub fn screen_text(t: &Terminal<TestBackend>) -> String {
        t.backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect()
    }

    /// Renders one part (header, footer, help) with `part` into a `w`×`h` terminal.
    pub fn render_part(
        app: &App,
        w: u16,
        h: u16,
        part: impl Fn(&mut Frame, Rect, &App, &super::theme::Theme),
    ) -> Terminal<TestBackend> {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        let theme = super::theme::Theme::new(app.color);
        t.draw(|f| part(f, f.area(), app, &theme)).expect("draw");
        t
    }

    /// Renders the whole console at `w`×`h` and returns the terminal for inspection.
    pub fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
        let mut t = Terminal::new(TestBackend::new(w, h)).expect("test terminal");
        t.draw(|f| draw(f, app)).expect("draw");
        t
    }
}
