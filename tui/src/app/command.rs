//! Command mode (`:`): typing a command with Tab completion (command names, then agent
//! names) and Up / Down history, and running it. The commands themselves are listed in
//! `keys::COMMANDS`; running one is the same `App::perform` a key would call.

use super::keys::{self, Action};
use super::{key_of, App, Effect, Mode, View, COMMAND_HISTORY};
use crossterm::event::{KeyCode, KeyEvent};

/// The longest prefix all of `words` share.
fn common_prefix(words: &[String]) -> String {
    let Some(first) = words.first() else {
        return String::new();
    };
    let mut n = first.len();
    for w in &words[1..] {
        n = n.min(
            first
                .char_indices()
                .zip(w.chars())
                .take_while(|((_, a), b)| a == b)
                .map(|((i, a), _)| i + a.len_utf8())
                .last()
                .unwrap_or(0),
        );
    }
    first[..n].to_string()
}

impl App {
    /// What Tab could complete `input` to: command names, or, after a command that takes
    /// an agent, the agents' names (`tenant/name`).
    pub fn completions(&self, input: &str) -> Vec<String> {
        match input.split_once(' ') {
            None => keys::COMMANDS
                .iter()
                .map(|c| c.name)
                .filter(|n| n.starts_with(input))
                .map(str::to_string)
                .collect(),
            Some((word, arg)) if keys::command(word).is_some_and(|c| c.arg == "NAME") => {
                std::iter::once("all".to_string())
                    .chain(self.ctx_names.iter().cloned())
                    .filter(|n| n.starts_with(arg) && !arg.contains(' '))
                    .collect()
            }
            Some((word, arg)) if keys::command(word).is_some_and(|c| c.arg == "TENANT") => {
                let tenants: std::collections::BTreeSet<String> =
                    self.agents.keys().map(|(t, _)| t.clone()).collect();
                tenants
                    .into_iter()
                    .filter(|t| t.starts_with(arg) && !arg.contains(' '))
                    .collect()
            }
            Some((word, arg)) => {
                let takes_agent = keys::command(word).is_some_and(|c| c.arg == "AGENT");
                if !takes_agent || arg.contains(' ') {
                    return vec![];
                }
                self.agents
                    .values()
                    .map(|v| v.qualified_name())
                    .filter(|q| {
                        q.starts_with(arg)
                            || q.split_once('/').is_some_and(|(_, n)| n.starts_with(arg))
                    })
                    .collect()
            }
        }
    }

    /// Tab: the one completion, or as far as all of them agree.
    fn complete(&self, input: &str) -> String {
        let all = self.completions(input);
        let (head, tail) = match input.split_once(' ') {
            Some((w, _)) => (format!("{w} "), all),
            None => (String::new(), all),
        };
        match tail.as_slice() {
            [] => input.to_string(),
            [one] => {
                let takes_arg =
                    head.is_empty() && keys::command(one).is_some_and(|c| !c.arg.is_empty());
                format!("{head}{one}{}", if takes_arg { " " } else { "" })
            }
            many => {
                let p = common_prefix(many);
                // Agent names may match by their short name: keep what was typed then.
                if format!("{head}{p}").len() < input.len() {
                    input.to_string()
                } else {
                    format!("{head}{p}")
                }
            }
        }
    }

    pub(super) fn on_command_key(
        &mut self,
        k: KeyEvent,
        mut input: String,
        hist: Option<usize>,
    ) -> Vec<Effect> {
        let mut hist = hist;
        match k.code {
            KeyCode::Esc => {
                self.mode = Mode::Normal;
                return vec![];
            }
            KeyCode::Enter => {
                self.mode = Mode::Normal;
                return self.run_command(input.trim());
            }
            KeyCode::Tab => input = self.complete(&input),
            KeyCode::Up if !self.cmd_history.is_empty() => {
                let i = hist.map_or(self.cmd_history.len() - 1, |i| i.saturating_sub(1));
                input = self.cmd_history[i].clone();
                hist = Some(i);
            }
            KeyCode::Down => match hist {
                Some(i) if i + 1 < self.cmd_history.len() => {
                    input = self.cmd_history[i + 1].clone();
                    hist = Some(i + 1);
                }
                Some(_) => {
                    input.clear();
                    hist = None;
                }
                None => {}
            },
            KeyCode::Backspace if input.is_empty() => {
                self.mode = Mode::Normal;
                return vec![];
            }
            KeyCode::Backspace => {
                input.pop();
            }
            KeyCode::Char(c) => input.push(c),
            _ => {}
        }
        self.mode = Mode::Command { input, hist };
        vec![]
    }

    /// Runs one command line (`agents`, `scopes acme/payer`, `q`, …).
    pub fn run_command(&mut self, line: &str) -> Vec<Effect> {
        if line.is_empty() {
            return vec![];
        }
        if self.cmd_history.last().map(String::as_str) != Some(line) {
            self.cmd_history.push(line.to_string());
            if self.cmd_history.len() > COMMAND_HISTORY {
                self.cmd_history.remove(0);
            }
        }
        let mut words = line.split_whitespace();
        let word = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        let Some(cmd) = keys::command(word) else {
            self.flash(
                format!("unknown command `:{word}` — :help lists them"),
                true,
            );
            return vec![];
        };
        let most = usize::from(!cmd.arg.is_empty());
        if args.len() > most {
            let usage = if cmd.arg.is_empty() {
                format!(":{} takes no argument", cmd.name)
            } else {
                format!("usage: :{} [{}]", cmd.name, cmd.arg)
            };
            self.flash(usage, true);
            return vec![];
        }
        let action = match cmd.name {
            "agents" => return self.show_fleet(),
            "audit" => return self.show(View::Audit),
            "incidents" => return self.show(View::Incidents),
            "escalations" => return self.show(View::Escalations),
            "operators" => return self.show(View::Operators),
            "pulse" => return self.show(View::Pulse),
            "runs" => {
                return match args.first() {
                    None => self.open_runs(None),
                    Some(name) if self.select_agent(name) => self.open_runs(self.selected.clone()),
                    Some(_) => vec![],
                }
            }
            "help" => Action::Help,
            "quit" => Action::Quit,
            "describe" => Action::Describe,
            "logs" => Action::Logs,
            "scopes" => Action::Scopes,
            "spec" => Action::Spec,
            "creds" => Action::Creds,
            "ctx" => return self.switch_context(args.first().copied()),
            "policy" => return self.policy_command(args.first().copied()),
            other => {
                self.flash(format!("`:{other}` is not wired to anything"), true);
                return vec![];
            }
        };
        if cmd.arg == "AGENT" {
            if let Some(name) = args.first() {
                if !self.select_agent(name) {
                    return vec![];
                }
            }
            let mut fx = self.show_fleet();
            fx.extend(self.fleet_action(action));
            return fx;
        }
        self.perform(action)
    }

    /// `:ctx NAME` / `:ctx all`: another context (the loop reconnects); `:ctx` alone
    /// lists them.
    fn switch_context(&mut self, name: Option<&str>) -> Vec<Effect> {
        let Some(name) = name else {
            let shown = if self.multi() {
                "all"
            } else {
                self.ctx_current.as_deref().unwrap_or("(local socket)")
            };
            let list = if self.ctx_names.is_empty() {
                "none defined (`agenfleet context add NAME URL`)".to_string()
            } else {
                self.ctx_names.join(" ")
            };
            self.flash(format!("context: {shown} — known: {list}"), false);
            return vec![];
        };
        if name != "all" && !self.ctx_names.iter().any(|n| n == name) {
            self.flash(format!("no context `{name}` (`:ctx` lists them)"), true);
            return vec![];
        }
        vec![Effect::SwitchContext(name.to_string())]
    }

    /// `:policy [TENANT]`: the tenant named, else the selected agent's, else the context's.
    fn policy_command(&mut self, tenant: Option<&str>) -> Vec<Effect> {
        if self.multi() {
            self.flash(
                "a policy belongs to one host's tenant: `:ctx NAME` first",
                true,
            );
            return vec![];
        }
        let tenant = tenant
            .map(str::to_string)
            .or_else(|| self.selected_agent().map(|v| v.tenant.clone()))
            .or_else(|| self.context.as_ref().map(|(t, _)| t.clone()));
        match tenant {
            Some(t) => self.open_policy(t),
            None => {
                self.flash("usage: :policy TENANT", true);
                vec![]
            }
        }
    }

    /// `:agents` — the fleet view (from the full-screen views too).
    fn show_fleet(&mut self) -> Vec<Effect> {
        self.show(View::Fleet)
    }

    /// Selects the agent `name` (`tenant/name`, or a name only one tenant has); says why
    /// not when it cannot.
    fn select_agent(&mut self, name: &str) -> bool {
        let hits: Vec<_> = self
            .agents
            .values()
            .filter(|v| v.qualified_name() == name || v.name == name)
            .map(key_of)
            .collect();
        match hits.as_slice() {
            [one] => {
                // It must be visible for the fleet's actions: widen the context and filter.
                if !self.visible().iter().any(|v| &key_of(v) == one) {
                    self.context = None;
                    self.filters.remove(&View::Fleet);
                }
                self.selected = Some(one.clone());
                true
            }
            [] => {
                self.flash(format!("no agent `{name}` in this fleet"), true);
                false
            }
            _ => {
                self.flash(
                    format!("`{name}` is in several tenants: name it as tenant/{name}"),
                    true,
                );
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::common_prefix;

    #[test]
    fn common_prefix_of_words() {
        let w = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(common_prefix(&w(&["escalations", "esc"])), "esc");
        assert_eq!(common_prefix(&w(&["audit", "agents"])), "a");
        assert_eq!(common_prefix(&w(&["ä1", "ä2"])), "ä");
        assert_eq!(common_prefix(&w(&[])), "");
    }
}
