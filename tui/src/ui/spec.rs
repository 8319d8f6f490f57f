//! The spec pane of one agent (`y`): the spec in force as TOML (an older version as its
//! diff against it), the version history beside it, and how to change it.

use super::theme::Theme;
use crate::app::App;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(pane) = &app.spec else { return };
    let r = super::centered(area, 110, 30);
    f.render_widget(Clear, r);
    let block =
        Block::bordered().title(Span::styled(format!(" Spec of {} ", pane.agent), t.title()));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [main, status, keys] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(inner);
    let [text_area, hist_area] =
        Layout::horizontal([Constraint::Min(30), Constraint::Length(48)]).areas(main);

    let (title, text) = pane.text();
    let diff = pane.shown.is_some();
    let lines: Vec<Line> = text
        .lines()
        .map(|l| {
            if diff {
                super::diff_line(l, t)
            } else {
                Line::from(l.to_string())
            }
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines)
            .scroll((pane.scroll, 0))
            .block(Block::bordered().title(Span::styled(format!(" {title} "), t.title()))),
        text_area,
    );

    // The history, newest first.
    let hist: Vec<Line> = pane
        .history
        .iter()
        .flat_map(|h| {
            h.versions.iter().rev().enumerate().map(|(i, v)| {
                let label = format!("{:<8} {}", v.author, v.note);
                super::history_row(
                    v.version,
                    h.current,
                    v.created_ms,
                    &label,
                    i == pane.selected,
                    t,
                )
            })
        })
        .collect();
    f.render_widget(
        Paragraph::new(hist).block(Block::bordered().title(Span::styled(" history ", t.title()))),
        hist_area,
    );

    let status_line = match &pane.error {
        Some(e) => Line::from(Span::styled(e.clone(), t.error())),
        None => Line::from(Span::styled(
            "Change it with `agenfleet agents apply -f FILE` (diff, then in place or a new container); `agents rollback AGENT N` puts an older version back.",
            t.dim(),
        )),
    };
    f.render_widget(
        Paragraph::new(status_line).wrap(Wrap { trim: true }),
        status,
    );
    let k =
        |key: &'static str, what: &'static str| vec![Span::styled(key, t.key()), Span::raw(what)];
    let keys_line: Vec<Span> = [
        k("j/k", " version (diff with the one in force)  "),
        k("PgUp/PgDn", " scroll  "),
        k("Esc", " close"),
    ]
    .concat();
    f.render_widget(Paragraph::new(Line::from(keys_line)), keys);
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Effect, Mode};
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::spec::{SpecHistory, SpecVersion};
    use agenfleet_protocol::AgentSpec;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn version(n: u32, greeting: &str, note: &str) -> SpecVersion {
        let spec = AgentSpec::from_toml(&format!(
            "name = \"web-1\"\ntenant = \"acme\"\nimage = \"agf-test/app:1\"\n[env]\nGREETING = \"{greeting}\"\n"
        ))
        .unwrap();
        SpecVersion {
            version: n,
            hash: spec.hash(),
            spec,
            created_ms: 1_795_308_800_000 + u64::from(n) * 60_000,
            author: "alice".into(),
            note: note.into(),
        }
    }

    fn history() -> SpecHistory {
        SpecHistory {
            agent: "acme/web-1".into(),
            current: 2,
            versions: vec![
                version(1, "one", "created").info(),
                version(2, "two", "new container (env)").info(),
            ],
        }
    }

    #[test]
    fn y_shows_the_spec_in_force_and_an_older_version_as_a_diff() {
        let mut app = sample_app();
        let fx = app.on_key(key(KeyCode::Char('y')));
        let [Effect::LoadSpec(r, None)] = fx.as_slice() else {
            panic!("{fx:?}")
        };
        assert_eq!(app.mode, Mode::Spec);
        let agent = app.spec.as_ref().expect("pane").agent.clone();
        assert_eq!(r.to_string(), agent);
        app.apply_spec(&agent, None, Ok((history(), version(2, "two", ""))));
        let t = render(&app, 110, 30);
        let text = screen_text(&t);
        assert!(text.contains("v2 in force"), "{text}");
        assert!(text.contains("GREETING = \"two\""), "{text}");
        assert!(text.contains("new container (env)"), "{text}");
        insta::assert_snapshot!(t.backend());
        // j: the older version, loaded and shown as its diff with the one in force.
        let fx = app.on_key(key(KeyCode::Char('j')));
        assert!(
            matches!(fx.as_slice(), [Effect::LoadSpec(_, Some(1))]),
            "{fx:?}"
        );
        app.apply_spec(
            &agent,
            Some(1),
            Ok((history(), version(1, "one", "created"))),
        );
        let text = screen_text(&render(&app, 110, 30));
        assert!(text.contains("v1 → v2 (in force)"), "{text}");
        assert!(
            text.contains("-GREETING = \"one\"") && text.contains("+GREETING = \"two\""),
            "{text}"
        );
        // k: back to the one in force, without a call; Esc closes.
        assert!(app.on_key(key(KeyCode::Char('k'))).is_empty());
        assert!(screen_text(&render(&app, 110, 30)).contains("v2 in force"));
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.mode, Mode::Normal);
        assert!(app.spec.is_none());
    }
}
