//! Console state for operators and their role bindings (`:operators`): the list from the
//! daemon, granting or revoking a binding typed as `ROLE TENANT[/PROJECT]`, registering
//! a uid (`UID NAME [admin]`) and removing an operator — changes asked first, only `y`
//! goes ahead; the daemon decides who may (its answer is shown).

use super::{typing, Action, App, Effect, Mode, Typing};
use agenfleet_protocol::{OperatorInfo, RoleBinding};
use crossterm::event::KeyCode;

/// `ROLE TENANT[/PROJECT]` as a binding, or what is wrong with it.
pub fn parse_binding(typed: &str) -> Result<RoleBinding, String> {
    let mut words = typed.split_whitespace();
    let (Some(role), Some(scope), None) = (words.next(), words.next(), words.next()) else {
        return Err("write ROLE TENANT or ROLE TENANT/PROJECT".into());
    };
    if agenfleet_protocol::roles::ScopedRole::parse(role).is_none() {
        return Err(format!(
            "unknown role `{role}` (tenant_admin, project_admin, project_contributor, project_viewer)"
        ));
    }
    let (tenant, project) = match scope.split_once('/') {
        Some((t, p)) => (t.to_string(), Some(p.to_string())),
        None => (scope.to_string(), None),
    };
    if tenant.is_empty() || project.as_deref() == Some("") {
        return Err(format!(
            "bad scope `{scope}`: write TENANT or TENANT/PROJECT"
        ));
    }
    Ok(RoleBinding {
        role: role.to_string(),
        tenant,
        project,
    })
}

/// `UID NAME [admin]` as a new operator, or what is wrong with it.
pub fn parse_operator(typed: &str) -> Result<(u32, String, bool), String> {
    let mut words = typed.split_whitespace();
    let usage = || "write UID NAME, or UID NAME admin for a platform admin".to_string();
    let (Some(uid), Some(name)) = (words.next(), words.next()) else {
        return Err(usage());
    };
    let uid: u32 = uid
        .parse()
        .map_err(|_| format!("bad uid `{uid}`: a number (see `id -u NAME`)"))?;
    let admin = match (words.next(), words.next()) {
        (None, _) => false,
        (Some("admin"), None) => true,
        _ => return Err(usage()),
    };
    Ok((uid, name.to_string(), admin))
}

impl App {
    pub fn apply_operators(&mut self, r: Result<Vec<OperatorInfo>, String>) {
        match r {
            Ok(list) => {
                self.op_selected = self.op_selected.min(list.len().saturating_sub(1));
                self.operators = Some(list);
            }
            Err(e) => self.flash(format!("operators: {e}"), true),
        }
        self.dirty = true;
    }

    pub fn selected_operator(&self) -> Option<&OperatorInfo> {
        self.operators.as_ref()?.get(self.op_selected)
    }

    /// The operators view's actions.
    pub(super) fn operators_action(&mut self, a: Action) -> Vec<Effect> {
        let n = self.operators.as_ref().map(Vec::len).unwrap_or(0);
        match a {
            Action::Down => self.op_selected = (self.op_selected + 1).min(n.saturating_sub(1)),
            Action::Up => self.op_selected = self.op_selected.saturating_sub(1),
            Action::Reload => return vec![Effect::LoadOperators],
            Action::AddOperator => {
                if self.writable("adding operators") {
                    self.mode = Mode::OperatorInput {
                        typed: String::new(),
                    };
                }
            }
            Action::RemoveOperator => {
                let Some((uid, name)) = self.selected_operator().map(|o| (o.uid, o.name.clone()))
                else {
                    self.flash("no operator selected", true);
                    return vec![];
                };
                if self.writable("removing operators") {
                    self.mode = Mode::OperatorRemove { uid, name };
                }
            }
            Action::Grant | Action::RevokeRole => {
                let Some(uid) = self.selected_operator().map(|o| o.uid) else {
                    self.flash("no operator selected", true);
                    return vec![];
                };
                if !self.writable("granting and revoking roles") {
                    return vec![];
                }
                // Revoking starts from the operator's first binding, to edit or accept.
                let typed = match a {
                    Action::RevokeRole => self
                        .selected_operator()
                        .and_then(|o| o.bindings.first())
                        .map(|b| {
                            let scope = match &b.project {
                                Some(p) => format!("{}/{p}", b.tenant),
                                None => b.tenant.clone(),
                            };
                            format!("{} {scope}", b.role)
                        })
                        .unwrap_or_default(),
                    _ => String::new(),
                };
                self.mode = Mode::RoleInput {
                    uid,
                    grant: a == Action::Grant,
                    typed,
                };
            }
            _ => self.dirty = false,
        }
        vec![]
    }

    pub(super) fn on_role_input_key(
        &mut self,
        code: KeyCode,
        uid: u32,
        grant: bool,
        typed: String,
    ) -> Vec<Effect> {
        match typing(code, typed, |_| true) {
            Typing::Cancel => self.mode = Mode::Normal,
            Typing::Submit(typed) => match parse_binding(&typed) {
                Ok(binding) => {
                    self.mode = Mode::RoleConfirm {
                        uid,
                        grant,
                        binding,
                    }
                }
                Err(e) => {
                    self.flash(e, true);
                    self.mode = Mode::RoleInput { uid, grant, typed };
                }
            },
            Typing::Edit(typed) => self.mode = Mode::RoleInput { uid, grant, typed },
        }
        vec![]
    }

    /// Typing a new operator; Enter sends it (the daemon decides who may add).
    pub(super) fn on_operator_input_key(&mut self, code: KeyCode, typed: String) -> Vec<Effect> {
        match typing(code, typed, |_| true) {
            Typing::Cancel => self.mode = Mode::Normal,
            Typing::Submit(typed) => match parse_operator(&typed) {
                Ok((uid, name, admin)) => {
                    self.mode = Mode::Normal;
                    self.flash(format!("adding {name} (uid {uid})…"), false);
                    return vec![Effect::AddOperator { uid, name, admin }];
                }
                Err(e) => {
                    self.flash(e, true);
                    self.mode = Mode::OperatorInput { typed };
                }
            },
            Typing::Edit(typed) => self.mode = Mode::OperatorInput { typed },
        }
        vec![]
    }

    /// Confirming a removal: only `y` goes ahead.
    pub(super) fn on_operator_remove_key(
        &mut self,
        code: KeyCode,
        uid: u32,
        name: String,
    ) -> Vec<Effect> {
        self.mode = Mode::Normal;
        if code == KeyCode::Char('y') {
            self.flash(format!("removing {name} (uid {uid})…"), false);
            return vec![Effect::RemoveOperator(uid)];
        }
        self.flash("cancelled", false);
        vec![]
    }

    /// The daemon answered a removal.
    pub(super) fn operator_removed(&mut self, uid: u32, r: Result<(), String>) -> Vec<Effect> {
        match r {
            Ok(()) => {
                self.flash(format!("uid {uid} is no longer an operator"), false);
                vec![Effect::LoadOperators]
            }
            Err(e) => {
                self.flash(format!("not removed: {e}"), true);
                vec![]
            }
        }
    }

    /// Confirming a grant or revocation: only `y` goes ahead.
    pub(super) fn on_role_confirm_key(
        &mut self,
        code: KeyCode,
        uid: u32,
        grant: bool,
        binding: RoleBinding,
    ) -> Vec<Effect> {
        self.mode = Mode::Normal;
        if code == KeyCode::Char('y') {
            let what = if grant { "granting" } else { "revoking" };
            self.flash(format!("{what} {binding} for uid {uid}…"), false);
            return vec![Effect::Role {
                uid,
                grant,
                binding,
            }];
        }
        self.flash("cancelled", false);
        vec![]
    }

    /// The daemon answered a grant or revocation.
    pub(super) fn role_changed(&mut self, r: Result<OperatorInfo, String>) -> Vec<Effect> {
        match r {
            Ok(o) => {
                let roles: Vec<String> = o.bindings.iter().map(|b| b.to_string()).collect();
                self.flash(
                    format!(
                        "{} (uid {}): {}",
                        o.name,
                        o.uid,
                        if roles.is_empty() {
                            "no roles".to_string()
                        } else {
                            roles.join(", ")
                        }
                    ),
                    false,
                );
                vec![Effect::LoadOperators]
            }
            Err(e) => {
                self.flash(format!("not changed: {e}"), true);
                vec![]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_binding, parse_operator};

    #[test]
    fn operators_are_typed_as_uid_name_and_maybe_admin() {
        assert_eq!(parse_operator("1001 val"), Ok((1001, "val".into(), false)));
        assert_eq!(parse_operator("0 root admin"), Ok((0, "root".into(), true)));
        assert!(parse_operator("val 1001").unwrap_err().contains("bad uid"));
        assert!(parse_operator("1001").unwrap_err().contains("UID NAME"));
        assert!(parse_operator("1001 val root")
            .unwrap_err()
            .contains("UID NAME"));
    }

    #[test]
    fn bindings_are_typed_as_role_and_scope() {
        let b = parse_binding("project_viewer acme/ops").expect("binding");
        assert_eq!(
            (b.role.as_str(), b.tenant.as_str(), b.project.as_deref()),
            ("project_viewer", "acme", Some("ops"))
        );
        assert!(parse_binding("tenant_admin acme").is_ok());
        assert!(parse_binding("root acme")
            .unwrap_err()
            .contains("unknown role"));
        assert!(parse_binding("tenant_admin")
            .unwrap_err()
            .contains("ROLE TENANT"));
        assert!(parse_binding("tenant_admin acme/")
            .unwrap_err()
            .contains("bad scope"));
    }
}
