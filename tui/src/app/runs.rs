//! Console state for the runs view (`:runs [AGENT]`, `u` in describe): the newest runs
//! fleet-wide or of one agent, failed only on `f`, and the selected run's story (its
//! timeline from the audit log) under the list on Enter, following the cursor. The list
//! is loaded again when the audit log records a run starting, ending or being cancelled —
//! no polling.

use super::{Action, App, Effect, Key, View};
use agenfleet_protocol::runs::{RunState, RunView};
use agenfleet_protocol::{AgentRef, AuditEntry};

/// Runs asked for at once (the daemon's default page).
pub const RUNS_SHOWN: u32 = 100;

/// A run's timeline records (None: loading), or why they are not known.
pub type Timeline = Option<Result<Vec<AuditEntry>, String>>;

#[derive(Debug, Clone, Default)]
pub struct RunsPane {
    /// Whose runs: one agent, or the fleet's (None).
    pub agent: Option<Key>,
    /// Only runs that failed or timed out.
    pub failed_only: bool,
    /// The runs, newest first (None: loading), or why they are not known.
    pub list: Option<Result<Vec<RunView>, String>>,
    pub selected: usize,
    /// Which load the list answers (an older answer is dropped).
    pub generation: u64,
    /// The run whose timeline is open under the list, and the timeline (None: loading).
    pub timeline: Option<(u64, Timeline)>,
    pub timeline_scroll: usize,
    /// Ends the audit log told of (`run.end`: id → state, error, when). The daemon records
    /// an end just before it stores it, so a list loaded on that record may still say
    /// running: what the log said wins.
    pub ended: std::collections::HashMap<u64, (RunState, Option<String>, u64)>,
}

/// Ends remembered from the audit log (the oldest are forgotten past this).
const ENDS_KEPT: usize = 1000;

impl RunsPane {
    /// The ends the audit log told of, laid over the list.
    fn overlay_ends(&mut self) {
        let Some(Ok(list)) = &mut self.list else {
            return;
        };
        for r in list.iter_mut().filter(|r| !r.state.ended()) {
            if let Some((state, error, at)) = self.ended.get(&r.id) {
                r.state = *state;
                r.error = error.clone();
                r.ended_ms = Some(*at);
            }
        }
    }
}

impl RunsPane {
    /// The runs that pass the view's filter.
    pub fn visible<'a>(&'a self, filter: &super::Filter) -> Vec<&'a RunView> {
        let Some(Ok(list)) = &self.list else {
            return vec![];
        };
        list.iter()
            .filter(|r| {
                filter.is_empty()
                    || filter.matches(&format!(
                        "{} {} {} {} {} {}",
                        r.id,
                        r.agent_ref(),
                        r.state,
                        r.trigger,
                        r.requested_by,
                        r.error.as_deref().unwrap_or("")
                    ))
            })
            .collect()
    }
}

impl App {
    /// Opens the runs view for one agent (its key) or the whole fleet.
    pub(super) fn open_runs(&mut self, agent: Option<Key>) -> Vec<Effect> {
        if self.multi() {
            self.flash(
                "runs belong to one host: `:ctx NAME` first (describe shows an agent's last runs)",
                true,
            );
            return vec![];
        }
        if self.runs.agent != agent {
            self.runs = RunsPane {
                agent,
                generation: self.runs.generation,
                ..Default::default()
            };
        }
        self.show(View::Runs)
    }

    /// Loads the list again (a new generation), as the pane asks.
    pub(super) fn load_runs(&mut self) -> Effect {
        self.runs.generation += 1;
        Effect::LoadRuns {
            generation: self.runs.generation,
            agent: self.runs.agent.clone().map(|(t, n)| AgentRef {
                tenant: Some(t),
                name: n,
            }),
            failed: self.runs.failed_only,
        }
    }

    pub fn apply_runs_list(
        &mut self,
        generation: u64,
        r: Result<Vec<RunView>, String>,
    ) -> Vec<Effect> {
        if generation != self.runs.generation {
            return vec![];
        }
        let n = r.as_ref().map(Vec::len).unwrap_or(0);
        self.runs.selected = self.runs.selected.min(n.saturating_sub(1));
        self.runs.list = Some(r);
        self.runs.overlay_ends();
        self.dirty |= self.view == View::Runs;
        // The open timeline follows the run it shows (it may have gone further).
        match &self.runs.timeline {
            Some((id, _)) => vec![Effect::LoadRunTimeline(*id)],
            None => vec![],
        }
    }

    pub fn apply_run_timeline(&mut self, id: u64, r: Result<Vec<AuditEntry>, String>) {
        if let Some((open, t)) = &mut self.runs.timeline {
            if *open == id {
                *t = Some(r);
                self.dirty |= self.view == View::Runs;
            }
        }
    }

    /// New audit records: a run started, ended or was cancelled → the list again (only
    /// while the view is shown; it loads when it opens).
    pub(super) fn runs_news(&mut self, entries: &[AuditEntry]) -> Vec<Effect> {
        if self.view != View::Runs {
            return vec![];
        }
        for e in entries.iter().filter(|e| e.event.action == "run.end") {
            let d: serde_json::Value = serde_json::from_str(&e.event.detail).unwrap_or_default();
            let (Some(id), Some(state)) = (
                d.get("run").and_then(|r| r.as_u64()),
                d.get("state")
                    .and_then(|s| s.as_str())
                    .and_then(RunState::parse),
            ) else {
                continue;
            };
            if self.runs.ended.len() >= ENDS_KEPT {
                self.runs.ended.clear();
            }
            let error = d.get("error").and_then(|x| x.as_str()).map(str::to_string);
            self.runs.ended.insert(id, (state, error, e.time_ms));
        }
        self.runs.overlay_ends();
        let about_runs = entries.iter().any(|e| {
            e.event.action.starts_with("run.")
                && e.event.outcome != "requested"
                && self.runs.agent.as_ref().is_none_or(|(t, n)| {
                    e.event.tenant.as_deref() == Some(t) && e.event.agent.as_deref() == Some(n)
                })
        });
        let open = self.runs.timeline.as_ref().map(|(id, _)| *id);
        let about_open = open.is_some_and(|id| {
            entries.iter().any(|e| {
                e.event.detail.contains("\"run\"")
                    && serde_json::from_str::<serde_json::Value>(&e.event.detail)
                        .ok()
                        .and_then(|d| d.get("run").and_then(|r| r.as_u64()))
                        == Some(id)
            })
        });
        if about_runs {
            // The list's answer reloads the open timeline too.
            vec![self.load_runs()]
        } else if let (true, Some(id)) = (about_open, open) {
            vec![Effect::LoadRunTimeline(id)]
        } else {
            vec![]
        }
    }

    pub fn selected_run(&self) -> Option<&RunView> {
        self.runs
            .visible(self.filter_of(View::Runs))
            .get(self.runs.selected)
            .copied()
    }

    /// The runs view's actions: selection (the open timeline follows it), Enter opens or
    /// closes the selected run's timeline, `f` failed only, `r` again.
    pub(super) fn runs_action(&mut self, a: Action) -> Vec<Effect> {
        let n = self.runs.visible(self.filter_of(View::Runs)).len();
        let before = self.selected_run().map(|r| r.id);
        match a {
            Action::Down => self.runs.selected = (self.runs.selected + 1).min(n.saturating_sub(1)),
            Action::Up => self.runs.selected = self.runs.selected.saturating_sub(1),
            // With a timeline open the pages are the timeline's.
            Action::PageDown if self.runs.timeline.is_some() => self.runs.timeline_scroll += 10,
            Action::PageUp if self.runs.timeline.is_some() => {
                self.runs.timeline_scroll = self.runs.timeline_scroll.saturating_sub(10)
            }
            Action::PageDown => {
                self.runs.selected = (self.runs.selected + 10).min(n.saturating_sub(1))
            }
            Action::PageUp => self.runs.selected = self.runs.selected.saturating_sub(10),
            Action::Top => self.runs.selected = 0,
            Action::Bottom => self.runs.selected = n.saturating_sub(1),
            Action::Reload => return vec![self.load_runs()],
            Action::FailedOnly => {
                self.runs.failed_only = !self.runs.failed_only;
                self.runs.list = None;
                self.runs.selected = 0;
                self.runs.timeline = None;
                return vec![self.load_runs()];
            }
            Action::Open => {
                let Some(id) = before else {
                    self.flash("no run selected", true);
                    return vec![];
                };
                if self.runs.timeline.as_ref().map(|(t, _)| *t) == Some(id) {
                    self.runs.timeline = None;
                    return vec![];
                }
                self.runs.timeline = Some((id, None));
                self.runs.timeline_scroll = 0;
                return vec![Effect::LoadRunTimeline(id)];
            }
            Action::Evidence => {
                // The timeline's records in the audit view (`#seq …`).
                let Some((_, Some(Ok(t)))) = &self.runs.timeline else {
                    self.flash("open a run's timeline first (Enter)", true);
                    return vec![];
                };
                let seqs: Vec<String> = t.iter().map(|e| format!("#{}", e.seq)).collect();
                let fx = self.show(View::Audit);
                self.filter_mut().set(seqs.join(" "));
                self.audit_scroll = 0;
                return fx;
            }
            _ => {
                self.dirty = false;
                return vec![];
            }
        }
        let after = self.selected_run().map(|r| r.id);
        match (&self.runs.timeline, after) {
            (Some(_), Some(id)) if before != after => {
                self.runs.timeline = Some((id, None));
                self.runs.timeline_scroll = 0;
                vec![Effect::LoadRunTimeline(id)]
            }
            _ => vec![],
        }
    }
}
