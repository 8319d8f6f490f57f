//! End-to-end: personal access tokens — scoped, never more than their creator holds,
//! refused at once when revoked (also on a connection opened before) or expired, and a
//! malformed token gets a clear, audited refusal.

use agenfleet_e2e::*;
use agenfleet_protocol::{transport, AgentRef, SecretValue, DEFAULT_MAX_FRAME_BYTES};
use std::process::Output;
use std::time::Duration;

fn as_uid(d: &Daemon, uid: u32, token: Option<&str>, args: &[&str]) -> Output {
    d.cli_as(uid, token, args, None)
}

fn spec(project: &str, name: &str) -> String {
    scoped_spec("acme", project, name, false)
}

#[test]
fn tokens_are_scoped_bounded_and_revocable_at_once() {
    if !docker_available("tokens_are_scoped_bounded_and_revocable_at_once") {
        return;
    }
    bin_for_other_uids("agenfleet");
    let d = Daemon::start("tokens", "");
    d.open_to_other_uids();
    d.create(&spec("web", "a1"));
    d.create(&spec("db", "a2"));
    d.json(&["operators", "add", "61200", "alice"]);
    d.json(&["roles", "grant", "61200", "project_admin", "acme/web"]);
    // A token may hold only what its creator holds there.
    let out = as_uid(
        &d,
        61200,
        None,
        &[
            "tokens",
            "create",
            "greedy",
            "--scope",
            "acme/db",
            "--perm",
            "fleet.read",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("you do not hold fleet.read on project acme/db"));
    let out = as_uid(
        &d,
        61200,
        None,
        &[
            "--json",
            "tokens",
            "create",
            "ci",
            "--scope",
            "acme/web",
            "--perm",
            "fleet.read",
            "--perm",
            "agents.control",
            "--expires",
            "1h",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["info"]["id"].as_str().unwrap().to_string();
    // Stored as a hash only.
    let db = std::fs::read(d.dir.join("state/agenfleet.db")).unwrap_or_default();
    let wal = std::fs::read(d.dir.join("state/agenfleet.db-wal")).unwrap_or_default();
    assert!(
        !db.windows(token.len()).any(|w| w == token.as_bytes())
            && !wal.windows(token.len()).any(|w| w == token.as_bytes())
    );

    // A script on a uid the daemon does not know, with the token.
    let script = 61299;
    assert_eq!(
        as_uid(&d, script, None, &["agents", "show", "acme/a1"])
            .status
            .code(),
        Some(4)
    );
    assert_eq!(
        as_uid(&d, script, Some(&token), &["agents", "show", "acme/a1"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        as_uid(&d, script, Some(&token), &["agents", "restart", "acme/a1"])
            .status
            .code(),
        Some(0)
    );
    let out = as_uid(&d, script, Some(&token), &["logs", "acme/a1"]);
    assert_eq!(out.status.code(), Some(4), "logs.read is not in the token");
    assert_eq!(
        as_uid(&d, script, Some(&token), &["agents", "show", "acme/a2"])
            .status
            .code(),
        Some(5)
    );
    assert_eq!(
        as_uid(&d, script, Some(&token), &["operators", "add", "1", "x"])
            .status
            .code(),
        Some(4)
    );

    // Revocation bites at once, also on a connection that authenticated before.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let socket = d.socket.clone();
    let tok = token.clone();
    let (client, before) = rt.block_on(async move {
        let c = transport::connect(&socket, DEFAULT_MAX_FRAME_BYTES)
            .await
            .unwrap();
        let ctx = || transport::context_with_timeout(Duration::from_secs(10));
        c.authenticate(ctx(), SecretValue::new(tok.into_bytes()))
            .await
            .unwrap()
            .unwrap();
        let r = c
            .get_agent(ctx(), AgentRef::parse("acme/a1").unwrap())
            .await
            .unwrap();
        (c, r)
    });
    assert!(before.is_ok(), "{before:?}");
    let out = as_uid(&d, 61200, None, &["tokens", "revoke", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = rt.block_on(async {
        client
            .get_agent(
                transport::context_with_timeout(Duration::from_secs(10)),
                AgentRef::parse("acme/a1").unwrap(),
            )
            .await
            .unwrap()
    });
    let e = after.expect_err("a revoked token must be refused on the open connection");
    assert!(e.message.contains("revoked"), "{}", e.message);
    let out = as_uid(&d, script, Some(&token), &["agents", "show", "acme/a1"]);
    assert_eq!(out.status.code(), Some(4));

    // Expiry.
    let out = as_uid(
        &d,
        61200,
        None,
        &[
            "--json",
            "tokens",
            "create",
            "short",
            "--scope",
            "acme/web",
            "--perm",
            "fleet.read",
            "--expires",
            "1s",
        ],
    );
    let short: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let short = short["token"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(1500));
    let out = as_uid(&d, script, Some(&short), &["agents", "show", "acme/a1"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expired"));

    // Malformed: a clear refusal, audited.
    let out = as_uid(&d, script, Some("not-a-token"), &["status"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed token"));
    let refused = d
        .json(&[
            "audit",
            "search",
            "--action",
            "rpc.refused",
            "--limit",
            "1000",
        ])
        .to_string();
    assert!(
        refused.contains("authenticate: not permitted: malformed token"),
        "{refused}"
    );
    assert!(!refused.contains(&token));
}
