//! The console at 10,000 agents: a synthetic fleet fed to the real view model (`App`) and
//! drawn by the real views on ratatui's `TestBackend` at 200×60 — what no engine on one
//! host can run. Prints: frame time (build + diff + draw) idle and after one agent's change,
//! filter keystroke and sort latency (each with its frame), and the process's RSS.
//!
//! `cargo bench -p agenfleet-tui --bench console` (release build of this bench only).

use agenfleet::app::{App, Msg};
use agenfleet_protocol::{AgentState, AgentView, CallerInfo, Change, ExitInfo, WatchReply};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use std::time::{Duration, Instant};

const AGENTS: usize = 10_000;

fn agent(i: usize) -> AgentView {
    let state = match i % 20 {
        0 => AgentState::Failed,
        1 => AgentState::BackingOff,
        2 => AgentState::Stopped,
        _ => AgentState::Running,
    };
    AgentView {
        container_id: Some(format!("{i:016x}")),
        started_at_ms: Some(1_000_000 + i as u64 * 977),
        restarts: (i % 7) as u32,
        restart_budget: 5,
        last_exit: (state == AgentState::Failed).then_some(ExitInfo {
            reason: None,
            code: 1,
            oom_killed: false,
            unhealthy: false,
            at_ms: 1_000_000,
        }),
        cpu_percent: Some((i % 300) as f32 / 10.0),
        memory_bytes: Some(((i % 200) as u64 + 1) << 20),
        memory_limit_bytes: 256 << 20,
        spec_hash: "abcdef0123456789".into(),
        ..AgentView::new(
            &format!("tenant-{:02}", i % 37),
            &format!("project-{}", i % 5),
            &format!("agent-{i:05}"),
            "agenfleet/agent:0123456789ab",
            state,
        )
    }
}

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn show(what: &str, v: &mut [Duration]) {
    let n = v.len();
    let (p50, p99, max) = (pct(v, 0.5), pct(v, 0.99), pct(v, 1.0));
    println!(
        "{what:<46} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.3} ms  (n={n})",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

fn key(c: char) -> Msg {
    let mods = if c.is_ascii_uppercase() {
        KeyModifiers::SHIFT
    } else {
        KeyModifiers::NONE
    };
    Msg::Key(KeyEvent::new(KeyCode::Char(c), mods))
}

fn main() {
    let rss0 = rss_kb();
    let mut app = App::new(false, true, 5_000_000);
    app.on_msg(Msg::Connected(CallerInfo {
        uid: 0,
        operator: "root".into(),
        role: "platform_admin".into(),
        bindings: vec![],
    }));
    let t0 = Instant::now();
    app.on_msg(Msg::Watch(WatchReply {
        epoch: 1,
        revision: 1,
        reset: true,
        changes: (0..AGENTS)
            .map(|i| Change::Agent(Box::new(agent(i))))
            .collect(),
    }));
    let load = t0.elapsed();
    let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
    let mut frame = |app: &App| {
        let t = Instant::now();
        term.draw(|f| agenfleet::ui::draw(f, app)).expect("draw");
        t.elapsed()
    };
    frame(&app);
    println!(
        "console, {AGENTS} agents, TestBackend 200x60 (first watch applied in {:.1} ms)",
        load.as_secs_f64() * 1e3
    );

    let mut idle: Vec<Duration> = (0..300).map(|_| frame(&app)).collect();
    show("frame, nothing changed", &mut idle);

    let mut changed = Vec::new();
    for i in 0..300 {
        let mut v = agent((i * 37) % AGENTS);
        v.cpu_percent = Some(i as f32);
        let t = Instant::now();
        app.on_msg(Msg::Watch(WatchReply {
            epoch: 1,
            revision: 2 + i as u64,
            reset: false,
            changes: vec![Change::Agent(Box::new(v))],
        }));
        changed.push(t.elapsed() + frame(&app));
    }
    show("one agent changed: apply + frame", &mut changed);

    let mut keystrokes = Vec::new();
    for _ in 0..20 {
        app.on_msg(key('/'));
        for c in "^tenant-0[1-3]/agent-0.*7$".chars() {
            let t = Instant::now();
            app.on_msg(key(c));
            keystrokes.push(t.elapsed() + frame(&app));
        }
        app.on_msg(Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
        app.on_msg(Msg::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
        frame(&app);
    }
    show("filter keystroke (regex): key + frame", &mut keystrokes);

    let mut sorts = Vec::new();
    for c in "NNCCMMRRSSAAPP".chars().cycle().take(140) {
        let t = Instant::now();
        app.on_msg(key(c));
        sorts.push(t.elapsed() + frame(&app));
    }
    show("sort by a column: key + frame", &mut sorts);

    let mut moves = Vec::new();
    for i in 0..300 {
        let t = Instant::now();
        app.on_msg(key(if i % 2 == 0 { 'j' } else { 'G' }));
        moves.push(t.elapsed() + frame(&app));
    }
    show("selection move (j / G): key + frame", &mut moves);

    println!(
        "RSS: {} KB at start, {} KB with {AGENTS} agents drawn (+{} KB)",
        rss0,
        rss_kb(),
        rss_kb().saturating_sub(rss0)
    );
    drop(app);
    all_contexts();
}

/// `:ctx all` over 10 daemons of 1,000 agents each: each daemon's first watch (a full
/// snapshot) applied as it would arrive, then the first frame of the merged view.
fn all_contexts() {
    const HOSTS: usize = 10;
    const EACH: usize = 1_000;
    let rss0 = rss_kb();
    let mut firsts = Vec::new();
    for round in 0..5 {
        let mut app = App::new(false, true, 5_000_000);
        app.hosts = Some(
            (0..HOSTS)
                .map(|h| {
                    (
                        format!("host-{h:02}"),
                        agenfleet::app::HostState::new(format!("ssh://fleet-{h}")),
                    )
                })
                .collect(),
        );
        let snapshots: Vec<WatchReply> = (0..HOSTS)
            .map(|h| WatchReply {
                epoch: 1,
                revision: 1,
                reset: true,
                changes: (0..EACH)
                    .map(|i| Change::Agent(Box::new(agent(h * EACH + i))))
                    .collect(),
            })
            .collect();
        let mut term = Terminal::new(TestBackend::new(200, 60)).expect("terminal");
        let t = Instant::now();
        for (h, r) in snapshots.into_iter().enumerate() {
            app.on_msg(Msg::HostWatch(format!("host-{h:02}"), r));
        }
        term.draw(|f| agenfleet::ui::draw(f, &app)).expect("draw");
        firsts.push(t.elapsed());
        if round == 4 {
            assert_eq!(app.agents.len(), HOSTS * EACH);
            println!(
                "ctx all, {HOSTS} daemons x {EACH} agents: RSS {} KB (+{} KB over the single-daemon run's end)",
                rss_kb(),
                rss_kb().saturating_sub(rss0)
            );
        }
    }
    show("ctx all: 10 snapshots applied + first frame", &mut firsts);
}
