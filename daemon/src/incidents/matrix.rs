//! The responsibility matrix as data: `assets/responsibility.toml` (the product document's
//! matrix and incident-response table, plus our own scenarios) and an operator's optional
//! extra file, parsed and validated at start. An unknown party, an unknown severity or
//! signal, or a scenario id defined twice is refused with the file and the scenario named.

use agenfleet_protocol::incidents::{Area, Matrix, Party, Scenario, Severity};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

pub const BUILTIN: &str = include_str!("../../../assets/responsibility.toml");

/// The signals the detectors raise (and `manual`: only a person opens these).
pub const SIGNALS: &[&str] = &[
    "manual",
    "daemon_down",
    "cross_tenant",
    "cross_agent",
    "model_outage",
    "rate_limit_no_fallback",
    "rate_limit_with_fallback",
    "tool_malicious",
    "tool_down",
    "tool_timeout",
    "workflow_failed",
    "audit_closed",
    "excessive_permissions",
    "crash_loop",
    "oom_kill",
    "engine_down",
    "vault_sealed",
    "audit_invalid",
    "denial_spike",
    "key_rejected",
    "budget_exceeded",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    party: Vec<PartyRow>,
    #[serde(default)]
    area: Vec<AreaRow>,
    #[serde(default)]
    scenario: Vec<ScenarioRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartyRow {
    id: String,
    #[allow(dead_code)]
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AreaRow {
    name: String,
    owner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioRow {
    id: String,
    title: String,
    #[serde(default = "ours")]
    source: String,
    primary: String,
    #[serde(default)]
    co_owners: Vec<String>,
    severity: String,
    #[serde(default = "manual")]
    signal: String,
    next_step: String,
}

fn ours() -> String {
    "operator".into()
}
fn manual() -> String {
    "manual".into()
}

fn party(origin: &str, what: &str, s: &str) -> Result<Party, String> {
    Party::parse(s).ok_or_else(|| {
        format!(
            "{origin}: {what}: unknown party `{s}` (one of platform, model_provider, tool_provider, client)"
        )
    })
}

/// Adds the rows of one file (`origin` names it in errors) to `m`.
fn merge(m: &mut Matrix, origin: &str, text: &str) -> Result<(), String> {
    let f: File = toml::from_str(text).map_err(|e| format!("{origin}: {}", e.message().trim()))?;
    for p in &f.party {
        party(origin, &format!("party `{}`", p.id), &p.id)?;
    }
    for a in f.area {
        let owner = party(origin, &format!("area `{}`", a.name), &a.owner)?;
        m.areas.push(Area {
            name: a.name,
            owner,
        });
    }
    let mut seen: HashSet<String> = m.scenarios.iter().map(|s| s.id.clone()).collect();
    for s in f.scenario {
        let what = format!("scenario `{}`", s.id);
        if s.id.is_empty() || s.title.trim().is_empty() || s.next_step.trim().is_empty() {
            return Err(format!(
                "{origin}: {what}: id, title and next_step are required"
            ));
        }
        if !seen.insert(s.id.clone()) {
            return Err(format!("{origin}: {what} is defined twice"));
        }
        let primary = party(origin, &what, &s.primary)?;
        let co_owners = s
            .co_owners
            .iter()
            .map(|c| party(origin, &what, c))
            .collect::<Result<Vec<_>, _>>()?;
        let severity = Severity::parse(&s.severity).ok_or_else(|| {
            format!(
                "{origin}: {what}: unknown severity `{}` (critical, error, warning, info)",
                s.severity
            )
        })?;
        if !SIGNALS.contains(&s.signal.as_str()) {
            return Err(format!(
                "{origin}: {what}: unknown signal `{}` (one of {})",
                s.signal,
                SIGNALS.join(", ")
            ));
        }
        m.scenarios.push(Scenario {
            id: s.id,
            title: s.title,
            source: s.source,
            primary,
            co_owners,
            severity,
            signal: s.signal,
            next_step: s.next_step,
        });
    }
    Ok(())
}

/// The built-in matrix, extended by `extra` (an operator's file) when given.
pub fn load(extra: Option<&Path>) -> Result<Matrix, String> {
    let mut m = Matrix {
        areas: Vec::new(),
        scenarios: Vec::new(),
    };
    merge(&mut m, "assets/responsibility.toml", BUILTIN)?;
    if let Some(p) = extra {
        let text = crate::config::read_text_bounded(p)
            .map_err(|e| format!("cannot read the incident matrix {}: {e}", p.display()))?;
        merge(&mut m, &p.display().to_string(), &text)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_tables_are_all_there() {
        let m = load(None).expect("the built-in matrix is valid");
        assert_eq!(m.areas.len(), 19, "every row of the responsibility matrix");
        let seed: Vec<&Scenario> = m.scenarios.iter().filter(|s| s.source == "seed").collect();
        assert_eq!(seed.len(), 10, "every row of the incident-response table");
        let owner = |id: &str| {
            let s = m.scenarios.iter().find(|s| s.id == id).expect(id);
            (s.primary, s.co_owners.clone())
        };
        assert_eq!(
            owner("webhook-down"),
            (Party::ToolProvider, vec![Party::Client])
        );
        assert_eq!(owner("rate-limit-no-fallback"), (Party::Client, vec![]));
        assert_eq!(owner("model-provider-down"), (Party::ModelProvider, vec![]));
        assert_eq!(owner("cross-tenant-leak"), (Party::Platform, vec![]));
        assert_eq!(owner("workflow-failed"), (Party::Client, vec![]));
        assert_eq!(owner("audit-closed"), (Party::Platform, vec![]));
        for signal in SIGNALS.iter().filter(|s| **s != "manual") {
            assert!(
                m.scenarios.iter().any(|s| &s.signal == signal),
                "no scenario for signal {signal}"
            );
        }
    }

    #[test]
    fn bad_files_are_refused_with_the_row_named() {
        let mut m = load(None).unwrap();
        let e = merge(&mut m, "x.toml", "[[scenario]]\nid = \"a\"\ntitle = \"t\"\nprimary = \"nobody\"\nseverity = \"error\"\nnext_step = \"n\"\n").unwrap_err();
        assert!(
            e.contains("x.toml: scenario `a`: unknown party `nobody`"),
            "{e}"
        );
        let e = merge(&mut m, "x.toml", "[[scenario]]\nid = \"crash-loop\"\ntitle = \"t\"\nprimary = \"client\"\nseverity = \"error\"\nnext_step = \"n\"\n").unwrap_err();
        assert!(e.contains("scenario `crash-loop` is defined twice"), "{e}");
        let e = merge(&mut m, "x.toml", "[[scenario]]\nid = \"b\"\ntitle = \"t\"\nprimary = \"client\"\nseverity = \"urgent\"\nnext_step = \"n\"\n").unwrap_err();
        assert!(e.contains("unknown severity `urgent`"), "{e}");
        let ok = merge(&mut m, "x.toml", "[[scenario]]\nid = \"payroll-down\"\ntitle = \"Payroll API down\"\nprimary = \"tool_provider\"\nco_owners = [\"client\"]\nseverity = \"error\"\nnext_step = \"Call payroll.\"\n");
        assert!(ok.is_ok(), "{ok:?}");
    }
}
