//! Tool-call decisions: per-agent scopes and per-tenant Cedar policies, their published
//! versions (validated before they are stored, immutable, rolled back by publishing a copy),
//! the compiled rules cached in memory until a publish replaces them, and `evaluate`, which
//! turns one call into allow, deny or escalate with the reason, the deciding policies and
//! the versions that decided. Order: the call's shape, then the scopes (the outer bound:
//! outside them is denied, whatever a policy says), then Cedar (a forbid beats any permit;
//! a forbid marked `@escalate` asks a person; any evaluation error denies).

pub mod cedar;
pub mod escalations;

use crate::store::{AgentKey, Store, StoreError};
use agenfleet_protocol::policy::{
    parse_call, PolicyProblem, PolicyVersion, Scopes, ToolCall, Verdict, VersionHistory,
};
use agenfleet_protocol::ApiError;
use cedar::{Cedar, Compiled};
use rusqlite::params;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Longest scopes or policy text accepted.
pub const MAX_TEXT_BYTES: usize = 256 * 1024;

/// One evaluation, before any person or audit record.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub verdict: Verdict,
    pub reason: String,
    pub policies: Vec<String>,
    pub policy_version: String,
    /// For `Escalate`: how long the call waits for a person.
    pub timeout_ms: u64,
    /// SHA-256 over tenant, agent, tool and the canonical arguments.
    pub request_hash: String,
    /// SHA-256 of the arguments alone (what the audit record carries).
    pub args_digest: String,
    pub latency_us: u64,
}

struct TenantRules {
    version: u32,
    hash: String,
    compiled: Compiled,
}

struct AgentRules {
    version: u32,
    hash: String,
    scopes: Scopes,
    uid: cedar_policy::EntityUid,
    entities: cedar_policy::Entities,
}

/// Which kind of versioned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Scopes,
    Policy,
}

pub struct PolicyEngine {
    cedar: Cedar,
    store: Store,
    tenants: RwLock<HashMap<String, Arc<TenantRules>>>,
    agents: RwLock<HashMap<AgentKey, Arc<AgentRules>>>,
    pub escalations: Arc<escalations::Escalations>,
}

pub fn sha256_hex(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    lower_hex(&h.finalize())
}

/// Lower-case hex of `bytes`, by table: every decision hashes its request twice, and the
/// generic `hex::encode` iterator costs as much as a hash here when it is not inlined.
fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    out
}

fn short(h: &str) -> &str {
    &h[..h.len().min(8)]
}

fn store_err(e: StoreError) -> ApiError {
    ApiError::internal(format!("policy store: {e}"))
}

impl PolicyEngine {
    /// `reminder_ms`: reviewers are reminded of a pending escalation this long before its
    /// deadline (0: never).
    pub fn new(
        store: Store,
        approval_ttl_ms: u64,
        reminder_ms: u64,
    ) -> Result<PolicyEngine, String> {
        Ok(PolicyEngine {
            cedar: Cedar::new()?,
            escalations: Arc::new(escalations::Escalations::new(
                approval_ttl_ms,
                reminder_ms,
                Some(store.clone()),
            )),
            store,
            tenants: RwLock::new(HashMap::new()),
            agents: RwLock::new(HashMap::new()),
        })
    }

    /// Checks scopes text; answers the parsed scopes or the problem with its line.
    pub fn check_scopes(text: &str) -> Result<Scopes, ApiError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(ApiError::invalid(format!(
                "scopes too large: {} bytes (at most {MAX_TEXT_BYTES})",
                text.len()
            )));
        }
        Scopes::parse(text).map_err(|e| ApiError::invalid(format!("invalid scopes: {e}")))
    }

    /// Every problem of a policy text (empty: it compiles and validates).
    pub fn check_policy(&self, text: &str) -> Vec<PolicyProblem> {
        self.compile(text).err().unwrap_or_default()
    }

    /// Compiles a policy text (e.g. a `policy test` candidate), or answers its problems.
    pub fn compile(&self, text: &str) -> Result<Compiled, Vec<PolicyProblem>> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(vec![PolicyProblem {
                line: None,
                policy: None,
                message: format!(
                    "policy too large: {} bytes (at most {MAX_TEXT_BYTES})",
                    text.len()
                ),
            }]);
        }
        self.cedar.compile(text)
    }

    /// Every version of an agent's scopes or a tenant's policy. Reads go through the
    /// tenant-bound handle.
    pub fn history(
        &self,
        kind: Kind,
        tenant: &str,
        agent: &str,
    ) -> Result<VersionHistory, ApiError> {
        let versions = self
            .store
            .tenant(tenant)
            .with(|c| {
                let (sql, args): (&str, Vec<&str>) = match kind {
                    Kind::Scopes => (
                        "SELECT version, hash, text, created_ms, author, note FROM t_scope_versions WHERE agent = ?1 ORDER BY version",
                        vec![agent],
                    ),
                    Kind::Policy => (
                        "SELECT version, hash, text, created_ms, author, note FROM t_policy_versions ORDER BY version",
                        vec![],
                    ),
                };
                let mut st = c.prepare(sql)?;
                let rows = st.query_map(rusqlite::params_from_iter(args), |r| {
                    Ok(PolicyVersion {
                        version: r.get(0)?,
                        hash: r.get(1)?,
                        text: r.get(2)?,
                        created_ms: r.get::<_, i64>(3)? as u64,
                        author: r.get(4)?,
                        note: r.get(5)?,
                    })
                })?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(store_err)?;
        Ok(VersionHistory {
            current: versions.last().map(|v| v.version).unwrap_or(0),
            versions,
        })
    }

    /// Validates `text` and stores it as the next version; the rules in force change at
    /// once (the cache entry is dropped).
    pub fn publish(
        &self,
        kind: Kind,
        tenant: &str,
        agent: &str,
        text: &str,
        author: &str,
        note: &str,
    ) -> Result<PolicyVersion, ApiError> {
        match kind {
            Kind::Scopes => {
                Self::check_scopes(text)?;
            }
            Kind::Policy => {
                let problems = self.check_policy(text);
                if !problems.is_empty() {
                    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    return Err(ApiError::invalid(format!(
                        "invalid policy ({} problem(s)): {}",
                        problems.len(),
                        list.join("; ")
                    )));
                }
            }
        }
        let hash = sha256_hex(&[text]);
        let created_ms = agenfleet_protocol::now_ms();
        let version = self
            .store
            .tenant(tenant)
            .with(|c| {
                let tx = c.transaction()?;
                let next: u32 = match kind {
                    Kind::Scopes => tx.query_row(
                        "SELECT COALESCE(MAX(version), 0) + 1 FROM t_scope_versions WHERE agent = ?1",
                        params![agent],
                        |r| r.get(0),
                    )?,
                    Kind::Policy => tx.query_row(
                        "SELECT COALESCE(MAX(version), 0) + 1 FROM t_policy_versions",
                        [],
                        |r| r.get(0),
                    )?,
                };
                match kind {
                    Kind::Scopes => tx.execute(
                        "INSERT INTO t_scope_versions (agent, version, text, hash, created_ms, author, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![agent, next, text, hash, created_ms as i64, author, note],
                    )?,
                    Kind::Policy => tx.execute(
                        "INSERT INTO t_policy_versions (version, text, hash, created_ms, author, note) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![next, text, hash, created_ms as i64, author, note],
                    )?,
                };
                tx.commit()?;
                Ok(next)
            })
            .map_err(store_err)?;
        match kind {
            Kind::Scopes => {
                self.forget_agent(&AgentKey {
                    tenant: tenant.into(),
                    name: agent.into(),
                });
            }
            Kind::Policy => {
                self.tenants
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(tenant);
            }
        }
        Ok(PolicyVersion {
            version,
            hash,
            text: text.into(),
            created_ms,
            author: author.into(),
            note: note.into(),
        })
    }

    /// Drops what is cached about an agent (its scopes changed, or it was deleted).
    pub fn forget_agent(&self, key: &AgentKey) {
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }

    fn tenant_rules(&self, tenant: &str) -> Result<Arc<TenantRules>, String> {
        if let Some(r) = self
            .tenants
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(tenant)
        {
            return Ok(r.clone());
        }
        let h = self
            .history(Kind::Policy, tenant, "")
            .map_err(|e| e.message)?;
        let (version, hash, text) = match h.current() {
            Some(v) => (v.version, v.hash.clone(), v.text.clone()),
            None => (0, String::new(), String::new()),
        };
        let compiled = self.cedar.compile(&text).map_err(|p| {
            format!(
                "the stored policy v{version} no longer compiles: {}",
                p.first().map(|x| x.to_string()).unwrap_or_default()
            )
        })?;
        let rules = Arc::new(TenantRules {
            version,
            hash,
            compiled,
        });
        self.tenants
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tenant.to_string(), rules.clone());
        Ok(rules)
    }

    fn agent_rules(&self, key: &AgentKey, project: &str) -> Result<Arc<AgentRules>, String> {
        if let Some(r) = self
            .agents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
        {
            return Ok(r.clone());
        }
        let h = self
            .history(Kind::Scopes, &key.tenant, &key.name)
            .map_err(|e| e.message)?;
        let (version, hash, scopes) = match h.current() {
            Some(v) => (
                v.version,
                v.hash.clone(),
                Scopes::parse(&v.text)
                    .map_err(|e| format!("stored scopes v{} do not parse: {e}", v.version))?,
            ),
            None => (0, String::new(), Scopes::default()),
        };
        let (uid, entities) = self.cedar.agent_entities(&key.tenant, project, &key.name)?;
        let rules = Arc::new(AgentRules {
            version,
            hash,
            scopes,
            uid,
            entities,
        });
        self.agents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), rules.clone());
        Ok(rules)
    }

    /// The tools an agent's scopes in force grant.
    /// Whether the rule of agent `key`'s scopes that admits this request lets the host
    /// resolve to a private address.
    pub fn allows_private(
        &self,
        key: &AgentKey,
        project: &str,
        request: (&str, &str, u16, &str),
    ) -> bool {
        let (method, host, port, path) = request;
        self.agent_rules(key, project)
            .is_ok_and(|r| r.scopes.allows_private(host, port, method, path))
    }

    pub fn granted_tools(&self, key: &AgentKey, project: &str) -> Vec<String> {
        self.agent_rules(key, project)
            .map(|r| r.scopes.tools.clone())
            .unwrap_or_default()
    }

    /// Decides one call of agent `key` (in `project`) against its scopes and its tenant's
    /// policy in force — or, for `policy test`, against a compiled `candidate` instead.
    pub fn evaluate(
        &self,
        key: &AgentKey,
        project: &str,
        call: &ToolCall,
        candidate: Option<&Compiled>,
    ) -> Evaluation {
        let t0 = std::time::Instant::now();
        let raw_hash = || sha256_hex(&[&key.tenant, &key.name, &call.tool, &call.args_json]);
        let mut ev = Evaluation {
            verdict: Verdict::Deny,
            reason: String::new(),
            policies: Vec::new(),
            policy_version: String::new(),
            timeout_ms: 0,
            request_hash: String::new(),
            args_digest: String::new(),
            latency_us: 0,
        };
        let finish = |mut ev: Evaluation| {
            ev.latency_us = t0.elapsed().as_micros() as u64;
            ev
        };
        let parsed = match parse_call(call) {
            Ok(p) => p,
            Err(why) => {
                ev.request_hash = raw_hash();
                ev.args_digest = sha256_hex(&[&call.args_json]);
                ev.reason = format!("malformed call: {why}");
                return finish(ev);
            }
        };
        ev.request_hash =
            sha256_hex(&[&key.tenant, &key.name, &parsed.tool, &parsed.canonical_args]);
        ev.args_digest = sha256_hex(&[&parsed.canonical_args]);
        let agent = match self.agent_rules(key, project) {
            Ok(a) => a,
            Err(e) => {
                ev.reason = format!("cannot load the agent's scopes (denied): {e}");
                return finish(ev);
            }
        };
        let tenant;
        let (label, compiled) = match candidate {
            Some(c) => ("candidate".to_string(), c),
            None => match self.tenant_rules(&key.tenant) {
                Ok(t) => {
                    tenant = t;
                    (
                        format!("policy v{} {}", tenant.version, short(&tenant.hash)),
                        &tenant.compiled,
                    )
                }
                Err(e) => {
                    ev.reason = format!("cannot load the tenant's policy (denied): {e}");
                    return finish(ev);
                }
            },
        };
        finish(self.decide(ev, &agent, compiled, label, &parsed))
    }

    fn decide(
        &self,
        mut ev: Evaluation,
        agent: &AgentRules,
        compiled: &Compiled,
        policy_label: String,
        parsed: &agenfleet_protocol::policy::ParsedCall,
    ) -> Evaluation {
        ev.policy_version = format!(
            "scopes v{} {} · {policy_label}",
            agent.version,
            short(&agent.hash)
        );
        if let Err(why) = agent.scopes.permits(parsed) {
            ev.reason = why;
            ev.policies = vec!["scopes".into()];
            return ev;
        }
        let o = self
            .cedar
            .evaluate(compiled, &agent.uid, &agent.entities, parsed);
        ev.verdict = o.verdict;
        ev.reason = o.reason;
        ev.policies = o.policies;
        ev.timeout_ms = o.timeout_ms;
        ev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hashes_are_lower_hex_sha256() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        // sha256("a\0") — the parts are NUL-separated.
        assert_eq!(
            sha256_hex(&["a"]),
            hex::encode(Sha256::digest(b"a\0")),
            "the same digest as the generic encoder"
        );
    }

    fn engine() -> (PolicyEngine, AgentKey) {
        let store = Store::open_in_memory().expect("store");
        store
            .tenant("acme")
            .with(|c| {
                c.execute_batch(
                    "INSERT INTO t_tenants (created_at_ms) VALUES (0);
                     INSERT INTO t_projects (id, created_at_ms) VALUES ('web', 0);
                     INSERT INTO t_agents (name, project_id, spec_json, desired, state, created_at_ms)
                        VALUES ('bot', 'web', '{}', 'running', 'running', 0);",
                )
            })
            .expect("seed");
        let key = AgentKey {
            tenant: "acme".into(),
            name: "bot".into(),
        };
        (PolicyEngine::new(store, 60_000, 0).expect("engine"), key)
    }

    fn call(tool: &str, args: serde_json::Value) -> ToolCall {
        ToolCall {
            tool: tool.into(),
            args_json: args.to_string(),
        }
    }

    #[test]
    fn nothing_is_allowed_without_scopes_and_publishing_takes_effect_at_once() {
        let (e, key) = engine();
        let c = call("read_file", serde_json::json!({"path": "/data/a"}));
        let ev = e.evaluate(&key, "web", &c, None);
        assert_eq!(ev.verdict, Verdict::Deny);
        assert!(ev.reason.contains("not in the agent's scopes"), "{ev:?}");
        e.publish(
            Kind::Scopes,
            "acme",
            "bot",
            "tools = [\"read_file\"]\nread_paths = [\"/data/\"]\n",
            "alice",
            "",
        )
        .expect("publish");
        let ev = e.evaluate(&key, "web", &c, None);
        assert_eq!(ev.verdict, Verdict::Allow, "{ev:?}");
        assert!(ev.policy_version.starts_with("scopes v1"), "{ev:?}");
        let v2 = e
            .publish(Kind::Policy, "acme", "", "@id(\"ro\") forbid(principal, action, resource) when { context.path like \"/data/a*\" };", "alice", "")
            .expect("policy");
        assert_eq!(v2.version, 1);
        let ev = e.evaluate(&key, "web", &c, None);
        assert_eq!(ev.verdict, Verdict::Deny);
        assert_eq!(ev.policies, vec!["ro"]);
        // The same arguments in another order are the same request.
        let a = e.evaluate(
            &key,
            "web",
            &call("x", serde_json::json!({"a": 1, "b": 2})),
            None,
        );
        let b = e.evaluate(
            &key,
            "web",
            &ToolCall {
                tool: "x".into(),
                args_json: "{\"b\":2, \"a\":1}".into(),
            },
            None,
        );
        assert_eq!(a.request_hash, b.request_hash);
    }

    #[test]
    fn invalid_texts_are_refused_and_nothing_is_stored() {
        let (e, key) = engine();
        let err = e
            .publish(
                Kind::Scopes,
                "acme",
                "bot",
                "tools = [\"http_request\"]\n[[http]]\nhost = \"bad host\"\n",
                "a",
                "",
            )
            .unwrap_err();
        assert!(err.message.contains("line 3"), "{err}");
        let err = e
            .publish(
                Kind::Policy,
                "acme",
                "",
                "forbid(principal, action, resource) when { context.nope };",
                "a",
                "",
            )
            .unwrap_err();
        assert!(err.message.contains("invalid policy"), "{err}");
        assert_eq!(e.history(Kind::Scopes, "acme", "bot").unwrap().current, 0);
        assert_eq!(e.history(Kind::Policy, "acme", "").unwrap().current, 0);
        assert_eq!(key.name, "bot");
    }
}
