//! End-to-end: isolation tiers on the real daemon, engine and SQLite files. A dedicated
//! tenant's rows are in its own file and none in the shared one (read with a connection
//! of the test's own, as `sqlite3` would); a standard tenant with running agents moves to
//! dedicated and back while its agents run on untouched; the move is audited with its
//! digests; tiers survive `kill -9`; a full backup carries the tenant files and restores
//! them; bad moves are refused with the reason and change nothing.

use agenfleet_e2e::*;
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The tables that hold a tenant's rows, with their tenant column.
const TABLES: &[(&str, &str)] = &[
    ("tenants", "id"),
    ("projects", "tenant_id"),
    ("agents", "tenant_id"),
    ("credentials", "tenant_id"),
    ("credential_meta", "tenant_id"),
    ("role_bindings", "tenant_id"),
    ("tokens", "tenant_id"),
    ("scope_versions", "tenant_id"),
    ("policy_versions", "tenant_id"),
    ("upstreams", "tenant_id"),
    ("spec_versions", "tenant_id"),
    ("usage_snapshots", "tenant_id"),
    ("runs", "tenant_id"),
    ("incidents", "tenant_id"),
    ("escalations", "tenant_id"),
];

/// Rows of `tenant` in the database file at `path`, per table with any.
fn rows_of(path: &Path, tenant: &str) -> Vec<(String, i64)> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    TABLES
        .iter()
        .map(|(t, tc)| {
            let n: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {t} WHERE {tc} = ?1"),
                    [tenant],
                    |r| r.get(0),
                )
                .unwrap_or_else(|e| panic!("{t}: {e}"));
            (t.to_string(), n)
        })
        .filter(|r| r.1 > 0)
        .collect()
}

fn idle_agent(name: &str, tenant: &str, image: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nimage = \"{image}\"\n\
         command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done\"]\n"
    )
}

/// One request to an agent's memory through its local API, from inside its container:
/// the response's body (after the status line and headers).
fn memory(cid: &str, method: &str, key: &str, value: &str) -> String {
    let req = format!(
        "{method} /v1/memory/{key} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{value}",
        value.len()
    );
    let text = nc(cid, 4180, req.as_bytes());
    assert!(text.starts_with("HTTP/1.1 200"), "{method} {key}: {text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

fn tier_of(d: &Daemon, tenant: &str) -> String {
    let list = d.json(&["tenants", "list"]);
    list.as_array()
        .expect("a list")
        .iter()
        .find(|t| t["tenant"] == tenant)
        .unwrap_or_else(|| panic!("{tenant} in {list}"))["tier"]
        .as_str()
        .expect("tier")
        .to_string()
}

#[test]
fn a_dedicated_tenant_lives_in_its_own_file_moves_both_ways_and_restores() {
    let test = "a_dedicated_tenant_lives_in_its_own_file_moves_both_ways_and_restores";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    bin_for_other_uids("agenfleet");
    let mut d = Daemon::start("tiers", "");
    d.open_to_other_uids();
    let recovery = d.json(&["vault", "init"])["recovery_key"]
        .as_str()
        .expect("recovery key")
        .to_string();
    let state = d.dir.join("state");
    let shared = state.join("agenfleet.db");

    // A new dedicated tenant: its file exists from the start.
    let made = d.json(&["tenants", "create", "solo", "--tier", "dedicated"]);
    assert_eq!(made["tier"], "dedicated", "{made}");
    assert_eq!(made["file"], "tenants/solo.db", "{made}");
    let solo_file = state.join("tenants/solo.db");
    assert!(solo_file.exists());
    d.create(&idle_agent("s1", "solo", &image));
    d.create(&idle_agent("a1", "acme", &image));
    let s1 = d.running_container("s1", WAIT);
    let a1 = d.running_container("a1", WAIT);
    // Each agent remembers something (its memory store is a file of its own).
    memory(&a1, "PUT", "note", "memo-of-a1");
    memory(&s1, "PUT", "note", "memo-of-s1");
    for (agent, value) in [("solo/s1", "CANARY-tier-s1"), ("acme/a1", "CANARY-tier-a1")] {
        let out = d.cli_stdin(&["creds", "set", agent, "token"], value);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let policy = d.file("p.cedar", "permit(principal, action, resource);\n");
    for t in ["solo", "acme"] {
        let out = d.cli(&["policy", "publish", t, &policy]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The dedicated tenant backed up alone (a standard one cannot be: refused, exit 8).
    let solo_archive = d.dir.join("solo.agfbackup");
    let made = d.json(&[
        "backup",
        "--tenant",
        "solo",
        "--out",
        solo_archive.to_str().unwrap(),
    ]);
    // Its vault is its own: a recovery key of its own, shown once.
    let solo_recovery = made["recovery_key"]
        .as_str()
        .expect("recovery key")
        .to_string();
    assert_ne!(solo_recovery, recovery);
    let trail = d
        .json(&["audit", "search", "--action", "backup.create"])
        .to_string();
    assert!(
        trail.contains("tenant solo alone") && !trail.contains(&solo_recovery),
        "{trail}"
    );
    let listed = std::process::Command::new("tar")
        .arg("tf")
        .arg(&solo_archive)
        .output()
        .expect("tar");
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(
        listed.lines().collect::<Vec<_>>(),
        vec![
            "agenfleet.db",
            "tenants/solo.db",
            "memory/solo/s1.db",
            "manifest.json",
            "manifest.sha256"
        ],
        "{listed}"
    );
    let refused = d.dir.join("acme.agfbackup");
    let out = d.cli(&[
        "backup",
        "--tenant",
        "acme",
        "--out",
        refused.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(8),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("acme is standard"));
    assert!(!refused.exists(), "a refused backup leaves no file");

    // A tenant admin of acme (a role binding, one of acme's rows).
    const ADMIN: u32 = 62001;
    d.json(&["operators", "add", &ADMIN.to_string(), "acme-admin"]);
    d.json(&["roles", "grant", &ADMIN.to_string(), "tenant_admin", "acme"]);
    let as_admin = |args: &[&str]| d.cli_as(ADMIN, None, args, None);

    // Every row of the dedicated tenant is in its file; the shared file holds none.
    assert_eq!(
        rows_of(&shared, "solo"),
        vec![],
        "solo's rows in the shared file"
    );
    let in_solo = rows_of(&solo_file, "solo");
    for t in [
        "tenants",
        "agents",
        "credentials",
        "policy_versions",
        "spec_versions",
    ] {
        assert!(in_solo.iter().any(|r| r.0 == t), "{t} in {in_solo:?}");
    }
    assert_eq!(rows_of(&solo_file, "acme"), vec![]);
    let acme_before = rows_of(&shared, "acme");
    assert!(
        acme_before.iter().any(|r| r.0 == "credentials"),
        "{acme_before:?}"
    );
    assert_eq!(tier_of(&d, "solo"), "dedicated");
    assert_eq!(tier_of(&d, "acme"), "standard");

    // A standard tenant with a running agent moves to dedicated: every table checked,
    // the agent runs on in the same container, its credential still there.
    let moved = d.json(&["tenants", "move", "acme", "--tier", "dedicated"]);
    assert_eq!(
        (&moved["from"], &moved["to"]),
        (&"standard".into(), &"dedicated".into())
    );
    let counted: Vec<(String, i64)> = moved["tables"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["rows"].as_i64() > Some(0))
        .map(|t| {
            assert_eq!(t["sha256"].as_str().unwrap().len(), 64, "{t}");
            (
                t["table"].as_str().unwrap().to_string(),
                t["rows"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counted, acme_before, "{moved}");
    let acme_file = state.join("tenants/acme.db");
    assert_eq!(rows_of(&shared, "acme"), vec![]);
    assert_eq!(rows_of(&acme_file, "acme"), acme_before);
    assert_eq!(
        d.running_container("a1", WAIT),
        a1,
        "the agent was not touched"
    );
    let creds = d.json(&["creds", "list", "acme/a1"]);
    assert!(creds.to_string().contains("token"), "{creds}");
    // Audited: requested, then done with every table's rows and digest.
    let audit = d.json(&["audit", "search", "--action", "tenant.move"]);
    let outcomes: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["outcome"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(outcomes, vec!["requested", "ok"], "{audit}");
    let digest = moved["tables"][3]["sha256"].as_str().unwrap();
    assert!(audit.to_string().contains(digest), "{audit}");

    // The console: narrowed to acme (`t`), its header names the tier.
    let console = Tmux::start(&format!(
        "{} --socket {}",
        bin("agenfleet").display(),
        d.socket.display()
    ));
    console.wait_screen("the fleet", |s| s.contains("a1") && s.contains("s1"));
    console.keys(&["t"]);
    console.wait_screen("acme's tier in the header", |s| {
        s.contains("in acme · dedicated")
    });

    // Bad moves: refused with the reason, nothing changes.
    let out = d.cli(&["tenants", "move", "acme", "--tier", "gold"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown tier `gold`"));
    let out = d.cli(&["tenants", "move", "acme", "--tier", "dedicated"]);
    assert_eq!(out.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dedicated already"));
    let out = d.cli(&["tenants", "move", "nobody", "--tier", "dedicated"]);
    assert_eq!(out.status.code(), Some(5));
    let out = d.cli(&["tenants", "create", "solo", "--tier", "dedicated"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(rows_of(&acme_file, "acme"), acme_before);
    // acme's admin still holds its role (the binding moved with the tenant): sees its
    // agent and its tenant only, and may not move tenants.
    let out = as_admin(&["--json", "agents", "list"]);
    let seen = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        seen.contains("\"a1\"") && !seen.contains("\"s1\""),
        "{seen}"
    );
    let out = as_admin(&["--json", "tenants", "list"]);
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).expect("tenants json");
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["tenant"], "acme");
    let out = as_admin(&["tenants", "move", "acme", "--tier", "standard"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // kill -9: the tiers and the agents are as they were.
    d.kill9();
    d.restart();
    assert_eq!(tier_of(&d, "acme"), "dedicated");
    assert_eq!(tier_of(&d, "solo"), "dedicated");
    assert_eq!(d.running_container("a1", WAIT), a1);
    assert_eq!(d.running_container("s1", WAIT), s1);

    // Back to standard: the rows return, the file goes.
    let back = d.json(&["tenants", "move", "acme", "--tier", "standard"]);
    assert_eq!(back["to"], "standard", "{back}");
    assert!(!acme_file.exists());
    assert_eq!(rows_of(&shared, "acme"), acme_before);
    assert_eq!(d.running_container("a1", WAIT), a1);
    // Once round the contexts (acme/default, solo, solo/default, all) back to acme: the
    // tier is asked again.
    // (Once the console is connected again after the kill -9: it shows the incident the
    // restart raised.)
    console.wait_screen("the console connected again", |s| {
        !s.contains("DISCONNECTED") && s.contains("INC plat")
    });
    console.keys(&["t", "t", "t", "t", "t"]);
    console.wait_screen("acme standard again", |s| s.contains("in acme · standard"));
    drop(console);

    // A full backup carries the dedicated tenant's file; restored on a wiped host, the
    // tenant is dedicated again with its agent.
    let archive = d.dir.join("host.agfbackup");
    let out = d.cli(&["backup", "--out", archive.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = std::process::Command::new("tar")
        .arg("tf")
        .arg(&archive)
        .output()
        .expect("tar");
    let list = String::from_utf8_lossy(&list.stdout).to_string();
    assert!(list.lines().any(|l| l == "tenants/solo.db"), "{list}");
    assert!(!list.contains("acme.db"), "{list}");
    d.kill9();
    for cid in d.containers() {
        docker(&["rm", "-f", &cid]);
    }
    std::fs::remove_dir_all(&state).expect("wipe the state");
    let out = restore_cmd(&archive, &state).output().expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rows_of(&shared, "solo"), vec![]);
    let kept = |rows: Vec<(String, i64)>| -> Vec<(String, i64)> {
        let keep = [
            "tenants",
            "agents",
            "credentials",
            "credential_meta",
            "policy_versions",
        ];
        rows.into_iter()
            .filter(|r| keep.contains(&r.0.as_str()))
            .collect()
    };
    assert_eq!(kept(rows_of(&solo_file, "solo")), kept(in_solo.clone()));
    d.restart();
    assert_eq!(tier_of(&d, "solo"), "dedicated");
    let agents = d.json(&["agents", "list"]);
    assert!(agents.to_string().contains("\"s1\""), "{agents}");
    // The agents' memory came back with the host (the containers are new).
    let a1_back = d.running_container("a1", WAIT);
    assert_ne!(a1_back, a1);
    assert!(memory(&a1_back, "GET", "note", "").contains("memo-of-a1"));

    // The tenant's own archive restores into a fresh daemon, alone: a new installation
    // (its own containers), solo and nothing else, sealed until the archive's own recovery
    // key opens the credentials — then its agent starts.
    let mut fresh = Daemon::start("tiers-fresh", "");
    fresh.kill9();
    let fresh_state = fresh.dir.join("state");
    std::fs::remove_dir_all(&fresh_state).expect("wipe the fresh state");
    let out = restore_cmd(&solo_archive, &fresh_state)
        .output()
        .expect("restore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("dedicated tenant solo alone"));
    assert_eq!(rows_of(&fresh_state.join("agenfleet.db"), "acme"), vec![]);
    fresh.restart();
    let tenants = fresh.json(&["tenants", "list"]);
    assert_eq!(tenants.as_array().unwrap().len(), 1, "{tenants}");
    assert_eq!(
        (&tenants[0]["tenant"], &tenants[0]["tier"]),
        (&"solo".into(), &"dedicated".into())
    );
    let st = fresh.json(&["status"]);
    assert_ne!(
        st["daemon"]["instance_id"],
        d.json(&["status"])["daemon"]["instance_id"]
    );
    assert_eq!(fresh.json(&["vault", "status"])["state"], "Sealed");
    // The source's recovery key does not open it; the archive's does.
    let out = fresh.cli_stdin(&["vault", "unseal"], &recovery);
    assert_eq!(
        out.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = fresh.cli_stdin(&["vault", "unseal"], &solo_recovery);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s1_fresh = fresh.running_container("s1", WAIT);
    assert_ne!(s1_fresh, s1, "its own container, not the source's");
    assert!(memory(&s1_fresh, "GET", "note", "").contains("memo-of-s1"));
    let creds = fresh.json(&["creds", "list", "solo/s1"]);
    assert!(creds.to_string().contains("token"), "{creds}");
    let agents = fresh.json(&["agents", "list"]);
    assert!(!agents.to_string().contains("\"a1\""), "{agents}");
}
