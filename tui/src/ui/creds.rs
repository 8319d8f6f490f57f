//! The credentials pane of one agent: each credential's delivery (api, file, env), its
//! versions and dates (never a value), the agent's runs since the last rotation from the
//! audit log ("audit recent runs"), and the rotate dialog with masked input and a
//! confirmation.

use super::theme::Theme;
use crate::app::{App, Mode};
use crate::fmt;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(pane) = &app.creds else { return };
    let r = super::centered(area, 78, 20);
    f.render_widget(Clear, r);
    let block = Block::bordered().title(Span::styled(
        format!(" Credentials of {} ", pane.agent),
        t.title(),
    ));
    let inner = block.inner(r);
    f.render_widget(block, r);
    let [table_area, runs_area, keys_area] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Min(3),
        Constraint::Length(1),
    ])
    .areas(inner);
    let when = |v: Option<u64>| {
        v.map(|ms| fmt::timestamp(ms)[..19].to_string())
            .unwrap_or_else(|| "never".into())
    };
    // How each credential reaches the agent's program, from its spec (api, file, env).
    let view = app
        .agents
        .values()
        .find(|v| v.qualified_name() == pane.agent);
    let delivery = |name: &str| {
        view.and_then(|v| v.credentials.iter().find(|c| c.name == name))
            .map(|c| c.delivery.as_str())
            .unwrap_or("-")
    };
    let rows: Vec<Row> = pane
        .list
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let style = if i == pane.selected {
                t.selected()
            } else {
                ratatui::style::Style::default()
            };
            Row::new(vec![
                Cell::from(c.name.clone()),
                Cell::from(delivery(&c.name)),
                Cell::from(
                    c.current_version
                        .map(|v| format!("v{v}"))
                        .unwrap_or_else(|| "revoked".into()),
                ),
                Cell::from(format!("{}", c.versions.len())),
                Cell::from(when(c.last_rotated_ms)),
                Cell::from(when(c.last_delivered_ms)),
            ])
            .style(style)
        })
        .collect();
    let empty = rows.is_empty();
    f.render_widget(
        Table::new(
            rows,
            [
                Constraint::Fill(1),
                Constraint::Length(4),
                Constraint::Length(8),
                Constraint::Length(4),
                Constraint::Length(20),
                Constraint::Length(20),
            ],
        )
        .header(
            Row::new(vec![
                "NAME",
                "AS",
                "CURRENT",
                "VERS",
                "LAST ROTATED",
                "LAST DELIVERED",
            ])
            .style(t.title()),
        ),
        table_area,
    );
    if empty {
        let msg = if pane.loaded {
            "no credentials (`agenfleet creds set AGENT NAME`)"
        } else {
            "loading…"
        };
        f.render_widget(
            Paragraph::new(msg).style(t.dim()),
            Rect {
                y: table_area.y + 1,
                height: 1,
                ..table_area
            },
        );
    }
    let mut lines = vec![Line::from(Span::styled(
        "runs since the last rotation (audit log):",
        t.title(),
    ))];
    if pane.runs.is_empty() {
        lines.push(Line::from(Span::styled("  none recorded", t.dim())));
    }
    for e in pane
        .runs
        .iter()
        .rev()
        .take(runs_area.height.saturating_sub(1) as usize)
    {
        lines.push(Line::from(format!(
            "  #{:<6} {}  {}",
            e.seq,
            fmt::timestamp(e.time_ms),
            e.event.detail
        )));
    }
    f.render_widget(Paragraph::new(lines), runs_area);
    let keys = Line::from(vec![
        Span::styled("j/k", t.key()),
        Span::raw(" select  "),
        Span::styled("R", t.key()),
        Span::raw(" rotate  "),
        Span::styled("X", t.key()),
        Span::raw(" revoke  "),
        Span::styled("Esc", t.key()),
        Span::raw(" close"),
    ]);
    f.render_widget(Paragraph::new(keys), keys_area);

    match &app.mode {
        Mode::RotateInput { name, input } => {
            let d = super::centered(area, 60, 5);
            f.render_widget(Clear, d);
            let masked = "•".repeat(input.len());
            f.render_widget(
                Paragraph::new(vec![
                    Line::from(format!("new value of {name} (typing is hidden):")),
                    Line::from(Span::styled(format!("{masked}▏"), t.key())),
                    Line::from(Span::styled("Enter continue · Esc cancel", t.dim())),
                ])
                .block(Block::bordered().title(Span::styled(" Rotate ", t.title()))),
                d,
            );
        }
        Mode::RevokeInput { name, typed } => {
            let usable: Vec<String> = app
                .usable_versions(name)
                .iter()
                .map(|v| format!("v{v}"))
                .collect();
            super::input_box(
                f,
                "Revoke",
                format!(
                    "Revoke which version of {name}? usable: {} (empty: all of them)",
                    if usable.is_empty() {
                        "none".to_string()
                    } else {
                        usable.join(" ")
                    }
                ),
                typed,
                t,
            );
        }
        Mode::RevokeConfirm { name, version } => {
            let what = match version {
                Some(v) => format!("v{v} of {}/{name}", pane.agent),
                None => format!("every usable version of {}/{name}", pane.agent),
            };
            let lines = vec![
                Line::from(format!("Revoke {what} now?")),
                Line::from("The agent can no longer fetch it; this cannot be undone."),
            ];
            super::confirm::dialog(f, super::centered(area, 64, 6), lines, t);
        }
        Mode::RotateConfirm { name, .. } => {
            let lines = vec![
                Line::from(format!("Rotate {}/{name} to a new version?", pane.agent)),
                Line::from("The old version is revoked at once; the agent gets the new one."),
            ];
            super::confirm::dialog(f, super::centered(area, 60, 6), lines, t);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::render;
    use agenfleet_protocol::{AuditEntry, AuditEvent, CredentialInfo, CredentialVersion};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    fn with_creds() -> crate::app::App {
        let mut app = sample_app();
        // The spec hands `api-key` to the program as a file.
        if let Some(a) = app
            .agents
            .values_mut()
            .find(|a| a.qualified_name() == "acme/crawler")
        {
            a.credentials = vec![agenfleet_protocol::CredentialView::of(
                &agenfleet_protocol::CredentialUse {
                    name: "api-key".into(),
                    delivery: agenfleet_protocol::Delivery::File,
                    var: None,
                },
            )];
        }
        app.on_key(key(KeyCode::Char('c')));
        let v = |n: u32, revoked: bool| CredentialVersion {
            version: n,
            created_ms: 1_795_308_800_000 + u64::from(n) * 60_000,
            revoked_ms: revoked.then_some(1_795_308_900_000),
            revoke_at_ms: None,
            data_key: 1,
            value_hmac: format!("{n:016x}"),
        };
        app.apply_creds(
            "acme/crawler",
            vec![CredentialInfo {
                tenant: "acme".into(),
                agent: "crawler".into(),
                name: "api-key".into(),
                current_version: Some(2),
                created_ms: 1_795_308_800_000,
                last_rotated_ms: Some(1_795_308_900_000),
                last_delivered_ms: Some(1_795_308_901_000),
                versions: vec![v(1, true), v(2, false)],
            }],
            vec![AuditEntry {
                seq: 77,
                time_ms: 1_795_308_901_000,
                hash: "00".into(),
                event: AuditEvent {
                    actor: "agenfleetd".into(),
                    action: "agent.started".into(),
                    tenant: Some("acme".into()),
                    agent: Some("crawler".into()),
                    outcome: "observed".into(),
                    detail: "container c0ffee012345 from agenfleet/agent:0123456789ab".into(),
                },
            }],
        );
        app
    }

    #[test]
    fn credentials_pane_80x24() {
        let t = render(&with_creds(), 80, 24);
        insta::assert_snapshot!(t.backend());
    }

    #[test]
    fn a_version_is_revoked_only_after_y_and_only_a_usable_one() {
        let mut app = with_creds();
        let shift_x = KeyEvent::new(KeyCode::Char('X'), KeyModifiers::SHIFT);
        app.on_key(shift_x);
        let text = crate::ui::testing::screen_text(&render(&app, 80, 24));
        assert!(text.contains("usable: v2"), "{text}");
        // v1 is revoked already: refused, the dialog stays.
        app.on_key(key(KeyCode::Char('1')));
        app.on_key(key(KeyCode::Enter));
        assert!(app
            .flash
            .as_ref()
            .unwrap()
            .text
            .contains("not a usable version"));
        app.on_key(key(KeyCode::Backspace));
        app.on_key(key(KeyCode::Char('2')));
        app.on_key(key(KeyCode::Enter));
        let text = crate::ui::testing::screen_text(&render(&app, 80, 24));
        assert!(
            text.contains("Revoke v2 of acme/crawler/api-key now?"),
            "{text}"
        );
        // Enter is "no".
        assert!(app.on_key(key(KeyCode::Enter)).is_empty());
        assert_eq!(app.mode, crate::app::Mode::Creds);
        // Empty: every usable version, after y.
        app.on_key(shift_x);
        app.on_key(key(KeyCode::Enter));
        let fx = app.on_key(key(KeyCode::Char('y')));
        assert!(
            matches!(&fx[..], [crate::app::Effect::Revoke(r, n, None)] if r.to_string() == "acme/crawler" && n == "api-key"),
            "{fx:?}"
        );
        // Read-only consoles cannot.
        let mut ro = with_creds();
        ro.readonly = true;
        ro.on_key(shift_x);
        assert_eq!(ro.mode, crate::app::Mode::Creds);
    }

    #[test]
    fn rotate_dialog_masks_what_is_typed() {
        let mut app = with_creds();
        app.on_key(KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT));
        for c in "hunter2-secret".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        let t = render(&app, 80, 24);
        let text = crate::ui::testing::screen_text(&t);
        assert!(!text.contains("hunter2"), "typed value on screen");
        assert!(text.contains("••••••••••••••"), "{text}");
        assert!(
            !format!("{:?}", app.mode).contains("hunter2"),
            "typed value in Debug"
        );
        app.on_key(key(KeyCode::Enter));
        let t = render(&app, 80, 24);
        let text = crate::ui::testing::screen_text(&t);
        assert!(
            text.contains("Rotate acme/crawler/api-key to a new version?"),
            "{text}"
        );
        let fx = app.on_key(key(KeyCode::Char('y')));
        match &fx[..] {
            [crate::app::Effect::Rotate(r, name, value)] => {
                assert_eq!(r.to_string(), "acme/crawler");
                assert_eq!(name, "api-key");
                assert_eq!(value.expose(), b"hunter2-secret");
            }
            other => panic!("expected a rotation, got {other:?}"),
        }
    }
}
