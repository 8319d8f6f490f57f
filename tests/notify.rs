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
    let id = d.open_incident("cross-tenant-leak", "seen in a test");
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
    let id = d.open_incident("api-key-leaked", "key in a pastebin");
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
    let id = d.open_incident("webhook-down", "partner hook answers 503");
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
    let id = d.open_incident("model-provider-down", "provider 5xx");
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
        .map(|i| d.open_incident("api-key-leaked", &format!("leak {i}")))
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
    d.open_incident("api-key-leaked", "first");
    let id = d.open_incident("api-key-leaked", "second");
    // The newest segment's last record — whatever it is, it is within the checks' window
    // — rewritten in place with the same length and a fresh checksum (only the chain and
    // the hashes the writer gave can tell).
    let audit = d.dir.join("state").join("audit");
    let seg = std::fs::read_dir(&audit)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .max()
        .expect("a segment");
    forge_last(&seg);
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

/// Rewrites the last whole record of a segment (one letter of its event changed, its
/// checksum recomputed), in place.
fn forge_last(seg: &std::path::Path) {
    use std::io::{Seek, SeekFrom, Write};
    let buf = std::fs::read(seg).unwrap();
    let mut pos = 16;
    let mut found = None;
    while pos + 8 <= buf.len() {
        let len = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
        if pos + 8 + len > buf.len() {
            break;
        }
        found = Some((pos, len));
        pos += 8 + len;
    }
    let (pos, len) = found.expect("a record to alter");
    let mut body = buf[pos + 8..pos + 8 + len].to_vec();
    let at = 48
        + body[48..]
            .iter()
            .position(|b| *b == b'a')
            .expect("an `a` to change");
    body[at] = b'b';
    let crc = crc32fast::hash(&body);
    let mut f = std::fs::OpenOptions::new().write(true).open(seg).unwrap();
    f.seek(SeekFrom::Start(pos as u64 + 4)).unwrap();
    f.write_all(&crc.to_le_bytes()).unwrap();
    f.write_all(&body).unwrap();
    f.sync_all().unwrap();
}

/// Writes a CA file and an HMAC secret for a test's routes: (ca_file, secret_file).
fn route_files(dir: &std::path::Path, ca: &TestCa) -> (String, String) {
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let secret_file = dir.join("hook.secret");
    std::fs::write(&secret_file, "a-shared-secret-of-some-length").unwrap();
    (
        ca_file.display().to_string(),
        secret_file.display().to_string(),
    )
}

fn incidents_at(stub: &ProviderStub) -> Vec<Value> {
    json_bodies(stub)
        .into_iter()
        .map(|b| b["incident"].clone())
        .collect()
}

#[test]
fn each_tenant_and_each_provider_reaches_its_own_route() {
    if !docker_available("each_tenant_and_each_provider_reaches_its_own_route") {
        return;
    }
    let ca = TestCa::new();
    let dir = tempdir("notify-routes");
    let (ca_file, secret_file) = route_files(&dir, &ca);
    let [acme, beta, fallback, anthropic, providers] =
        std::array::from_fn(|_| ProviderStub::start(&ca, accepted()));
    let route = |extra: &str, stub: &ProviderStub| {
        format!(
            "[[incident_route]]\n{extra}\nwebhook = \"https://127.0.0.1:{}/hook\"\nsecret_file = {secret_file:?}\nca_file = {ca_file:?}\n",
            stub.port
        )
    };
    let config = [
        "allow_direct_egress = true\n".to_string(),
        route(
            "name = \"acme-client\"\nparty = \"client\"\ntenant = \"acme\"",
            &acme,
        ),
        route(
            "name = \"beta-client\"\nparty = \"client\"\ntenant = \"beta\"",
            &beta,
        ),
        route("name = \"any-client\"\nparty = \"client\"", &fallback),
        route(
            "name = \"anthropic-desk\"\nparty = \"model_provider\"\nprovider = \"anthropic\"",
            &anthropic,
        ),
        route(
            "name = \"providers\"\nparty = \"model_provider\"",
            &providers,
        ),
    ]
    .concat();
    let d = Daemon::start("notify-routes", &config);
    d.create(&scoped_spec("acme", "web", "a1", false));
    d.create(&scoped_spec("beta", "web", "b1", false));

    // `incidents routes` says where each (party, tenant) goes.
    let r = d.json(&["incidents", "routes"]);
    let goes = |party: &str, tenant: Value| -> Vec<String> {
        r["resolved"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["party"] == party && x["tenant"] == tenant)
            .unwrap_or_else(|| panic!("{party}/{tenant} in {r}"))["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(goes("client", "acme".into()), ["acme-client"]);
    assert_eq!(goes("client", "beta".into()), ["beta-client"]);
    assert_eq!(goes("client", Value::Null), ["any-client"]);
    assert_eq!(goes("model_provider", "acme".into()), ["providers"]);
    assert!(goes("tool_provider", "acme".into()).is_empty());

    // Each tenant's client incident arrives at its own receiver only.
    for agent in ["acme/a1", "beta/b1"] {
        d.json(&[
            "incidents",
            "open",
            "--scenario",
            "api-key-leaked",
            "--agent",
            agent,
            "--summary",
            &format!("{agent} leaked"),
        ]);
    }
    wait_for(Duration::from_secs(20), "both tenants' deliveries", || {
        (!incidents_at(&acme).is_empty() && !incidents_at(&beta).is_empty()).then_some(())
    });
    assert!(incidents_at(&acme).iter().all(|i| i["tenant"] == "acme"));
    assert!(incidents_at(&beta).iter().all(|i| i["tenant"] == "beta"));

    // A provider's own route wins over the party's; another provider goes to the party's.
    let stub = StubServer::start();
    stub.set("/down", 500, "{\"error\":\"overloaded\"}");
    let p = stub.port;
    d.create(&format!(
        "name = \"modeler\"\ntenant = \"acme\"\nproject = \"web\"\nimage = \"agenfleet/agent\"\n[network]\nmode = \"egress\"\n[workload]\nlog_interval_ms = 0\nmodel_call_interval_ms = 200\n\
         [[workload.model_calls]]\nprovider = \"anthropic\"\nurl = \"http://{{gateway}}:{p}/down\"\n\
         [[workload.model_calls]]\nprovider = \"mistral\"\nurl = \"http://{{gateway}}:{p}/down\"\n"
    ));
    wait_for(
        Duration::from_secs(60),
        "both providers' incidents delivered",
        || {
            let a = incidents_at(&anthropic);
            let m = incidents_at(&providers);
            (a.iter().any(|i| i["provider"] == "anthropic")
                && m.iter().any(|i| i["provider"] == "mistral"))
            .then_some(())
        },
    );
    assert!(
        incidents_at(&anthropic)
            .iter()
            .all(|i| i["provider"] == "anthropic"),
        "only anthropic's own incidents at its desk"
    );
    assert!(
        incidents_at(&providers)
            .iter()
            .all(|i| i["provider"] != "anthropic"),
        "anthropic's incidents do not also go to the party's route"
    );
    assert!(
        incidents_at(&fallback).is_empty(),
        "no tenant's client incident reached the catch-all route"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

const REVIEW_POLICY: &str = r#"
@id("payments")
@escalate("payments are reviewed by a person")
@timeout_ms("600000")
forbid (principal, action, resource == AgenFleet::Tool::"http_request")
when { context.host like "pay*" && context.url_path like "/charge*" };

@id("quick")
@escalate("a short window")
@timeout_ms("4000")
forbid (principal, action, resource == AgenFleet::Tool::"http_request")
when { context.host like "pay*" && context.url_path like "/quick*" };
"#;

fn pending(d: &Daemon, n: usize) -> Vec<Value> {
    d.wait_pending(n, Duration::from_secs(30))
}

fn escalation_events(stub: &ProviderStub, id: u64) -> Vec<String> {
    json_bodies(stub)
        .into_iter()
        .filter(|b| b["escalation"]["id"] == id)
        .filter_map(|b| b["event"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn escalations_reach_reviewers_and_outlive_a_daemon_restart() {
    if !docker_available("escalations_reach_reviewers_and_outlive_a_daemon_restart") {
        return;
    }
    let ca = TestCa::new();
    let dir = tempdir("notify-review");
    let (ca_file, secret_file) = route_files(&dir, &ca);
    let reviewers = ProviderStub::start(&ca, accepted());
    let mut d = Daemon::start(
        "notify-review",
        &format!(
            "[[incident_route]]\nparty = \"reviewers\"\ntenant = \"default\"\nwebhook = \"https://127.0.0.1:{}/review\"\nsecret_file = {secret_file:?}\nca_file = {ca_file:?}\n",
            reviewers.port
        ),
    );
    d.create("name = \"payer\"\nimage = \"agenfleet/agent\"\n[workload]\nlog_interval_ms = 0\n");
    d.wait_agent("payer", "running", Duration::from_secs(30), |v| {
        v["state"] == "Running"
    });
    let f = d.file(
        "scopes.toml",
        "tools = [\"http_request\"]\n[[http]]\nhost = \"*.example.com\"\nmethods = [\"GET\", \"POST\"]\n",
    );
    d.json(&["scopes", "publish", "payer", &f]);
    let f = d.file("policy.cedar", REVIEW_POLICY);
    d.json(&["policy", "publish", "default", &f, "--note", "reviews"]);
    let cid = d.agent("payer")["container_id"]
        .as_str()
        .unwrap()
        .to_string();
    let charge = serde_json::json!({"tool": "http_request", "args": {"method": "POST", "url": "https://pay.example.com/charge?amount=7"}});
    let call = {
        let (cid, charge) = (cid.clone(), charge.clone());
        move || container_calls(&cid, &[], std::slice::from_ref(&charge))
    };

    // The notification arrives at once, with what a reviewer needs and the commands.
    let waiting = std::thread::spawn(call.clone());
    let e = pending(&d, 1).remove(0);
    let id = e["id"].as_u64().unwrap();
    let opened = wait_for(
        Duration::from_secs(20),
        "the reviewers' notification",
        || {
            json_bodies(&reviewers)
                .into_iter()
                .find(|b| b["event"] == "escalation.opened" && b["escalation"]["id"] == id)
        },
    );
    let text = opened["text"].as_str().unwrap();
    let short = &e["request_hash"].as_str().unwrap()[..12];
    for want in [
        "http_request",
        "amount=7",
        "payments",
        "Decide before",
        &format!("agenfleet escalations approve {id} --request {short}"),
        &format!("agenfleet escalations deny {id} --request {short}"),
    ] {
        assert!(text.contains(want), "{want:?} in {text}");
    }
    assert!(opened["reviewers"]
        .as_str()
        .unwrap()
        .contains("project_contributor"));

    // The daemon dies while it waits; after the restart it waits still, same deadline.
    d.kill9();
    let _ = waiting.join();
    d.restart();
    let after = pending(&d, 1).remove(0);
    assert_eq!(after["id"], e["id"]);
    assert_eq!(after["deadline_ms"], e["deadline_ms"]);
    assert_eq!(after["state"], "pending");
    assert_eq!(
        d.agent("payer")["escalations"],
        1,
        "the agent shows it waits"
    );
    // The agent retries the same request: it joins the pending escalation, and the
    // approval made after the restart lets it through.
    let retry = std::thread::spawn(call.clone());
    wait_for(Duration::from_secs(20), "the retry to join", || {
        d.log()
            .contains("retried call joins its pending escalation")
            .then_some(())
    });
    d.json(&[
        "escalations",
        "approve",
        &id.to_string(),
        "--reason",
        "invoice 7 checked",
    ]);
    let dec = retry
        .join()
        .expect("the retry ends")
        .pop()
        .expect("a decision");
    assert_eq!(dec["allowed"], true, "{dec}");
    assert!(
        dec["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("escalation {id}")),
        "{dec}"
    );
    assert_eq!(pending(&d, 0).len(), 0);
    wait_for(Duration::from_secs(20), "the approval told", || {
        escalation_events(&reviewers, id)
            .contains(&"escalation.approved".to_string())
            .then_some(())
    });

    // A deadline that passes while the daemon is down: denied at start, recorded, told.
    let quick = serde_json::json!({"tool": "http_request", "args": {"method": "POST", "url": "https://pay.example.com/quick"}});
    let waiting = {
        let cid = cid.clone();
        std::thread::spawn(move || container_calls(&cid, &[], &[quick]))
    };
    let q = pending(&d, 1).remove(0);
    let qid = q["id"].as_u64().unwrap();
    let deadline = q["deadline_ms"].as_u64().unwrap();
    d.kill9();
    let _ = waiting.join();
    wait_for(Duration::from_secs(30), "the deadline to pass", || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_millis() as u64;
        (now > deadline).then_some(())
    });
    d.restart();
    let all = d.json(&["escalations", "list", "--all"]);
    let ended = all
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == qid)
        .cloned()
        .expect("kept");
    assert_eq!(ended["state"], "timed_out", "{ended}");
    let rec = d.json(&["audit", "search", "--action", "escalation.timeout"]);
    assert!(
        rec.to_string()
            .contains(&format!("\\\"escalation\\\":{qid}")),
        "{rec}"
    );
    wait_for(Duration::from_secs(20), "the timeout told", || {
        escalation_events(&reviewers, qid)
            .contains(&"escalation.timed_out".to_string())
            .then_some(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// Unmounts a test's tmpfs when the test ends, however it ends.
struct Mounted(std::path::PathBuf);
impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_under_the_audit_log_is_the_platforms_critical_incident() {
    // A real full file system: a 1 MiB tmpfs under the audit log (mounting needs root).
    let mnt = tempdir("notify-diskfull");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root and must mount a tmpfs"
        );
        eprintln!("SKIP a_full_disk_under_the_audit_log_is_the_platforms_critical_incident: cannot mount a tmpfs (not root)");
        return;
    }
    let _guard = Mounted(mnt.clone());
    let audit = mnt.join("audit");
    let d = Daemon::start(
        "notify-diskfull",
        &format!("audit_dir = {:?}\n", audit.display().to_string()),
    );
    // Fill what is left.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    // The next action that must be recorded fails and closes the log.
    let out = d.cli(&[
        "incidents",
        "open",
        "--scenario",
        "api-key-leaked",
        "--summary",
        "x",
    ]);
    let _ = out;
    let i = wait_for(Duration::from_secs(30), "the audit-closed incident", || {
        d.json(&["incidents", "list"])
            .as_array()?
            .iter()
            .find(|i| i["scenario"] == "audit-closed")
            .cloned()
    });
    assert_eq!(i["party"], "platform");
    assert_eq!(i["severity"], "critical");
    assert!(
        i["summary"]
            .as_str()
            .unwrap()
            .contains("No space left on device"),
        "{i}"
    );
    // Mutations are refused from now on, saying why.
    let out = d.cli(&["create", "--file", "/dev/null"]);
    assert!(!out.status.success());
    drop(d);
    drop(_guard);
    let _ = std::fs::remove_dir_all(&mnt);
}
