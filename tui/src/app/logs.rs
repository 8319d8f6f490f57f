//! Console state for the full-screen logs of one agent (`l`): following the newest line or
//! scrolled back, wrap and timestamps toggles, a regex search with n / N, and saving the
//! lines held to a file. The lines are the same ones the detail pane follows.

use super::{filter, Action, App, Effect, Key, Mode, View};
use agenfleet_protocol::{AgentRef, LogStream};
use crossterm::event::KeyCode;
use regex::Regex;

/// Lines a page scrolls.
const PAGE: usize = 20;

#[derive(Debug, Clone, Default)]
pub struct LogsPane {
    pub agent: Option<Key>,
    /// Scrolled back this many lines from the newest (0 with `follow`).
    pub back: usize,
    /// Unset: stays where it is as lines arrive.
    pub follow: bool,
    pub wrap: bool,
    pub timestamps: bool,
    /// The search being typed or last run.
    pub search: String,
    pub search_re: Option<Regex>,
    /// The `seq` of the line the search stands on.
    pub hit: Option<u64>,
}

impl App {
    /// `l`: the selected agent's logs, full screen, following the newest line.
    pub(super) fn open_logs(&mut self) -> Vec<Effect> {
        let Some(key) = self.selected.clone() else {
            self.flash("no agent selected", true);
            return vec![];
        };
        self.logs_pane = LogsPane {
            agent: Some(key.clone()),
            follow: true,
            ..Default::default()
        };
        let mut fx = self.show(View::Logs);
        if self.logs_for.as_ref() != Some(&key) {
            self.logs.clear();
            self.logs_missed = 0;
            self.logs_for = Some(key.clone());
            fx.push(Effect::FollowLogs(Some(AgentRef {
                tenant: Some(key.0),
                name: key.1,
            })));
        }
        fx
    }

    /// New lines arrived: a view scrolled back stays on the same lines.
    pub(super) fn logs_arrived(&mut self, added: usize) {
        if !self.logs_pane.follow && self.logs_pane.back > 0 {
            self.logs_pane.back =
                (self.logs_pane.back + added).min(self.logs.len().saturating_sub(1));
        }
    }

    fn scroll_logs(&mut self, back: usize) {
        let p = &mut self.logs_pane;
        p.back = back.min(self.logs.len().saturating_sub(1));
        p.follow = p.back == 0;
    }

    /// Indices (in `self.logs`) of the lines the search matches.
    fn hits(&self) -> Vec<usize> {
        let Some(re) = &self.logs_pane.search_re else {
            return vec![];
        };
        self.logs
            .iter()
            .enumerate()
            .filter(|(_, l)| re.is_match(&l.text))
            .map(|(i, _)| i)
            .collect()
    }

    /// Moves to the next match below (`down`) or above the one the search stands on.
    fn jump(&mut self, down: bool) {
        let hits = self.hits();
        if hits.is_empty() {
            let what = self.logs_pane.search.clone();
            self.flash(format!("no line matches `{what}`"), true);
            return;
        }
        let at = self
            .logs_pane
            .hit
            .and_then(|seq| self.logs.iter().position(|l| l.seq == seq));
        let next = match (at, down) {
            (None, _) => hits.last().copied(),
            (Some(a), true) => hits.iter().copied().find(|&i| i > a),
            (Some(a), false) => hits.iter().rev().copied().find(|&i| i < a),
        };
        let Some(i) = next else {
            let edge = if down { "below" } else { "above" };
            self.flash(format!("no more matches {edge}"), false);
            return;
        };
        self.logs_pane.hit = self.logs.get(i).map(|l| l.seq);
        let n = hits.iter().position(|&h| h == i).unwrap_or(0) + 1;
        self.scroll_logs(self.logs.len() - 1 - i);
        self.flash(format!("match {n} of {}", hits.len()), false);
    }

    /// The full-screen logs' actions.
    pub(super) fn logs_action(&mut self, a: Action) -> Vec<Effect> {
        let back = self.logs_pane.back;
        match a {
            Action::Up => self.scroll_logs(back + 1),
            Action::Down => self.scroll_logs(back.saturating_sub(1)),
            Action::PageUp => self.scroll_logs(back + PAGE),
            Action::PageDown => self.scroll_logs(back.saturating_sub(PAGE)),
            Action::Top => self.scroll_logs(usize::MAX),
            Action::Bottom => self.scroll_logs(0),
            Action::Follow => {
                let p = &mut self.logs_pane;
                p.follow = !p.follow;
                if p.follow {
                    p.back = 0;
                }
            }
            Action::Wrap => self.logs_pane.wrap = !self.logs_pane.wrap,
            Action::Timestamps => self.logs_pane.timestamps = !self.logs_pane.timestamps,
            Action::Search => {
                self.logs_pane.search.clear();
                self.mode = Mode::Search;
            }
            Action::SearchNext => self.jump(true),
            Action::SearchPrev => self.jump(false),
            Action::Save => return self.save_logs(),
            _ => self.dirty = false,
        }
        vec![]
    }

    /// Typing the search: Enter runs it (the newest match first), Esc drops it.
    pub(super) fn on_search_key(&mut self, code: KeyCode) -> Vec<Effect> {
        match code {
            KeyCode::Esc => {
                self.logs_pane.search.clear();
                self.logs_pane.search_re = None;
                self.logs_pane.hit = None;
                self.mode = Mode::Normal;
            }
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                let (re, problem) = filter::compile(&self.logs_pane.search);
                self.logs_pane.search_re = (!self.logs_pane.search.is_empty()).then_some(re);
                self.logs_pane.hit = None;
                if self.logs_pane.search_re.is_some() {
                    self.jump(false);
                    if let Some(why) = problem {
                        self.flash(format!("searched as text, not a regex: {why}"), false);
                    }
                }
            }
            KeyCode::Backspace => {
                self.logs_pane.search.pop();
            }
            KeyCode::Char(c) => self.logs_pane.search.push(c),
            _ => {}
        }
        vec![]
    }

    /// Ctrl-S: every line held, with its time and stream, to a new file.
    fn save_logs(&mut self) -> Vec<Effect> {
        let Some((t, n)) = self.logs_pane.agent.clone() else {
            return vec![];
        };
        let stamp = crate::fmt::timestamp(self.now_ms)
            .replace([' ', ':'], "-")
            .replace('.', "-");
        let name = format!("agenfleet-{t}-{n}-{}.log", stamp.trim_end_matches('Z'));
        let lines = self
            .logs
            .iter()
            .map(|l| {
                let s = match l.stream {
                    LogStream::Stdout => "out",
                    LogStream::Stderr => "err",
                };
                format!("{} {s} {}", crate::fmt::timestamp(l.ts_ms), l.text)
            })
            .collect();
        vec![Effect::SaveLogs(name, lines)]
    }
}
