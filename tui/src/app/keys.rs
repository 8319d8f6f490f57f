//! The console's one key table. Every key of every view is written here once, with what
//! it does, its footer hint and its help line; the dispatch (`App::on_key`), the footer
//! and the `?` overlay all read this table, so they cannot drift apart. The `:` commands
//! live here too, for the same reason (completion, help and dispatch read one list).

use super::View;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// What a key does. The handlers are in the view's own file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Quit,
    Help,
    Command,
    Filter,
    Back,
    Redraw,
    NextView,
    Show(View),
    Down,
    Up,
    Top,
    Bottom,
    PageDown,
    PageUp,
    /// Fleet: the detail pane with the log tail. Incidents: go to the agent.
    Open,
    Describe,
    Logs,
    Shell,
    Restart,
    Stop,
    Start,
    Reset,
    /// Swarm mode: a new gateway token for the agent.
    RotateToken,
    Delete,
    Creds,
    Scopes,
    Spec,
    Context,
    Sort(Column),
    Approve,
    Deny,
    Reload,
    Ack,
    Resolve,
    Reassign,
    Silence,
    Note,
    Evidence,
    Grant,
    RevokeRole,
    AddOperator,
    RemoveOperator,
    /// An agent's runs (describe), or failed runs only (the runs view).
    Runs,
    FailedOnly,
    Follow,
    Wrap,
    Timestamps,
    Search,
    SearchNext,
    SearchPrev,
    Save,
}

/// A sortable column of the fleet table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Project,
    Name,
    State,
    Age,
    Restarts,
    Cpu,
    Memory,
}

impl Column {
    /// The column heading (the table draws it with the sort mark).
    pub fn title(self) -> &'static str {
        match self {
            Column::Project => "TENANT/PROJECT",
            Column::Name => "AGENT",
            Column::State => "STATE",
            Column::Age => "UPTIME",
            Column::Restarts => "RESTARTS",
            Column::Cpu => "CPU",
            Column::Memory => "MEMORY",
        }
    }
}

/// One key as the terminal reports it, and how help spells it.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub code: KeyCode,
    pub ctrl: bool,
    pub label: &'static str,
}

const fn ch(c: char, label: &'static str) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: false,
        label,
    }
}

const fn ctrl(c: char, label: &'static str) -> Key {
    Key {
        code: KeyCode::Char(c),
        ctrl: true,
        label,
    }
}

const fn code(code: KeyCode, label: &'static str) -> Key {
    Key {
        code,
        ctrl: false,
        label,
    }
}

impl Key {
    /// Whether the event is this key. Shift is part of the character (`N` is Shift-n), so
    /// only Control and Alt are compared; Alt-anything matches nothing here.
    pub fn matches(&self, k: &KeyEvent) -> bool {
        let ctrl = k.modifiers.contains(KeyModifiers::CONTROL);
        let alt = k.modifiers.contains(KeyModifiers::ALT);
        !alt && ctrl == self.ctrl && k.code == self.code
    }
}

/// One line of the table.
#[derive(Debug)]
pub struct Binding {
    pub keys: &'static [Key],
    pub action: Action,
    /// The footer's short word (None: help only).
    pub hint: Option<&'static str>,
    /// The help overlay's line.
    pub help: &'static str,
    /// Changes something: hidden from the footer of a `--readonly` console.
    pub writes: bool,
}

const fn b(
    keys: &'static [Key],
    action: Action,
    hint: Option<&'static str>,
    help: &'static str,
) -> Binding {
    Binding {
        keys,
        action,
        hint,
        help,
        writes: false,
    }
}

/// A binding that changes something (hidden from a read-only console's footer).
const fn w(
    keys: &'static [Key],
    action: Action,
    hint: &'static str,
    help: &'static str,
) -> Binding {
    Binding {
        keys,
        action,
        hint: Some(hint),
        help,
        writes: true,
    }
}

const DOWN: &[Key] = &[ch('j', "j"), code(KeyCode::Down, "↓")];
const UP: &[Key] = &[ch('k', "k"), code(KeyCode::Up, "↑")];
const TOP: &[Key] = &[ch('g', "g"), code(KeyCode::Home, "Home")];
const BOTTOM: &[Key] = &[ch('G', "G"), code(KeyCode::End, "End")];
const PGDN: &[Key] = &[code(KeyCode::PageDown, "PgDn")];
const PGUP: &[Key] = &[code(KeyCode::PageUp, "PgUp")];

/// Keys of every view (a view's own line for the same key comes first).
pub const GLOBAL: &[Binding] = &[
    b(&[ch('?', "?")], Action::Help, Some("help"), "this help"),
    b(
        &[ch(':', ":")],
        Action::Command,
        Some("cmd"),
        "command line: :agents :audit :incidents … (Tab completes)",
    ),
    b(
        &[ch('/', "/")],
        Action::Filter,
        Some("filter"),
        "filter this view by a regex; !regex keeps what does not match",
    ),
    b(
        &[code(KeyCode::Esc, "Esc")],
        Action::Back,
        None,
        "back: clear the filter, close the pane, or the view before",
    ),
    b(
        &[ch('1', "1")],
        Action::Show(View::Fleet),
        None,
        "fleet, audit, escalations, incidents; Tab: the next view",
    ),
    b(&[ch('2', "2")], Action::Show(View::Audit), None, ""),
    b(&[ch('3', "3")], Action::Show(View::Escalations), None, ""),
    b(&[ch('4', "4")], Action::Show(View::Incidents), None, ""),
    b(&[code(KeyCode::Tab, "Tab")], Action::NextView, None, ""),
    b(
        &[ctrl('l', "Ctrl-L")],
        Action::Redraw,
        None,
        "redraw the whole screen",
    ),
    b(
        &[ch('q', "q"), ctrl('c', "Ctrl-C")],
        Action::Quit,
        Some("quit"),
        "quit (agents keep running)",
    ),
];

pub const FLEET: &[Binding] = &[
    b(DOWN, Action::Down, None, "move the selection down / up"),
    b(UP, Action::Up, None, ""),
    b(TOP, Action::Top, None, "the first / last agent"),
    b(BOTTOM, Action::Bottom, None, ""),
    b(PGDN, Action::PageDown, None, "a page down / up"),
    b(PGUP, Action::PageUp, None, ""),
    b(
        &[code(KeyCode::Enter, "⏎")],
        Action::Open,
        Some("detail"),
        "open the detail pane and follow the log",
    ),
    b(
        &[ch('d', "d")],
        Action::Describe,
        Some("describe"),
        "describe: spec in force, limits, network, credentials",
    ),
    b(
        &[ch('l', "l")],
        Action::Logs,
        Some("logs"),
        "full-screen logs (follow, wrap, search, timestamps, save)",
    ),
    b(
        &[ch('s', "s")],
        Action::Shell,
        Some("shell"),
        "a shell in the agent's container (images that have one)",
    ),
    w(
        &[ch('r', "r"), ctrl('k', "Ctrl-K")],
        Action::Restart,
        "restart",
        "restart (kill) the agent (asks first)",
    ),
    w(
        &[ch('o', "o")],
        Action::Stop,
        "stop",
        "stop the agent: off (asks first)",
    ),
    w(
        &[ch('u', "u")],
        Action::Start,
        "start",
        "start the agent: up (asks first)",
    ),
    b(
        &[ch('x', "x")],
        Action::Reset,
        None,
        "reset a failed agent's budget and run it (asks first)",
    ),
    b(
        &[ch('T', "T")],
        Action::RotateToken,
        None,
        "swarm: a new gateway token, the old one refused (asks first)",
    ),
    b(
        &[ctrl('d', "Ctrl-D")],
        Action::Delete,
        None,
        "delete the agent and its data (asks first)",
    ),
    b(
        &[ch('c', "c")],
        Action::Creds,
        Some("creds"),
        "credentials (R rotates, masked; X revokes a version)",
    ),
    b(
        &[ch('p', "p")],
        Action::Scopes,
        Some("scopes"),
        "scopes: e edits (checked as you type), R rolls back",
    ),
    b(
        &[ch('y', "y")],
        Action::Spec,
        Some("spec"),
        "the spec in force as TOML; j/k diffs an older version with it",
    ),
    b(
        &[ch('t', "t")],
        Action::Context,
        None,
        "narrow to each tenant, each project, then all again",
    ),
    b(
        &[ch('P', "P")],
        Action::Sort(Column::Project),
        None,
        "sort: project, name, state, uptime, restarts, CPU, mem",
    ),
    b(&[ch('N', "N")], Action::Sort(Column::Name), None, ""),
    b(&[ch('S', "S")], Action::Sort(Column::State), None, ""),
    b(&[ch('A', "A")], Action::Sort(Column::Age), None, ""),
    b(&[ch('R', "R")], Action::Sort(Column::Restarts), None, ""),
    b(&[ch('C', "C")], Action::Sort(Column::Cpu), None, ""),
    b(&[ch('M', "M")], Action::Sort(Column::Memory), None, ""),
];

pub const AUDIT: &[Binding] = &[
    b(DOWN, Action::Down, Some("scroll"), "a newer / older record"),
    b(UP, Action::Up, None, ""),
    b(
        TOP,
        Action::Top,
        None,
        "the oldest record held / the newest (follow)",
    ),
    b(BOTTOM, Action::Bottom, Some("newest"), ""),
    b(PGDN, Action::PageDown, None, "a page newer / older"),
    b(PGUP, Action::PageUp, None, ""),
];

pub const ESCALATIONS: &[Binding] = &[
    b(
        DOWN,
        Action::Down,
        Some("select"),
        "the next call / the one before",
    ),
    b(UP, Action::Up, None, ""),
    w(
        &[ch('a', "a")],
        Action::Approve,
        "approve",
        "approve the selected call (asks for a reason)",
    ),
    w(
        &[ch('d', "d")],
        Action::Deny,
        "deny",
        "deny the selected call (asks for a reason)",
    ),
    b(
        &[ch('r', "r")],
        Action::Reload,
        None,
        "load the queue again",
    ),
];

pub const INCIDENTS: &[Binding] = &[
    b(
        DOWN,
        Action::Down,
        Some("select"),
        "the next incident / the one before",
    ),
    b(UP, Action::Up, None, ""),
    w(
        &[ch('a', "a")],
        Action::Ack,
        "ack",
        "acknowledge the selected incident",
    ),
    w(
        &[ch('R', "R")],
        Action::Resolve,
        "resolve",
        "resolve it (asks first)",
    ),
    w(
        &[ch('o', "o")],
        Action::Reassign,
        "reassign",
        "reassign it to another party (Tab picks, a reason is asked)",
    ),
    w(
        &[ch('S', "S")],
        Action::Silence,
        "silence",
        "silence its notifications for a time you type (1h if none)",
    ),
    b(
        &[code(KeyCode::Enter, "⏎")],
        Action::Open,
        Some("agent"),
        "go to its agent",
    ),
    w(
        &[ch('n', "n")],
        Action::Note,
        "note",
        "write a note on it (recorded in the audit log)",
    ),
    b(
        &[ch('e', "e")],
        Action::Evidence,
        Some("evidence"),
        "its audit evidence",
    ),
];

pub const LOGS: &[Binding] = &[
    b(DOWN, Action::Down, Some("scroll"), "a line down / up"),
    b(UP, Action::Up, None, ""),
    b(
        TOP,
        Action::Top,
        None,
        "the first line held / the newest (follow)",
    ),
    b(BOTTOM, Action::Bottom, None, ""),
    b(PGDN, Action::PageDown, None, "a page down / up"),
    b(PGUP, Action::PageUp, None, ""),
    b(
        &[ch('f', "f")],
        Action::Follow,
        Some("follow"),
        "follow the newest line on / off",
    ),
    b(
        &[ch('w', "w")],
        Action::Wrap,
        Some("wrap"),
        "wrap long lines on / off",
    ),
    b(
        &[ch('t', "t")],
        Action::Timestamps,
        Some("time"),
        "timestamps on / off",
    ),
    b(
        &[ch('/', "/")],
        Action::Search,
        Some("search"),
        "search (a regex); n / N the next / previous match",
    ),
    b(
        &[ch('n', "n")],
        Action::SearchNext,
        None,
        "the next match below / above",
    ),
    b(&[ch('N', "N")], Action::SearchPrev, None, ""),
    b(
        &[ctrl('s', "Ctrl-S")],
        Action::Save,
        Some("save"),
        "save the lines held to a file (named in the footer)",
    ),
];

pub const DESCRIBE: &[Binding] = &[
    b(DOWN, Action::Down, Some("scroll"), "a line down / up"),
    b(UP, Action::Up, None, ""),
    b(PGDN, Action::PageDown, None, "a page down / up"),
    b(PGUP, Action::PageUp, None, ""),
    b(
        &[ch('l', "l")],
        Action::Logs,
        Some("logs"),
        "the agent's logs, full screen",
    ),
    b(
        &[ch('y', "y")],
        Action::Spec,
        Some("spec"),
        "the spec as TOML",
    ),
    b(
        &[ch('u', "u")],
        Action::Runs,
        Some("runs"),
        "the agent's runs, each with its timeline",
    ),
];

/// The pulse view has nothing of its own: it is pictures (Esc goes back).
pub const PULSE: &[Binding] = &[];

pub const OPERATORS: &[Binding] = &[
    b(
        DOWN,
        Action::Down,
        Some("select"),
        "the next operator / the one before",
    ),
    b(UP, Action::Up, None, ""),
    w(
        &[ch('a', "a")],
        Action::Grant,
        "grant",
        "grant a role: ROLE TENANT[/PROJECT] (asks first)",
    ),
    w(
        &[ch('x', "x")],
        Action::RevokeRole,
        "revoke",
        "revoke a role binding (asks first)",
    ),
    w(
        &[ch('+', "+")],
        Action::AddOperator,
        "add",
        "add an operator: UID NAME [admin] (platform admins)",
    ),
    w(
        &[ctrl('d', "Ctrl-D")],
        Action::RemoveOperator,
        "remove",
        "remove the operator and every role it holds (asks first)",
    ),
    b(&[ch('r', "r")], Action::Reload, None, "load the list again"),
];

pub const RUNS: &[Binding] = &[
    b(
        DOWN,
        Action::Down,
        Some("select"),
        "the next run / the one before",
    ),
    b(UP, Action::Up, None, ""),
    b(TOP, Action::Top, None, "the newest / the oldest shown"),
    b(BOTTOM, Action::Bottom, None, ""),
    b(
        PGDN,
        Action::PageDown,
        None,
        "ten down / up (the timeline's pages when open)",
    ),
    b(PGUP, Action::PageUp, None, ""),
    b(
        &[code(KeyCode::Enter, "⏎")],
        Action::Open,
        Some("timeline"),
        "the run's timeline under the list (again: close it)",
    ),
    b(
        &[ch('f', "f")],
        Action::FailedOnly,
        Some("failed"),
        "failed and timed-out runs only, on / off",
    ),
    b(
        &[ch('e', "e")],
        Action::Evidence,
        Some("audit"),
        "the open timeline's records in the audit view",
    ),
    b(&[ch('r', "r")], Action::Reload, None, "load the list again"),
];

/// The table of one view.
pub fn table(view: View) -> &'static [Binding] {
    match view {
        View::Fleet => FLEET,
        View::Audit => AUDIT,
        View::Escalations => ESCALATIONS,
        View::Incidents => INCIDENTS,
        View::Logs => LOGS,
        View::Describe => DESCRIBE,
        View::Operators => OPERATORS,
        View::Pulse => PULSE,
        View::Runs => RUNS,
    }
}

/// What `k` does in `view`: the view's own line first, then the global one.
pub fn lookup(view: View, k: &KeyEvent) -> Option<&'static Binding> {
    table(view)
        .iter()
        .chain(GLOBAL)
        .find(|b| b.keys.iter().any(|key| key.matches(k)))
}

/// The help overlay's lines for `view`: its own keys, then everyone's, then the `:`
/// commands. A binding with an empty help text shares the line before (`j/↓ k/↑`).
pub fn help_lines(view: View) -> Vec<(String, String)> {
    fn add(out: &mut Vec<(String, String)>, bs: &[Binding]) {
        for b in bs {
            let keys = b.keys.iter().map(|k| k.label).collect::<Vec<_>>().join("/");
            match out.last_mut() {
                Some(last) if b.help.is_empty() => {
                    last.0.push(' ');
                    last.0.push_str(&keys);
                }
                _ => out.push((keys, b.help.to_string())),
            }
        }
    }
    let mut out = Vec::new();
    add(&mut out, table(view));
    out.push((String::new(), String::new()));
    add(&mut out, GLOBAL);
    out.push((String::new(), String::new()));
    for c in COMMANDS {
        let arg = if c.arg.is_empty() {
            String::new()
        } else {
            format!(" [{}]", c.arg)
        };
        out.push((
            format!(":{}{arg}", c.name),
            format!("{} (:{})", c.help, c.aliases.join(" :")),
        ));
    }
    out
}

/// The footer's hints for `view`: `?`, `q`, `:` and `/` first (a narrow terminal cuts
/// the end), then the view's own; what changes something is left out when read-only.
pub fn hints(view: View, readonly: bool) -> Vec<(String, &'static str)> {
    let own = table(view);
    let mut out = Vec::new();
    for a in [Action::Help, Action::Quit, Action::Command, Action::Filter] {
        let Some(b) = GLOBAL.iter().find(|b| b.action == a) else {
            continue;
        };
        // The logs view searches with `/` instead; describe has nothing to filter.
        if own.iter().any(|o| o.keys[0].code == b.keys[0].code)
            || (a == Action::Filter && view == View::Describe)
        {
            continue;
        }
        out.push((b.keys[0].label.to_string(), b.hint.unwrap_or("")));
    }
    for b in own {
        if let Some(h) = b.hint.filter(|_| !(readonly && b.writes)) {
            let label = if std::ptr::eq(b.keys, DOWN) {
                "j/k".to_string()
            } else {
                b.keys[0].label.to_string()
            };
            out.push((label, h));
        }
    }
    out
}

/// One `:` command.
#[derive(Debug)]
pub struct Cmd {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    /// `AGENT` when it names an agent (completed from the fleet), else empty.
    pub arg: &'static str,
    pub help: &'static str,
}

pub const COMMANDS: &[Cmd] = &[
    Cmd {
        name: "agents",
        aliases: &["a", "ag", "fleet"],
        arg: "",
        help: "the fleet",
    },
    Cmd {
        name: "audit",
        aliases: &["au"],
        arg: "",
        help: "the audit trail",
    },
    Cmd {
        name: "incidents",
        aliases: &["inc", "i"],
        arg: "",
        help: "incidents by party",
    },
    Cmd {
        name: "escalations",
        aliases: &["esc", "e"],
        arg: "",
        help: "tool calls waiting for a person",
    },
    Cmd {
        name: "describe",
        aliases: &["desc", "d"],
        arg: "AGENT",
        help: "an agent described: spec, limits, network, runs",
    },
    Cmd {
        name: "logs",
        aliases: &["log", "l"],
        arg: "AGENT",
        help: "an agent's logs, full screen",
    },
    Cmd {
        name: "scopes",
        aliases: &["sc"],
        arg: "AGENT",
        help: "an agent's scopes and their versions",
    },
    Cmd {
        name: "spec",
        aliases: &["y"],
        arg: "AGENT",
        help: "an agent's spec and its versions",
    },
    Cmd {
        name: "policy",
        aliases: &["pol"],
        arg: "TENANT",
        help: "a tenant's Cedar policy: edit, publish, roll back",
    },
    Cmd {
        name: "creds",
        aliases: &["cr"],
        arg: "AGENT",
        help: "an agent's credentials",
    },
    Cmd {
        name: "pulse",
        aliases: &["pu", "charts"],
        arg: "",
        help: "the fleet's last 10 minutes as sparklines",
    },
    Cmd {
        name: "runs",
        aliases: &["run"],
        arg: "AGENT",
        help: "runs, all or one agent's; Enter: a run's timeline",
    },
    Cmd {
        name: "operators",
        aliases: &["ops", "op"],
        arg: "",
        help: "operators and their roles: grant, revoke",
    },
    Cmd {
        name: "ctx",
        aliases: &["context"],
        arg: "NAME",
        help: "another context, or all (:ctx all); alone: the list",
    },
    Cmd {
        name: "help",
        aliases: &["h", "?"],
        arg: "",
        help: "every key and command",
    },
    Cmd {
        name: "quit",
        aliases: &["q", "q!", "exit"],
        arg: "",
        help: "leave the console (agents keep running)",
    },
];

/// The command named `word` (its name or an alias).
pub fn command(word: &str) -> Option<&'static Cmd> {
    COMMANDS
        .iter()
        .find(|c| c.name == word || c.aliases.contains(&word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_key_means_two_things_in_one_view() {
        for v in View::ALL {
            let own: Vec<&Key> = table(v).iter().flat_map(|b| b.keys).collect();
            for (i, a) in own.iter().enumerate() {
                for c in &own[i + 1..] {
                    assert!(
                        !(a.code == c.code && a.ctrl == c.ctrl),
                        "{v:?}: `{}` is bound twice",
                        a.label
                    );
                }
            }
        }
        let global: Vec<&Key> = GLOBAL.iter().flat_map(|b| b.keys).collect();
        for (i, a) in global.iter().enumerate() {
            for c in &global[i + 1..] {
                assert!(!(a.code == c.code && a.ctrl == c.ctrl), "`{}`", a.label);
            }
        }
    }

    #[test]
    fn shift_is_part_of_the_character_and_alt_matches_nothing() {
        let shift_n = KeyEvent::new(KeyCode::Char('N'), KeyModifiers::SHIFT);
        assert_eq!(
            lookup(View::Fleet, &shift_n).map(|b| b.action),
            Some(Action::Sort(Column::Name))
        );
        let ctrl_d = KeyEvent::new(KeyCode::Char('d'), KeyModifiers::CONTROL);
        assert_eq!(
            lookup(View::Fleet, &ctrl_d).map(|b| b.action),
            Some(Action::Delete)
        );
        let d = KeyEvent::new(KeyCode::Char('d'), KeyModifiers::NONE);
        assert_eq!(
            lookup(View::Fleet, &d).map(|b| b.action),
            Some(Action::Describe)
        );
        let alt_d = KeyEvent::new(KeyCode::Char('d'), KeyModifiers::ALT);
        assert!(lookup(View::Fleet, &alt_d).is_none());
    }

    #[test]
    fn commands_and_aliases_are_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for c in COMMANDS {
            for w in std::iter::once(&c.name).chain(c.aliases) {
                assert!(seen.insert(*w), "`:{w}` names two commands");
            }
        }
    }
}
