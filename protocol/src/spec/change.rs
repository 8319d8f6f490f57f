//! Changing an agent's spec in place (`agents apply`): which fields changed between the
//! spec in force and a new one, whether that needs a new container, what cannot change
//! at all, the digest a container carries of the fields it was made from, and the spec as
//! text for people (the diff `apply` shows, `agents spec`). The daemon and the CLI both
//! decide with these functions, so what the CLI announces is what the daemon does.

use super::{AgentSpec, Budget, RestartSpec};
use serde::{Deserialize, Serialize};

/// Fields a running agent takes up without a new container: the restart policy (its
/// supervisor's), the model budget and fallbacks (decided by the gateway per call), the
/// description and how it takes runs (the daemon's queue). Every other field shapes the container or what the init does in it.
pub const IN_PLACE_FIELDS: &[&str] = &[
    "restart",
    "budget",
    "model_fallbacks",
    "description",
    "runs",
];

/// What a new spec changes against the one in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecChange {
    /// The top-level fields that differ, in the spec's order.
    pub fields: Vec<String>,
    /// Whether the change needs a new container (one field outside `IN_PLACE_FIELDS`).
    pub recreate: bool,
}

impl SpecChange {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// "in place (restart, budget)", "new container (image, env)", "no change".
    pub fn describe(&self) -> String {
        if self.fields.is_empty() {
            return "no change".into();
        }
        let how = if self.recreate {
            "new container"
        } else {
            "in place"
        };
        format!("{how} ({})", self.fields.join(", "))
    }
}

/// How `apply` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApplyAction {
    /// No such agent: it was created (version 1).
    Created,
    /// Same spec as the one in force: nothing stored, nothing touched.
    Unchanged,
    /// A new version taken up without touching the container.
    InPlace,
    /// A new version with a new container.
    Recreated,
}

impl ApplyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyAction::Created => "created",
            ApplyAction::Unchanged => "unchanged",
            ApplyAction::InPlace => "updated in place",
            ApplyAction::Recreated => "updated with a new container",
        }
    }
}

/// One stored version of an agent's spec (versions are immutable; a rollback stores a copy
/// of an older one as the next).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecVersion {
    pub version: u32,
    pub spec: AgentSpec,
    /// `AgentSpec::hash` of `spec`.
    pub hash: String,
    pub created_ms: u64,
    /// The operator who stored it.
    pub author: String,
    /// What it changed against the version before ("created", "in place (restart)",
    /// "rollback to 2: new container (image)").
    pub note: String,
}

impl SpecVersion {
    /// The version without its spec (what a history lists).
    pub fn info(&self) -> SpecVersionInfo {
        SpecVersionInfo {
            version: self.version,
            hash: self.hash.clone(),
            created_ms: self.created_ms,
            author: self.author.clone(),
            note: self.note.clone(),
        }
    }
}

/// One version as a history lists it (a spec with its files can be megabytes: one
/// version's spec is asked for by itself, `agents spec --version N`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecVersionInfo {
    pub version: u32,
    pub hash: String,
    pub created_ms: u64,
    pub author: String,
    pub note: String,
}

/// Every version of an agent's spec; `current` is the one in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecHistory {
    pub agent: String,
    pub current: u32,
    pub versions: Vec<SpecVersionInfo>,
}

/// What `apply` (or `rollback`) answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyOutcome {
    pub action: ApplyAction,
    /// The version in force now.
    pub version: u32,
    pub change: SpecChange,
    pub agent: crate::types::AgentView,
}

impl AgentSpec {
    /// `tenant/name`.
    pub fn qualified_name(&self) -> String {
        format!("{}/{}", self.tenant, self.name)
    }

    /// What `new` (self) changes against `old`, or why it cannot be applied to the agent
    /// `old` describes: the identity (`tenant`, `name`) and `project` cannot change, a
    /// workspace can only grow (it holds the agent's data).
    pub fn change_from(&self, old: &AgentSpec) -> Result<SpecChange, super::SpecError> {
        if self.tenant != old.tenant || self.name != old.name {
            return Err(super::err(
                "name",
                format!(
                    "this spec is for {}/{}, not {}/{}",
                    self.tenant, self.name, old.tenant, old.name
                ),
            ));
        }
        if self.project != old.project {
            return Err(super::err(
                "project",
                format!(
                    "an agent cannot move from project `{}` to `{}` (its roles and scopes are the project's); create a new agent there",
                    old.project, self.project
                ),
            ));
        }
        if self.runs.kind != old.runs.kind {
            return Err(super::err(
                "runs.kind",
                format!(
                    "an agent cannot change from a {} to a {} (one runs a container, the other one per run); create a new agent",
                    old.runs.kind.as_str(),
                    self.runs.kind.as_str()
                ),
            ));
        }
        match (old.workspace, self.workspace) {
            (Some(_), None) => return Err(super::err(
                "workspace",
                "removing the workspace would drop the agent's data; delete the agent to remove it",
            )),
            (Some(a), Some(b)) if b.size_mb < a.size_mb => {
                return Err(super::err(
                    "workspace.size_mb",
                    format!(
                        "a workspace can grow, not shrink ({} → {} MiB): its data might not fit",
                        a.size_mb, b.size_mb
                    ),
                ))
            }
            _ => {}
        }
        let a = fields_json(old);
        let b = fields_json(self);
        let fields: Vec<String> = a
            .iter()
            .zip(b.iter())
            .filter(|(x, y)| x.1 != y.1)
            .map(|(x, _)| x.0.to_string())
            .collect();
        let recreate = fields
            .iter()
            .any(|f| !IN_PLACE_FIELDS.contains(&f.as_str()));
        Ok(SpecChange { fields, recreate })
    }

    /// A digest (hex) of what the agent's container is made from: the spec without the
    /// fields a running agent takes up in place. Recorded on the container's labels; a
    /// container whose digest differs from its spec's is replaced.
    pub fn container_hash(&self) -> String {
        let mut s = self.clone();
        s.restart = RestartSpec::default();
        s.budget = Budget::default();
        s.model_fallbacks.clear();
        s.description.clear();
        s.runs = super::RunsSpec::default();
        s.hash()
    }

    /// The spec as TOML for people: the fields in the spec's order (nested keys sorted), a
    /// file's bytes shown by size and SHA-256 rather than as base64, so a diff of two
    /// versions says which file changed. The order is fixed here, not left to the JSON
    /// map's (which depends on crate features another crate may turn on).
    pub fn to_display_toml(&self) -> String {
        let mut fields = fields_json(self);
        for (name, v) in fields.iter_mut() {
            if *name == "files" {
                if let Some(files) = v.as_array_mut() {
                    for (f, spec) in files.iter_mut().zip(&self.files) {
                        if let Some(obj) = f.as_object_mut() {
                            obj.insert(
                                "content".into(),
                                serde_json::Value::String(format!(
                                    "({} bytes, sha256 {})",
                                    spec.content.len(),
                                    crate::types::FileView::of(spec).sha256
                                )),
                            );
                        }
                    }
                }
            }
            drop_nulls(v);
        }
        fields.retain(|(_, v)| !v.is_null());
        toml::to_string(&Ordered(&fields))
            .unwrap_or_else(|e| format!("# cannot render the spec: {e}\n"))
    }
}

/// Top-level fields in the given order, every map below them with its keys sorted.
struct Ordered<'a>(&'a [(&'static str, serde_json::Value)]);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            m.serialize_entry(k, &Sorted(v))?;
        }
        m.end()
    }
}

struct Sorted<'a>(&'a serde_json::Value);

impl Serialize for Sorted<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self.0 {
            serde_json::Value::Object(obj) => {
                let mut keys: Vec<(&String, &serde_json::Value)> = obj.iter().collect();
                keys.sort_by(|a, b| a.0.cmp(b.0));
                let mut m = s.serialize_map(Some(keys.len()))?;
                for (k, v) in keys {
                    m.serialize_entry(k, &Sorted(v))?;
                }
                m.end()
            }
            serde_json::Value::Array(a) => s.collect_seq(a.iter().map(Sorted)),
            other => other.serialize(s),
        }
    }
}

/// TOML has no null: an absent optional table is left out.
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Each top-level field's name and JSON value, in the spec's order. The destructuring
/// names every field: a field added to `AgentSpec` does not compile until it is here.
fn fields_json(s: &AgentSpec) -> Vec<(&'static str, serde_json::Value)> {
    fn j<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
    }
    let AgentSpec {
        name,
        tenant,
        project,
        description,
        image,
        command,
        workdir,
        env,
        health,
        files,
        workspace,
        limits,
        restart,
        network,
        workload,
        credentials,
        credential_refresh,
        model_fallbacks,
        providers,
        connections,
        budget,
        runs,
        placement,
    } = s;
    vec![
        ("name", j(name)),
        ("tenant", j(tenant)),
        ("project", j(project)),
        ("description", j(description)),
        ("image", j(image)),
        ("command", j(command)),
        ("workdir", j(workdir)),
        ("env", j(env)),
        ("health", j(health)),
        ("files", j(files)),
        ("workspace", j(workspace)),
        ("limits", j(limits)),
        ("restart", j(restart)),
        ("network", j(network)),
        ("workload", j(workload)),
        ("credentials", j(credentials)),
        ("credential_refresh", j(credential_refresh)),
        ("model_fallbacks", j(model_fallbacks)),
        ("providers", j(providers)),
        ("connections", j(connections)),
        ("budget", j(budget)),
        ("runs", j(runs)),
        ("placement", j(placement)),
    ]
}
