//! The console's event loop, I/O only: terminal setup and restore, the daemon watcher
//! (long-poll with reconnect), the followers of the audit log and of the detail pane's logs,
//! the RPCs that `Effect`s ask for, and drawing — only when something changed, each frame
//! wrapped in a synchronized update (no flicker over SSH). What any of it means is decided
//! by `App::on_msg`.

use crate::app::{App, Effect, Msg};
use crate::client::Conn;
use agenfleet_protocol::{now_ms, AgentRef, ApiError, AuditQuery, CallerInfo};
use crossterm::event::{Event, EventStream, KeyEventKind};
use crossterm::terminal::{BeginSynchronizedUpdate, EndSynchronizedUpdate};
use futures::StreamExt;
use std::io::{self, Write};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Options {
    pub endpoint: crate::client::Endpoint,
    pub readonly: bool,
    pub timeout: Duration,
}

/// What the background tasks send the loop: a new connection (kept here, where the I/O
/// is), or news for the app.
enum Inbox {
    Connected(Conn, CallerInfo),
    News(Box<Msg>),
}

impl From<Msg> for Inbox {
    fn from(m: Msg) -> Inbox {
        Inbox::News(Box::new(m))
    }
}

/// Runs one call on the connection in the background; the message it makes comes back on
/// `tx`. Answers false (and does nothing) without a connection.
fn background<F, Fut>(conn: &Option<Conn>, tx: &mpsc::UnboundedSender<Inbox>, f: F) -> bool
where
    F: FnOnce(Conn) -> Fut,
    Fut: std::future::Future<Output = Option<Msg>> + Send + 'static,
{
    let Some(c) = conn.clone() else {
        return false;
    };
    let tx = tx.clone();
    let fut = f(c);
    tokio::spawn(async move {
        if let Some(m) = fut.await {
            let _ = tx.send(m.into());
        }
    });
    true
}

/// An RPC's outcome as a message for a person.
fn flat<T>(r: Result<Result<T, ApiError>, tarpc::client::RpcError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.message))
}

/// Restores the terminal however the console ends (return, error, panic).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        ratatui::restore();
    }
}

async fn watcher(
    endpoint: crate::client::Endpoint,
    timeout: Duration,
    tx: mpsc::UnboundedSender<Inbox>,
) {
    loop {
        match Conn::open(&endpoint, timeout).await {
            Ok((conn, hello)) => {
                let caller = hello.caller;
                if tx.send(Inbox::Connected(conn.clone(), caller)).is_err() {
                    return;
                }
                let (mut epoch, mut since) = (0u64, 0u64);
                loop {
                    let wait = Duration::from_secs(20);
                    match conn
                        .client
                        .watch(conn.ctx_wait(wait), epoch, since, wait.as_millis() as u64)
                        .await
                    {
                        Ok(Ok(r)) => {
                            epoch = r.epoch;
                            since = r.revision;
                            if tx.send(Msg::Watch(r).into()).is_err() {
                                return;
                            }
                        }
                        Ok(Err(e)) => {
                            let _ = tx.send(Msg::Disconnected(e.message).into());
                            break;
                        }
                        Err(e) => {
                            let _ =
                                tx.send(Msg::Disconnected(format!("lost the daemon: {e}")).into());
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if tx.send(Msg::Disconnected(e.message).into()).is_err() {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Keeps the audit view current: the newest records, then each new one as it is written
/// (long-poll), with the log's status after each batch.
async fn follow_audit(conn: Conn, tx: mpsc::UnboundedSender<Inbox>) {
    let mut after = 0u64;
    let mut first = true;
    loop {
        let wait = if first {
            Duration::ZERO
        } else {
            Duration::from_secs(20)
        };
        let q = AuditQuery {
            after_seq: after,
            limit: 500,
            newest: first,
            ..Default::default()
        };
        let Ok(Ok(entries)) = conn
            .client
            .audit_query(conn.ctx_wait(wait), q, wait.as_millis() as u64)
            .await
        else {
            return;
        };
        first = false;
        if let Some(last) = entries.last() {
            after = last.seq;
        }
        let status = conn
            .client
            .audit_status(conn.ctx())
            .await
            .ok()
            .and_then(Result::ok);
        if tx.send(Msg::Audit(entries, status).into()).is_err() {
            return;
        }
    }
}

/// Credential metadata of an agent and its runs since the last rotation, from the audit
/// log ("audit recent runs").
async fn load_creds(conn: Conn, agent: AgentRef, tx: mpsc::UnboundedSender<Inbox>) {
    let who = agent.to_string();
    let Ok(Ok(list)) = conn.client.creds_list(conn.ctx(), agent.clone()).await else {
        let _ = tx.send(Msg::Creds(who, vec![], vec![]).into());
        return;
    };
    let since = list.iter().filter_map(|c| c.last_rotated_ms).max();
    let q = AuditQuery {
        agent: Some(who.clone()),
        action: Some("agent.started".into()),
        since_ms: since,
        limit: 50,
        newest: true,
        ..Default::default()
    };
    let runs = conn
        .client
        .audit_query(conn.ctx(), q, 0)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let _ = tx.send(Msg::Creds(who, list, runs).into());
}

async fn follow_logs(conn: Conn, agent: AgentRef, tx: mpsc::UnboundedSender<Inbox>) {
    let key = (agent.tenant.clone().unwrap_or_default(), agent.name.clone());
    let mut since = 0;
    loop {
        let wait = Duration::from_secs(20);
        match conn
            .client
            .logs(
                conn.ctx_wait(wait),
                agent.clone(),
                since,
                wait.as_millis() as u64,
            )
            .await
        {
            Ok(Ok(chunk)) => {
                since = chunk.next_seq;
                if tx.send(Msg::Logs(key.clone(), chunk).into()).is_err() {
                    return;
                }
            }
            // The watcher reports the disconnection; a new connection restarts us.
            _ => return,
        }
    }
}

/// Runs the console until the operator quits.
pub async fn run(opts: Options) -> io::Result<()> {
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut terminal = ratatui::try_init()?;
    let _guard = TerminalGuard;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let watch_task = tokio::spawn(watcher(opts.endpoint.clone(), opts.timeout, tx.clone()));
    let mut app = App::new(opts.readonly, color, now_ms());
    let mut io = Io {
        conn: None,
        tx: tx.clone(),
        log_task: None,
        audit_task: None,
    };
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
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            inbox = rx.recv() => match inbox {
                Some(Inbox::Connected(c, caller)) => {
                    io.conn = Some(c);
                    Msg::Connected(caller)
                }
                Some(Inbox::News(m)) => {
                    if matches!(*m, Msg::Disconnected(_)) {
                        io.conn = None;
                    }
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
    watch_task.abort();
    for t in [io.log_task, io.audit_task].into_iter().flatten() {
        t.abort();
    }
    result
}

/// Clears the screen and makes the next frame draw every cell. (Not `Terminal::clear`: it
/// asks the terminal for the cursor's position, an answer the event reader may take.)
fn full_redraw(terminal: &mut ratatui::DefaultTerminal) -> io::Result<()> {
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
    crossterm::execute!(io::stdout(), crossterm::terminal::EnterAlternateScreen)
        .map_err(|e| e.to_string())?;
    match status {
        Ok(s) => Ok(format!("back from the shell in {agent} ({s})")),
        Err(e) => Err(format!("the shell in {agent} did not start: {e}")),
    }
}

/// Writes the saved log lines to a new file (never over an existing one), 0600.
fn save_lines(name: &str, lines: &[String]) -> Result<String, String> {
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

/// How carrying out one effect went.
enum Done {
    Ok,
    Quit,
    /// It needed the daemon and there is no connection.
    Offline,
}

impl Done {
    fn sent(sent: bool) -> Done {
        if sent {
            Done::Ok
        } else {
            Done::Offline
        }
    }
}

/// The loop's connection and the tasks it runs for the app.
struct Io {
    conn: Option<Conn>,
    tx: mpsc::UnboundedSender<Inbox>,
    log_task: Option<JoinHandle<()>>,
    audit_task: Option<JoinHandle<()>>,
}

impl Io {
    /// Carries out one effect: a follower (re)started, or one RPC in the background whose
    /// answer comes back as a message.
    fn perform(&mut self, e: Effect) -> Done {
        match e {
            Effect::Quit => return Done::Quit,
            // The loop handles these itself (they need the terminal).
            Effect::Redraw | Effect::Shell(..) => {}
            Effect::SaveLogs(name, lines) => {
                let _ = self.tx.send(Msg::Saved(save_lines(&name, &lines)).into());
            }
            Effect::Delete(agent) => {
                let sent = background(&self.conn, &self.tx, move |c| async move {
                    let name = agent.to_string();
                    let ctx = c.ctx_wait(Duration::from_secs(120));
                    Some(Msg::Deleted(
                        name,
                        flat(c.client.delete_agent(ctx, agent).await),
                    ))
                });
                return Done::sent(sent);
            }
            Effect::LoadDescribe(agent) => {
                background(&self.conn, &self.tx, move |c| async move {
                    let who = agent.to_string();
                    let r = tokio::try_join!(
                        c.client.agents_spec(c.ctx(), agent.clone(), None),
                        c.client.scopes_show(c.ctx(), agent),
                    );
                    let r = match r {
                        Ok((s, h)) => flat(Ok(s.and_then(|s| h.map(|h| (s, h.current))))),
                        Err(e) => flat(Err(e)),
                    };
                    Some(Msg::Described(who, Box::new(r)))
                });
            }
            Effect::FollowAudit => {
                if let Some(t) = self.audit_task.take() {
                    t.abort();
                }
                if let Some(c) = self.conn.clone() {
                    self.audit_task = Some(tokio::spawn(follow_audit(c, self.tx.clone())));
                }
            }
            Effect::FollowLogs(agent) => {
                if let Some(t) = self.log_task.take() {
                    t.abort();
                }
                if let (Some(a), Some(c)) = (agent, self.conn.clone()) {
                    self.log_task = Some(tokio::spawn(follow_logs(c, a, self.tx.clone())));
                }
            }
            Effect::LoadCreds(agent) => {
                if let Some(c) = self.conn.clone() {
                    tokio::spawn(load_creds(c, agent, self.tx.clone()));
                }
            }
            Effect::Rotate(agent, name, value) => {
                let sent = background(&self.conn, &self.tx, move |c| async move {
                    let who = agent.to_string();
                    let ctx = c.ctx_wait(Duration::from_secs(120));
                    let r = flat(c.client.creds_rotate(ctx, agent, name, value, 0).await);
                    Some(Msg::Rotated(who, r))
                });
                return Done::sent(sent);
            }
            Effect::LoadEscalations => {
                background(&self.conn, &self.tx, |c| async move {
                    flat(c.client.escalations_list(c.ctx(), false).await)
                        .ok()
                        .map(Msg::Escalations)
                });
            }
            Effect::Decide {
                id,
                request_hash,
                approve,
                reason,
            } => {
                let sent = background(&self.conn, &self.tx, move |c| async move {
                    let r = c
                        .client
                        .escalation_decide(c.ctx(), id, request_hash, approve, reason)
                        .await;
                    Some(Msg::Decided(id, approve, flat(r)))
                });
                return Done::sent(sent);
            }
            Effect::LoadScopes(agent) => {
                background(&self.conn, &self.tx, |c| async move {
                    let who = agent.to_string();
                    let r = flat(c.client.scopes_show(c.ctx(), agent).await);
                    Some(Msg::Scopes(who, r))
                });
            }
            Effect::LoadSpec(agent, version) => {
                background(&self.conn, &self.tx, move |c| async move {
                    let who = agent.to_string();
                    let r = tokio::try_join!(
                        c.client.agents_history(c.ctx(), agent.clone()),
                        c.client.agents_spec(c.ctx(), agent, version),
                    );
                    let r = match r {
                        Ok((h, v)) => flat(Ok(h.and_then(|h| v.map(|v| (h, v))))),
                        Err(e) => flat(Err(e)),
                    };
                    Some(Msg::Spec(who, version, Box::new(r)))
                });
            }
            Effect::PublishScopes(agent, text) => {
                let sent = background(&self.conn, &self.tx, |c| async move {
                    let who = agent.to_string();
                    let note = "edited in the console".to_string();
                    let r = flat(c.client.scopes_publish(c.ctx(), agent, text, note).await);
                    Some(Msg::ScopesPublished(who, r.map(|v| v.version)))
                });
                return Done::sent(sent);
            }
            Effect::RollbackScopes(agent, version) => {
                let sent = background(&self.conn, &self.tx, move |c| async move {
                    let who = agent.to_string();
                    let r = flat(c.client.scopes_rollback(c.ctx(), agent, version).await);
                    Some(Msg::ScopesPublished(who, r.map(|v| v.version)))
                });
                return Done::sent(sent);
            }
            Effect::Incident(id, act) => {
                let sent = background(&self.conn, &self.tx, move |c| async move {
                    use crate::app::IncidentAction as A;
                    let note = || "from the console".to_string();
                    let r = match act {
                        A::Ack => flat(c.client.incident_ack(c.ctx(), id, note()).await),
                        A::Resolve => flat(c.client.incident_resolve(c.ctx(), id, note()).await),
                        A::Silence(secs) => {
                            flat(c.client.incident_silence(c.ctx(), id, secs).await)
                        }
                        A::Reassign(p, reason) => {
                            flat(c.client.incident_reassign(c.ctx(), id, p, reason).await)
                        }
                    };
                    Some(Msg::IncidentDone(id, Box::new(r)))
                });
                return Done::sent(sent);
            }
            Effect::Act(action, agent) => {
                let sent = background(&self.conn, &self.tx, move |c| async move {
                    let name = agent.to_string();
                    let ctx = c.ctx_wait(Duration::from_secs(120));
                    let r = flat(c.client.agent_action(ctx, agent, action).await);
                    Some(Msg::ActionDone(action, name, r.map(Box::new)))
                });
                return Done::sent(sent);
            }
        }
        Done::Ok
    }
}
