//! Unit tests of the console state, and the sample fleet the view snapshots draw.

use super::*;
use agenfleet_protocol::{AgentState, Change, EngineInfo, ExitInfo};

pub fn agent(tenant: &str, project: &str, name: &str, state: AgentState) -> AgentView {
    let failed = state == AgentState::Failed;
    let running = state == AgentState::Running;
    AgentView {
        container_id: Some("c0ffee0123456789".into()),
        started_at_ms: running.then_some(1_000_000),
        restarts: if failed { 3 } else { 0 },
        restarts_in_window: if failed { 3 } else { 0 },
        restart_budget: 3,
        last_exit: failed.then_some(ExitInfo {
            reason: None,
            code: 137,
            oom_killed: true,
            unhealthy: false,
            at_ms: 1_000_000,
        }),
        message: failed.then(|| "restart budget exhausted: 3 restarts within 120s".to_string()),
        cpu_percent: running.then_some(1.5),
        memory_bytes: running.then_some(3 * 1024 * 1024),
        memory_limit_bytes: 256 * 1024 * 1024,
        spec_hash: "abcdef0123456789".into(),
        ..AgentView::new(tenant, project, name, "agenfleet/agent:0123456789ab", state)
    }
}

pub fn daemon() -> DaemonInfo {
    DaemonInfo {
        version: "0.1.0".into(),
        pid: 42,
        started_at_ms: 0,
        instance_id: "cafe1234".into(),
        engine: EngineInfo {
            connected: true,
            version: Some("20.10.24".into()),
            api_version: Some("1.41".into()),
            error: None,
        },
        orphans: vec![],
        audit_writable: true,
        audit_problem: None,
        vault: agenfleet_protocol::VaultState::Uninitialized,
        operations: Vec::new(),
    }
}

/// A console with a fixed small fleet and a fixed clock.
pub fn sample_app() -> App {
    let mut app = App::new(false, true, 1_192_000);
    app.on_connected(CallerInfo {
        uid: 0,
        operator: "root".into(),
        role: "platform_admin".into(),
        bindings: vec![],
    });
    let mut changes = vec![Change::Daemon(daemon())];
    changes.push(Change::Agent(Box::new(agent(
        "acme",
        "support",
        "triage-bot",
        AgentState::Running,
    ))));
    changes.push(Change::Agent(Box::new(agent(
        "acme",
        "ops",
        "flaky-bot",
        AgentState::Failed,
    ))));
    changes.push(Change::Agent(Box::new(agent(
        "acme",
        "research",
        "crawler",
        AgentState::BackingOff,
    ))));
    changes.push(Change::Agent(Box::new(agent(
        "beta",
        "default",
        "idle",
        AgentState::Stopped,
    ))));
    app.apply_watch(WatchReply {
        epoch: 1,
        revision: 4,
        reset: true,
        changes,
    });
    app
}

fn key(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

#[test]
fn navigation_filter_and_detail() {
    let mut app = sample_app();
    assert_eq!(app.selected_agent().unwrap().name, "crawler");
    app.on_key(key(KeyCode::Char('j')));
    assert_eq!(app.selected_agent().unwrap().name, "flaky-bot");
    let fx = app.on_key(key(KeyCode::Enter));
    assert!(app.detail_open);
    assert!(matches!(&fx[..], [Effect::FollowLogs(Some(r))] if r.name == "flaky-bot"));
    app.on_key(key(KeyCode::Esc));
    assert!(!app.detail_open);
    app.on_key(key(KeyCode::Char('/')));
    for c in "beta".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.visible().len(), 1);
    assert_eq!(app.selected_agent().unwrap().name, "idle");
}

#[test]
fn a_gateway_token_is_rotated_from_the_fleet_after_y() {
    let mut app = sample_app();
    let name = app.selected_agent().expect("a selected agent").name.clone();
    assert!(app
        .on_key(KeyEvent::new(KeyCode::Char('T'), KeyModifiers::SHIFT))
        .is_empty());
    assert!(matches!(
        app.mode,
        Mode::Confirm {
            op: AgentOp::Act(AgentAction::RotateToken),
            ..
        }
    ));
    let fx = app.on_key(key(KeyCode::Char('y')));
    assert!(
        matches!(&fx[..], [Effect::Act(AgentAction::RotateToken, r)] if r.name == name),
        "{fx:?}"
    );
}

#[test]
fn actions_need_confirmation_and_readonly_blocks_them() {
    let mut app = sample_app();
    assert!(app.on_key(key(KeyCode::Char('r'))).is_empty());
    assert!(matches!(
        app.mode,
        Mode::Confirm {
            op: AgentOp::Act(AgentAction::Restart),
            ..
        }
    ));
    assert!(app.on_key(key(KeyCode::Char('n'))).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    // Enter is "no" in every confirmation: only `y` goes ahead.
    app.on_key(key(KeyCode::Char('o')));
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    assert!(app.flash.as_ref().unwrap().text.contains("cancelled"));
    app.on_key(key(KeyCode::Char('o')));
    let fx = app.on_key(key(KeyCode::Char('y')));
    assert!(matches!(&fx[..], [Effect::Act(AgentAction::Stop, r)] if r.name == "crawler"));
    // Ctrl-D deletes, after the same confirmation.
    app.on_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL));
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    app.on_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL));
    let fx = app.on_key(key(KeyCode::Char('y')));
    assert!(
        matches!(&fx[..], [Effect::Delete(r)] if r.name == "crawler"),
        "{fx:?}"
    );

    let mut ro = sample_app();
    ro.readonly = true;
    ro.on_key(key(KeyCode::Char('r')));
    assert_eq!(ro.mode, Mode::Normal);
    assert!(ro.flash.as_ref().unwrap().text.contains("read-only"));
}

#[test]
fn a_viewer_is_told_why_before_any_round_trip_and_contexts_narrow_the_fleet() {
    let mut app = sample_app();
    app.caller = Some(CallerInfo {
        uid: 5,
        operator: "val".into(),
        role: "member".into(),
        bindings: vec![agenfleet_protocol::RoleBinding {
            role: "project_viewer".into(),
            tenant: "acme".into(),
            project: Some("research".into()),
        }],
    });
    app.on_key(key(KeyCode::Char('r')));
    assert_eq!(app.mode, Mode::Normal);
    let f = app.flash.clone().unwrap();
    assert!(
        f.error
            && f.text
                .contains("needs agents.control on project acme/research"),
        "{}",
        f.text
    );
    // t cycles: all → tenant acme → project acme/ops → …; landing on a tenant asks for
    // the tiers, and the header then names the tenant's.
    let fx = app.on_key(key(KeyCode::Char('t')));
    assert_eq!(app.context, Some(("acme".into(), None)));
    assert_eq!(app.visible().len(), 3);
    assert!(fx.contains(&Effect::LoadTenants), "{fx:?}");
    let header = |app: &App| {
        crate::ui::testing::screen_text(&crate::ui::testing::render_part(
            app,
            160,
            1,
            crate::ui::header::draw,
        ))
    };
    assert!(header(&app).contains(" in acme "), "{}", header(&app));
    app.on_msg(Msg::Tenants(Ok(vec![agenfleet_protocol::TenantInfo {
        tenant: "acme".into(),
        tier: "dedicated".into(),
        file: Some("tenants/acme.db".into()),
        agents: 3,
        audit_retention_days: None,
    }])));
    assert!(
        header(&app).contains(" in acme · dedicated "),
        "{}",
        header(&app)
    );
    app.on_key(key(KeyCode::Char('t')));
    assert_eq!(app.visible().len(), 1);
}

#[test]
fn the_console_reads_the_daemons_role_table() {
    // Every permission the daemon knows, for every role it can bind: the console's
    // up-front answer is the daemon's table (one table, in the protocol crate).
    let mut app = sample_app();
    let v = app.agents.values().next().expect("an agent").clone();
    for role in [
        "tenant_admin",
        "project_admin",
        "project_contributor",
        "project_viewer",
    ] {
        let r = ScopedRole::parse(role).expect("a role the daemon binds");
        assert_eq!(r.as_str(), role);
        app.caller = Some(CallerInfo {
            uid: 5,
            operator: "val".into(),
            role: "member".into(),
            bindings: vec![agenfleet_protocol::RoleBinding {
                role: role.into(),
                tenant: v.tenant.clone(),
                project: r.is_project_role().then(|| v.project.clone()),
            }],
        });
        for p in Permission::ALL {
            assert_eq!(Permission::parse(p.as_str()), Some(p));
            assert_eq!(
                app.may(p, &v).is_ok(),
                r.permissions().contains(&p),
                "{role} / {}",
                p.as_str()
            );
        }
    }
}

#[test]
fn removal_moves_selection() {
    let mut app = sample_app();
    app.apply_watch(WatchReply {
        epoch: 1,
        revision: 5,
        reset: false,
        changes: vec![Change::Removed {
            tenant: "acme".into(),
            name: "crawler".into(),
        }],
    });
    assert_eq!(app.selected_agent().unwrap().name, "flaky-bot");
}

#[test]
fn news_from_the_daemon_decides_what_the_loop_does_next() {
    let mut app = sample_app();
    // A new connection follows the audit log, and the open agent's logs again.
    app.on_key(key(KeyCode::Enter));
    let caller = app.caller.clone().expect("sample caller");
    let fx = app.on_msg(Msg::Connected(caller));
    assert!(
        matches!(&fx[..], [Effect::FollowAudit, Effect::FollowLogs(Some(r))] if r.name == "crawler")
    );
    // A rotation's answer is said and the pane reloaded.
    let fx = app.on_msg(Msg::Rotated(
        "acme/crawler".into(),
        Err("vault sealed".into()),
    ));
    assert!(matches!(&fx[..], [Effect::LoadCreds(r)] if r.name == "crawler"));
    assert!(app
        .flash
        .as_ref()
        .is_some_and(|f| f.error && f.text.contains("vault sealed")));
    // A decision reloads the queue; an effect without a connection is said.
    let fx = app.on_msg(Msg::Decided(7, true, Err("gone".into())));
    assert_eq!(fx, vec![Effect::LoadEscalations]);
    assert!(app.on_msg(Msg::NotConnected).is_empty());
    assert_eq!(
        app.flash.as_ref().map(|f| f.text.as_str()),
        Some("not connected to the daemon")
    );
    app.dirty = false;
    app.on_msg(Msg::Resize);
    assert!(app.dirty, "a resize redraws");
}

#[test]
fn each_view_has_its_own_keys_and_commands_reach_every_view() {
    let mut app = sample_app();
    app.on_key(key(KeyCode::Char('2')));
    assert_eq!(app.view, View::Audit);
    let selected = app.selected_agent().map(|v| v.name.clone());
    // j scrolls the audit view, it does not move the fleet's selection…
    app.on_key(key(KeyCode::Char('j')));
    assert_eq!(app.selected_agent().map(|v| v.name.clone()), selected);
    // …r and c mean nothing there (agent actions live in the fleet view)…
    assert!(app.on_key(key(KeyCode::Char('r'))).is_empty());
    assert!(app.on_key(key(KeyCode::Char('c'))).is_empty());
    assert_eq!(app.mode, Mode::Normal);
    // …but `:creds` opens the selected agent's credentials from anywhere.
    app.on_key(key(KeyCode::Char(':')));
    for c in "cr".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    let fx = app.on_key(key(KeyCode::Enter));
    assert!(
        matches!(&fx[..], [Effect::LoadCreds(r)] if Some(r.name.clone()) == selected),
        "{fx:?}"
    );
    assert_eq!(app.mode, Mode::Creds);
    assert_eq!(app.view, View::Fleet);
}

#[test]
fn command_mode_completes_remembers_and_names_what_it_does_not_know() {
    let mut app = sample_app();
    let typed = |app: &mut App, text: &str| {
        app.on_key(key(KeyCode::Char(':')));
        for c in text.chars() {
            app.on_key(key(if c == '\t' {
                KeyCode::Tab
            } else {
                KeyCode::Char(c)
            }));
        }
    };
    // Tab completes a unique prefix, and an agent after a command that takes one.
    typed(&mut app, "inc\t");
    assert_eq!(
        app.mode,
        Mode::Command {
            input: "incidents".into(),
            hist: None
        }
    );
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.view, View::Incidents);
    typed(&mut app, "sc\tflaky\t");
    assert_eq!(
        app.mode,
        Mode::Command {
            input: "scopes acme/flaky-bot".into(),
            hist: None
        }
    );
    let fx = app.on_key(key(KeyCode::Enter));
    assert!(
        matches!(&fx[..], [Effect::LoadScopes(r)] if r.name == "flaky-bot"),
        "{fx:?}"
    );
    assert_eq!(
        app.selected_agent().map(|v| v.name.as_str()),
        Some("flaky-bot")
    );
    app.on_key(key(KeyCode::Esc));
    // History: Up brings the last command back.
    app.on_key(key(KeyCode::Char(':')));
    app.on_key(key(KeyCode::Up));
    assert_eq!(
        app.mode,
        Mode::Command {
            input: "scopes acme/flaky-bot".into(),
            hist: Some(1)
        }
    );
    app.on_key(key(KeyCode::Up));
    assert_eq!(
        app.mode,
        Mode::Command {
            input: "incidents".into(),
            hist: Some(0)
        }
    );
    app.on_key(key(KeyCode::Esc));
    // Unknown commands, extra arguments and unknown agents are named.
    for (line, said) in [
        ("pods", "unknown command `:pods`"),
        ("audit now", ":audit takes no argument"),
        ("logs ghost", "no agent `ghost`"),
    ] {
        typed(&mut app, line);
        app.on_key(key(KeyCode::Enter));
        let flash = app
            .flash
            .as_ref()
            .map(|f| f.text.clone())
            .unwrap_or_default();
        assert!(flash.contains(said), "{line}: {flash}");
    }
    typed(&mut app, "q");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Effect::Quit]);
}

#[test]
fn esc_goes_back_one_level_and_filters_are_kept_per_view() {
    let mut app = sample_app();
    // A regex filter on the fleet, an inverse one on the audit view.
    app.on_key(key(KeyCode::Char('/')));
    for c in "^acme/(crawler|flaky)".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.visible().len(), 2);
    app.on_key(key(KeyCode::Char('2')));
    assert!(app.filter().is_empty(), "the audit view has its own filter");
    app.on_key(key(KeyCode::Char('4')));
    app.on_key(key(KeyCode::Char('1')));
    assert_eq!(app.visible().len(), 2, "the fleet's filter is kept");
    // Esc: the filter first…
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.visible().len(), app.agents.len());
    assert_eq!(app.view, View::Fleet);
    // …then the views before, newest first: incidents, audit, then the fleet stays.
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Incidents);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Audit);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Fleet);
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.view, View::Fleet);
    // `!` keeps what does not match.
    app.on_key(key(KeyCode::Char('/')));
    for c in "!running".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    assert!(app.visible().iter().all(|v| v.state != AgentState::Running));
    assert!(!app.visible().is_empty());
}

#[test]
fn shift_and_a_column_letter_sorts_and_again_reverses() {
    let mut app = sample_app();
    let names = |app: &App| {
        app.visible()
            .iter()
            .map(|v| v.name.clone())
            .collect::<Vec<_>>()
    };
    app.on_key(KeyEvent::new(KeyCode::Char('N'), KeyModifiers::SHIFT));
    let asc = names(&app);
    let mut sorted = asc.clone();
    sorted.sort();
    assert_eq!(asc, sorted);
    app.on_key(KeyEvent::new(KeyCode::Char('N'), KeyModifiers::SHIFT));
    let mut desc = names(&app);
    desc.reverse();
    assert_eq!(desc, sorted);
    // Restarts: the failed agent (3 restarts) last, then first when reversed.
    app.on_key(KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT));
    assert_eq!(app.visible().last().map(|v| v.restarts), Some(3));
    app.on_key(KeyEvent::new(KeyCode::Char('R'), KeyModifiers::SHIFT));
    assert_eq!(app.visible().first().map(|v| v.restarts), Some(3));
    assert_eq!(app.sort, Some((Column::Restarts, true)));
}

#[test]
fn ctrl_l_redraws_and_s_opens_a_shell_only_where_one_can_run() {
    let mut app = sample_app();
    assert_eq!(
        app.on_key(KeyEvent::new(KeyCode::Char('l'), KeyModifiers::CONTROL)),
        vec![Effect::Redraw]
    );
    // The selected agent is backing off: no running container to open a shell in.
    assert!(app.on_key(key(KeyCode::Char('s'))).is_empty());
    assert!(app.flash.as_ref().unwrap().text.contains("is not running"));
    app.on_key(key(KeyCode::Char('/')));
    for c in "triage".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    let fx = app.on_key(key(KeyCode::Char('s')));
    assert!(
        matches!(&fx[..], [Effect::Shell(a, id)] if a == "acme/triage-bot" && id.starts_with("c0ffee")),
        "{fx:?}"
    );
}

/// A fleet of `n` running agents named agent-0000….
fn big_app(n: usize) -> App {
    let mut app = sample_app();
    let changes = (0..n)
        .map(|i| {
            Change::Agent(Box::new(agent(
                "big",
                "p",
                &format!("agent-{i:04}"),
                AgentState::Running,
            )))
        })
        .collect();
    app.apply_watch(WatchReply {
        epoch: 1,
        revision: 5,
        reset: true,
        changes,
    });
    app
}

#[test]
fn only_the_rows_on_screen_are_drawn_and_the_selection_stays_in_view() {
    let mut app = big_app(1000);
    let shown =
        |app: &App| crate::ui::testing::screen_text(&crate::ui::testing::render(app, 80, 24));
    let s = shown(&app);
    assert!(
        s.contains("Fleet (1000)") && s.contains("agent-0000"),
        "{s}"
    );
    app.on_key(key(KeyCode::Char('G')));
    let s = shown(&app);
    assert!(
        s.contains("▶ big/p") && s.contains("agent-0999") && !s.contains("agent-0000"),
        "{s}"
    );
    // Up a few rows: the view does not move until the selection leaves it.
    let from = app.fleet_offset.get();
    for _ in 0..5 {
        app.on_key(key(KeyCode::Char('k')));
    }
    shown(&app);
    assert_eq!(app.fleet_offset.get(), from);
    app.on_key(key(KeyCode::Char('g')));
    let s = shown(&app);
    assert!(
        s.contains("agent-0000") && app.fleet_offset.get() == 0,
        "{s}"
    );
}

#[test]
fn a_tick_redraws_only_when_a_value_on_screen_reads_differently() {
    let mut app = big_app(50);
    // Started two hours before: uptimes read in hours and minutes.
    app.tick(8_200_000);
    app.dirty = false;
    app.tick(8_201_000);
    assert!(!app.dirty, "the same minute: nothing on screen changed");
    app.tick(8_200_000 + 60_000);
    assert!(app.dirty, "a minute later the uptimes read differently");
    // The audit view shows nothing the clock moves.
    app.on_key(key(KeyCode::Char('2')));
    app.tick(1_300_000);
    app.dirty = false;
    app.tick(1_900_000);
    assert!(!app.dirty);
}

#[test]
fn an_update_that_changes_the_sorted_value_or_the_filtered_state_moves_the_row() {
    let mut app = big_app(20);
    app.on_key(KeyEvent::new(KeyCode::Char('C'), KeyModifiers::SHIFT));
    let update = |app: &mut App, name: &str, f: &dyn Fn(&mut AgentView)| {
        let mut v = app.agents[&("big".to_string(), name.to_string())].clone();
        f(&mut v);
        app.apply_watch(WatchReply {
            epoch: 1,
            revision: 9,
            reset: false,
            changes: vec![Change::Agent(Box::new(v))],
        });
    };
    update(&mut app, "agent-0003", &|v| v.cpu_percent = Some(99.0));
    assert_eq!(
        app.visible().last().map(|v| v.name.as_str()),
        Some("agent-0003")
    );
    // A memory change under a CPU sort keeps the order (and the cached rows).
    let rev = app.agents_rev;
    update(&mut app, "agent-0004", &|v| v.memory_bytes = Some(1));
    assert_eq!(app.agents_rev, rev);
    // A state change under a filter on the state moves the agent out of the view.
    app.on_key(key(KeyCode::Char('/')));
    for c in "running".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    app.on_key(key(KeyCode::Enter));
    let before = app.visible().len();
    update(&mut app, "agent-0005", &|v| v.state = AgentState::Stopped);
    assert_eq!(app.visible().len(), before - 1);
}

#[test]
fn the_policy_pane_is_checked_by_the_daemon_and_only_the_newest_answer_counts() {
    use agenfleet_protocol::policy::PolicyProblem;
    let mut app = sample_app();
    app.on_key(key(KeyCode::Char(':')));
    for c in "policy acme".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        vec![Effect::LoadPolicy("acme".into())]
    );
    app.on_msg(Msg::Policy(
        "acme".into(),
        Ok(agenfleet_protocol::policy::VersionHistory {
            current: 0,
            versions: vec![],
        }),
    ));
    app.on_key(key(KeyCode::Char('e')));
    assert_eq!(app.mode, Mode::ScopesEdit);
    // Each keystroke is a numbered check.
    let fx1 = app.on_key(key(KeyCode::Char('x')));
    let fx2 = app.on_key(key(KeyCode::Char('y')));
    assert!(
        matches!(&fx1[..], [Effect::ValidatePolicy(1, _)]),
        "{fx1:?}"
    );
    assert!(
        matches!(&fx2[..], [Effect::ValidatePolicy(2, t)] if t.ends_with("xy\n") || t.contains("xy")),
        "{fx2:?}"
    );
    // Publishing waits for the newest answer; a stale one is dropped.
    let ctrl_s = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::CONTROL);
    assert!(app.on_key(ctrl_s).is_empty());
    assert!(app.flash.as_ref().unwrap().text.contains("still checking"));
    app.on_msg(Msg::PolicyChecked(1, Ok(vec![])));
    assert!(app.on_key(ctrl_s).is_empty(), "answer 1 is not the newest");
    app.on_msg(Msg::PolicyChecked(
        2,
        Ok(vec![PolicyProblem {
            line: Some(2),
            policy: None,
            message: "unexpected token".into(),
        }]),
    ));
    let p = app.scopes.as_ref().unwrap();
    assert_eq!(p.problem.as_ref().and_then(|e| e.line), Some(2));
    assert!(app.on_key(ctrl_s).is_empty());
    assert!(app.flash.as_ref().unwrap().text.contains("fix it first"));
    // A viewer of the tenant cannot edit it.
    let mut viewer = sample_app();
    viewer.caller = Some(CallerInfo {
        uid: 5,
        operator: "val".into(),
        role: "member".into(),
        bindings: vec![agenfleet_protocol::RoleBinding {
            role: "project_viewer".into(),
            tenant: "acme".into(),
            project: Some("ops".into()),
        }],
    });
    viewer.run_command("policy acme");
    viewer.on_key(key(KeyCode::Char('e')));
    assert_eq!(viewer.mode, Mode::Scopes);
    assert!(viewer
        .flash
        .as_ref()
        .unwrap()
        .text
        .contains("needs policy.write"));
}

#[test]
fn the_mouse_scrolls_selects_and_a_double_click_opens() {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    let mut app = big_app(30);
    let at = |kind, row| MouseEvent {
        kind,
        column: 10,
        row,
        modifiers: KeyModifiers::NONE,
    };
    app.on_msg(Msg::Mouse(at(MouseEventKind::ScrollDown, 5), 0));
    app.on_msg(Msg::Mouse(at(MouseEventKind::ScrollDown, 5), 10));
    assert_eq!(app.selected_index(), Some(2));
    // Row 3 of the screen is the table's first row: a click there selects agent-0000.
    app.on_msg(Msg::Mouse(
        at(MouseEventKind::Down(MouseButton::Left), 3),
        1_000,
    ));
    assert_eq!(
        app.selected_agent().map(|v| v.name.as_str()),
        Some("agent-0000")
    );
    assert!(!app.detail_open);
    // A second click on another row is a new selection, not a double-click.
    app.on_msg(Msg::Mouse(
        at(MouseEventKind::Down(MouseButton::Left), 7),
        1_100,
    ));
    assert_eq!(
        app.selected_agent().map(|v| v.name.as_str()),
        Some("agent-0004")
    );
    assert!(!app.detail_open);
    let fx = app.on_msg(Msg::Mouse(
        at(MouseEventKind::Down(MouseButton::Left), 7),
        1_300,
    ));
    assert!(app.detail_open, "double-click opens");
    assert!(matches!(&fx[..], [Effect::FollowLogs(Some(r))] if r.name == "agent-0004"));
    // Too slow is two single clicks; a click on the header does nothing.
    app.on_key(key(KeyCode::Esc));
    app.on_msg(Msg::Mouse(
        at(MouseEventKind::Down(MouseButton::Left), 8),
        5_000,
    ));
    app.on_msg(Msg::Mouse(
        at(MouseEventKind::Down(MouseButton::Left), 8),
        6_000,
    ));
    assert!(!app.detail_open);
    assert!(app
        .on_msg(Msg::Mouse(
            at(MouseEventKind::Down(MouseButton::Left), 0),
            7_000
        ))
        .is_empty());
}

#[test]
fn the_policy_is_tested_from_its_pane_against_what_is_shown() {
    use agenfleet_protocol::policy::{PolicyCaseResult, Verdict};
    let mut app = sample_app();
    app.run_command("policy acme");
    app.on_msg(Msg::Policy(
        "acme".into(),
        Ok(agenfleet_protocol::policy::VersionHistory {
            current: 0,
            versions: vec![],
        }),
    ));
    // `t`: the cases run against the version in force.
    app.on_key(key(KeyCode::Char('t')));
    assert!(matches!(
        app.mode,
        Mode::PolicyTestInput { editing: false, .. }
    ));
    let s = crate::ui::testing::screen_text(&crate::ui::testing::render(&app, 120, 40));
    assert!(
        s.contains("Test the policy") && s.contains("Policy of tenant acme"),
        "the question is asked over the pane: {s}"
    );
    assert!(
        app.on_key(key(KeyCode::Enter)).is_empty(),
        "a path is needed"
    );
    for c in "cases.toml".chars() {
        app.on_key(key(KeyCode::Char(c)));
    }
    assert_eq!(
        app.on_key(key(KeyCode::Enter)),
        vec![Effect::TestPolicy {
            tenant: "acme".into(),
            file: "cases.toml".into(),
            candidate: None,
        }]
    );
    assert_eq!(app.mode, Mode::Scopes);
    let case = |name: &str, expect, got| PolicyCaseResult {
        name: name.into(),
        expect,
        got,
        reason: "because".into(),
        policies: vec![],
    };
    app.on_msg(Msg::PolicyTested(Ok(vec![
        case("reads", Verdict::Allow, Verdict::Allow),
        case("deletes", Verdict::Deny, Verdict::Allow),
    ])));
    assert!(app
        .flash
        .as_ref()
        .is_some_and(|f| f.error && f.text == "2 case(s), 1 failed"));
    let s = crate::ui::testing::screen_text(&crate::ui::testing::render(&app, 120, 40));
    assert!(
        s.contains("PASS reads") && s.contains("FAIL deletes"),
        "{s}"
    );
    assert!(s.contains("cases of cases.toml — 1 failed"), "{s}");
    // Ctrl-T while editing: the edited text is the candidate, the path remembered.
    app.on_key(key(KeyCode::Char('e')));
    app.on_key(key(KeyCode::Char('x')));
    app.on_key(KeyEvent::new(KeyCode::Char('t'), KeyModifiers::CONTROL));
    assert!(
        matches!(&app.mode, Mode::PolicyTestInput { editing: true, typed } if typed == "cases.toml")
    );
    let fx = app.on_key(key(KeyCode::Enter));
    assert!(
        matches!(&fx[..], [Effect::TestPolicy { candidate: Some(t), .. }] if t.contains('x')),
        "{fx:?}"
    );
    assert_eq!(app.mode, Mode::ScopesEdit);
}
