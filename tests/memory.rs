//! End-to-end: each agent's private memory through its own local API, on the real daemon
//! and engine, from inside the agents' containers (busybox `nc` to the shim's relay on
//! 127.0.0.1:4180). One agent's store cannot be named by another by any key, path or
//! crafted name; values are sealed per agent (a file copied into another agent's place
//! does not open); quotas answer 507; operators see stats, an admin exports (audited), a
//! handoff copies named keys inside one tenant; a deleted agent's file goes on schedule,
//! also across a daemon restart; a canary value is nowhere but in the export.

use agenfleet_e2e::*;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// One HTTP request to the local API from inside container `cid`: (status, body).
fn api(cid: &str, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: agent\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    )
    .into_bytes();
    if !content_type.is_empty() {
        req.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(body);
    let text = nc(cid, 4180, &req);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn idle_agent(name: &str, tenant: &str, image: &str) -> String {
    format!(
        "name = \"{name}\"\ntenant = \"{tenant}\"\nimage = \"{image}\"\n\
         command = [\"sh\", \"-c\", \"trap 'exit 0' TERM; while :; do sleep 1 & wait $!; done\"]\n"
    )
}

#[test]
fn an_agents_memory_is_its_own_sealed_searchable_and_purged() {
    let test = "an_agents_memory_is_its_own_sealed_searchable_and_purged";
    if !docker_available(test) {
        return;
    }
    let Some(image) = busybox_image(test) else {
        return;
    };
    let mut d = Daemon::start(
        "memory",
        "memory_max_value_bytes = 1024\nmemory_max_keys = 7\nmemory_max_bytes = 4096\npurge_after_secs = 3\n",
    );
    d.json(&["vault", "init"]);
    for (name, tenant) in [("a", "default"), ("b", "default"), ("c", "other")] {
        d.create(&idle_agent(name, tenant, &image));
    }
    let a = d.running_container("a", WAIT);
    let b = d.running_container("b", WAIT);
    let canary = format!("canary-memory-{:x}", std::process::id());

    // A writes, reads, lists and searches its own memory.
    let note = format!("{canary} the quick brown fox jumps");
    let (s, body) = api(
        &a,
        "PUT",
        "/v1/memory/notes%2Fday1",
        "text/plain",
        note.as_bytes(),
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(
        &a,
        "PUT",
        "/v1/memory/prefs",
        "application/json",
        br#"{"lang":"de"}"#,
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(
        &a,
        "PUT",
        "/v1/memory/blob",
        "application/octet-stream",
        &[0, 159, 146, 150],
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(&a, "GET", "/v1/memory/notes%2Fday1", "", b"");
    assert_eq!((s, body.as_str()), (200, note.as_str()));
    let (s, body) = api(&a, "GET", "/v1/memory?prefix=notes", "", b"");
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("notes/day1") && !body.contains("prefs"),
        "{body}"
    );
    let (s, body) = api(&a, "GET", "/v1/memory/search?q=quick%20FOX", "", b"");
    assert_eq!(s, 200, "{body}");
    assert!(
        body.contains("notes/day1") && body.contains("bm25"),
        "{body}"
    );
    // Special characters are words or nothing, never FTS syntax.
    let (s, body) = api(
        &a,
        "GET",
        "/v1/memory/search?q=fox%22)%20OR%20*%20NEAR(",
        "",
        b"",
    );
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(&a, "GET", "/v1/memory/search?q=%22()*", "", b"");
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("no words"), "{body}");

    // B reaches none of it: not by key, path, prefix, encoding or a crafted name.
    for path in [
        "/v1/memory/notes%2Fday1",
        "/v1/memory/..%2Fa%2Fnotes%2Fday1",
        "/v1/memory/%2e%2e%2fdefault%2fa.db",
        "/v1/memory/default%2Fa%2Fnotes%2Fday1",
        "/v1/memory/../memory/notes%2Fday1",
    ] {
        let (s, body) = api(&b, "GET", path, "", b"");
        assert_eq!(s, 404, "{path}: {body}");
        assert!(!body.contains(&canary), "{path}: {body}");
    }
    let (_, body) = api(&b, "GET", "/v1/memory?prefix=", "", b"");
    assert!(body.contains("\"keys\":[]"), "{body}");
    let (_, body) = api(&b, "GET", "/v1/memory/search?q=quick", "", b"");
    assert!(body.contains("\"results\":[]"), "{body}");

    // Limits: a value at the size limit, one over; the key quota; reasons given.
    let (s, body) = api(&a, "PUT", "/v1/memory/k1", "", &[b'x'; 1024]);
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(&a, "PUT", "/v1/memory/k2", "", &[b'x'; 1025]);
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("memory_max_value_bytes"), "{body}");
    let (s, body) = api(&a, "PUT", "/v1/memory/k2", "", &[b'y'; 1024]);
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(&a, "PUT", "/v1/memory/k3", "", &[b'z'; 1024]);
    assert_eq!(s, 200, "{body}");
    let (s, body) = api(&a, "PUT", "/v1/memory/k4", "", &[b'w'; 1024]);
    assert_eq!(s, 507, "over the bytes quota: {body}");
    assert!(body.contains("memory_max_bytes"), "{body}");
    let (s, body) = api(&a, "PUT", "/v1/memory/k5", "", b"5");
    assert_eq!(s, 200, "the seventh key: {body}");
    let (s, body) = api(&a, "PUT", "/v1/memory/k6", "", b"6");
    assert_eq!(s, 507, "over the keys quota: {body}");
    assert!(body.contains("memory_max_keys"), "{body}");
    let puts = d
        .json(&[
            "audit",
            "search",
            "--action",
            "memory.put",
            "--limit",
            "100",
        ])
        .to_string();
    assert!(
        puts.contains("refused") && puts.contains("memory_max_keys") && puts.contains("requested"),
        "a refused write is recorded as refused: {puts}"
    );
    let (s, body) = api(&a, "PUT", "/v1/memory/search", "text/plain", b"x");
    assert_eq!(s, 400, "{body}");
    let (s, body) = api(
        &a,
        "PUT",
        "/v1/memory/bad",
        "application/json",
        b"{not json",
    );
    assert_eq!(s, 400, "{body}");
    let (s, _) = api(&a, "DELETE", "/v1/memory/k3", "", b"");
    assert_eq!(s, 200);
    let (s, _) = api(&a, "DELETE", "/v1/memory/k3", "", b"");
    assert_eq!(s, 404);

    // Operators: stats (never a value); an admin's export, recorded as a reveal.
    let stats = d.json(&["memory", "stats", "a"]);
    assert_eq!(stats["keys"], 6, "{stats}");
    assert!(!stats.to_string().contains(&canary));
    let out = d.cli(&["memory", "export", "a"]);
    let exported = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && exported.contains(&canary),
        "{exported}"
    );
    let reveal = d
        .json(&["audit", "search", "--action", "memory.export"])
        .to_string();
    assert!(reveal.contains("reveal"), "{reveal}");

    // Handoff: exactly the named keys, audited with the reason; never across tenants.
    let h = d.json(&[
        "memory",
        "handoff",
        "a",
        "b",
        "--keys",
        "notes/",
        "--reason",
        "b takes over the diary",
    ]);
    assert_eq!(h["keys"], serde_json::json!(["notes/day1"]), "{h}");
    let (s, body) = api(&b, "GET", "/v1/memory/notes%2Fday1", "", b"");
    assert_eq!((s, body.as_str()), (200, note.as_str()));
    let (s, _) = api(&b, "GET", "/v1/memory/prefs", "", b"");
    assert_eq!(s, 404, "only the named keys went");
    let audited = d
        .json(&["audit", "search", "--action", "memory.handoff"])
        .to_string();
    assert!(
        audited.contains("b takes over the diary")
            && audited.contains("from default/a to default/b"),
        "{audited}"
    );
    let out = d.cli(&[
        "memory", "handoff", "a", "other/c", "--keys", "", "--reason", "x",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("different tenants"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without memory.export / memory.handoff (a contributor of the project): refused,
    // naming the permission; stats are still theirs to see.
    bin_for_other_uids("agenfleet");
    d.open_to_other_uids();
    d.json(&["operators", "add", "61201", "contrib"]);
    d.json(&[
        "roles",
        "grant",
        "61201",
        "project_contributor",
        "default/default",
    ]);
    for args in [
        vec!["memory", "export", "a"],
        vec![
            "memory", "handoff", "a", "b", "--keys", "prefs", "--reason", "x",
        ],
    ] {
        let out = d.cli_as(61201, None, &args, None);
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(!out.status.success(), "{args:?} allowed");
        assert!(err.contains("memory."), "{args:?}: {err}");
        assert!(!err.contains(&canary));
    }
    let out = d.cli_as(61201, None, &["--json", "memory", "stats", "a"], None);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (s, _) = api(&b, "GET", "/v1/memory/prefs", "", b"");
    assert_eq!(s, 404, "the refused handoff copied nothing");

    // The canary is nowhere but in the export: not in the daemon's log, the audit log,
    // or the files on disk.
    assert!(
        !d.log().contains(&canary),
        "the daemon's log holds a memory value"
    );
    let all = d.json(&["audit", "search", "--limit", "5000"]).to_string();
    assert!(!all.contains(&canary), "the audit log holds a memory value");
    let state = d.dir.join("state");
    let mem_dir = state.join("memory/default");
    for f in std::fs::read_dir(&mem_dir).expect("memory dir").flatten() {
        let bytes = std::fs::read(f.path()).unwrap_or_default();
        assert!(
            !bytes.windows(canary.len()).any(|w| w == canary.as_bytes()),
            "{} holds the value in clear",
            f.path().display()
        );
    }

    // A's file put in B's place does not open for B (after a restart drops the open
    // handles): a clear error, not A's data.
    let a_db = mem_dir.join("a.db");
    let b_db = mem_dir.join("b.db");
    d.kill9();
    // (The database and its write-ahead log: what was written lives in both.)
    std::fs::copy(&a_db, &b_db).expect("copy a's file over b's");
    let _ = std::fs::remove_file(mem_dir.join("b.db-shm"));
    match std::fs::copy(mem_dir.join("a.db-wal"), mem_dir.join("b.db-wal")) {
        Ok(_) => {}
        Err(_) => {
            let _ = std::fs::remove_file(mem_dir.join("b.db-wal"));
        }
    }
    d.restart();
    let b = d.running_container("b", WAIT);
    let (s, body) = api(&b, "GET", "/v1/memory/prefs", "", b"");
    assert_eq!(s, 500, "{body}");
    assert!(body.contains("made for default/a"), "{body}");
    assert!(!body.contains(&canary));

    // Purge: deleting an agent removes its file on schedule, also across a restart.
    assert!(a_db.exists());
    d.json(&["agents", "delete", "a"]);
    assert!(a_db.exists(), "kept until the purge is due");
    d.restart();
    // The purge removes the file, then records what it removed: wait for the record.
    wait_for(WAIT, "the purge's record of a's memory store", || {
        d.json(&["audit", "search", "--action", "agent.purge"])
            .to_string()
            .contains("memory store removed")
            .then_some(())
    });
    assert!(!a_db.exists(), "a's memory file is removed by the purge");
}

#[test]
fn a_purge_delay_above_thirty_days_is_refused() {
    let dir = tempdir("mempurge");
    let config = dir.join("agenfleetd.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = {:?}\npurge_after_secs = 2592001\n",
            dir.join("state").display().to_string()
        ),
    )
    .expect("config");
    let out = std::process::Command::new(bin("agenfleetd"))
        .arg("check-config")
        .arg("--config")
        .arg(&config)
        .output()
        .expect("agenfleetd");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(
        text.contains("purge_after_secs") && text.contains("30 days"),
        "{text}"
    );
}
