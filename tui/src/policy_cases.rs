//! `policy test` case files, shared by the CLI (`agenfleet policy test FILE`) and the
//! console's policy pane (`t` / Ctrl-T): a TOML file of `[[case]]`s — the agent, the tool
//! call, the verdict expected — with the tenant it tests and, optionally, a policy file to
//! test instead of the one in force; and how each case's result reads.

use agenfleet_protocol::policy::{PolicyCase, PolicyCaseResult, ToolCall, Verdict};
use std::path::PathBuf;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default = "default_tenant")]
    tenant: String,
    policy: Option<PathBuf>,
    #[serde(rename = "case", default)]
    cases: Vec<TestCase>,
}

fn default_tenant() -> String {
    agenfleet_protocol::DEFAULT_TENANT.into()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TestCase {
    name: String,
    agent: String,
    tool: String,
    #[serde(default = "empty_args")]
    args: toml::Value,
    expect: Verdict,
}

fn empty_args() -> toml::Value {
    toml::Value::Table(Default::default())
}

/// A case file as read.
#[derive(Debug)]
pub struct CaseFile {
    pub tenant: String,
    /// A policy file to test instead of the one in force (relative to the case file).
    pub policy: Option<PathBuf>,
    pub cases: Vec<PolicyCase>,
}

/// Reads a case file's text (what is wrong is said with the case's name).
pub fn parse(text: &str) -> Result<CaseFile, String> {
    let tf: TestFile = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
    let mut cases = Vec::with_capacity(tf.cases.len());
    for c in tf.cases {
        let args = serde_json::to_string(&c.args)
            .map_err(|e| format!("case `{}`: bad args: {e}", c.name))?;
        cases.push(PolicyCase {
            name: c.name,
            agent: c.agent,
            call: ToolCall {
                tool: c.tool,
                args_json: args,
            },
            expect: c.expect,
        });
    }
    Ok(CaseFile {
        tenant: tf.tenant,
        policy: tf.policy,
        cases,
    })
}

/// Whether the case came out as expected.
pub fn passed(r: &PolicyCaseResult) -> bool {
    r.got == r.expect
}

/// "PASS name: expected allow, got allow — reason [policies]".
pub fn result_line(r: &PolicyCaseResult) -> String {
    format!(
        "{} {}: expected {}, got {} — {}{}",
        if passed(r) { "PASS" } else { "FAIL" },
        r.name,
        r.expect,
        r.got,
        r.reason,
        if r.policies.is_empty() {
            String::new()
        } else {
            format!(" [{}]", r.policies.join(", "))
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_case_file_reads_into_cases_and_names_what_is_wrong() {
        let f = parse(
            "tenant = \"acme\"\n[[case]]\nname = \"get\"\nagent = \"bot\"\ntool = \"http_request\"\nargs = { method = \"GET\", url = \"https://a.example.com/\" }\nexpect = \"allow\"\n",
        )
        .expect("parses");
        assert_eq!(f.tenant, "acme");
        assert_eq!(f.cases.len(), 1);
        assert!(f.cases[0].call.args_json.contains("\"GET\""));
        let e = parse("[[case]]\nname = \"x\"\n").expect_err("no agent");
        assert!(e.contains("agent"), "{e}");
        let e = parse("[[case]]\nname = \"x\"\nagent = \"a\"\ntool = \"t\"\nexpect = \"maybe\"\n")
            .expect_err("bad verdict");
        assert!(e.contains("maybe") || e.contains("variant"), "{e}");
    }
}
