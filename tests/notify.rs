//! Incidents and escalations reaching people: https receivers with a test CA (our signed
//! JSON, PagerDuty's Events v2, a chat webhook; an IPv6 literal; a certificate that does
//! not match), routes by party, tenant and provider, the outbox across `kill -9`, and the
//! platform's own alarms (the audit log closing, a record altered while running).

use agenfleet_e2e::*;
use serde_json::Value;
use std::time::Duration;

fn json_bodies(stub: &ProviderStub) -> Vec<Value> {
    stub.requests()
        .iter()
        .filter_map(|r| serde_json::from_slice(&r.body).ok())
        .collect()
}

fn accepted() -> Answer {
    Answer::Json {
        status: 202,
        body: "{\"status\":\"success\"}".into(),
    }
}

fn open(d: &Daemon, scenario: &str, summary: &str) -> u64 {
    d.json(&[
        "incidents",
        "open",
        "--scenario",
        scenario,
        "--summary",
        summary,
    ])["id"]
        .as_u64()
        .expect("an incident id")
}

#[test]
fn https_receivers_get_each_shape_and_a_bad_certificate_is_named() {
    let ca = TestCa::new();
    let signed = ProviderStub::start(&ca, accepted());
    let pagerduty = ProviderStub::serve(&ca, accepted(), "[::1]:0", &["::1"]);
    let chat = ProviderStub::start(&ca, accepted());
    let wrong_name = ProviderStub::serve(&ca, accepted(), "127.0.0.1:0", &["elsewhere.example"]);
    let dir = tempdir("notify-https");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let secret = "a-shared-secret-of-some-length";
    let secret_file = dir.join("hook.secret");
    std::fs::write(&secret_file, secret).unwrap();
    let (ca_file, secret_file) = (
        ca_file.display().to_string(),
        secret_file.display().to_string(),
    );
    let d = Daemon::start(
        "notify-https",
        &format!(
            "[[incident_route]]\nparty = \"platform\"\nwebhook = \"https://127.0.0.1:{}/hook\"\nsecret_file = {secret_file:?}\nca_file = {ca_file:?}\n\
             [[incident_route]]\nname = \"pd\"\nparty = \"client\"\nformat = \"pagerduty\"\nrouting_key = \"R0UTINGKEY\"\nwebhook = \"https://[::1]:{}/v2/enqueue\"\nca_file = {ca_file:?}\n\
             [[incident_route]]\nparty = \"tool_provider\"\nformat = \"chat\"\nwebhook = \"https://localhost:{}/services/T000/B000/XXXXSECRETPATH\"\nca_file = {ca_file:?}\n\
             [[incident_route]]\nparty = \"model_provider\"\nwebhook = \"https://127.0.0.1:{}/hook\"\nsecret_file = {secret_file:?}\nca_file = {ca_file:?}\nmax_attempts = 2\n",
            signed.port, pagerduty.port, chat.port, wrong_name.port
        ),
    );

    // Our JSON, signed: the receiver checks the HMAC over timestamp and body.
    let id = open(&d, "cross-tenant-leak", "seen in a test");
    wait_for(Duration::from_secs(20), "the signed delivery", || {
        signed.requests().into_iter().find(|r| {
            serde_json::from_slice::<Value>(&r.body)
                .is_ok_and(|v| v["incident"]["id"] == id && v["event"] == "trigger")
        })
    });
    let r = signed.requests().remove(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    agenfleet_protocol::incidents::verify(
        secret.as_bytes(),
        r.header("x-agenfleet-timestamp"),
        r.header("x-agenfleet-signature"),
        &r.body,
        now,
    )
    .expect("the signature verifies");
    assert_eq!(r.path, "/hook");

    // PagerDuty over IPv6: trigger, acknowledge, resolve — one dedup key, in order.
    let id = open(&d, "api-key-leaked", "key in a pastebin");
    wait_for(Duration::from_secs(20), "the PagerDuty trigger", || {
        (!pagerduty.requests().is_empty()).then_some(())
    });
    d.json(&["incidents", "ack", &id.to_string(), "--note", "on it"]);
    d.json(&["incidents", "resolve", &id.to_string(), "--note", "rotated"]);
    let events = wait_for(Duration::from_secs(20), "acknowledge and resolve", || {
        let b = json_bodies(&pagerduty);
        (b.len() >= 3).then_some(b)
    });
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["event_action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["trigger", "acknowledge", "resolve"], "{events:?}");
    let keys: std::collections::HashSet<&str> = events
        .iter()
        .map(|e| e["dedup_key"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 1, "one dedup key: {events:?}");
    assert_eq!(events[0]["routing_key"], "R0UTINGKEY");
    assert_eq!(pagerduty.requests()[0].path, "/v2/enqueue");
    assert_eq!(events[0]["payload"]["severity"], "critical");

    // A chat webhook: a short text with party, severity, what broke, next step, command.
    let id = open(&d, "webhook-down", "partner hook answers 503");
    let text = wait_for(Duration::from_secs(20), "the chat message", || {
        json_bodies(&chat)
            .into_iter()
            .find_map(|b| b["text"].as_str().map(str::to_string))
    });
    for want in [
        "[ERROR]",
        "Tool provider",
        "Webhook endpoint is down",
        "partner hook answers 503",
        "Next step:",
        &format!("agenfleet incidents ack {id}"),
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    // The chat URL's path is its credential: nowhere in what the daemon shows or logs.
    let inc = d.json(&["incidents", "show", &id.to_string()]);
    assert!(!inc.to_string().contains("XXXXSECRETPATH"), "{inc}");
    let routes = d.json(&["incidents", "routes"]);
    assert!(!routes.to_string().contains("XXXXSECRETPATH"), "{routes}");
    assert!(!d.log().contains("XXXXSECRETPATH"));

    // A certificate for another name: every attempt fails saying why, then it is given up
    // and the incident says it was not delivered.
    let id = open(&d, "model-provider-down", "provider 5xx");
    let inc = wait_for(
        Duration::from_secs(30),
        "the delivery to be given up",
        || {
            let i = d.json(&["incidents", "show", &id.to_string()]);
            (!i["undelivered"].as_array()?.is_empty()).then_some(i)
        },
    );
    let attempts = inc["deliveries"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{inc}");
    for a in attempts {
        assert_eq!(a["ok"], false);
        let why = a["detail"].as_str().unwrap();
        assert!(
            why.contains("certificate not valid for name"),
            "the TLS reason is shown: {why}"
        );
    }
    assert!(
        wrong_name.requests().is_empty(),
        "nothing crossed the bad TLS"
    );
    let outbox = d.json(&["incidents", "outbox"]);
    let failed: Vec<&Value> = outbox
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{outbox}");
    assert_eq!(failed[0]["attempts"], 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_route_that_does_not_check_is_refused_at_start_with_its_row() {
    let dir = tempdir("notify-badroute");
    let run = |extra: &str| {
        let config = dir.join("agenfleetd.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = {:?}\nsocket = {:?}\n{extra}",
                dir.join("state"),
                dir.join("s.sock")
            ),
        )
        .unwrap();
        let out = std::process::Command::new(bin("agenfleetd"))
            .arg("--config")
            .arg(&config)
            .output()
            .expect("agenfleetd");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for (extra, want) in [
        (
            "[[incident_route]]\nparty = \"client\"\ncommand = [\"true\"]\n[[incident_route]]\nparty = \"client\"\nprovider = \"a\"\nconnection = \"b\"\ncommand = [\"true\"]\n",
            "incident_route`: [1] (party client): give a `provider` or a `connection`, not both",
        ),
        (
            "[[incident_route]]\nparty = \"client\"\nmin_severity = \"loud\"\ncommand = [\"true\"]\n",
            "min_severity `loud` is not critical, error, warning or info",
        ),
        (
            "[[incident_route]]\nparty = \"client\"\nformat = \"pagerduty\"\n",
            "format `pagerduty` needs a `routing_key`",
        ),
        (
            "[[incident_route]]\nname = \"x\"\nparty = \"client\"\ncommand = [\"true\"]\n[[incident_route]]\nname = \"x\"\nparty = \"platform\"\ncommand = [\"true\"]\n",
            "name `x` is taken by incident_route[0]",
        ),
        (
            "[[incident_route]]\nparty = \"client\"\nformat = \"chat\"\nwebhook = \"https://h.example/x\"\nca_file = \"/nonexistent.pem\"\n",
            "cannot read ca_file /nonexistent.pem",
        ),
        (
            "[[incident_route]]\nparty = \"reviewers\"\nprovider = \"openai\"\ncommand = [\"true\"]\n",
            "`provider` is for incident routes, not reviewers",
        ),
    ] {
        let (code, err) = run(extra);
        assert_eq!(code, Some(78), "{err}");
        assert!(err.contains(want), "{want:?} in {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn deliveries_pending_at_a_kill_9_arrive_once_after_the_restart() {
    let ca = TestCa::new();
    let dir = tempdir("notify-outbox");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    // The receiver is down: nothing listens on its port yet.
    let port = free_port();
    let mut d = Daemon::start(
        "notify-outbox",
        &format!(
            "[[incident_route]]\nparty = \"client\"\nformat = \"pagerduty\"\nrouting_key = \"K\"\nwebhook = \"https://127.0.0.1:{port}/v2/enqueue\"\nca_file = {:?}\n",
            ca_file.display().to_string()
        ),
    );
    let ids: Vec<u64> = (0..3)
        .map(|i| open(&d, "api-key-leaked", &format!("leak {i}")))
        .collect();
    // All three are in the outbox; the route tries its oldest while the receiver is down.
    let before = wait_for(Duration::from_secs(30), "two failed attempts", || {
        let rows = d.json(&["incidents", "outbox"]);
        let rows = rows.as_array()?.clone();
        let tried: u64 = rows
            .iter()
            .map(|r| r["attempts"].as_u64().unwrap_or(0))
            .sum();
        (rows.len() == 3 && tried >= 2).then_some(rows)
    });
    assert!(before.iter().all(|r| r["state"] == "pending"), "{before:?}");
    let head_attempts = before
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .max()
        .unwrap();
    d.kill9();
    d.restart();
    let receiver = ProviderStub::serve(
        &ca,
        accepted(),
        &format!("127.0.0.1:{port}"),
        &["127.0.0.1"],
    );
    wait_for(Duration::from_secs(90), "all three deliveries", || {
        (json_bodies(&receiver).len() >= 3).then_some(())
    });
    // Let anything extra the daemon would send arrive before counting.
    wait_for(Duration::from_secs(30), "an empty outbox", || {
        d.json(&["incidents", "outbox"])
            .as_array()?
            .is_empty()
            .then_some(())
    });
    let bodies = json_bodies(&receiver);
    let mut keys: Vec<String> = bodies
        .iter()
        .map(|b| b["dedup_key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 3, "one per incident: {bodies:?}");
    assert_eq!(bodies.len(), 3, "each arrived once: {bodies:?}");
    // Attempts go on counting across the restart.
    let last_attempts: Vec<u64> = ids
        .iter()
        .map(|id| {
            let i = d.json(&["incidents", "show", &id.to_string()]);
            let ok = i["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|x| x["ok"] == true)
                .cloned()
                .unwrap_or_else(|| panic!("delivered: {i}"));
            ok["attempt"].as_u64().unwrap()
        })
        .collect();
    assert!(
        last_attempts.iter().any(|a| *a > head_attempts),
        "the head's count went on from {head_attempts}: {last_attempts:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_altered_while_running_raises_a_tamper_incident() {
    let d = Daemon::start("notify-tamper", "audit_checkpoint_secs = 3");
    open(&d, "api-key-leaked", "first");
    let id = open(&d, "api-key-leaked", "second");
    // The newest segment's last `incident.trigger` record: rewritten in place with the
    // same length and a fresh checksum (only the chain and the hashes can tell).
    let audit = d.dir.join("state").join("audit");
    let seg = std::fs::read_dir(&audit)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("a segment");
    forge_last(&seg, "incident.trigger");
    let i = wait_for(Duration::from_secs(30), "a tamper incident", || {
        d.json(&["incidents", "list"])
            .as_array()?
            .iter()
            .find(|i| i["scenario"] == "audit-tampering")
            .cloned()
    });
    assert_eq!(i["party"], "platform");
    assert_eq!(i["severity"], "critical");
    let s = i["summary"].as_str().unwrap();
    assert!(
        s.contains("changed since it was written") || s.contains("does not chain"),
        "{s}"
    );
    assert!(id > 0);
}

/// Rewrites the last record whose event holds `needle` (one byte of its event changed,
/// its checksum recomputed), in place.
fn forge_last(seg: &std::path::Path, needle: &str) {
    use std::io::{Seek, SeekFrom, Write};
    let buf = std::fs::read(seg).unwrap();
    let mut pos = 16;
    let mut found = None;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > buf.len() {
            break;
        }
        let body = &buf[pos + 8..pos + 8 + len];
        if String::from_utf8_lossy(&body[48..]).contains(needle) {
            found = Some((pos, len));
        }
        pos += 8 + len;
    }
    let (pos, len) = found.expect("a record to alter");
    let mut body = buf[pos + 8..pos + 8 + len].to_vec();
    let text = String::from_utf8(body[48..].to_vec()).unwrap();
    let forged = text.replacen("incident", "incidenT", 1);
    assert_ne!(forged, text);
    body[48..].copy_from_slice(forged.as_bytes());
    let crc = crc32fast::hash(&body);
    let mut f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    f.seek(SeekFrom::Start(pos as u64 + 4)).unwrap();
    f.write_all(&crc.to_le_bytes()).unwrap();
    f.write_all(&body).unwrap();
    f.sync_all().unwrap();
}
