//! Unit tests of spec parsing, validation and hashing.

use super::*;

fn base() -> &'static str {
    "name = \"web-1\"\nimage = \"agenfleet/agent\"\n"
}

#[test]
fn minimal_spec_gets_defaults() {
    let s = AgentSpec::from_toml(base()).unwrap();
    s.validate().unwrap();
    assert_eq!(s.tenant, "default");
    assert_eq!(s.limits.memory_mb, 256);
    assert_eq!(s.network.mode, NetworkMode::Gateway);
    assert_eq!(s.restart.mode, RestartMode::Fail);
}

#[test]
fn credentials_are_names_or_tables_and_travel_whole_in_bincode() {
    let s = AgentSpec::from_toml(
        "name = \"a\"\nimage = \"x/y\"\ncredentials = [\"k\", { name = \"db\", as = \"file\" }, { name = \"open-ai\", as = \"env\" }]\n",
    )
    .unwrap();
    s.validate().unwrap();
    assert_eq!(s.credentials[0], CredentialUse::api("k"));
    assert_eq!(s.credentials[1].delivery, Delivery::File);
    assert_eq!(s.credentials[1].file_path(), "/run/agenfleet/secrets/db");
    assert_eq!(s.credentials[2].env_var(), "OPEN_AI");
    // JSON (the store) writes a plain name as before; bincode (the wire) keeps all.
    let json = serde_json::to_string(&s.credentials).unwrap();
    assert!(
        json.starts_with("[\"k\",{\"name\":\"db\",\"as\":\"file\"}"),
        "{json}"
    );
    let back: Vec<CredentialUse> = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s.credentials);
    let mut codec: tokio_serde::formats::Bincode<AgentSpec, AgentSpec> = Default::default();
    let bytes = tokio_serde::Serializer::serialize(std::pin::Pin::new(&mut codec), &s).unwrap();
    let mut codec: tokio_serde::formats::Bincode<AgentSpec, AgentSpec> = Default::default();
    let again: AgentSpec = tokio_serde::Deserializer::deserialize(
        std::pin::Pin::new(&mut codec),
        &bytes::BytesMut::from(&bytes[..]),
    )
    .unwrap();
    assert_eq!(again, s);
    // Plain names hash as they did before deliveries existed.
    let old = AgentSpec::from_toml(&format!("{}credentials = [\"k\"]\n", base())).unwrap();
    assert_eq!(old.hash(), {
        let mut o = old.clone();
        o.credentials = vec![CredentialUse::api("k")];
        o.hash()
    });
}

#[test]
fn deliveries_and_files_that_cannot_work_are_named() {
    for (extra, field) in [
        (
            "credentials = [{ name = \"k\", as = \"file\" }]",
            "credentials[0].as",
        ),
        (
            "credentials = [{ name = \"k\", var = \"K\" }]",
            "credentials[0].var",
        ),
        ("credentials = [\"k\", \"k\"]", "credentials[1]"),
        ("[[files]]\nsource = \"a\"\ntarget = \"/etc/x\"", "files"),
        ("[workspace]\nsize_mb = 8", "workspace"),
    ] {
        let e = AgentSpec::from_toml(&format!("{}{extra}\n", base()))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.field, field, "{extra}: {e}");
    }
    let own = "name = \"a\"\nimage = \"x/y\"\n";
    for (extra, field) in [
        ("env = { K2 = \"v\" }\ncredentials = [{ name = \"k\", as = \"env\", var = \"K2\" }]", "credentials[0].var"),
        ("credentials = [{ name = \"k\", as = \"env\", var = \"HTTP_PROXY\" }]", "credentials[0].var"),
        ("credentials = [{ name = \"k\", as = \"env\", var = \"1X\" }]", "credentials[0].var"),
        ("[[files]]\nsource = \"../a\"\ntarget = \"/x\"", "files[0].source"),
        ("[[files]]\nsource = \"a\"\ntarget = \"/x:/y\"", "files[0].target"),
        ("[[files]]\nsource = \"a\"\ntarget = \"/workspace/x\"", "files[0].target"),
        ("[[files]]\nsource = \"a\"\ntarget = \"/x/../y\"", "files[0].target"),
        ("[[files]]\nsource = \"a\"\ntarget = \"/x\"\n[[files]]\nsource = \"b\"\ntarget = \"/x\"", "files[1].target"),
        ("[workspace]\nsize_mb = 0", "workspace.size_mb"),
    ] {
        let e = AgentSpec::from_toml(&format!("{own}{extra}\n"))
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(e.field, field, "{extra}: {e}");
    }
}

#[test]
fn unknown_field_is_named() {
    let e = AgentSpec::from_toml(&format!("{}colour = \"red\"\n", base())).unwrap_err();
    assert!(e.contains("colour"), "{e}");
    let e = AgentSpec::from_toml(&format!("{}[limits]\nmemroy_mb = 3\n", base())).unwrap_err();
    assert!(e.contains("memroy_mb"), "{e}");
}

#[test]
fn missing_image_is_named() {
    let e = AgentSpec::from_toml("name = \"x\"\n").unwrap_err();
    assert!(e.contains("image"), "{e}");
}

#[test]
fn bad_limit_names_field_and_reason() {
    let s = AgentSpec::from_toml(&format!("{}[limits]\nmemory_mb = 1\n", base())).unwrap();
    let e = s.validate().unwrap_err();
    assert_eq!(e.field, "limits.memory_mb");
    assert!(e.reason.contains("out of range"));
    let s = AgentSpec::from_toml(&format!("{}[limits]\ncpus = 0.0\n", base())).unwrap();
    assert_eq!(s.validate().unwrap_err().field, "limits.cpus");
    let s = AgentSpec::from_toml(&format!(
        "{}[restart]\ndelay_ms = 5000\nmax_delay_ms = 100\n",
        base()
    ))
    .unwrap();
    assert_eq!(s.validate().unwrap_err().field, "restart.max_delay_ms");
}

#[test]
fn runs_settings_are_checked_and_named() {
    for (toml, field) in [
        ("max_concurrent = 0", "runs.max_concurrent"),
        ("max_concurrent = 65", "runs.max_concurrent"),
        ("timeout_secs = 0", "runs.timeout_secs"),
        ("queue = 10001", "runs.queue"),
    ] {
        let s = AgentSpec::from_toml(&format!("{}[runs]\n{toml}\n", base())).unwrap();
        let e = s.validate().unwrap_err();
        assert_eq!(e.field, field, "{toml}");
        assert!(e.reason.contains("out of range"), "{toml}: {}", e.reason);
    }
    let e = AgentSpec::from_toml(&format!("{}[runs]\nparallel = 2\n", base())).unwrap_err();
    assert!(e.contains("parallel"), "{e}");
    let s = AgentSpec::from_toml(&format!("{}[runs]\nqueue = 0\n", base())).unwrap();
    assert!(s.validate().is_ok(), "a queue of 0 takes no run: allowed");
}

#[test]
fn bad_names_are_refused() {
    let s = AgentSpec::from_toml("name = \"Bad_Name\"\nimage = \"x\"\n").unwrap();
    assert_eq!(s.validate().unwrap_err().field, "name");
    let s = AgentSpec::from_toml("name = \"ok\"\nimage = \" \"\n").unwrap();
    assert_eq!(s.validate().unwrap_err().field, "image");
}

#[test]
fn program_fields_are_checked_and_named() {
    let own = "name = \"a\"\nimage = \"mine/app:1\"\n";
    let s = AgentSpec::from_toml(&format!(
        "{own}command = [\"python3\", \"/app/agent.py\"]\nworkdir = \"/app\"\n[env]\nLOG_LEVEL = \"info\"\n"
    ))
    .unwrap();
    s.validate().unwrap();
    assert_eq!(s.command, ["python3", "/app/agent.py"]);
    let field = |extra: &str| {
        AgentSpec::from_toml(&format!("{own}{extra}"))
            .unwrap()
            .validate()
            .unwrap_err()
    };
    for (extra, want) in [
        ("command = [\"\"]\n", "command[0]"),
        ("workdir = \"app\"\n", "workdir"),
        ("[env]\nOPENAI_API_KEY = \"sk-1\"\n", "env.OPENAI_API_KEY"),
        ("[env]\ndb_password = \"x\"\n", "env.db_password"),
        ("[env]\nGITHUB_TOKEN = \"x\"\n", "env.GITHUB_TOKEN"),
        ("[env]\nAGENFLEET_API = \"x\"\n", "env.AGENFLEET_API"),
        ("[env]\n\"1X\" = \"x\"\n", "env.1X"),
        ("[env]\n\"A-B\" = \"x\"\n", "env.A-B"),
        ("[health]\n", "health"),
        ("[health]\nhttp = \"/h\"\ncommand = [\"x\"]\n", "health"),
        ("[health]\nhttp = \"healthz\"\nport = 80\n", "health.http"),
        ("[health]\nhttp = \"/healthz\"\n", "health.port"),
        (
            "[health]\ncommand = [\"true\"]\nretries = 0\n",
            "health.retries",
        ),
        (
            "[health]\ncommand = [\"true\"]\ninterval_secs = 0\n",
            "health.interval_secs",
        ),
    ] {
        assert_eq!(field(extra).field, want, "{extra}");
    }
    assert!(field("[env]\nAWS_SECRET = \"x\"\n")
        .reason
        .contains("credentials"));
    // Names that only look alike are fine.
    let s = AgentSpec::from_toml(&format!(
        "{own}[env]\nKEYBOARD = \"us\"\nTOKENIZER = \"bpe\"\n"
    ))
    .unwrap();
    s.validate().unwrap();
    // The built-in image runs its workload, not a command.
    let s = AgentSpec::from_toml(&format!("{}command = [\"sh\"]\n", base())).unwrap();
    assert_eq!(s.validate().unwrap_err().field, "command");
}

#[test]
fn a_spec_without_the_program_fields_keeps_its_hash() {
    // The hash the daemon before `command`, `workdir` and `env` put on this spec's
    // container (read from its label): after an upgrade it is adopted, not replaced.
    // (Such a spec is stored with the network mode of its day, `none`.)
    let s = AgentSpec::from_toml(&format!("{}[network]\nmode = \"none\"\n", base())).unwrap();
    assert_eq!(s.hash(), "31f6ef097bc0d9b5");
    for change in [
        |t: &mut AgentSpec| t.command = vec!["x".into()],
        |t: &mut AgentSpec| t.workdir = "/w".into(),
        |t: &mut AgentSpec| {
            t.env.insert("A".into(), "1".into());
        },
    ] {
        let mut t = s.clone();
        change(&mut t);
        assert_ne!(s.hash(), t.hash());
    }
}

#[test]
fn hash_changes_with_content() {
    let a = AgentSpec::from_toml(base()).unwrap();
    let mut b = a.clone();
    assert_eq!(a.hash(), b.hash());
    b.limits.pids = 64;
    assert_ne!(a.hash(), b.hash());
}

#[test]
fn the_hash_of_a_spec_without_upstreams_is_the_one_it_had_before_them() {
    // Its derived JSON, minus the three fields added with providers, is what was hashed.
    let spec = AgentSpec::from_toml(
        "name = \"a\"\nimage = \"x/y\"\ncommand = [\"run\"]\n[env]\nA = \"1\"\n",
    )
    .unwrap();
    let full = serde_json::to_string(&spec).unwrap();
    // (and minus the description and the runs, added later still)
    let old = full.replace(",\"description\":\"\"", "");
    let old = old.replace(
        ",\"runs\":{\"max_concurrent\":1,\"timeout_secs\":600,\"queue\":100,\"kind\":\"service\"}",
        "",
    );
    let old = old.replace(
        ",\"providers\":[],\"connections\":[],\"budget\":{\"tokens_per_day\":0,\"calls_per_minute\":0}",
        "",
    );
    // (and the placement, swarm mode's)
    let old = old.replace(",\"placement\":{\"constraints\":[],\"spread\":\"\"}", "");
    assert_ne!(old, full);
    assert_eq!(spec.hash(), fnv1a_hex(old.as_bytes()));
    let mut with = spec.clone();
    with.providers = vec!["openai".into()];
    assert_ne!(with.hash(), spec.hash());
    let mut placed = spec.clone();
    placed.placement.constraints = vec!["node.labels.zone==eu".into()];
    assert_ne!(placed.hash(), spec.hash());
    assert_ne!(placed.container_hash(), spec.container_hash());
    let mut runs = spec.clone();
    runs.runs.queue = 5;
    assert_ne!(runs.hash(), spec.hash());
    assert_eq!(
        runs.container_hash(),
        spec.container_hash(),
        "taken up in place"
    );
    // Runs as they were hashed before job agents: without `kind` while it is a service's.
    let before_jobs = serde_json::to_string(&runs)
        .unwrap()
        .replace(",\"kind\":\"service\"", "")
        .replace(",\"description\":\"\"", "")
        .replace(
            ",\"providers\":[],\"connections\":[],\"budget\":{\"tokens_per_day\":0,\"calls_per_minute\":0}",
            "",
        )
        .replace(",\"placement\":{\"constraints\":[],\"spread\":\"\"}", "");
    assert_eq!(runs.hash(), fnv1a_hex(before_jobs.as_bytes()));
    let mut job = runs.clone();
    job.runs.kind = crate::spec::AgentKind::Job;
    assert_ne!(job.hash(), runs.hash());
}

fn spec(extra: &str) -> AgentSpec {
    let s = AgentSpec::from_toml(&format!("name = \"web-1\"\nimage = \"x/y\"\n{extra}")).unwrap();
    s.validate().unwrap();
    s
}

#[test]
fn a_change_names_its_fields_and_whether_it_needs_a_new_container() {
    let old = spec("[restart]\nattempts = 5\n");
    assert!(old.change_from(&old).unwrap().is_empty());
    // Restart policy, budget, fallbacks and description: taken up in place, and the
    // container's digest stays.
    let new = spec(
        "description = \"reads the queue\"\nmodel_fallbacks = [\"b\"]\n[restart]\nattempts = 9\n[budget]\ncalls_per_minute = 5\n",
    );
    let c = new.change_from(&old).unwrap();
    assert_eq!(
        c.fields,
        ["description", "restart", "model_fallbacks", "budget"]
    );
    assert!(!c.recreate, "{c:?}");
    assert_eq!(new.container_hash(), old.container_hash());
    assert_ne!(new.hash(), old.hash());
    assert_eq!(
        c.describe(),
        "in place (description, restart, model_fallbacks, budget)"
    );
    // Anything the container is made from needs a new one.
    for extra in [
        "env = { A = \"1\" }\n",
        "[limits]\nmemory_mb = 300\n",
        "[workload]\nmessage = \"other\"\n",
        "credentials = [\"k\"]\n",
        "[network]\nmode = \"none\"\n",
    ] {
        let new = spec(&format!("{extra}[restart]\nattempts = 5\n"));
        let c = new.change_from(&old).unwrap();
        assert!(c.recreate, "{extra}: {c:?}");
        assert_eq!(c.fields.len(), 1, "{extra}: {c:?}");
        assert_ne!(new.container_hash(), old.container_hash(), "{extra}");
    }
}

#[test]
fn identity_project_and_a_shrinking_or_removed_workspace_cannot_change() {
    let old = spec("[workspace]\nsize_mb = 64\n");
    let other = AgentSpec::from_toml("name = \"web-2\"\nimage = \"agenfleet/agent\"\n").unwrap();
    assert_eq!(other.change_from(&old).unwrap_err().field, "name");
    let moved = spec("project = \"p2\"\n[workspace]\nsize_mb = 64\n");
    let e = moved.change_from(&old).unwrap_err();
    assert_eq!(e.field, "project");
    assert!(e.reason.contains("`default` to `p2`"), "{e}");
    let e = spec("[workspace]\nsize_mb = 32\n")
        .change_from(&old)
        .unwrap_err();
    assert_eq!(e.field, "workspace.size_mb");
    assert!(e.reason.contains("64 → 32"), "{e}");
    assert_eq!(spec("").change_from(&old).unwrap_err().field, "workspace");
    let grown = spec("[workspace]\nsize_mb = 128\n")
        .change_from(&old)
        .unwrap();
    assert_eq!(grown.fields, ["workspace"]);
    assert!(grown.recreate);
}

#[test]
fn the_display_form_shows_files_by_digest_and_a_description_is_one_short_line() {
    let mut s = spec("[[files]]\nsource = \"c.json\"\ntarget = \"/etc/c.json\"\n");
    s.files[0].content = b"{\"a\":1}".to_vec();
    let t = s.to_display_toml();
    assert!(t.contains("content = \"(7 bytes, sha256 "), "{t}");
    assert!(!t.contains("eyJhIjox"), "base64 of the content: {t}");
    // The spec's order at the top (whatever the JSON map's order is in this build),
    // nested keys sorted.
    assert!(
        t.starts_with("name = \"web-1\"\ntenant = \"default\"\nproject ="),
        "{t}"
    );
    let limits = t.split("[limits]\n").nth(1).unwrap_or_default();
    assert!(
        limits.starts_with("cpus = 1.0\nmemory_mb = 256\npids = 128\n"),
        "{t}"
    );
    let mut bad = spec("");
    bad.description = "two\nlines".into();
    assert_eq!(bad.validate().unwrap_err().field, "description");
    // A description changes the hash only when there is one (an empty one keeps the hash
    // specs had before it existed: `a_spec_without_the_program_fields_keeps_its_hash`).
    let mut described = spec("");
    described.description = "x".into();
    assert_ne!(described.hash(), spec("").hash());
}

#[test]
fn a_job_kind_parses_an_unknown_one_is_named_and_kind_cannot_change_in_place() {
    let job = spec("[runs]\nkind = \"job\"\n");
    assert_eq!(job.runs.kind, crate::spec::AgentKind::Job);
    assert_eq!(spec("").runs.kind, crate::spec::AgentKind::Service);
    let e = AgentSpec::from_toml("name = \"a\"\nimage = \"x/y\"\n[runs]\nkind = \"batch\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("batch") && e.contains("job"), "{e}");
    let e = spec("").change_from(&job).unwrap_err().to_string();
    assert!(e.contains("runs.kind"), "{e}");
}

#[test]
fn placement_is_checked_as_swarm_reads_it() {
    let spec = |p: &str| -> Result<(), SpecError> {
        AgentSpec::from_toml(&format!(
            "name = \"a\"\nimage = \"x/y\"\n[placement]\n{p}\n"
        ))
        .map_err(|e| SpecError {
            field: "toml".into(),
            reason: e,
        })?
        .validate()
    };
    assert!(spec("constraints = [\"node.labels.zone==eu\", \"node.role!=manager\"]\nspread = \"node.labels.rack\"").is_ok());
    let e = spec("constraints = [\"node.lables.zone==eu\"]").unwrap_err();
    assert_eq!(e.field, "placement.constraints[0]");
    assert!(e.reason.contains("node.lables.zone"), "{}", e.reason);
    let e = spec("constraints = [\"node.labels.zone=eu\"]").unwrap_err();
    assert!(e.reason.contains("KEY==VALUE"), "{}", e.reason);
    let e = spec("constraints = [\"node.hostname==\"]").unwrap_err();
    assert!(e.reason.contains("no valid value"), "{}", e.reason);
    let e = spec("spread = \"zone\"").unwrap_err();
    assert_eq!(e.field, "placement.spread");
    assert!(spec("speed = 1").is_err(), "unknown keys are refused");
}
