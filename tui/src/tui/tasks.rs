//! The console's background tasks: a watcher per daemon (long-poll with reconnect), the
//! audit, log and pulse followers and the credentials loader. Each sends what it learns
//! to the loop through its `Tx` (stamped with the generation it was started in, so a
//! context switch drops what the old ones still send).

use super::io::{Inbox, Tx};
use crate::app::{Key, Msg};
use crate::client::{Conn, Endpoint};
use agenfleet_protocol::{AgentRef, AuditQuery};
use std::time::Duration;

/// Connects to `endpoint` (again after every loss) and follows the fleet. `host`: the
/// context's name in `:ctx all` (None: the only daemon shown).
pub async fn watcher(endpoint: Endpoint, host: Option<String>, timeout: Duration, tx: Tx) {
    let lost = |e: String| match &host {
        Some(h) => Msg::HostDisconnected(h.clone(), e),
        None => Msg::Disconnected(e),
    };
    // Between attempts: 0.5 s, doubling to 10 s while the daemon does not answer (an ssh
    // context's attempt starts a process), back to 0.5 s once it has.
    let mut pause = Duration::from_millis(500);
    loop {
        match Conn::open(&endpoint, timeout).await {
            Ok((conn, hello)) => {
                pause = Duration::from_millis(500);
                if !tx.send(Inbox::Connected(host.clone(), conn.clone(), hello.caller)) {
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
                            let m = match &host {
                                Some(h) => Msg::HostWatch(h.clone(), r),
                                None => Msg::Watch(r),
                            };
                            if !tx.news(m) {
                                return;
                            }
                        }
                        Ok(Err(e)) => {
                            tx.news(lost(e.message));
                            break;
                        }
                        Err(e) => {
                            tx.news(lost(format!("lost the daemon: {e}")));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if !tx.news(lost(e.message)) {
                    return;
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(10));
    }
}

/// Keeps the audit view current: the newest records, then each new one as it is written
/// (long-poll), with the log's status after each batch — whose signed checkpoint is
/// checked against this client's pin for `place` (an alarm when the log went back or
/// another key signed it).
pub async fn follow_audit(conn: Conn, place: String, tx: Tx) {
    let pins = crate::pins::Pins::default();
    const RETRY_FIRST: Duration = Duration::from_millis(200);
    const RETRY_MAX: Duration = Duration::from_secs(5);
    let mut after = 0u64;
    let mut first = true;
    let mut backoff = RETRY_FIRST;
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
        let entries = match conn
            .client
            .audit_query(conn.ctx_wait(wait), q, wait.as_millis() as u64)
            .await
        {
            Ok(Ok(entries)) => {
                backoff = RETRY_FIRST;
                entries
            }
            // Not allowed to read the trail: nothing to follow.
            Ok(Err(e)) if e.code == agenfleet_protocol::ErrorCode::PermissionDenied => return,
            // A slow or failed answer (a busy daemon) must not end the following for the
            // rest of the session: the runs view and the audit view live on it. Asked
            // again, after a growing pause; a lost connection aborts this task anyway.
            Ok(Err(_)) | Err(_) => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
                continue;
            }
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
        if let Some(cp) = status.as_ref().and_then(|s| s.last_checkpoint.as_ref()) {
            let alarm = pins.check_live(&conn, &place, cp, true).await.alarm();
            if !tx.news(Msg::AuditAlarm(alarm)) {
                return;
            }
        }
        if !tx.news(Msg::Audit(entries, status)) {
            return;
        }
    }
}

/// Credential metadata of an agent and its runs since the last rotation, from the audit
/// log ("audit recent runs"). `shown`: the agent as the console names it.
pub async fn load_creds(conn: Conn, agent: AgentRef, shown: String, tx: Tx) {
    let Ok(Ok(list)) = conn.client.creds_list(conn.ctx(), agent.clone()).await else {
        tx.news(Msg::Creds(shown, vec![], vec![]));
        return;
    };
    let since = list.iter().filter_map(|c| c.last_rotated_ms).max();
    let q = AuditQuery {
        agent: Some(agent.to_string()),
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
    tx.news(Msg::Creds(shown, list, runs));
}

/// Follows an agent's log; `key` is the agent as the console keys it.
pub async fn follow_logs(conn: Conn, agent: AgentRef, key: Key, tx: Tx) {
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
                if !tx.news(Msg::Logs(key.clone(), chunk)) {
                    return;
                }
            }
            // The watcher reports the disconnection; a new connection restarts us.
            _ => return,
        }
    }
}

/// Follows the fleet's short history (`agent`: None) or one agent's (as the console names
/// it, and as its daemon does): the newest now, then each time a bucket closes.
pub async fn follow_pulse(conn: Conn, agent: Option<(String, AgentRef)>, tx: Tx) {
    let mut after = u64::MAX;
    loop {
        let wait = if after == u64::MAX {
            Duration::ZERO
        } else {
            Duration::from_secs(20)
        };
        let ms = wait.as_millis() as u64;
        let m = match &agent {
            None => match conn.client.pulse(conn.ctx_wait(wait), after, ms).await {
                Ok(Ok(p)) => {
                    after = p.newest_ms();
                    Msg::Pulse(p)
                }
                _ => return,
            },
            Some((shown, real)) => {
                match conn
                    .client
                    .agent_history(conn.ctx_wait(wait), real.clone(), after, ms)
                    .await
                {
                    Ok(Ok(h)) => {
                        after = h.newest_ms();
                        Msg::History(shown.clone(), h)
                    }
                    _ => return,
                }
            }
        };
        if !tx.news(m) {
            return;
        }
    }
}
