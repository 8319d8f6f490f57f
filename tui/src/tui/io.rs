//! The console's side effects: the connections (one daemon, or one per context in
//! `:ctx all`), which connection an agent's action goes to, and carrying out each `Effect`
//! as a follower (re)started or one RPC in the background whose answer comes back as a
//! message.

use super::tasks::{follow_audit, follow_logs, follow_pulse, load_creds, watcher};
use crate::app::{split_host, Effect, Msg, PulseOf};
use crate::client::{Conn, Endpoint};
use agenfleet_protocol::{AgentRef, ApiError, CallerInfo};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many of an agent's last runs its describe view shows.
const DESCRIBE_RUNS: u32 = 5;

/// What the background tasks send the loop: a new connection (kept here, where the I/O
/// is; with its context's name in `:ctx all`), or news for the app.
pub enum Inbox {
    Connected(Option<String>, Conn, CallerInfo),
    News(Box<Msg>),
}

/// A task's way back to the loop, stamped with the generation it was started in.
#[derive(Clone)]
pub struct Tx {
    generation: u64,
    tx: mpsc::UnboundedSender<(u64, Inbox)>,
}

impl Tx {
    /// False when the loop is gone (the task should end).
    pub fn send(&self, i: Inbox) -> bool {
        self.tx.send((self.generation, i)).is_ok()
    }

    pub fn news(&self, m: Msg) -> bool {
        self.send(Inbox::News(Box::new(m)))
    }
}

/// An RPC's outcome as a message for a person.
pub fn flat<T>(r: Result<Result<T, ApiError>, tarpc::client::RpcError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.message))
}

/// Which daemons the console shows.
#[derive(Debug, Clone)]
pub enum Choice {
    /// One daemon (`name`: its context, None: the local socket).
    One {
        name: Option<String>,
        endpoint: Endpoint,
    },
    /// Every context (`:ctx all`).
    All(Vec<(String, Endpoint)>),
}

/// How carrying out one effect went.
pub enum Done {
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

/// The loop's connections and the tasks it runs for the app.
pub struct Io {
    raw: mpsc::UnboundedSender<(u64, Inbox)>,
    pub generation: u64,
    timeout: Duration,
    multi: bool,
    /// The daemon shown (one daemon).
    pub conn: Option<Conn>,
    /// Each context's connection (`:ctx all`).
    pub hosts: BTreeMap<String, Conn>,
    /// Where the one daemon shown is (its audit pin's name).
    place: String,
    watchers: Vec<JoinHandle<()>>,
    log_task: Option<JoinHandle<()>>,
    audit_task: Option<JoinHandle<()>>,
    pulse_task: Option<JoinHandle<()>>,
}

impl Io {
    pub fn new(raw: mpsc::UnboundedSender<(u64, Inbox)>, timeout: Duration) -> Io {
        Io {
            raw,
            generation: 0,
            timeout,
            multi: false,
            conn: None,
            hosts: BTreeMap::new(),
            place: String::new(),
            watchers: Vec::new(),
            log_task: None,
            audit_task: None,
            pulse_task: None,
        }
    }

    fn tx(&self) -> Tx {
        Tx {
            generation: self.generation,
            tx: self.raw.clone(),
        }
    }

    /// Starts watching `choice` in a new generation (what the old tasks still send is
    /// dropped by the loop).
    pub fn start(&mut self, choice: &Choice) {
        self.stop();
        self.generation += 1;
        match choice {
            Choice::One { endpoint, name } => {
                self.multi = false;
                self.place = crate::pins::place_of(name.as_deref(), endpoint);
                let t = tokio::spawn(watcher(endpoint.clone(), None, self.timeout, self.tx()));
                self.watchers.push(t);
            }
            Choice::All(list) => {
                self.multi = true;
                for (name, ep) in list {
                    let t = tokio::spawn(watcher(
                        ep.clone(),
                        Some(name.clone()),
                        self.timeout,
                        self.tx(),
                    ));
                    self.watchers.push(t);
                }
            }
        }
    }

    /// Ends every task and forgets the connections.
    pub fn stop(&mut self) {
        for t in self.watchers.drain(..) {
            t.abort();
        }
        for t in [
            self.log_task.take(),
            self.audit_task.take(),
            self.pulse_task.take(),
        ]
        .into_iter()
        .flatten()
        {
            t.abort();
        }
        self.conn = None;
        self.hosts.clear();
    }

    /// A connection came up (`host`: its context in `:ctx all`).
    pub fn connected(&mut self, host: Option<String>, c: Conn) {
        match host {
            Some(h) => {
                self.hosts.insert(h, c);
            }
            None => self.conn = Some(c),
        }
    }

    /// A connection went away.
    pub fn lost(&mut self, m: &Msg) {
        match m {
            Msg::Disconnected(_) => self.conn = None,
            Msg::HostDisconnected(h, _) => {
                self.hosts.remove(h);
            }
            _ => {}
        }
    }

    /// The connection an agent's call goes to, and the agent as that daemon names it
    /// (in `:ctx all` the console's `host:tenant` loses its host).
    fn route(&self, a: &AgentRef) -> (Option<Conn>, AgentRef) {
        if !self.multi {
            return (self.conn.clone(), a.clone());
        }
        match a.tenant.as_deref().map(split_host) {
            Some((Some(h), t)) => (
                self.hosts.get(h).cloned(),
                AgentRef {
                    tenant: Some(t.to_string()),
                    name: a.name.clone(),
                },
            ),
            _ => (None, a.clone()),
        }
    }

    /// Runs one call in the background on `conn`; the message it makes comes back to the
    /// loop. False (and nothing done) without a connection.
    fn background<F, Fut>(&self, conn: Option<Conn>, f: F) -> bool
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = Option<Msg>> + Send + 'static,
    {
        let Some(c) = conn else {
            return false;
        };
        let tx = self.tx();
        let fut = f(c);
        tokio::spawn(async move {
            if let Some(m) = fut.await {
                tx.news(m);
            }
        });
        true
    }

    /// Carries out one effect.
    pub fn perform(&mut self, e: Effect) -> Done {
        match e {
            Effect::Quit => return Done::Quit,
            // The loop handles these itself (they need the terminal or restart us).
            Effect::Redraw | Effect::Shell(..) | Effect::SwitchContext(_) => {}
            Effect::SaveLogs(name, lines) => {
                self.tx().news(Msg::Saved(super::save_lines(&name, &lines)));
            }
            Effect::Delete(agent) => {
                let (conn, real) = self.route(&agent);
                let sent = self.background(conn, move |c| async move {
                    let ctx = c.ctx_wait(Duration::from_secs(120));
                    let r = flat(c.client.delete_agent(ctx, real).await);
                    Some(Msg::Deleted(agent.to_string(), r))
                });
                return Done::sent(sent);
            }
            Effect::LoadDescribe(agent) => {
                let (conn, real) = self.route(&agent);
                let (shown, of) = (agent.to_string(), real.clone());
                let (shown_runs, of_runs) = (shown.clone(), of.clone());
                self.background(conn.clone(), move |c| async move {
                    let r = flat(c.client.memory_stats(c.ctx(), of).await);
                    Some(Msg::MemoryStats(shown, r))
                });
                self.background(conn.clone(), move |c| async move {
                    let q = agenfleet_protocol::runs::RunQuery {
                        agent: Some(of_runs),
                        limit: DESCRIBE_RUNS,
                        ..Default::default()
                    };
                    let r = flat(c.client.runs_list(c.ctx(), q).await);
                    Some(Msg::Runs(shown_runs, r))
                });
                self.background(conn, move |c| async move {
                    let r = tokio::try_join!(
                        c.client.agents_spec(c.ctx(), real.clone(), None),
                        c.client.scopes_show(c.ctx(), real),
                    );
                    let r = match r {
                        Ok((s, h)) => flat(Ok(s.and_then(|s| h.map(|h| (s, h.current))))),
                        Err(e) => flat(Err(e)),
                    };
                    Some(Msg::Described(agent.to_string(), Box::new(r)))
                });
            }
            Effect::FollowAudit => {
                if let Some(t) = self.audit_task.take() {
                    t.abort();
                }
                if let Some(c) = self.conn.clone() {
                    self.audit_task =
                        Some(tokio::spawn(follow_audit(c, self.place.clone(), self.tx())));
                }
            }
            Effect::FollowLogs(agent) => {
                if let Some(t) = self.log_task.take() {
                    t.abort();
                }
                if let Some(a) = agent {
                    let (conn, real) = self.route(&a);
                    if let Some(c) = conn {
                        let key = (a.tenant.clone().unwrap_or_default(), a.name.clone());
                        self.log_task = Some(tokio::spawn(follow_logs(c, real, key, self.tx())));
                    }
                }
            }
            Effect::FollowPulse(of) => {
                if let Some(t) = self.pulse_task.take() {
                    t.abort();
                }
                let (conn, of) = match of {
                    Some(PulseOf::Agent(a)) => {
                        let (conn, real) = self.route(&a);
                        (conn, Some((a.to_string(), real)))
                    }
                    Some(PulseOf::Fleet) => (self.conn.clone(), None),
                    None => (None, None),
                };
                if let Some(c) = conn {
                    self.pulse_task = Some(tokio::spawn(follow_pulse(c, of, self.tx())));
                }
            }
            Effect::LoadCreds(agent) => {
                let (conn, real) = self.route(&agent);
                if let Some(c) = conn {
                    tokio::spawn(load_creds(c, real, agent.to_string(), self.tx()));
                }
            }
            Effect::Rotate(agent, name, value) => {
                let (conn, real) = self.route(&agent);
                let sent = self.background(conn, move |c| async move {
                    let ctx = c.ctx_wait(Duration::from_secs(120));
                    let r = flat(c.client.creds_rotate(ctx, real, name, value, 0).await);
                    Some(Msg::Rotated(agent.to_string(), r))
                });
                return Done::sent(sent);
            }
            Effect::Revoke(agent, name, version) => {
                let (conn, real) = self.route(&agent);
                let sent = self.background(conn, move |c| async move {
                    let r = flat(c.client.creds_revoke(c.ctx(), real, name, version).await);
                    Some(Msg::Revoked(agent.to_string(), r))
                });
                return Done::sent(sent);
            }
            Effect::NoteIncident(id, text) => {
                let sent = self.background(self.conn.clone(), move |c| async move {
                    let note = format!("incident #{id}: {text}");
                    Some(Msg::Noted(
                        id,
                        flat(c.client.audit_note(c.ctx(), note).await),
                    ))
                });
                return Done::sent(sent);
            }
            Effect::AddOperator { uid, name, admin } => {
                let sent = self.background(self.conn.clone(), move |c| async move {
                    let r = flat(c.client.operators_add(c.ctx(), uid, name, admin).await);
                    Some(Msg::RoleChanged(r))
                });
                return Done::sent(sent);
            }
            Effect::RemoveOperator(uid) => {
                let sent = self.background(self.conn.clone(), move |c| async move {
                    let r = flat(c.client.operators_remove(c.ctx(), uid).await);
                    Some(Msg::OperatorRemoved(uid, r))
                });
                return Done::sent(sent);
            }
            Effect::LoadTenants => {
                self.background(self.conn.clone(), |c| async move {
                    Some(Msg::Tenants(flat(c.client.tenants_list(c.ctx()).await)))
                });
            }
            Effect::LoadRuns {
                generation,
                agent,
                failed,
            } => {
                self.background(self.conn.clone(), move |c| async move {
                    let q = agenfleet_protocol::runs::RunQuery {
                        agent,
                        failed,
                        limit: crate::app::runs::RUNS_SHOWN,
                        ..Default::default()
                    };
                    let r = flat(c.client.runs_list(c.ctx(), q).await);
                    Some(Msg::RunsList(generation, r))
                });
            }
            Effect::LoadRunTimeline(id) => {
                self.background(self.conn.clone(), move |c| async move {
                    let r = flat(c.client.runs_timeline(c.ctx(), id).await);
                    Some(Msg::RunTimeline(id, r))
                });
            }
            Effect::LoadOperators => {
                self.background(self.conn.clone(), |c| async move {
                    Some(Msg::Operators(flat(c.client.operators_list(c.ctx()).await)))
                });
            }
            Effect::Role {
                uid,
                grant,
                binding,
            } => {
                let sent = self.background(self.conn.clone(), move |c| async move {
                    let r = if grant {
                        c.client.roles_grant(c.ctx(), uid, binding).await
                    } else {
                        c.client.roles_revoke(c.ctx(), uid, binding).await
                    };
                    Some(Msg::RoleChanged(flat(r)))
                });
                return Done::sent(sent);
            }
            Effect::LoadEscalations => {
                self.background(self.conn.clone(), |c| async move {
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
                let sent = self.background(self.conn.clone(), move |c| async move {
                    let r = c
                        .client
                        .escalation_decide(c.ctx(), id, request_hash, approve, reason)
                        .await;
                    Some(Msg::Decided(id, approve, flat(r)))
                });
                return Done::sent(sent);
            }
            Effect::LoadScopes(agent) => {
                let (conn, real) = self.route(&agent);
                self.background(conn, |c| async move {
                    let r = flat(c.client.scopes_show(c.ctx(), real).await);
                    Some(Msg::Scopes(agent.to_string(), r))
                });
            }
            Effect::LoadSpec(agent, version) => {
                let (conn, real) = self.route(&agent);
                self.background(conn, move |c| async move {
                    let r = tokio::try_join!(
                        c.client.agents_history(c.ctx(), real.clone()),
                        c.client.agents_spec(c.ctx(), real, version),
                    );
                    let r = match r {
                        Ok((h, v)) => flat(Ok(h.and_then(|h| v.map(|v| (h, v))))),
                        Err(e) => flat(Err(e)),
                    };
                    Some(Msg::Spec(agent.to_string(), version, Box::new(r)))
                });
            }
            Effect::PublishScopes(agent, text) => {
                let (conn, real) = self.route(&agent);
                let sent = self.background(conn, |c| async move {
                    let note = "edited in the console".to_string();
                    let r = flat(c.client.scopes_publish(c.ctx(), real, text, note).await);
                    Some(Msg::ScopesPublished(
                        agent.to_string(),
                        r.map(|v| v.version),
                    ))
                });
                return Done::sent(sent);
            }
            Effect::RollbackScopes(agent, version) => {
                let (conn, real) = self.route(&agent);
                let sent = self.background(conn, move |c| async move {
                    let r = flat(c.client.scopes_rollback(c.ctx(), real, version).await);
                    Some(Msg::ScopesPublished(
                        agent.to_string(),
                        r.map(|v| v.version),
                    ))
                });
                return Done::sent(sent);
            }
            Effect::LoadPolicy(tenant) => {
                self.background(self.conn.clone(), |c| async move {
                    let r = flat(c.client.policy_show(c.ctx(), tenant.clone()).await);
                    Some(Msg::Policy(tenant, r))
                });
            }
            Effect::ValidatePolicy(gen, text) => {
                self.background(self.conn.clone(), move |c| async move {
                    let r = flat(c.client.policy_validate(c.ctx(), text).await);
                    Some(Msg::PolicyChecked(gen, r))
                });
            }
            Effect::PublishPolicy(tenant, text) => {
                let sent = self.background(self.conn.clone(), |c| async move {
                    let note = "edited in the console".to_string();
                    let r = flat(
                        c.client
                            .policy_publish(c.ctx(), tenant.clone(), text, note)
                            .await,
                    );
                    Some(Msg::ScopesPublished(tenant, r.map(|v| v.version)))
                });
                return Done::sent(sent);
            }
            Effect::RollbackPolicy(tenant, version) => {
                let sent = self.background(self.conn.clone(), move |c| async move {
                    let r = flat(
                        c.client
                            .policy_rollback(c.ctx(), tenant.clone(), version)
                            .await,
                    );
                    Some(Msg::ScopesPublished(tenant, r.map(|v| v.version)))
                });
                return Done::sent(sent);
            }
            Effect::TestPolicy {
                tenant,
                file,
                candidate,
            } => {
                let sent = self.background(self.conn.clone(), move |c| async move {
                    Some(Msg::PolicyTested(
                        test_policy(&c, &tenant, &file, candidate).await,
                    ))
                });
                return Done::sent(sent);
            }
            Effect::Incident(id, act) => {
                let sent = self.background(self.conn.clone(), move |c| async move {
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
                let (conn, real) = self.route(&agent);
                let sent = self.background(conn, move |c| async move {
                    let ctx = c.ctx_wait(Duration::from_secs(120));
                    let r = flat(c.client.agent_action(ctx, real, action).await);
                    Some(Msg::ActionDone(action, agent.to_string(), r.map(Box::new)))
                });
                return Done::sent(sent);
            }
        }
        Done::Ok
    }
}

/// Reads a case file and runs its cases against `tenant`'s policy (`candidate`: the
/// edited text; else the version in force). A file written for another tenant is
/// refused: the console tests what it shows.
async fn test_policy(
    c: &Conn,
    tenant: &str,
    file: &str,
    candidate: Option<String>,
) -> Result<Vec<agenfleet_protocol::policy::PolicyCaseResult>, String> {
    let text = tokio::fs::read_to_string(file)
        .await
        .map_err(|e| format!("cannot read {file}: {e}"))?;
    let cases = crate::policy_cases::parse(&text).map_err(|e| format!("{file}: {e}"))?;
    if cases.tenant != tenant {
        return Err(format!(
            "{file} tests tenant {} (this is {tenant}'s policy)",
            cases.tenant
        ));
    }
    flat(
        c.client
            .policy_test(c.ctx(), tenant.to_string(), candidate, cases.cases)
            .await,
    )
}
