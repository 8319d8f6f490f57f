//! Cedar: the schema (kept in `assets/policy/`), the compilation and validation of a
//! tenant's policy text with problems located by line, the annotations we give meaning
//! (`@id`, `@escalate`, `@timeout_ms`), and the evaluation of one call. A built-in permit
//! admits whatever the agent's scopes admit (scopes are checked first, as the outer bound),
//! so tenant policies mostly say what to forbid or escalate. Any evaluation error denies.

use agenfleet_protocol::policy::{ParsedCall, PolicyProblem, Target, Verdict};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityUid, PolicyId, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};
use miette::Diagnostic;
use std::collections::{HashMap, HashSet};
use std::str::FromStr;

/// The schema policies are validated against.
pub const SCHEMA_TEXT: &str = include_str!("../../../assets/policy/schema.cedarschema");

/// Always part of the set: admits what the scopes admitted.
const BUILTIN_PERMIT: &str =
    "@id(\"scopes\") permit (principal, action == AgenFleet::Action::\"call\", resource);";
const BUILTIN_ID: &str = "agenfleet-scopes";

/// How long an escalated call waits for a person when the policy does not say.
pub const DEFAULT_ESCALATION_TIMEOUT_MS: u64 = 60_000;
const MAX_ESCALATION_TIMEOUT_MS: u64 = 3_600_000;

/// What we know of one policy beyond Cedar: its name and whether it escalates.
#[derive(Debug, Clone)]
struct PolicyMeta {
    name: String,
    escalate: Option<String>,
    timeout_ms: u64,
    forbid: bool,
}

/// A tenant's policies, compiled and validated.
pub struct Compiled {
    set: PolicySet,
    meta: HashMap<PolicyId, PolicyMeta>,
}

/// One evaluation's outcome.
#[derive(Debug, Clone)]
pub struct CedarOutcome {
    pub verdict: Verdict,
    pub reason: String,
    pub policies: Vec<String>,
    /// For `Escalate`: how long to wait for a person.
    pub timeout_ms: u64,
}

pub struct Cedar {
    schema: Schema,
    validator: Validator,
    authorizer: Authorizer,
    action: EntityUid,
    tool_type: cedar_policy::EntityTypeName,
}

fn line_of(text: &str, offset: usize) -> u32 {
    text[..offset.min(text.len())].matches('\n').count() as u32 + 1
}

fn problem_of(text: &str, d: &dyn Diagnostic, policy: Option<String>) -> PolicyProblem {
    let line = d
        .labels()
        .and_then(|mut l| l.next())
        .map(|l| line_of(text, l.offset()));
    let mut message = d.to_string();
    if let Some(help) = d.help() {
        message = format!("{message} ({help})");
    }
    PolicyProblem {
        line,
        policy,
        message,
    }
}

fn uid(ty: &str, id: &str) -> Result<EntityUid, String> {
    let ty = cedar_policy::EntityTypeName::from_str(ty).map_err(|e| e.to_string())?;
    let id = cedar_policy::EntityId::from_str(id).map_err(|e| e.to_string())?;
    Ok(EntityUid::from_type_name_and_id(ty, id))
}

impl Cedar {
    pub fn new() -> Result<Cedar, String> {
        let (schema, _) = Schema::from_cedarschema_str(SCHEMA_TEXT)
            .map_err(|e| format!("the built-in Cedar schema does not parse: {e}"))?;
        let validator = Validator::new(schema.clone());
        let action = uid("AgenFleet::Action", "call")?;
        let tool_type =
            cedar_policy::EntityTypeName::from_str("AgenFleet::Tool").map_err(|e| e.to_string())?;
        let c = Cedar {
            schema,
            validator,
            authorizer: Authorizer::new(),
            action,
            tool_type,
        };
        // The built-in permit alone must compile against the schema.
        c.compile("")
            .map_err(|p| format!("the built-in policy does not validate: {p:?}"))?;
        Ok(c)
    }

    /// Parses, validates (strict mode, against the schema) and checks our annotations.
    /// Every problem is answered, each with its line where Cedar gives one.
    pub fn compile(&self, text: &str) -> Result<Compiled, Vec<PolicyProblem>> {
        let parsed = PolicySet::from_str(text).map_err(|errs| {
            errs.iter()
                .map(|e| problem_of(text, e, None))
                .collect::<Vec<_>>()
        })?;
        let mut problems = Vec::new();
        let result = self.validator.validate(&parsed, ValidationMode::Strict);
        for e in result.validation_errors() {
            problems.push(problem_of(text, e, Some(e.policy_id().to_string())));
        }
        let mut set = PolicySet::new();
        let mut meta = HashMap::new();
        let mut names = HashSet::new();
        for p in parsed.policies() {
            let name = p
                .annotation("id")
                .map(str::to_string)
                .unwrap_or_else(|| p.id().to_string());
            let forbid = p.effect() == cedar_policy::Effect::Forbid;
            let at = p
                .annotation("id")
                .and_then(|id| text.find(&format!("\"{id}\"")))
                .map(|off| line_of(text, off));
            if !names.insert(name.clone()) || name == "scopes" {
                problems.push(PolicyProblem {
                    line: at,
                    policy: Some(name.clone()),
                    message: "two policies share this @id (or it is the reserved `scopes`)".into(),
                });
            }
            let escalate = p.annotation("escalate").map(|r| {
                if r.is_empty() {
                    format!("policy {name} asks for a person")
                } else {
                    r.to_string()
                }
            });
            if escalate.is_some() && !forbid {
                problems.push(PolicyProblem {
                    line: at,
                    policy: Some(name.clone()),
                    message: "@escalate belongs on a forbid (a forbid that asks a person instead of denying)".into(),
                });
            }
            let timeout_ms = match p.annotation("timeout_ms") {
                None => DEFAULT_ESCALATION_TIMEOUT_MS,
                Some(t) => match t.parse::<u64>() {
                    Ok(ms)
                        if (1..=MAX_ESCALATION_TIMEOUT_MS).contains(&ms) && escalate.is_some() =>
                    {
                        ms
                    }
                    _ => {
                        problems.push(PolicyProblem {
                            line: at,
                            policy: Some(name.clone()),
                            message: format!(
                                "@timeout_ms(\"{t}\") must be a whole number of ms between 1 and {MAX_ESCALATION_TIMEOUT_MS}, on an @escalate policy"
                            ),
                        });
                        DEFAULT_ESCALATION_TIMEOUT_MS
                    }
                },
            };
            let policy = p.clone();
            meta.insert(
                policy.id().clone(),
                PolicyMeta {
                    name,
                    escalate,
                    timeout_ms,
                    forbid,
                },
            );
            if let Err(e) = set.add(policy) {
                problems.push(PolicyProblem {
                    line: at,
                    policy: None,
                    message: e.to_string(),
                });
            }
        }
        let builtin = cedar_policy::Policy::parse(Some(PolicyId::new(BUILTIN_ID)), BUILTIN_PERMIT)
            .map_err(|e| {
                vec![PolicyProblem {
                    line: None,
                    policy: Some("scopes".into()),
                    message: e.to_string(),
                }]
            })?;
        meta.insert(
            builtin.id().clone(),
            PolicyMeta {
                name: "scopes".into(),
                escalate: None,
                timeout_ms: 0,
                forbid: false,
            },
        );
        if let Err(e) = set.add(builtin) {
            problems.push(PolicyProblem {
                line: None,
                policy: None,
                message: format!("a policy clashes with the built-in one: {e}"),
            });
        }
        if problems.is_empty() {
            Ok(Compiled { set, meta })
        } else {
            Err(problems)
        }
    }

    /// The entities of one agent (itself, its project, its tenant), built once per agent.
    pub fn agent_entities(
        &self,
        tenant: &str,
        project: &str,
        name: &str,
    ) -> Result<(EntityUid, Entities), String> {
        let t = uid("AgenFleet::Tenant", tenant)?;
        let p = uid("AgenFleet::Project", &format!("{tenant}/{project}"))?;
        let a = uid("AgenFleet::Agent", &format!("{tenant}/{name}"))?;
        let attrs = HashMap::from([
            (
                "name".to_string(),
                RestrictedExpression::new_string(name.into()),
            ),
            (
                "project".to_string(),
                RestrictedExpression::new_string(project.into()),
            ),
            (
                "tenant".to_string(),
                RestrictedExpression::new_string(tenant.into()),
            ),
        ]);
        let agent =
            Entity::new(a.clone(), attrs, HashSet::from([p.clone()])).map_err(|e| e.to_string())?;
        let entities = Entities::from_entities(
            [
                agent,
                Entity::new_no_attrs(p, HashSet::from([t.clone()])),
                Entity::new_no_attrs(t, HashSet::new()),
            ],
            Some(&self.schema),
        )
        .map_err(|e| e.to_string())?;
        Ok((a, entities))
    }

    /// Evaluates one call that the scopes admitted.
    pub fn evaluate(
        &self,
        compiled: &Compiled,
        agent: &EntityUid,
        entities: &Entities,
        call: &ParsedCall,
    ) -> CedarOutcome {
        let deny = |reason: String, policies: Vec<String>| CedarOutcome {
            verdict: Verdict::Deny,
            reason,
            policies,
            timeout_ms: 0,
        };
        let (method, host, url_path, path, server, mcp_tool) = match &call.target {
            Target::Http {
                method, host, path, ..
            } => (method.as_str(), host.as_str(), path.as_str(), "", "", ""),
            Target::File { path } => ("", "", "", path.as_str(), "", ""),
            Target::Mcp { server, tool } => ("", "", "", "", server.as_str(), tool.as_str()),
            Target::Model { path, .. } => ("", "", path.as_str(), "", "", ""),
            Target::Other => ("", "", "", "", "", ""),
        };
        let (provider, model) = match &call.target {
            Target::Model {
                provider, model, ..
            } => (provider.as_str(), model.as_str()),
            _ => ("", ""),
        };
        let hour = (agenfleet_protocol::now_ms() / 3_600_000 % 24) as i64;
        let s = |v: &str| RestrictedExpression::new_string(v.to_string());
        let context = Context::from_pairs([
            ("method".to_string(), s(method)),
            ("host".to_string(), s(host)),
            ("url_path".to_string(), s(url_path)),
            ("path".to_string(), s(path)),
            ("server".to_string(), s(server)),
            ("mcp_tool".to_string(), s(mcp_tool)),
            ("provider".to_string(), s(provider)),
            ("model".to_string(), s(model)),
            ("args_json".to_string(), s(&call.canonical_args)),
            (
                "arg_bytes".to_string(),
                RestrictedExpression::new_long(call.canonical_args.len() as i64),
            ),
            ("hour_utc".to_string(), RestrictedExpression::new_long(hour)),
        ]);
        let context = match context {
            Ok(c) => c,
            Err(e) => return deny(format!("cannot build the request context: {e}"), vec![]),
        };
        let tool = match cedar_policy::EntityId::from_str(&call.tool) {
            Ok(id) => EntityUid::from_type_name_and_id(self.tool_type.clone(), id),
            Err(e) => return deny(format!("bad tool name: {e}"), vec![]),
        };
        // The context is built here to the schema's shape (a test checks it against the
        // schema); checking it again on every request would cost a third of a decision.
        let schema = if cfg!(test) { Some(&self.schema) } else { None };
        let request = match Request::new(agent.clone(), self.action.clone(), tool, context, schema)
        {
            Ok(r) => r,
            Err(e) => return deny(format!("the request does not fit the schema: {e}"), vec![]),
        };
        let response = self
            .authorizer
            .is_authorized(&request, &compiled.set, entities);
        let name = |id: &PolicyId| {
            compiled
                .meta
                .get(id)
                .map(|m| m.name.clone())
                .unwrap_or_else(|| id.to_string())
        };
        // Cedar skips a policy whose evaluation fails; we deny instead.
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| format!("{e}"))
            .collect();
        if !errors.is_empty() {
            return deny(
                format!("policy evaluation error (denied): {}", errors.join("; ")),
                vec![],
            );
        }
        let deciding: Vec<&PolicyId> = response.diagnostics().reason().collect();
        match response.decision() {
            Decision::Allow => CedarOutcome {
                verdict: Verdict::Allow,
                reason: "within scopes; no policy forbids it".into(),
                policies: deciding.iter().map(|id| name(id)).collect(),
                timeout_ms: 0,
            },
            Decision::Deny => {
                let forbids: Vec<&PolicyMeta> = deciding
                    .iter()
                    .filter_map(|id| compiled.meta.get(*id))
                    .filter(|m| m.forbid)
                    .collect();
                let names: Vec<String> = forbids.iter().map(|m| m.name.clone()).collect();
                if forbids.is_empty() {
                    return deny("no policy permits it".into(), names);
                }
                if forbids.iter().all(|m| m.escalate.is_some()) {
                    let reasons: Vec<String> =
                        forbids.iter().filter_map(|m| m.escalate.clone()).collect();
                    CedarOutcome {
                        verdict: Verdict::Escalate,
                        reason: reasons.join("; "),
                        policies: names,
                        timeout_ms: forbids
                            .iter()
                            .map(|m| m.timeout_ms)
                            .min()
                            .unwrap_or(DEFAULT_ESCALATION_TIMEOUT_MS),
                    }
                } else {
                    let hard: Vec<String> = forbids
                        .iter()
                        .filter(|m| m.escalate.is_none())
                        .map(|m| m.name.clone())
                        .collect();
                    deny(format!("forbidden by policy {}", hard.join(", ")), names)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agenfleet_protocol::policy::{parse_call, ToolCall};

    fn call(tool: &str, args: serde_json::Value) -> ParsedCall {
        parse_call(&ToolCall {
            tool: tool.into(),
            args_json: args.to_string(),
        })
        .expect("well-formed call")
    }

    fn eval(c: &Cedar, text: &str, pc: &ParsedCall) -> CedarOutcome {
        let compiled = c.compile(text).expect("policy compiles");
        let (a, e) = c.agent_entities("acme", "web", "bot").expect("entities");
        c.evaluate(&compiled, &a, &e, pc)
    }

    #[test]
    fn forbid_beats_permit_and_escalation_is_its_own_verdict() {
        let c = Cedar::new().expect("schema");
        let text = include_str!("../../../assets/policy/example.cedar");
        let del = call(
            "http_request",
            serde_json::json!({"method": "DELETE", "url": "https://api.x.com/a"}),
        );
        let o = eval(
            &c,
            &format!("{text}\npermit(principal, action, resource);"),
            &del,
        );
        assert_eq!(o.verdict, Verdict::Deny, "{o:?}");
        assert_eq!(o.policies, vec!["no-deletes"]);
        let pay = call(
            "http_request",
            serde_json::json!({"method": "POST", "url": "https://pay.x.com/charge"}),
        );
        let o = eval(&c, text, &pay);
        assert_eq!(o.verdict, Verdict::Escalate, "{o:?}");
        assert_eq!(o.timeout_ms, 120_000);
        assert_eq!(o.reason, "payments are reviewed by a person");
        let get = call(
            "http_request",
            serde_json::json!({"method": "GET", "url": "https://api.x.com/a"}),
        );
        assert_eq!(eval(&c, text, &get).verdict, Verdict::Allow);
        // A hard forbid next to an escalating one: denied, no person asked.
        let both = format!("{text}\n@id(\"no-pay-posts\") forbid(principal, action, resource) when {{ context.host like \"pay*\" }};");
        assert_eq!(eval(&c, &both, &pay).verdict, Verdict::Deny);
    }

    #[test]
    fn the_shipped_policy_sees_every_spelling_of_a_secret_path() {
        let c = Cedar::new().expect("schema");
        let text = format!(
            "{}\npermit(principal, action, resource);",
            include_str!("../../../assets/policy/example.cedar")
        );
        for path in [
            "/data/secrets/a",
            "//data/secrets/a",
            "///data//secrets/a/",
            "/data/secrets",
        ] {
            let o = eval(
                &c,
                &text,
                &call("read_file", serde_json::json!({ "path": path })),
            );
            assert_eq!(o.verdict, Verdict::Deny, "{path}: {o:?}");
            assert_eq!(o.policies, vec!["no-secrets-dir"], "{path}");
        }
        let o = eval(
            &c,
            &text,
            &call("read_file", serde_json::json!({"path": "//data/reports/a"})),
        );
        assert_eq!(o.verdict, Verdict::Allow, "{o:?}");
        // A trailing root dot on the host is the same host to the payments rule.
        let o = eval(
            &c,
            &text,
            &call(
                "http_request",
                serde_json::json!({"method": "post", "url": "https://PAY.x.com./charge"}),
            ),
        );
        assert_eq!(o.verdict, Verdict::Escalate, "{o:?}");
    }

    #[test]
    fn an_evaluation_error_denies() {
        let c = Cedar::new().expect("schema");
        // Overflow at run time: the policy validates but fails to evaluate.
        let text = "@id(\"overflow\") forbid(principal, action, resource) when { context.arg_bytes * 9223372036854775807 > 0 };";
        let o = eval(&c, text, &call("search", serde_json::json!({"q": "x"})));
        assert_eq!(o.verdict, Verdict::Deny, "{o:?}");
        assert!(o.reason.contains("evaluation error"), "{o:?}");
    }

    #[test]
    fn bad_policies_are_located() {
        let c = Cedar::new().expect("schema");
        let p = c.compile("permit(principal, action, resource);\nforbid(principal, action, resource) when { context.nope == 1 };").err().expect("invalid");
        assert_eq!(p[0].line, Some(2), "{p:?}");
        let p = c
            .compile("\n\npermit(principal, action resource);")
            .err()
            .expect("unparsable");
        assert_eq!(p[0].line, Some(3), "{p:?}");
        let p = c
            .compile("@escalate(\"x\") permit(principal, action, resource);")
            .err()
            .expect("misplaced");
        assert!(
            p[0].message.contains("@escalate belongs on a forbid"),
            "{p:?}"
        );
        let p = c
            .compile("@escalate(\"x\") @timeout_ms(\"soon\") forbid(principal, action, resource);")
            .err()
            .expect("bad timeout");
        assert!(p[0].message.contains("timeout_ms"), "{p:?}");
    }
}
