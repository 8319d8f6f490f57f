//! The scopes pane of one agent: the scopes in force (or the editor, with the line that
//! does not validate marked and the problem said under it), the version history with
//! rollback, the diff shown before publishing, and the rollback confirmation; for a
//! tenant's policy also the test cases run against it (`t`, or Ctrl-T while editing).

use super::theme::Theme;
use crate::app::{App, Mode};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::Modifier;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Wrap};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(pane) = &app.scopes else { return };
    let r = super::centered(area, 100, 26);
    f.render_widget(Clear, r);
    let policy = pane.kind == crate::app::TextKind::Policy;
    let block = Block::bordered().title(Span::styled(
        if policy {
            format!(" Policy of tenant {} ", pane.agent)
        } else {
            format!(" Scopes of {} ", pane.agent)
        },
        t.title(),
    ));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [main, status, keys] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(inner);
    // A policy's test cases, when run, under the text and history.
    let results: Option<Vec<Line>> = pane.tested.as_ref().filter(|_| policy).map(|r| match r {
        Ok(list) => list
            .iter()
            .map(|c| {
                let style = if crate::policy_cases::passed(c) {
                    t.added()
                } else {
                    t.error()
                };
                Line::from(Span::styled(crate::policy_cases::result_line(c), style))
            })
            .collect(),
        Err(e) => vec![Line::from(Span::styled(
            format!("cases not run: {e}"),
            t.error(),
        ))],
    });
    let shown = results.as_ref().map_or(0, |r| (r.len() as u16 + 2).min(8));
    let [main, cases_area] =
        Layout::vertical([Constraint::Min(3), Constraint::Length(shown)]).areas(main);
    if let Some(lines) = results {
        let failed = pane
            .tested
            .as_ref()
            .and_then(|r| r.as_ref().ok())
            .map_or(0, |l| {
                l.iter().filter(|c| !crate::policy_cases::passed(c)).count()
            });
        let title = format!(" cases of {} — {failed} failed ", pane.cases_file);
        f.render_widget(
            Paragraph::new(lines).block(Block::bordered().title(Span::styled(title, t.title()))),
            cases_area,
        );
    }
    let [text_area, hist_area] =
        Layout::horizontal([Constraint::Min(30), Constraint::Length(38)]).areas(main);

    // The text: the editor, or the scopes in force.
    let height = text_area.height.saturating_sub(2) as usize;
    let (title, lines): (String, Vec<Line>) = match &pane.editor {
        Some(ed) => {
            let bad = pane
                .problem
                .as_ref()
                .and_then(|p| p.line)
                .map(|l| l as usize - 1);
            let top = (ed.row + 1).saturating_sub(height.max(1));
            let lines = ed
                .lines
                .iter()
                .enumerate()
                .skip(top)
                .take(height)
                .map(|(i, l)| {
                    let mut style = ratatui::style::Style::default();
                    if Some(i) == bad {
                        style = t.error().add_modifier(Modifier::UNDERLINED);
                    }
                    let num = Span::styled(format!("{:>3} ", i + 1), t.dim());
                    if i == ed.row {
                        let chars: Vec<char> = l.chars().collect();
                        let before: String = chars[..ed.col.min(chars.len())].iter().collect();
                        let at: String = chars
                            .get(ed.col)
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| " ".into());
                        let after: String = chars.iter().skip(ed.col + 1).collect();
                        Line::from(vec![
                            num,
                            Span::styled(before, style),
                            Span::styled(at, t.selected()),
                            Span::styled(after, style),
                        ])
                    } else {
                        Line::from(vec![num, Span::styled(l.clone(), style)])
                    }
                })
                .collect();
            ("editing".into(), lines)
        }
        None => {
            let text = pane.current_text();
            let title = match &pane.history {
                None => "loading…".to_string(),
                Some(h) if h.current == 0 && policy => {
                    "none published: the scopes alone decide".into()
                }
                Some(h) if h.current == 0 => "none published: every tool call is denied".into(),
                Some(h) => format!("v{} in force", h.current),
            };
            (
                title,
                text.lines()
                    .enumerate()
                    .map(|(i, l)| {
                        Line::from(vec![
                            Span::styled(format!("{:>3} ", i + 1), t.dim()),
                            Span::raw(l.to_string()),
                        ])
                    })
                    .collect(),
            )
        }
    };
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::bordered().title(Span::styled(format!(" {title} "), t.title()))),
        text_area,
    );

    // The history, newest first.
    let hist: Vec<Line> = pane
        .history
        .iter()
        .flat_map(|h| {
            h.versions.iter().rev().enumerate().map(|(i, v)| {
                let label = if v.note.is_empty() {
                    &v.author
                } else {
                    &v.note
                };
                let selected = i == pane.selected && pane.editor.is_none();
                super::history_row(v.version, h.current, v.created_ms, label, selected, t)
            })
        })
        .collect();
    f.render_widget(
        Paragraph::new(hist).block(Block::bordered().title(Span::styled(" history ", t.title()))),
        hist_area,
    );

    let status_line = match (&pane.editor, &pane.problem, &pane.error) {
        (_, _, Some(e)) => Line::from(Span::styled(e.clone(), t.error())),
        (Some(_), Some(p), _) => Line::from(Span::styled(format!("✗ {p}"), t.error())),
        (Some(_), None, _) if policy && pane.checked != pane.checking => {
            Line::from(Span::styled("checking with the daemon…", t.dim()))
        }
        (Some(_), None, _) if policy => Line::from(Span::styled(
            "✓ valid policy (checked by the daemon against the schema)",
            t.added(),
        )),
        (Some(_), None, _) => Line::from(Span::styled("✓ valid scopes", t.added())),
        (None, _, _) if policy => Line::from(Span::styled(
            "Cedar on top of each agent's scopes: forbid wins over permit; the scopes stay the outer bound.",
            t.dim(),
        )),
        (None, _, _) => Line::from(Span::styled(
            "Anything these scopes do not list is denied; tenant policies can forbid more.",
            t.dim(),
        )),
    };
    f.render_widget(
        Paragraph::new(status_line).wrap(Wrap { trim: true }),
        status,
    );
    let k =
        |key: &'static str, what: &'static str| vec![Span::styled(key, t.key()), Span::raw(what)];
    let test_key = |key| {
        if policy {
            k(key, " test cases  ")
        } else {
            vec![]
        }
    };
    let keys_line: Vec<Span> = if pane.editor.is_some() {
        [
            k("Ctrl-S", " check, diff, publish  "),
            test_key("Ctrl-T"),
            k("Esc", " discard edit"),
        ]
        .concat()
    } else {
        [
            k("e", " edit  "),
            test_key("t"),
            k("j/k", " version  "),
            k("R", " roll back to it  "),
            k("Esc", " close"),
        ]
        .concat()
    };
    f.render_widget(Paragraph::new(Line::from(keys_line)), keys);

    match &app.mode {
        Mode::ScopesConfirm => {
            let d = super::centered(area, 80, 18);
            f.render_widget(Clear, d);
            let mut lines: Vec<Line> = pane
                .diff
                .as_deref()
                .unwrap_or("")
                .lines()
                .map(|l| super::diff_line(l, t))
                .collect();
            lines.push(Line::from(""));
            lines.push(Line::from(if policy {
                "Publish this policy as a new version?"
            } else {
                "Publish these scopes as a new version?"
            }));
            lines.push(super::confirm::yes_no(t));
            f.render_widget(
                Paragraph::new(lines).block(
                    Block::bordered().title(Span::styled(" Diff before publish ", t.title())),
                ),
                d,
            );
        }
        Mode::PolicyTestInput { typed, editing } => super::input_box(
            f,
            "Test the policy",
            format!(
                "cases file (TOML, as `agenfleet policy test` takes), run against {}",
                if *editing {
                    "the edited text"
                } else {
                    "the version in force"
                }
            ),
            typed,
            t,
        ),
        Mode::ScopesRollback { version } => {
            let lines = vec![
                Line::from(format!(
                    "Roll the scopes of {} back to v{version}?",
                    pane.agent
                )),
                Line::from("This publishes a copy of it as a new version."),
            ];
            super::confirm::dialog(f, super::centered(area, 60, 6), lines, t);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Effect, Mode};
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::policy::{PolicyVersion, VersionHistory};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn history() -> VersionHistory {
        let v = |n: u32, text: &str, note: &str| PolicyVersion {
            version: n,
            hash: format!("{n:064x}"),
            text: text.into(),
            created_ms: 1_795_308_800_000 + u64::from(n) * 60_000,
            author: "root (uid 0)".into(),
            note: note.into(),
        };
        VersionHistory {
            current: 2,
            versions: vec![
                v(1, "tools = [\"search\"]\n", ""),
                v(
                    2,
                    "tools = [\"search\", \"read_file\"]\nread_paths = [\"/data/\"]\n",
                    "reports",
                ),
            ],
        }
    }

    fn opened() -> crate::app::App {
        let mut app = sample_app();
        let fx = app.on_key(key(KeyCode::Char('p')));
        assert!(matches!(fx.as_slice(), [Effect::LoadScopes(_)]), "{fx:?}");
        let agent = app.scopes.as_ref().expect("pane").agent.clone();
        app.apply_scopes(&agent, Ok(history()));
        app
    }

    #[test]
    fn scopes_pane_100x30() {
        let app = opened();
        let t = render(&app, 100, 30);
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn an_edit_is_checked_as_typed_diffed_then_published() {
        let mut app = opened();
        app.on_key(key(KeyCode::Char('e')));
        assert_eq!(app.mode, Mode::ScopesEdit);
        // Break line 1: the problem is shown, pointing at the line.
        app.on_key(key(KeyCode::End));
        app.on_key(key(KeyCode::Backspace));
        let text = screen_text(&render(&app, 100, 30));
        // TOML notices the missing `]` where the next line starts.
        assert!(text.contains("✗ line 2"), "{text}");
        app.on_key(key(KeyCode::Char(']')));
        // A new line with a bad host pattern: named, with its line.
        app.on_key(key(KeyCode::Down));
        app.on_key(key(KeyCode::End));
        for c in "\n[[http]]\nhost = \"bad host\"".chars() {
            let code = if c == '\n' {
                KeyCode::Enter
            } else {
                KeyCode::Char(c)
            };
            app.on_key(key(code));
        }
        let text = screen_text(&render(&app, 100, 30));
        assert!(
            text.contains("line 4") && text.contains("http[0].host"),
            "{text}"
        );
        let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
        assert!(
            app.on_key(ctrl_s).is_empty(),
            "invalid scopes are not published"
        );
        for _ in 0.."bad host\"".len() {
            app.on_key(key(KeyCode::Backspace));
        }
        for c in "api.example.com\"".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        // Still invalid: http scopes need the http_request tool. Fix line 1.
        assert!(app.on_key(ctrl_s).is_empty());
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Up));
        app.on_key(key(KeyCode::Home));
        for c in "tools = [\"http_request\", ".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        for _ in 0.."tools = [".len() {
            app.on_key(key(KeyCode::Delete));
        }
        let text = screen_text(&render(&app, 100, 30));
        assert!(text.contains("✓ valid scopes"), "{text}");
        assert!(app.on_key(ctrl_s).is_empty());
        assert_eq!(app.mode, Mode::ScopesConfirm);
        let text = screen_text(&render(&app, 100, 30));
        assert!(
            text.contains("Diff before publish") && text.contains("+host = \"api.example.com\""),
            "{text}"
        );
        let fx = app.on_key(key(KeyCode::Char('y')));
        match fx.as_slice() {
            [Effect::PublishScopes(r, text)] => {
                assert_eq!(r.to_string(), "acme/crawler");
                assert!(
                    text.starts_with("tools = [\"http_request\", \"search\", \"read_file\"]"),
                    "{text}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rollback_asks_first_and_readonly_cannot_edit() {
        let mut app = opened();
        app.on_key(key(KeyCode::Char('R')));
        assert!(app
            .flash
            .as_ref()
            .is_some_and(|f| f.text.contains("already in force")));
        app.on_key(key(KeyCode::Char('j')));
        app.on_key(key(KeyCode::Char('R')));
        assert_eq!(app.mode, Mode::ScopesRollback { version: 1 });
        let fx = app.on_key(key(KeyCode::Char('y')));
        assert!(
            matches!(fx.as_slice(), [Effect::RollbackScopes(_, 1)]),
            "{fx:?}"
        );
        app.readonly = true;
        app.on_key(key(KeyCode::Char('e')));
        assert_eq!(app.mode, Mode::Scopes);
    }
}
