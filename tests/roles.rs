//! End-to-end: roles and tenant isolation on the real daemon, with real peer credentials —
//! each client runs as its own uid. One table says, for every role, what each call must
//! do; every refusal must be audited; another tenant's agents answer exactly like agents
//! that do not exist.

use agenfleet_e2e::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

const OK: i32 = 0;
const DENIED: i32 = 4;
const UNKNOWN: i32 = 5;

struct As<'a> {
    d: &'a Daemon,
    uid: u32,
}

impl As<'_> {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.d.cli_as(self.uid, None, args, stdin)
    }
}

fn spec(tenant: &str, project: &str, name: &str, creds: bool) -> String {
    scoped_spec(tenant, project, name, creds)
}

#[test]
fn the_role_matrix_holds_and_every_refusal_is_audited() {
    if !docker_available("the_role_matrix_holds_and_every_refusal_is_audited") {
        return;
    }
    bin_for_other_uids("agenfleet");
    let d = Daemon::start("roles", "");
    d.open_to_other_uids();
    d.json(&["vault", "init"]);
    d.create(&spec("acme", "web", "a1", true));
    d.create(&spec("acme", "db", "a2", false));
    d.create(&spec("beta", "core", "b1", false));
    assert!(d
        .cli_stdin(&["creds", "set", "acme/a1", "api-key"], "v1")
        .status
        .success());
    // Operators: one per role, one with no role; 61006 is not registered at all.
    type Operator<'a> = (&'a str, u32, Option<(&'a str, &'a str)>);
    let roles: [Operator; 6] = [
        ("viewer", 61001, Some(("project_viewer", "acme/web"))),
        (
            "contributor",
            61002,
            Some(("project_contributor", "acme/web")),
        ),
        ("project-admin", 61003, Some(("project_admin", "acme/web"))),
        ("tenant-admin", 61004, Some(("tenant_admin", "acme"))),
        ("no-role", 61005, None),
        ("unknown", 61006, None),
    ];
    for (name, uid, binding) in roles {
        if name == "unknown" {
            continue;
        }
        d.json(&["operators", "add", &uid.to_string(), name]);
        if let Some((role, scope)) = binding {
            d.json(&["roles", "grant", &uid.to_string(), role, scope]);
        }
        // A target operator for each row's grant attempts.
        d.json(&[
            "operators",
            "add",
            &(uid + 100).to_string(),
            &format!("{name}-target"),
        ]);
    }
    let refused_before = d
        .json(&[
            "audit",
            "search",
            "--action",
            "rpc.refused",
            "--limit",
            "5000",
        ])
        .as_array()
        .unwrap()
        .len();

    // The table: call → expected exit code for viewer, contributor, project admin,
    // tenant admin, no role, unknown uid.
    type Args = Box<dyn Fn(&str, u32) -> (Vec<String>, Option<String>)>;
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let table: Vec<(&str, Args, [i32; 6])> = vec![
        (
            "show an agent of my project",
            Box::new(move |_, _| (s(&["agents", "show", "acme/a1"]), None)),
            [OK, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "read its logs",
            Box::new(move |_, _| (s(&["logs", "acme/a1"]), None)),
            [DENIED, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "restart it",
            Box::new(move |_, _| (s(&["agents", "restart", "acme/a1"]), None)),
            [DENIED, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "list its credentials",
            Box::new(move |_, _| (s(&["creds", "list", "acme/a1"]), None)),
            [OK, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "rotate its credential",
            Box::new(move |_, _| {
                (
                    s(&["creds", "rotate", "acme/a1", "api-key"]),
                    Some("new".into()),
                )
            }),
            [DENIED, DENIED, OK, OK, DENIED, DENIED],
        ),
        (
            "show an agent of another project",
            Box::new(move |_, _| (s(&["agents", "show", "acme/a2"]), None)),
            [UNKNOWN, UNKNOWN, UNKNOWN, OK, DENIED, DENIED],
        ),
        (
            "show an agent of another tenant",
            Box::new(move |_, _| (s(&["agents", "show", "beta/b1"]), None)),
            [UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, DENIED, DENIED],
        ),
        (
            "stop an agent of another tenant",
            Box::new(move |_, _| (s(&["agents", "stop", "beta/b1"]), None)),
            [DENIED, UNKNOWN, UNKNOWN, UNKNOWN, DENIED, DENIED],
        ),
        (
            "create an agent in my project",
            Box::new(move |role, _| {
                (
                    s(&[
                        "agents",
                        "create",
                        "-f",
                        &format!("/tmp/agf-roles-{role}.toml"),
                    ]),
                    None,
                )
            }),
            [DENIED, DENIED, OK, OK, DENIED, DENIED],
        ),
        (
            "grant a project role on my project",
            Box::new(move |_, uid| {
                (
                    s(&[
                        "roles",
                        "grant",
                        &(uid + 100).to_string(),
                        "project_viewer",
                        "acme/web",
                    ]),
                    None,
                )
            }),
            [DENIED, DENIED, OK, OK, DENIED, DENIED],
        ),
        (
            "grant more than I hold",
            Box::new(move |_, uid| {
                (
                    s(&[
                        "roles",
                        "grant",
                        &(uid + 100).to_string(),
                        "tenant_admin",
                        "acme",
                    ]),
                    None,
                )
            }),
            [DENIED, DENIED, DENIED, OK, DENIED, DENIED],
        ),
        (
            "grant on another tenant",
            Box::new(move |_, uid| {
                (
                    s(&[
                        "roles",
                        "grant",
                        &(uid + 100).to_string(),
                        "project_viewer",
                        "beta/core",
                    ]),
                    None,
                )
            }),
            [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED],
        ),
        (
            "write an audit note",
            Box::new(move |_, _| (s(&["audit", "note", "hello"]), None)),
            [DENIED, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "rotate the vault's data key",
            Box::new(move |_, _| (s(&["vault", "rotate-key"]), None)),
            [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED],
        ),
        (
            "back up the whole host",
            Box::new(move |_, uid| {
                let out = format!("/tmp/agf-roles-backup-{uid}-{}.tar", std::process::id());
                (s(&["backup", "--out", &out]), None)
            }),
            [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED],
        ),
        (
            "build the agent image",
            Box::new(move |_, _| (s(&["image", "build"]), None)),
            [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED],
        ),
        (
            "show an agent's scopes",
            Box::new(move |_, _| (s(&["scopes", "show", "acme/a1"]), None)),
            [OK, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "publish an agent's scopes",
            Box::new(move |_, _| {
                (
                    s(&["scopes", "publish", "acme/a1", "/tmp/agf-roles-scopes.toml"]),
                    None,
                )
            }),
            [DENIED, DENIED, OK, OK, DENIED, DENIED],
        ),
        (
            "publish my tenant's policy",
            Box::new(move |_, _| {
                (
                    s(&["policy", "publish", "acme", "/tmp/agf-roles-policy.cedar"]),
                    None,
                )
            }),
            [DENIED, DENIED, DENIED, OK, DENIED, DENIED],
        ),
        (
            "show another tenant's policy",
            Box::new(move |_, _| (s(&["policy", "show", "beta"]), None)),
            [UNKNOWN, UNKNOWN, UNKNOWN, UNKNOWN, DENIED, DENIED],
        ),
        (
            "list escalations",
            Box::new(move |_, _| (s(&["escalations", "list"]), None)),
            [OK, OK, OK, OK, DENIED, DENIED],
        ),
        (
            "add an operator",
            Box::new(move |_, _| (s(&["operators", "add", "62000", "sneaky"]), None)),
            [DENIED, DENIED, DENIED, DENIED, DENIED, DENIED],
        ),
    ];
    std::fs::write("/tmp/agf-roles-scopes.toml", "tools = [\"search\"]\n").unwrap();
    std::fs::write(
        "/tmp/agf-roles-policy.cedar",
        "forbid(principal, action, resource) when { context.method == \"DELETE\" };\n",
    )
    .unwrap();
    let mut denials = 0;
    let mut failures = Vec::new();
    for (i, (role, uid, _)) in roles.iter().enumerate() {
        std::fs::write(
            format!("/tmp/agf-roles-{role}.toml"),
            spec("acme", "web", &format!("new-{role}"), false),
        )
        .unwrap();
        let who = As { d: &d, uid: *uid };
        for (what, args, expect) in &table {
            let (a, input) = args(role, *uid);
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            let out = who.run(&a, input.as_deref());
            let code = out.status.code().unwrap_or(-1);
            if code != expect[i] {
                failures.push(format!(
                    "{role} / {what}: exit {code}, expected {} — {}",
                    expect[i],
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            if code == DENIED || code == UNKNOWN {
                denials += 1;
                let err = String::from_utf8_lossy(&out.stderr);
                if code == DENIED {
                    assert!(err.contains("not permitted"), "{role} / {what}: {err}");
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "role matrix mismatches:\n{}",
        failures.join("\n")
    );
    // A refused backup leaves no file behind, whole or partial.
    for (_, uid, _) in &roles {
        let out = format!("/tmp/agf-roles-backup-{uid}-{}.tar", std::process::id());
        for p in [out.clone(), format!("{out}.partial")] {
            assert!(!std::path::Path::new(&p).exists(), "{p} left behind");
        }
    }
    let refused_after = d
        .json(&[
            "audit",
            "search",
            "--action",
            "rpc.refused",
            "--limit",
            "5000",
        ])
        .as_array()
        .unwrap()
        .len();
    assert!(
        refused_after - refused_before >= denials,
        "{denials} refusals but only {} audited",
        refused_after - refused_before
    );
    for role in [
        "viewer",
        "contributor",
        "project-admin",
        "tenant-admin",
        "no-role",
        "unknown",
    ] {
        let _ = std::fs::remove_file(format!("/tmp/agf-roles-{role}.toml"));
    }
}

#[test]
fn one_tenant_sees_nothing_of_another() {
    if !docker_available("one_tenant_sees_nothing_of_another") {
        return;
    }
    bin_for_other_uids("agenfleet");
    let d = Daemon::start("isolation", "");
    d.open_to_other_uids();
    d.json(&["vault", "init"]);
    d.create(&spec("acme", "web", "mine", true));
    d.create(&spec("beta", "web", "theirs", true));
    assert!(d
        .cli_stdin(&["creds", "set", "acme/mine", "api-key"], "a")
        .status
        .success());
    assert!(d
        .cli_stdin(&["creds", "set", "beta/theirs", "api-key"], "b")
        .status
        .success());
    d.json(&["operators", "add", "61100", "acme-admin"]);
    d.json(&["roles", "grant", "61100", "tenant_admin", "acme"]);
    let a = As { d: &d, uid: 61100 };
    let json = |args: &[&str]| -> serde_json::Value {
        let mut v = vec!["--json"];
        v.extend_from_slice(args);
        let out = a.run(&v, None);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let all = |v: &serde_json::Value| v.to_string();
    assert!(!all(&json(&["status"])).contains("theirs"));
    assert!(!all(&json(&["agents", "list"])).contains("theirs"));
    assert!(all(&json(&["agents", "list"])).contains("mine"));
    let audit = all(&json(&["audit", "search", "--limit", "5000"]));
    assert!(
        !audit.contains("beta"),
        "another tenant's audit records leaked: {audit}"
    );
    assert!(audit.contains("acme"));
    // Another tenant's names answer exactly like names that do not exist.
    for cmd in [
        vec!["agents", "show"],
        vec!["creds", "list"],
        vec!["logs"],
        vec!["agents", "spec"],
        vec!["agents", "history"],
    ] {
        let mut real = cmd.clone();
        real.push("beta/theirs");
        let mut fake = cmd.clone();
        fake.push("beta/nobody-here");
        let r = a.run(&real, None);
        let f = a.run(&fake, None);
        assert_eq!(r.status.code(), Some(5), "{real:?}");
        assert_eq!(f.status.code(), Some(5), "{fake:?}");
        let norm = |o: &Output, n: &str| String::from_utf8_lossy(&o.stderr).replace(n, "X");
        assert_eq!(
            norm(&r, "theirs"),
            norm(&f, "nobody-here"),
            "{cmd:?} tells them apart"
        );
    }
    // Nor can they change another tenant's agent (or create one there) with apply.
    let f = d.file("theirs.toml", &spec("beta", "web", "theirs", false));
    let out = a.run(&["agents", "apply", "-f", &f, "--yes"], None);
    assert_eq!(
        out.status.code(),
        Some(DENIED),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(d.json(&["agents", "history", "beta/theirs"])["current"], 1);
    // The watch stream carries nothing of the other tenant.
    let mut w = Command::new(bin_for_other_uids("agenfleet"));
    w.arg("--socket")
        .arg(&d.socket)
        .args(["--json", "watch", "--count", "3"])
        .uid(61100)
        .gid(61100)
        .env("HOME", "/tmp");
    let out = w.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mine") && !text.contains("theirs"), "{text}");
    // A role revoked stops working at once (the caller is resolved per request).
    d.json(&["roles", "revoke", "61100", "tenant_admin", "acme"]);
    let out = a.run(&["agents", "show", "acme/mine"], None);
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn deleting_a_tenant_purges_everything_in_it() {
    if !docker_available("deleting_a_tenant_purges_everything_in_it") {
        return;
    }
    let d = Daemon::start("tenantdel", "");
    d.json(&["vault", "init"]);
    d.create(&spec("gone", "p1", "x1", true));
    d.create(&spec("gone", "p2", "x2", false));
    d.create(&spec("kept", "p1", "y1", false));
    assert!(d
        .cli_stdin(&["creds", "set", "gone/x1", "api-key"], "v")
        .status
        .success());
    // The credential lets the held-back agent start: wait for it, so the count is settled.
    d.wait_agent(
        "gone/x1",
        "running with its credential",
        std::time::Duration::from_secs(20),
        |v| v["state"] == "Running",
    );
    d.json(&["operators", "add", "61400", "gone-admin"]);
    d.json(&["roles", "grant", "61400", "tenant_admin", "gone"]);
    let before = d.containers().len();
    let out = d.cli(&["tenants", "delete", "gone"]);
    assert_eq!(out.status.code(), Some(6), "needs --yes");
    let v = d.json(&["tenants", "delete", "gone", "--yes"]);
    assert_eq!(v["agents_purged"], 2);
    assert_eq!(d.containers().len(), before - 2);
    let list = d.json(&["agents", "list"]).to_string();
    assert!(!list.contains("\"gone\"") && list.contains("y1"), "{list}");
    assert_eq!(d.json(&["vault", "status"])["credentials"], 0);
    let ops = d.json(&["operators", "list"]).to_string();
    assert!(
        !ops.contains("tenant_admin"),
        "the tenant's roles remain: {ops}"
    );
    let purges = d.json(&["audit", "search", "--action", "agent.purge"]);
    assert_eq!(
        purges
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["event"]["outcome"] == "ok")
            .count(),
        2
    );
    let del = d.json(&["audit", "search", "--action", "tenant.delete"]);
    assert_eq!(
        del.as_array().unwrap().last().unwrap()["event"]["outcome"],
        "ok"
    );
    // The name is free again, and unknown tenants are named as such.
    d.create(&spec("gone", "p1", "x1", false));
    let out = d.cli(&["tenants", "delete", "never-was", "--yes"]);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn deleting_a_tenant_under_a_purge_delay_purges_it_when_the_delay_is_up() {
    if !docker_available("deleting_a_tenant_under_a_purge_delay_purges_it_when_the_delay_is_up") {
        return;
    }
    let d = Daemon::start("tenantdelay", "purge_after_secs = 3");
    d.json(&["vault", "init"]);
    d.create(&spec("later", "p1", "z1", true));
    d.create(&spec("later", "p2", "z2", false));
    assert!(d
        .cli_stdin(&["creds", "set", "later/z1", "api-key"], "v")
        .status
        .success());
    let out = d.cli(&["--json", "tenants", "delete", "later", "--yes"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let list = d.json(&["agents", "list"]).to_string();
    assert!(!list.contains("\"later\""), "{list}");
    // `retention` says what waits and when it goes.
    let r = d.json(&["retention"]);
    let purges: Vec<&str> = r["agent_purges"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p[0].as_str())
        .collect();
    assert!(
        purges.contains(&"later/z1") && purges.contains(&"later/z2"),
        "{r}"
    );
    assert_eq!(r["tenant_purges"], serde_json::json!(["later"]), "{r}");
    assert_eq!(r["purge_after_secs"], 3);
    // When the delay is up, the agents' data goes too (credentials included).
    wait_for(
        std::time::Duration::from_secs(30),
        "the delayed purges",
        || {
            let p = d.json(&["audit", "search", "--action", "agent.purge"]);
            let ok = p
                .as_array()?
                .iter()
                .filter(|e| e["event"]["outcome"] == "ok")
                .count();
            (ok == 2).then_some(())
        },
    );
    assert_eq!(d.json(&["vault", "status"])["credentials"], 0);
    // With its last agent purged, the tenant itself goes (recorded).
    wait_for(
        std::time::Duration::from_secs(30),
        "the tenant's own purge",
        || {
            let p = d.json(&["audit", "search", "--action", "tenant.purge"]);
            (p.as_array()?.len() == 1).then_some(())
        },
    );
    let out = d.cli(&["tenants", "delete", "later", "--yes"]);
    assert_eq!(out.status.code(), Some(5), "no tenant `later` any more");
    // The name is free again.
    d.create(&spec("later", "p1", "z1", false));
}
