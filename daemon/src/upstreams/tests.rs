//! Tests of the upstream store: versions, keys sealed and bound to their row, fallbacks
//! checked against the tenant, removal, tenant isolation.

use super::*;
use agenfleet_protocol::{Injection, UpstreamKind};

fn setup() -> (Upstreams, Store) {
    crate::keyring::join_for_this_thread().expect("a session keyring for this test thread");
    let store = Store::open_in_memory().unwrap();
    let instance = format!("test{:08x}", rand::random::<u32>());
    let vault = Arc::new(Vault::open(store.clone(), instance));
    vault.init().unwrap();
    (Upstreams::new(store.clone(), vault), store)
}

fn spec(tenant: &str, name: &str, kind: UpstreamKind) -> UpstreamSpec {
    UpstreamSpec {
        class: UpstreamClass::Provider,
        tenant: tenant.into(),
        name: name.into(),
        kind,
        base_url: "https://models.example".into(),
        ca_pem: None,
        auth: kind.default_auth(),
        fallbacks: vec![],
        timeout_ms: 5_000,
        tls_inspect: false,
        record_bodies: false,
    }
}

fn key(s: &str) -> SecretValue {
    SecretValue::new(s.as_bytes().to_vec())
}

#[test]
fn versions_keep_or_replace_the_key() {
    let (u, _) = setup();
    let v1 = u
        .put(
            spec("t", "openai", UpstreamKind::Openai),
            Some(&key("sk-one")),
            true,
            "me",
            "",
        )
        .unwrap();
    assert_eq!((v1.version, v1.key_version), (1, 1));
    let live = u.get("t", "openai").unwrap().expect("in force");
    assert_eq!(u.key(&live).unwrap().expose(), b"sk-one");
    // A change without a key keeps it; the cached client is replaced.
    let mut s = spec("t", "openai", UpstreamKind::Openai);
    s.timeout_ms = 9_000;
    let v2 = u.put(s, None, false, "me", "slower").unwrap();
    assert_eq!(
        (v2.version, v2.key_version, &v2.key_hmac),
        (2, 1, &v1.key_hmac)
    );
    let live = u.get("t", "openai").unwrap().expect("in force");
    assert_eq!(live.view.spec.timeout_ms, 9_000);
    assert_eq!(u.key(&live).unwrap().expose(), b"sk-one");
    let v3 = u
        .put(
            spec("t", "openai", UpstreamKind::Openai),
            Some(&key("sk-two")),
            false,
            "me",
            "",
        )
        .unwrap();
    assert_eq!((v3.version, v3.key_version), (3, 2));
    assert_ne!(v3.key_hmac, v1.key_hmac);
    let live = u.get("t", "openai").unwrap().expect("in force");
    assert_eq!(u.key(&live).unwrap().expose(), b"sk-two");
    assert_eq!(u.history("t", "openai").unwrap().len(), 3);
    // Adding it again is refused; so is changing one that does not exist.
    let e = u
        .put(
            spec("t", "openai", UpstreamKind::Openai),
            Some(&key("x")),
            true,
            "me",
            "",
        )
        .unwrap_err();
    assert!(e.to_string().contains("already has"), "{e}");
    let e = u
        .put(
            spec("t", "other", UpstreamKind::Openai),
            None,
            false,
            "me",
            "",
        )
        .unwrap_err();
    assert!(e.to_string().contains("add it first"), "{e}");
}

#[test]
fn a_key_copied_to_another_row_does_not_open() {
    let (u, store) = setup();
    u.put(
        spec("t", "a", UpstreamKind::Openai),
        Some(&key("sk-a")),
        true,
        "me",
        "",
    )
    .unwrap();
    u.put(
        spec("t", "b", UpstreamKind::Openai),
        Some(&key("sk-b")),
        true,
        "me",
        "",
    )
    .unwrap();
    store
        .with(|c| {
            c.execute_batch("CREATE TEMP TABLE s AS SELECT sealed FROM upstreams WHERE name = 'a';")
        })
        .unwrap();
    // Through the tenant view (the only way to write it), b's key becomes a's ciphertext.
    store
        .tenant("t")
        .with(|c| {
            c.execute(
                "UPDATE t_upstreams SET sealed = (SELECT sealed FROM temp.s) WHERE name = 'b'",
                [],
            )
        })
        .unwrap();
    let live = u.get("t", "b").unwrap().expect("in force");
    let e = u.key(&live).unwrap_err();
    assert!(e.to_string().contains("does not decrypt"), "{e}");
}

#[test]
fn fallbacks_must_be_providers_of_the_same_kind_in_the_tenant() {
    let (u, _) = setup();
    u.put(
        spec("t", "claude", UpstreamKind::Anthropic),
        Some(&key("k")),
        true,
        "me",
        "",
    )
    .unwrap();
    u.put(
        spec("other", "backup", UpstreamKind::Openai),
        Some(&key("k")),
        true,
        "me",
        "",
    )
    .unwrap();
    let mut s = spec("t", "main", UpstreamKind::Openai);
    s.fallbacks = vec!["claude".into()];
    let e = u
        .put(s.clone(), Some(&key("k")), true, "me", "")
        .unwrap_err();
    assert!(e.to_string().contains("cannot go to the other"), "{e}");
    s.fallbacks = vec!["backup".into()];
    let e = u
        .put(s.clone(), Some(&key("k")), true, "me", "")
        .unwrap_err();
    assert!(
        e.to_string().contains("has no provider of that name"),
        "{e}"
    );
    u.put(
        spec("t", "backup", UpstreamKind::Openai),
        Some(&key("k")),
        true,
        "me",
        "",
    )
    .unwrap();
    u.put(s, Some(&key("k")), true, "me", "").unwrap();
    // The fallback cannot be removed while it is one.
    let e = u
        .remove(UpstreamClass::Provider, "t", "backup", "me")
        .unwrap_err();
    assert!(e.to_string().contains("falls back to"), "{e}");
    u.remove(UpstreamClass::Provider, "t", "main", "me")
        .unwrap();
    u.remove(UpstreamClass::Provider, "t", "backup", "me")
        .unwrap();
    assert!(u.get("t", "backup").unwrap().is_none());
    let names: Vec<String> = u
        .list("t")
        .unwrap()
        .into_iter()
        .map(|v| v.spec.name)
        .collect();
    assert_eq!(names, ["claude"]);
    // Another tenant's of the same name is untouched.
    assert_eq!(u.list("other").unwrap().len(), 1);
}

#[test]
fn a_bad_ca_is_refused_with_the_reason() {
    let (u, _) = setup();
    let mut s = spec("t", "x", UpstreamKind::Generic);
    s.auth = Injection::Query("key".into());
    s.ca_pem = Some("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".into());
    let e = u.put(s, Some(&key("k")), true, "me", "").unwrap_err();
    assert!(e.to_string().contains("ca_file"), "{e}");
}
