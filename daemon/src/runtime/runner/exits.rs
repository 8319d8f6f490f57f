//! What follows an exit of the agent: the engine's OOM report matched with it, the exit
//! recorded (and told to the incident detectors), then the restart policy — a restart
//! after a backoff, `Failed` past the budget, or a wait for room in the window — and the
//! restart when it is due. In swarm mode Swarm makes the restart; the runner counts it
//! the same way and steps in only when Swarm does not.

use super::{Msg, Runner};
use agenfleet_protocol::{now_ms, AgentState, DesiredState, ExitInfo};
use std::time::Duration;

/// Swarm mode: how long past twice the spec's delay the runner waits for Swarm's restart
/// before it asks for a new task itself.
const SWARM_RESTART_GRACE_MS: u64 = 10_000;

/// How far apart an OOM report and an exit may be and still be the same event.
const OOM_EXIT_SLACK_MS: u64 = 5_000;

fn describe_exit(e: &ExitInfo) -> String {
    if e.unhealthy {
        format!(
            "killed after failing its health check (exit code {})",
            e.code
        )
    } else if e.oom_killed {
        format!("OOM-killed (exit code {})", e.code)
    } else if let Some(why) = &e.reason {
        format!("no exit code ({why})")
    } else {
        format!("exit code {}", e.code)
    }
}

impl Runner {
    /// The engine's OOM report. It can reach us before the exit (the exit then says so, see
    /// `on_exit`) or after it — the engine sets its own flag from the same report, and
    /// under load records the exit first, as not OOM-killed: then the recorded exit is
    /// corrected, and the correction recorded.
    pub(super) async fn on_oom(&mut self, at_ms: u64) {
        self.oom_at_ms = Some(at_ms);
        let Some(exit) = self.rec.last_exit.as_mut() else {
            return;
        };
        if exit.oom_killed || exit.at_ms.abs_diff(at_ms) > OOM_EXIT_SLACK_MS {
            return;
        }
        let before = describe_exit(exit);
        exit.oom_killed = true;
        let after = describe_exit(exit);
        if let Some(m) = self.rec.message.as_mut() {
            *m = m.replace(&before, &after);
        }
        if let Some(m) = self.pending_failed.as_mut() {
            *m = m.replace(&before, &after);
        }
        let _ = self.commit();
        let _ = self
            .rt
            .system_event(
                "agent.exited",
                Some(&self.rec.key),
                "observed",
                format!("{after} (the engine's OOM report came after its exit)"),
            )
            .await;
    }

    pub(super) async fn on_exit(&mut self, mut exit: ExitInfo) {
        // An OOM report that came first, for this run.
        if self
            .oom_at_ms
            .take()
            .is_some_and(|at| at.abs_diff(exit.at_ms) <= OOM_EXIT_SLACK_MS)
        {
            exit.oom_killed = true;
        }
        let newer = self
            .rec
            .last_exit
            .as_ref()
            .is_none_or(|l| exit.at_ms > l.at_ms);
        if !newer && self.rec.state != AgentState::Running {
            return;
        }
        tracing::info!(agent = %self.rec.key, code = exit.code, oom = exit.oom_killed, "agent exited");
        // An exit is an observation, not an action: publish the new state first (watchers
        // see it at once), then record it.
        let detail = describe_exit(&exit);
        self.rec.last_exit = Some(exit);
        if self.rec.desired == DesiredState::Stopped {
            self.set_state(AgentState::Stopped, None);
            let _ = self.commit();
        } else if matches!(
            self.rec.state,
            AgentState::Running | AgentState::Pending | AgentState::Unknown
        ) || (self.swarm_mode()
            && self.rec.state == AgentState::BackingOff
            && !self.swarm.waiting_for_room)
        {
            // (Swarm mode: Swarm restarts a task itself, and its new task can end before
            // the daemon saw it run — one sweep may bring several ends, each a restart.)
            self.apply_policy().await;
        } else {
            let _ = self.commit();
        }
        let seq = self
            .rt
            .system_event("agent.exited", Some(&self.rec.key), "observed", detail)
            .await;
        if let Some(exit) = self.rec.last_exit.as_ref() {
            crate::metrics::counters().exit(exit.code, exit.oom_killed);
        }
        if let (Ok(seq), Some(exit)) = (seq, self.rec.last_exit.as_ref()) {
            if self.rec.desired != DesiredState::Stopped {
                self.rt
                    .incidents
                    .signal(crate::incidents::detect::Signal::AgentExit {
                        key: self.rec.key.clone(),
                        project: self.rec.project.clone(),
                        code: exit.code,
                        oom: exit.oom_killed,
                        seq,
                    });
            }
        }
        if let Some(failed) = self.pending_failed.take() {
            let _ = self
                .rt
                .system_event("agent.failed", Some(&self.rec.key), "observed", failed)
                .await;
        }
    }

    /// After an exit: schedule a restart with backoff, or fail past the budget.
    pub(super) async fn apply_policy(&mut self) {
        use crate::runtime::restart::{after_exit, jitter, Next};
        let policy = self.rec.spec.restart.clone();
        let next = after_exit(&policy, &mut self.rec.restart_times, now_ms(), jitter());
        let last = self
            .rec
            .last_exit
            .as_ref()
            .map(describe_exit)
            .unwrap_or_else(|| "unknown exit".into());
        match next {
            Next::Fail { restarts: n } => {
                if self.swarm_mode() {
                    // Swarm stops as well (its own count may differ by the one in flight).
                    if let Err(e) = self.swarm_scale_down().await {
                        tracing::warn!(agent = %self.rec.key, error = %e.message, "cannot scale the failed agent's service down");
                    }
                }
                self.gen += 1;
                self.next_restart_at_ms = None;
                self.set_state(
                    AgentState::Failed,
                    Some(format!(
                        "restart budget exhausted: {n} restarts within {}s; last run ended with {last}; `agenfleet agents reset {}` runs it again",
                        policy.interval_secs, self.rec.key
                    )),
                );
                let _ = self.commit();
                self.pending_failed = Some(format!(
                    "restart budget exhausted: {n} restarts within {}s; last run ended with {last}",
                    policy.interval_secs
                ));
            }
            Next::WaitForRoom {
                delay_ms,
                restarts: n,
            } => {
                if self.swarm_mode() {
                    self.swarm.waiting_for_room = true;
                    let _ = self.swarm_scale_down().await;
                }
                self.schedule_restart(
                    delay_ms,
                    format!("restart budget used up ({n} in {}s); waiting for room in the window; last run ended with {last}", policy.interval_secs),
                );
            }
            Next::Restart { delay_ms, attempt } if self.swarm_mode() => {
                // Swarm restarts it after the spec's delay; the runner counts it now and
                // steps in only if Swarm has not begun by then (see swarm_restart_due).
                self.rec.restart_times.push(now_ms());
                self.rec.restarts += 1;
                crate::pulse::history().restart(&self.rec.key.tenant, &self.rec.project, now_ms());
                self.schedule_restart(
                    policy
                        .delay_ms
                        .saturating_mul(2)
                        .saturating_add(SWARM_RESTART_GRACE_MS),
                    format!(
                        "last run ended with {last}; Swarm restarts it (restart {attempt} of {})",
                        policy.attempts
                    ),
                );
                let _ = delay_ms;
            }
            Next::Restart { delay_ms, attempt } => {
                self.schedule_restart(
                    delay_ms,
                    format!(
                        "last run ended with {last}; restart {attempt} of {}",
                        policy.attempts
                    ),
                );
            }
        }
    }

    pub(super) fn schedule_restart(&mut self, delay_ms: u64, message: String) {
        self.gen += 1;
        let gen = self.gen;
        self.next_restart_at_ms = Some(now_ms() + delay_ms);
        self.set_state(AgentState::BackingOff, Some(message));
        let _ = self.commit();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let _ = tx.send(Msg::RestartDue(gen));
        });
    }

    /// Audit before effect: records the supervisor's restart; when it cannot be recorded
    /// the agent is Failed (no record, no restart) and this answers false.
    pub(super) async fn record_restart(&mut self, detail: String) -> bool {
        let recorded = self
            .rt
            .system_event("agent.restart", Some(&self.rec.key), "requested", detail)
            .await;
        if let Err(e) = recorded {
            self.set_state(
                AgentState::Failed,
                Some(format!("restart refused: {}", e.message)),
            );
            let _ = self.commit();
            return false;
        }
        true
    }

    pub(super) async fn on_restart_due(&mut self, gen: u64) {
        if gen != self.gen
            || self.rec.state != AgentState::BackingOff
            || self.rec.desired != DesiredState::Running
        {
            return;
        }
        if self.swarm_mode() {
            return Box::pin(self.swarm_restart_due()).await;
        }
        let n = self.rec.restarts + 1;
        if !self
            .record_restart(format!("restart {n} by the supervisor"))
            .await
        {
            return;
        }
        self.rec.restart_times.push(now_ms());
        self.rec.restarts += 1;
        crate::pulse::history().restart(&self.rec.key.tenant, &self.rec.project, now_ms());
        let _ = self.start_or_fail().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_described_by_its_code_or_why_it_had_none() {
        let e = |code, oom, unhealthy, reason: Option<&str>| ExitInfo {
            code,
            oom_killed: oom,
            unhealthy,
            at_ms: 1,
            reason: reason.map(str::to_string),
        };
        assert_eq!(describe_exit(&e(3, false, false, None)), "exit code 3");
        assert_eq!(
            describe_exit(&e(137, true, false, None)),
            "OOM-killed (exit code 137)"
        );
        assert_eq!(
            describe_exit(&e(-1, false, false, Some("Swarm: No such image: x:1"))),
            "no exit code (Swarm: No such image: x:1)"
        );
    }
}
