//! The describe view of one agent: a field per line, like `kubectl describe` — what runs,
//! its state and last exit, the spec in force, limits, network, credentials by name and
//! delivery, files, workspace, providers, scopes version, today's model use — and its CPU
//! and memory over the last ten minutes as sparklines.

use super::theme::Theme;
use crate::app::App;
use crate::fmt;
use agenfleet_protocol::spec::NetworkMode;
use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

const LABEL: usize = 13;

fn field(label: &str, value: impl Into<String>, t: &Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{label:<LABEL$}"), t.dim()),
        Span::raw(value.into()),
    ])
}

fn history_label(series: &str) -> &'static str {
    if series == "cpu" {
        "CPU 10m"
    } else {
        "Mem 10m"
    }
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let Some(p) = &app.describe else {
        f.render_widget(Block::bordered().title(" Describe "), area);
        return;
    };
    let title = format!(" Describe {}/{} ", p.agent.0, p.agent.1);
    let block = Block::bordered().title(Span::styled(title, t.title()));
    let Some(v) = app.agents.get(&p.agent) else {
        f.render_widget(
            Paragraph::new(Span::styled(
                "this agent is no longer in the fleet",
                t.error(),
            ))
            .block(block),
            area,
        );
        return;
    };
    let mut l = vec![
        field("Agent", v.qualified_name(), t),
        field("Project", format!("{}/{}", v.tenant, v.project), t),
    ];
    if !v.description.is_empty() {
        l.push(field("Description", v.description.clone(), t));
    }
    l.push(Line::from(vec![
        Span::styled(format!("{:<LABEL$}", "State"), t.dim()),
        Span::styled(v.state.as_str(), t.state(v.state)),
        Span::raw(format!(
            " (desired {:?}) · uptime {} · health {}",
            v.desired,
            fmt::uptime(v, app.now_ms),
            v.health.as_deref().unwrap_or("-")
        )),
    ]));
    l.push(field(
        "Restarts",
        format!(
            "{} ({} of {} in the window)",
            v.restarts, v.restarts_in_window, v.restart_budget
        ),
        t,
    ));
    let exit = match &v.last_exit {
        Some(e) => format!("{} at {}", fmt::exit(v), fmt::timestamp(e.at_ms)),
        None => "-".into(),
    };
    l.push(field("Last exit", exit, t));
    // CPU and memory over the last ten minutes, as wide as the pane allows.
    let width = (area.width as usize).saturating_sub(LABEL + 2 + 30).min(60);
    match &p.history {
        Some(h) => {
            for s in crate::pulse::agent(h) {
                l.push(Line::from(vec![
                    Span::styled(format!("{:<LABEL$}", history_label(s.label)), t.dim()),
                    Span::styled(crate::pulse::sparkline(&s.values, width), t.title()),
                    Span::raw(format!("  now {} · peak {}", s.now, s.peak)),
                ]));
            }
        }
        None => l.push(field("CPU / memory", "(history loading…)", t)),
    }
    if let Some(m) = &v.message {
        l.push(field("Message", m.clone(), t));
    }
    let node = app
        .daemon
        .as_ref()
        .map(|d| format!("this host (daemon {} pid {})", d.instance_id, d.pid))
        .unwrap_or_else(|| "this host".into());
    l.push(field("Node", node, t));
    l.push(field(
        "Container",
        v.container_id.clone().unwrap_or_else(|| "-".into()),
        t,
    ));
    l.push(field("Image", v.image.clone(), t));
    let command = if v.command.is_empty() {
        "the image's own".to_string()
    } else {
        v.command.join(" ")
    };
    l.push(field("Command", command, t));
    if !v.workdir.is_empty() {
        l.push(field("Workdir", v.workdir.clone(), t));
    }
    match &p.spec {
        Some(s) => {
            l.push(field(
                "Spec",
                format!(
                    "v{} ({}) by {} at {} — {}",
                    s.version,
                    &s.hash[..s.hash.len().min(12)],
                    s.author,
                    fmt::timestamp(s.created_ms),
                    s.note
                ),
                t,
            ));
            let lim = &s.spec.limits;
            l.push(field(
                "Limits",
                format!(
                    "memory {} MiB · cpus {} · pids {}",
                    lim.memory_mb, lim.cpus, lim.pids
                ),
                t,
            ));
            let r = &s.spec.restart;
            l.push(field(
                "Restart",
                format!(
                    "{:?}: {} attempts in {} s, backoff {}–{} ms",
                    r.mode, r.attempts, r.interval_secs, r.delay_ms, r.max_delay_ms
                ),
                t,
            ));
            let net = match s.spec.network.mode {
                NetworkMode::Gateway => "gateway (HTTP(S) only through the gateway, decided)",
                NetworkMode::Internal => "internal (its own network, no route out)",
                NetworkMode::None => "none (the gateway socket only)",
                NetworkMode::Egress => "egress — UNGOVERNED (around the gateway)",
            };
            l.push(field("Network", net, t));
        }
        None => l.push(field(
            "Spec",
            p.error.clone().unwrap_or_else(|| "loading…".into()),
            t,
        )),
    }
    l.push(field(
        "Memory",
        format!(
            "{} of {} · cpu {}",
            fmt::memory(v),
            fmt::bytes(v.memory_limit_bytes),
            fmt::cpu(v)
        ),
        t,
    ));
    let creds = if v.credentials.is_empty() {
        "-".to_string()
    } else {
        v.credentials
            .iter()
            .map(|c| match &c.to {
                Some(to) => format!("{} ({} → {to})", c.name, c.delivery.as_str()),
                None => format!("{} ({})", c.name, c.delivery.as_str()),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    l.push(field("Credentials", creds, t));
    let scopes = match p.scopes_version {
        Some(0) => "none published (every tool call is denied)".to_string(),
        Some(n) => format!("v{n} in force (p shows them)"),
        None => "…".into(),
    };
    l.push(field("Scopes", scopes, t));
    let memory = match &p.memory {
        None => "…".to_string(),
        Some(Err(e)) => format!("unknown: {e}"),
        Some(Ok(m)) => format!(
            "{} of {} keys, {} of {}; last write {}",
            m.keys,
            m.max_keys,
            fmt::bytes(m.bytes),
            fmt::bytes(m.max_bytes),
            m.last_write_ms
                .map(fmt::timestamp)
                .unwrap_or_else(|| "never".into())
        ),
    };
    l.push(field("Agent memory", memory, t));
    match &p.runs {
        None => l.push(field("Last runs", "loading…", t)),
        Some(Err(e)) => l.push(field("Last runs", format!("not known: {e}"), t)),
        Some(Ok(runs)) if runs.is_empty() => l.push(field("Last runs", "none", t)),
        Some(Ok(runs)) => {
            for (i, r) in runs.iter().enumerate() {
                let took = match (r.started_ms, r.ended_ms) {
                    (Some(s), Some(e)) => fmt::duration_ms(e.saturating_sub(s)),
                    _ => "-".into(),
                };
                let mut text = format!(
                    "#{} {} ({}, {}) {}",
                    r.id,
                    r.state,
                    r.trigger,
                    took,
                    fmt::timestamp(r.created_ms)
                );
                if let Some(e) = &r.error {
                    text.push_str(&format!(" — {e}"));
                }
                l.push(field(if i == 0 { "Last runs" } else { "" }, text, t));
            }
        }
    }
    for file in &v.files {
        l.push(field(
            "File",
            format!("{} ← {}", file.target, file.source),
            t,
        ));
    }
    if let Some(mb) = v.workspace_mb {
        l.push(field("Workspace", format!("{mb} MiB at /workspace"), t));
    }
    if !v.upstreams.is_empty() {
        l.push(field("Upstreams", v.upstreams.join(", "), t));
    }
    if v.usage_today.calls > 0 {
        l.push(field("Model today", fmt::model_today(&v.usage_today), t));
    }
    for (k, val) in &v.env {
        l.push(field("Env", format!("{k}={val}"), t));
    }
    let room = block.inner(area).height as usize;
    let scroll = p.scroll.min(l.len().saturating_sub(room));
    f.render_widget(
        Paragraph::new(l.into_iter().skip(scroll).collect::<Vec<_>>()).block(block),
        area,
    );
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::app::{Effect, Msg, PulseOf};
    use crate::ui::testing::render;
    use agenfleet_protocol::pulse::{AgentHistory, AgentPoint};
    use agenfleet_protocol::AgentRef;
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    #[test]
    fn describe_names_what_an_on_call_engineer_asks_first() {
        let mut app = sample_app();
        let fx = app.on_key(KeyEvent::new(KeyCode::Char('d'), KeyModifiers::NONE));
        let crawler = AgentRef {
            tenant: Some("acme".into()),
            name: "crawler".into(),
        };
        assert!(
            fx.contains(&Effect::LoadDescribe(crawler.clone())),
            "{fx:?}"
        );
        // What its private memory holds (never a value).
        app.on_msg(Msg::MemoryStats(
            "acme/crawler".into(),
            Ok(agenfleet_protocol::memory::MemoryStats {
                agent: "acme/crawler".into(),
                keys: 12,
                bytes: 4096,
                last_write_ms: None,
                max_keys: 100,
                max_bytes: 1 << 20,
                max_value_bytes: 1024,
            }),
        ));
        let s = format!("{:?}", render(&app, 120, 40).backend());
        assert!(
            s.contains("12 of 100 keys, 4.0K of 1.0M; last write never"),
            "{s}"
        );
        // Its last runs, newest first, each with how it ended.
        let run = |id: u64, state, error: Option<&str>| agenfleet_protocol::runs::RunView {
            id,
            tenant: "acme".into(),
            project: "research".into(),
            agent: "crawler".into(),
            trigger: "cli".into(),
            requested_by: "ann".into(),
            state,
            input_json: "{}".into(),
            result_json: None,
            error: error.map(str::to_string),
            created_ms: 1_700_000_000_000,
            started_ms: Some(1_700_000_000_000),
            ended_ms: Some(1_700_000_002_000),
            deadline_ms: None,
        };
        use agenfleet_protocol::runs::RunState;
        app.on_msg(Msg::Runs(
            "acme/crawler".into(),
            Ok(vec![
                run(8, RunState::Failed, Some("asked to fail")),
                run(7, RunState::Succeeded, None),
            ]),
        ));
        let s = format!("{:?}", render(&app, 120, 40).backend());
        assert!(s.contains("#8 failed (cli, 2s)"), "{s}");
        assert!(s.contains("— asked to fail"), "{s}");
        assert!(s.contains("#7 succeeded (cli, 2s)"), "{s}");
        assert!(
            fx.contains(&Effect::FollowPulse(Some(PulseOf::Agent(crawler)))),
            "the history is followed while described: {fx:?}"
        );
        insta::assert_snapshot!("describe_loading_80x24", render(&app, 80, 24).backend());

        // Its CPU and memory history arrives: a sparkline each, now and peak.
        let points = (0..60u64)
            .map(|i| AgentPoint {
                start_ms: i * 10_000,
                cpu_percent: (i >= 30).then_some(i as f32),
                memory_bytes: (i >= 30).then_some(i << 20),
            })
            .collect();
        app.on_msg(Msg::History(
            "acme/crawler".into(),
            AgentHistory {
                bucket_ms: 10_000,
                points,
            },
        ));
        let screen = format!("{:?}", render(&app, 120, 40).backend());
        assert!(screen.contains("now 59.0% · peak 59.0%"), "{screen}");
        assert!(screen.contains("now 59.0M · peak 59.0M"), "{screen}");
        insta::assert_snapshot!("describe_history_120x40", render(&app, 120, 40).backend());
        // Another agent's history (an answer for an earlier describe) is not shown.
        app.on_msg(Msg::History("acme/other".into(), AgentHistory::default()));
        assert!(format!("{:?}", render(&app, 120, 40).backend()).contains("peak 59.0%"));

        // Leaving stops following.
        let fx = app.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
        assert!(fx.contains(&Effect::FollowPulse(None)), "{fx:?}");
    }
}
