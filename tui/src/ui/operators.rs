//! The operators view: each operator's uid, name, platform admin or not, and role
//! bindings; the grant / revoke and add inputs and the confirmations.

use super::theme::Theme;
use crate::app::{App, Mode};
use ratatui::layout::{Constraint, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};
use ratatui::Frame;

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let block =
        |n: usize| Block::bordered().title(Span::styled(format!(" Operators ({n}) "), t.title()));
    let Some(list) = &app.operators else {
        f.render_widget(
            Paragraph::new(Span::styled("loading…", t.dim())).block(block(0)),
            area,
        );
        return;
    };
    let rows: Vec<Row> = list
        .iter()
        .map(|o| {
            let roles: Vec<String> = o.bindings.iter().map(|b| b.to_string()).collect();
            Row::new(vec![
                Cell::from(o.uid.to_string()),
                Cell::from(o.name.clone()),
                Cell::from(if o.platform_admin {
                    "platform admin"
                } else {
                    ""
                }),
                Cell::from(if roles.is_empty() {
                    "-".to_string()
                } else {
                    roles.join(", ")
                }),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(16),
            Constraint::Length(15),
            Constraint::Fill(1),
        ],
    )
    .header(Row::new(vec!["UID", "NAME", "", "ROLES"]).style(t.title()))
    .block(block(list.len()))
    .row_highlight_style(t.selected())
    .highlight_symbol("▶ ");
    let mut state =
        TableState::default().with_selected((!list.is_empty()).then_some(app.op_selected));
    f.render_stateful_widget(table, area, &mut state);
    match &app.mode {
        Mode::RoleInput { uid, grant, typed } => super::input_box(
            f,
            if *grant { "Grant" } else { "Revoke" },
            format!(
                "{} uid {uid}: ROLE TENANT[/PROJECT] (tenant_admin, project_admin, project_contributor, project_viewer)",
                if *grant { "Grant to" } else { "Revoke from" }
            ),
            typed,
            t,
        ),
        Mode::OperatorInput { typed } => super::input_box(
            f,
            "Add operator",
            "UID NAME, or UID NAME admin for a platform admin".to_string(),
            typed,
            t,
        ),
        Mode::OperatorRemove { uid, name } => {
            let lines = vec![Line::from(format!(
                "Remove operator {name} (uid {uid}) and every role it holds?"
            ))];
            super::confirm::dialog(f, super::centered(f.area(), 72, 5), lines, t);
        }
        Mode::RoleConfirm { uid, grant, binding } => {
            let lines = vec![Line::from(format!(
                "{} {binding} {} uid {uid}?",
                if *grant { "Grant" } else { "Revoke" },
                if *grant { "to" } else { "from" }
            ))];
            super::confirm::dialog(f, super::centered(f.area(), 64, 5), lines, t);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Effect, Msg, View};
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::{OperatorInfo, RoleBinding};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn operators_are_listed_and_a_role_is_granted_only_after_y() {
        let mut app = sample_app();
        app.run_command("operators");
        assert_eq!(app.view, View::Operators);
        app.on_msg(Msg::Operators(Ok(vec![
            OperatorInfo {
                uid: 0,
                name: "root".into(),
                platform_admin: true,
                bindings: vec![],
            },
            OperatorInfo {
                uid: 1001,
                name: "val".into(),
                platform_admin: false,
                bindings: vec![RoleBinding {
                    role: "project_viewer".into(),
                    tenant: "acme".into(),
                    project: Some("ops".into()),
                }],
            },
        ])));
        let s = screen_text(&render(&app, 100, 24));
        assert!(
            s.contains("project_viewer") && s.contains("platform admin"),
            "{s}"
        );
        app.on_key(key(KeyCode::Char('j')));
        app.on_key(key(KeyCode::Char('a')));
        for c in "project_admin acme/ops".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Enter));
        let s = screen_text(&render(&app, 100, 24));
        assert!(
            s.contains("Grant project_admin on acme/ops to uid 1001?"),
            "{s}"
        );
        assert!(app.on_key(key(KeyCode::Enter)).is_empty(), "Enter is no");
        // Revoke starts from the first binding.
        app.on_key(key(KeyCode::Char('x')));
        app.on_key(key(KeyCode::Enter));
        let fx = app.on_key(key(KeyCode::Char('y')));
        assert!(
            matches!(&fx[..], [Effect::Role { uid: 1001, grant: false, binding }] if binding.role == "project_viewer"),
            "{fx:?}"
        );
        insta::assert_snapshot!(render(&app, 100, 24).backend());

        // `+` adds an operator typed as UID NAME [admin]; a bad uid is named.
        app.on_key(key(KeyCode::Char('+')));
        for c in "x ana".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        assert!(app.on_key(key(KeyCode::Enter)).is_empty());
        assert!(screen_text(&render(&app, 100, 24)).contains("bad uid `x`"));
        for _ in 0..5 {
            app.on_key(key(KeyCode::Backspace));
        }
        for c in "1002 ana".chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        let fx = app.on_key(key(KeyCode::Enter));
        assert_eq!(
            fx,
            vec![Effect::AddOperator {
                uid: 1002,
                name: "ana".into(),
                admin: false
            }]
        );
        // Ctrl-D removes the selected operator: Enter cancels, `y` removes.
        let ctrl_d = KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL);
        app.on_key(ctrl_d);
        let s = screen_text(&render(&app, 100, 24));
        assert!(s.contains("Remove operator val (uid 1001)"), "{s}");
        assert!(app.on_key(key(KeyCode::Enter)).is_empty(), "Enter is no");
        app.on_key(ctrl_d);
        assert_eq!(
            app.on_key(key(KeyCode::Char('y'))),
            vec![Effect::RemoveOperator(1001)]
        );
        assert_eq!(
            app.on_msg(Msg::OperatorRemoved(1001, Ok(()))),
            vec![Effect::LoadOperators]
        );
    }
}
