//! The console's event loop, I/O only: terminal setup and restore, the watchers of the
//! daemon (or of every context, `:ctx all`), the followers and RPCs that `Effect`s ask for
//! (`io.rs`, `tasks.rs`), and drawing — only when something changed, each frame wrapped in
//! a synchronized update (no flicker over SSH). What any of it means is decided by
//! `App::on_msg`.

mod io;
mod tasks;

use crate::app::{App, Effect, HostState, Msg};
use crate::client::{Conn, Endpoint};
use agenfleet_protocol::now_ms;
use crossterm::event::{Event, EventStream, KeyEventKind};
use crossterm::terminal::{BeginSynchronizedUpdate, EndSynchronizedUpdate};
use futures::StreamExt;
pub use io::Choice;
use io::{flat, Done, Inbox, Io};
use std::io::Write;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Options {
    pub choice: Choice,
    pub readonly: bool,
    /// Report mouse events (wheel, clicks) to the console.
    pub mouse: bool,
    pub timeout: Duration,
}

/// Restores the terminal however the console ends (return, error, panic).
struct TerminalGuard {
    mouse: bool,
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if self.mouse {
            let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
        }
        ratatui::restore();
    }
}

/// What `:ctx NAME` / `:ctx all` asks for, from the contexts file.
fn choice_for(name: &str) -> Result<Choice, String> {
    if name == "all" {
        let all = crate::contexts::all().map_err(|e| e.message)?;
        return Ok(Choice::All(
            all.into_iter()
                .map(|t| (t.name.unwrap_or_default(), t.endpoint))
                .collect(),
        ));
    }
    let file = crate::contexts::Contexts::load().map_err(|e| e.message)?;
    let c = file
        .get(name)
        .ok_or_else(|| format!("no context `{name}`"))?;
    Ok(Choice::One {
        name: Some(name.to_string()),
        endpoint: c.endpoint().map_err(|e| e.message)?,
    })
}

/// A console state for `choice`: empty, keeping what is the operator's (the command
/// history) from `before`.
fn app_for(choice: &Choice, readonly: bool, color: bool, before: Option<&App>) -> App {
    let mut app = App::new(readonly, color, now_ms());
    app.ctx_names = crate::contexts::Contexts::load()
        .map(|f| f.contexts.into_iter().map(|c| c.name).collect())
        .unwrap_or_default();
    if let Some(b) = before {
        app.cmd_history = b.cmd_history.clone();
    }
    match choice {
        Choice::One { name, endpoint } => {
            app.ctx_current = name.clone();
            app.ctx_remote = matches!(endpoint, Endpoint::Ssh { .. });
        }
        Choice::All(list) => {
            app.ctx_current = Some("all".into());
            app.hosts = Some(
                list.iter()
                    .map(|(n, ep)| (n.clone(), HostState::new(ep.to_string())))
                    .collect(),
            );
        }
    }
    app
}

/// Runs the console until the operator quits.
pub async fn run(opts: Options) -> std::io::Result<()> {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard { mouse: opts.mouse };
    if opts.mouse {
        crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture)?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut app = app_for(&opts.choice, opts.readonly, color, None);
    let mut io = Io::new(tx, opts.timeout);
    io.start(&opts.choice);
    let mut events = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        if app.dirty {
            app.dirty = false;
            let out = terminal.backend_mut();
            crossterm::queue!(out, BeginSynchronizedUpdate)?;
            terminal.draw(|f| crate::ui::draw(f, &app))?;
            let out = terminal.backend_mut();
            crossterm::queue!(out, EndSynchronizedUpdate)?;
            out.flush()?;
        }
        let msg = tokio::select! {
            ev = events.next() => match ev {
                Some(Ok(Event::Key(k))) if k.kind != KeyEventKind::Release => Msg::Key(k),
                Some(Ok(Event::Resize(_, _))) => Msg::Resize,
                Some(Ok(Event::Mouse(m))) => Msg::Mouse(m, now_ms()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            inbox = rx.recv() => match inbox {
                // What tasks of an earlier context still send is not for this one.
                Some((g, _)) if g != io.generation => continue,
                Some((_, Inbox::Connected(host, c, caller))) => {
                    io.connected(host.clone(), c);
                    match host {
                        Some(h) => Msg::HostConnected(h, caller),
                        None => Msg::Connected(caller),
                    }
                }
                Some((_, Inbox::News(m))) => {
                    io.lost(&m);
                    *m
                }
                None => break Ok(()),
            },
            _ = tick.tick() => Msg::Tick(now_ms()),
        };
        let effects = app.on_msg(msg);
        let mut quit = false;
        let mut offline = false;
        for e in effects {
            match e {
                Effect::Redraw => {
                    full_redraw(&mut terminal)?;
                    app.dirty = true;
                }
                Effect::Shell(agent, id) => {
                    // The event reader must not compete with the shell for the keyboard.
                    drop(events);
                    let r = shell(&io.conn, &agent, &id).await;
                    events = EventStream::new();
                    full_redraw(&mut terminal)?;
                    app.dirty = true;
                    match r {
                        Ok(text) => app.flash(text, false),
                        Err(e) => app.flash(e, true),
                    }
                }
                Effect::SwitchContext(name) => match choice_for(&name) {
                    Ok(choice) => {
                        app = app_for(&choice, opts.readonly, color, Some(&app));
                        io.start(&choice);
                        app.flash(format!("context: {name}"), false);
                    }
                    Err(e) => app.flash(e, true),
                },
                e => match io.perform(e) {
                    Done::Quit => quit = true,
                    Done::Offline => offline = true,
                    Done::Ok => {}
                },
            }
        }
        if offline {
            app.on_msg(Msg::NotConnected);
        }
        if quit {
            break Ok(());
        }
    };
    io.stop();
    result
}

/// Clears the screen and makes the next frame draw every cell. (Not `Terminal::clear`: it
/// asks the terminal for the cursor's position, an answer the event reader may take.)
fn full_redraw(terminal: &mut ratatui::DefaultTerminal) -> std::io::Result<()> {
    crossterm::execute!(
        terminal.backend_mut(),
        crossterm::terminal::Clear(crossterm::terminal::ClearType::All)
    )?;
    // A blank frame: what was drawn before is forgotten, so the next frame is whole.
    terminal.draw(|_| {})?;
    Ok(())
}

/// `s`: a shell in the agent's container, the console suspended meanwhile. Recorded in
/// the audit log first (no record, no shell); an image without `/bin/sh` is said so.
async fn shell(conn: &Option<Conn>, agent: &str, id: &str) -> Result<String, String> {
    let Some(c) = conn else {
        return Err("not connected to the daemon".into());
    };
    // Is there a shell at all? (An image built FROM scratch has none.)
    let probe = tokio::process::Command::new("docker")
        .args(["exec", id, "/bin/sh", "-c", "exit 0"])
        .output()
        .await
        .map_err(|e| format!("cannot run docker for a shell: {e}"))?;
    if !probe.status.success() {
        let said = [&probe.stderr[..], &probe.stdout[..]].concat();
        let said = String::from_utf8_lossy(&said);
        let said = said
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("docker exec failed");
        return Err(
            if said.contains("no such file") || said.contains("not found") {
                format!("{agent} has no shell: its image has no /bin/sh (built FROM scratch?)")
            } else {
                format!("no shell in {agent}: {said}")
            },
        );
    }
    let note = format!("shell opened into {agent} (container {id}) from the console");
    flat(c.client.audit_note(c.ctx(), note).await)
        .map_err(|e| format!("no shell: it could not be recorded: {e}"))?;
    ratatui::restore();
    println!("shell in {agent} — exit it to return to the console");
    let status = tokio::process::Command::new("docker")
        .args(["exec", "-it", id, "/bin/sh"])
        .status()
        .await;
    crossterm::terminal::enable_raw_mode().map_err(|e| e.to_string())?;
    crossterm::execute!(std::io::stdout(), crossterm::terminal::EnterAlternateScreen)
        .map_err(|e| e.to_string())?;
    match status {
        Ok(s) => Ok(format!("back from the shell in {agent} ({s})")),
        Err(e) => Err(format!("the shell in {agent} did not start: {e}")),
    }
}

/// Writes the saved log lines to a new file (never over an existing one), 0600.
pub(crate) fn save_lines(name: &str, lines: &[String]) -> Result<String, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::env::current_dir()
        .map_err(|e| e.to_string())?
        .join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = lines.join("\n");
    out.push('\n');
    f.write_all(out.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.display().to_string())
}
