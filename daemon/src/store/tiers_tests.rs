//! Tests of the isolation tiers: where a tenant's rows live, moves both ways, restarts.

use super::*;
use crate::store::{AgentKey, AgentRecord, Store};
use agenfleet_protocol::AgentSpec;

fn rec(tenant: &str, name: &str) -> AgentRecord {
    let spec = AgentSpec::from_toml(&format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nimage = \"agenfleet/agent\"\n"
    ))
    .unwrap();
    AgentRecord::new(spec, 1)
}

/// Gives `tenant` a row in every moved table: agents (with their spec versions),
/// credentials, a policy, scopes, a token, usage, a run, a trigger, an incident and an escalation.
fn fill(s: &Store, tenant: &str, agents: usize) {
    s.with(|c| {
        c.execute(
            "INSERT OR IGNORE INTO vault_keys (id, wrapped, created_ms) VALUES (1, x'00', 0)",
            [],
        )?;
        c.execute(
            "INSERT OR IGNORE INTO operators VALUES (1001, 'ann', 'operator', 0)",
            [],
        )
    })
    .unwrap();
    for i in 0..agents {
        s.insert_agent(&rec(tenant, &format!("a{i}"))).unwrap();
    }
    s.tenant(tenant)
        .with(|c| {
            for i in 0..agents {
                c.execute(
                    "INSERT INTO t_credentials (agent, name, version, key_id, sealed, value_hmac, created_ms)
                     VALUES (?1, 'k', 1, 1, x'0102', 'h', 5)",
                    params![format!("a{i}")],
                )?;
                c.execute(
                    "INSERT INTO t_credential_meta (agent, name, created_ms) VALUES (?1, 'k', 5)",
                    params![format!("a{i}")],
                )?;
                c.execute(
                    "INSERT INTO t_scope_versions (agent, version, text, hash, created_ms, author, note)
                     VALUES (?1, 1, 'tools = []', 'h', 5, 'me', '')",
                    params![format!("a{i}")],
                )?;
            }
            c.execute(
                "INSERT INTO t_policy_versions (version, text, hash, created_ms, author, note)
                 VALUES (1, 'permit(principal, action, resource);', 'h', 5, 'me', 'first')",
                [],
            )?;
            c.execute(
                "INSERT INTO t_tokens (id, secret_sha256, name, creator_uid, permissions, created_ms, expires_ms)
                 VALUES (?1, 'sha', 'ci', 0, 'fleet.read', 5, 99)",
                params![format!("tok{tenant}")],
            )?;
            c.execute(
                "INSERT INTO t_role_bindings (uid, role, project_id, created_at_ms)
                 VALUES (1001, 'project_viewer', 'default', 5)",
                [],
            )?;
            c.execute(
                "INSERT INTO t_upstreams (name, version, class, spec_json, key_version, key_id,
                    sealed, value_hmac, created_ms, author, note)
                 VALUES ('openai', 1, 'provider', '{}', 1, 1, x'03', 'h', 5, 'me', '')",
                [],
            )?;
            c.execute(
                "INSERT INTO t_runs (id, project, agent, trigger, requested_by, state, input_json, created_ms)
                 VALUES (?1, 'default', 'a0', 'cli', 'ann', 'succeeded', '{}', 5)",
                params![2000 + tenant.as_bytes()[0] as i64],
            )?;
            c.execute(
                "INSERT INTO t_triggers (id, project, agent, kind, created_by, created_ms,
                    token_sha256, secret_key, secret_sealed)
                 VALUES ('trg_1', 'default', 'a0', 'webhook', 'ann', 5, 'ab', 1, x'04')",
                [],
            )?;
            c.execute(
                "INSERT INTO t_usage_snapshots (seq, body_json, saved_ms) VALUES (7, '{}', 5)",
                [],
            )
        })
        .unwrap();
    let id = 1000 + tenant.as_bytes()[0] as i64;
    s.with_rows_of(Some(tenant), |c| {
        c.execute(
            "INSERT INTO incidents (id, dedup_key, state, tenant_id, body_json, updated_ms)
             VALUES (?1, 'k', 'triggered', ?2, '{}', 5)",
            params![id, tenant],
        )?;
        c.execute(
            "INSERT INTO escalations (id, tenant_id, agent, state, body_json, updated_ms)
             VALUES (?1, ?2, 'a0', 'pending', '{}', 5)",
            params![id, tenant],
        )
    })
    .unwrap();
}

/// Rows naming `tenant` in each moved table of the file at `path`, read as `sqlite3`
/// would (a plain connection of its own).
fn rows_in(path: &Path, tenant: &str) -> Vec<(String, i64)> {
    let c = Connection::open(path).unwrap();
    moved_tables()
        .map(|(t, tc)| {
            let n: i64 = c
                .query_row(
                    &format!("SELECT COUNT(*) FROM {t} WHERE {tc} = ?1"),
                    params![tenant],
                    |r| r.get(0),
                )
                .unwrap();
            (t.to_string(), n)
        })
        .collect()
}

fn total(rows: &[(String, i64)]) -> i64 {
    rows.iter().map(|r| r.1).sum()
}

#[test]
fn a_dedicated_tenants_rows_live_only_in_its_file_and_move_both_ways_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agenfleet.db");
    let s = Store::open(&db).unwrap();
    fill(&s, "acme", 3);
    fill(&s, "beta", 2);
    let before = s.load_agents().unwrap();
    let acme_rows = rows_in(&db, "acme");
    let beta_rows = rows_in(&db, "beta");
    assert!(acme_rows.iter().all(|r| r.1 > 0), "{acme_rows:?}");

    // To dedicated: every row of acme leaves the shared file, all of them arrive.
    let r = s.move_tenant("acme", Tier::Dedicated).unwrap();
    assert_eq!((r.from, r.to), (Tier::Standard, Tier::Dedicated));
    let moved: u64 = r.tables.iter().map(|t| t.rows).sum();
    assert_eq!(moved as i64, total(&acme_rows));
    let file = file_path(dir.path(), "acme");
    assert_eq!(
        total(&rows_in(&db, "acme")),
        0,
        "{:?}",
        rows_in(&db, "acme")
    );
    assert_eq!(rows_in(&file, "acme"), acme_rows);
    // The other tenant is untouched, and never in acme's file.
    assert_eq!(total(&rows_in(&file, "beta")), 0);
    assert_eq!(rows_in(&db, "beta"), beta_rows);
    // The platform's tables in the tenant's file are empty.
    let c = Connection::open(&file).unwrap();
    for t in ["operators", "vault_keys", "outbox", "tenant_tiers"] {
        let n: i64 = c
            .query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0, "{t}");
    }
    drop(c);
    // Everything reads as before, through the same calls.
    assert_eq!(s.load_agents().unwrap(), before);
    assert_eq!(s.tier_of("acme").unwrap(), Tier::Dedicated);
    assert_eq!(s.tenant_ids().unwrap(), vec!["acme", "beta"]);
    let key = AgentKey {
        tenant: "acme".into(),
        name: "a1".into(),
    };
    assert_eq!(s.spec_version(&key).unwrap(), 1);
    let tokens: Vec<Option<String>> = s
        .each(|c| {
            c.query_row("SELECT id FROM tokens WHERE id = 'tokacme'", [], |r| {
                r.get(0)
            })
            .optional()
        })
        .unwrap();
    assert_eq!(tokens, vec![None, Some("tokacme".to_string())]);
    // Writes go to the tenant's file.
    s.insert_agent(&rec("acme", "new")).unwrap();
    assert_eq!(rows_in(&file, "acme")[2], ("agents".to_string(), 4));
    assert_eq!(total(&rows_in(&db, "acme")), 0);

    // Reopened: the registry brings the tenant's file back.
    drop(s);
    let s = Store::open(&db).unwrap();
    assert_eq!(s.tier_of("acme").unwrap(), Tier::Dedicated);
    assert_eq!(s.load_agents().unwrap().len(), before.len() + 1);

    // Back to standard: everything returns to the shared file, the tenant's file goes.
    let in_file = rows_in(&file, "acme");
    let r = s.move_tenant("acme", Tier::Standard).unwrap();
    assert_eq!((r.from, r.to), (Tier::Dedicated, Tier::Standard));
    assert!(!file.exists());
    assert_eq!(rows_in(&db, "acme"), in_file);
    assert_eq!(s.tier_of("acme").unwrap(), Tier::Standard);
    assert_eq!(s.load_agents().unwrap().len(), before.len() + 1);
    // And the digests on the way back equal those on the way out (new agent aside).
    s.delete_agent(&AgentKey {
        tenant: "acme".into(),
        name: "new".into(),
    })
    .unwrap();
    let again = s.move_tenant("acme", Tier::Dedicated).unwrap();
    let first = r.tables.iter().find(|t| t.table == "policy_versions");
    let second = again.tables.iter().find(|t| t.table == "policy_versions");
    assert_eq!(first, second);
}

#[test]
fn bad_moves_change_nothing_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agenfleet.db");
    let s = Store::open(&db).unwrap();
    fill(&s, "acme", 1);
    let e = s.move_tenant("nope", Tier::Dedicated).unwrap_err();
    assert!(
        matches!(&e, StoreError::NotFound(m) if m.contains("nope")),
        "{e}"
    );
    let e = s.move_tenant("acme", Tier::Standard).unwrap_err();
    assert!(e.to_string().contains("standard already"), "{e}");
    assert!(!dir.path().join(TENANTS_DIR).join("acme.db").exists());
    let e = s.create_tenant("acme", Tier::Dedicated).unwrap_err();
    assert!(matches!(e, StoreError::Exists(_)), "{e}");
    let e = s.create_tenant("acme", Tier::Standard).unwrap_err();
    assert!(matches!(e, StoreError::Exists(_)), "{e}");
    // Nor a dedicated one again, in either tier.
    s.create_tenant("solo", Tier::Dedicated).unwrap();
    for tier in [Tier::Standard, Tier::Dedicated] {
        let e = s.create_tenant("solo", tier).unwrap_err();
        assert!(matches!(e, StoreError::Exists(_)), "{tier:?}: {e}");
    }
    s.create_tenant("plain", Tier::Standard).unwrap();
    assert!(s.tenant_exists("plain").unwrap());
    // An in-memory store has no files to give a tenant.
    let m = Store::open_in_memory().unwrap();
    fill(&m, "acme", 1);
    assert!(matches!(
        m.move_tenant("acme", Tier::Dedicated),
        Err(StoreError::Invalid(_))
    ));
}

#[test]
fn a_new_dedicated_tenant_starts_in_its_own_file_and_goes_with_its_last_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agenfleet.db");
    let s = Store::open(&db).unwrap();
    s.create_tenant("solo", Tier::Dedicated).unwrap();
    let file = file_path(dir.path(), "solo");
    assert_eq!(rows_in(&file, "solo")[0], ("tenants".to_string(), 1));
    assert_eq!(total(&rows_in(&db, "solo")), 0);
    assert!(s.tenant_exists("solo").unwrap());
    fill(&s, "solo", 2);
    assert_eq!(total(&rows_in(&db, "solo")), 0);
    // The platform's tables cannot be written in it, even by a statement that tries.
    let e = s
        .tenant("solo")
        .with(|c| c.execute("INSERT INTO operators VALUES (5, 'x', 'y', 0)", []))
        .unwrap_err();
    assert!(e.to_string().contains("not authorized"), "{e}");
    // Deleted: agents first, then the tenant's rows; its file and registry row go.
    for a in ["a0", "a1"] {
        s.delete_agent(&AgentKey {
            tenant: "solo".into(),
            name: a.into(),
        })
        .unwrap();
    }
    s.delete_tenant_rows("solo").unwrap();
    assert!(!file.exists());
    assert_eq!(s.tier_of("solo").unwrap(), Tier::Standard);
    assert!(!s.tenant_exists("solo").unwrap());
}

#[test]
fn a_file_the_registry_does_not_name_is_set_aside_and_a_missing_one_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agenfleet.db");
    {
        let s = Store::open(&db).unwrap();
        fill(&s, "acme", 1);
        s.move_tenant("acme", Tier::Dedicated).unwrap();
    }
    // A move cut short leaves a file being made: set aside, never read.
    let tdir = dir.path().join(TENANTS_DIR);
    std::fs::write(tdir.join("beta.db.making"), b"half").unwrap();
    std::fs::write(tdir.join("gamma.db"), b"left").unwrap();
    let s = Store::open(&db).unwrap();
    let names: Vec<String> = std::fs::read_dir(&tdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("beta.db.making.unregistered-")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("gamma.db.unregistered-")),
        "{names:?}"
    );
    assert!(names.contains(&"acme.db".to_string()));
    drop(s);
    // The registry names a file that is gone: the start stops, naming it.
    std::fs::remove_file(tdir.join("acme.db")).unwrap();
    let e = Store::open(&db).err().expect("must not open");
    assert!(e.to_string().contains("acme.db is missing"), "{e}");
}
