//! Tests of the vault: values bound to their row, rotation and revocation, sealing and the recovery key.

use super::*;

fn setup() -> (Vault, Store, AgentKey, AgentKey) {
    crate::keyring::join_for_this_thread().expect("a session keyring for this test thread");
    let store = Store::open_in_memory().unwrap();
    let mk = |n: &str| AgentKey {
        tenant: "t".into(),
        name: n.into(),
    };
    for n in ["a", "b"] {
        let spec = agenfleet_protocol::AgentSpec::from_toml(&format!(
            "name = \"{n}\"\ntenant = \"t\"\nimage = \"x\"\n"
        ))
        .unwrap();
        store
            .insert_agent(&crate::store::AgentRecord::new(spec, 0))
            .unwrap();
    }
    let instance = format!("test{:08x}", rand::random::<u32>());
    (
        Vault::open(store.clone(), instance),
        store,
        mk("a"),
        mk("b"),
    )
}

fn val(s: &str) -> SecretValue {
    SecretValue::new(s.as_bytes().to_vec())
}

#[test]
fn values_are_bound_to_their_row_and_fresh_each_time() {
    let (v, store, a, b) = setup();
    let rk = v.init().unwrap();
    assert_eq!(v.state(), VaultState::Unsealed);
    v.put(&a, "api-key", &val("same-value"), false, 0).unwrap();
    v.put(&b, "api-key", &val("same-value"), false, 0).unwrap();
    let blobs: Vec<Vec<u8>> = store
        .with(|c| {
            let mut st = c.prepare("SELECT sealed FROM credentials ORDER BY agent")?;
            let r = st.query_map([], |r| r.get(0))?.collect();
            r
        })
        .unwrap();
    assert_ne!(blobs[0], blobs[1], "the same value encrypts differently");
    assert!(!blobs[0].windows(10).any(|w| w == b"same-value"));
    // Copy a's ciphertext into b's row: b's value no longer opens.
    store
        .tenant("t")
        .with(|c| {
            c.execute(
                "UPDATE t_credentials SET sealed = ?1 WHERE agent = 'b'",
                params![blobs[0]],
            )
        })
        .unwrap();
    let e = v.current_values(&b).unwrap_err();
    assert!(matches!(e, VaultError::Corrupt(_)), "{e}");
    assert!(e.to_string().contains("t/b/api-key version 1"), "{e}");
    // Flip a byte of a's ciphertext.
    let mut flipped = blobs[0].clone();
    flipped[20] ^= 1;
    store
        .tenant("t")
        .with(|c| {
            c.execute(
                "UPDATE t_credentials SET sealed = ?1 WHERE agent = 'a'",
                params![flipped],
            )
        })
        .unwrap();
    assert!(matches!(v.current_values(&a), Err(VaultError::Corrupt(_))));
    drop(rk);
    let _ = crate::keyring::delete(&v.keyring_name());
}

#[test]
fn rotate_revoke_versions_and_metadata_never_hold_the_value() {
    let (v, _s, a, _b) = setup();
    v.init().unwrap();
    assert!(matches!(
        v.put(&a, "k", &val("v1"), true, 0),
        Err(VaultError::NotFound(_))
    ));
    v.put(&a, "k", &val("v1"), false, 0).unwrap();
    assert!(matches!(
        v.put(&a, "k", &val("v2"), false, 0),
        Err(VaultError::Exists(_))
    ));
    let info = v.put(&a, "k", &val("v2"), true, 0).unwrap();
    assert_eq!(info.current_version, Some(2));
    assert!(
        info.versions[0].revoked_ms.is_some(),
        "old version revoked at once"
    );
    let got = v.current_values(&a).unwrap();
    assert_eq!(got[0].2.expose(), b"v2");
    let info = v.put(&a, "k", &val("v3"), true, 3600).unwrap();
    assert_eq!(info.current_version, Some(3));
    assert!(
        info.versions[1].revoke_at_ms.is_some(),
        "grace period scheduled"
    );
    v.revoke(&a, "k", Some(3)).unwrap();
    assert_eq!(
        v.show(&a, "k").unwrap().current_version,
        Some(2),
        "v2 still in its grace period"
    );
    assert!(v.show(&a, "k").unwrap().last_delivered_ms.is_some());
    assert!(matches!(
        v.put(&a, "bad name", &val("x"), false, 0),
        Err(VaultError::Invalid(_))
    ));
    let _ = crate::keyring::delete(&v.keyring_name());
}

#[test]
fn sealed_until_unsealed_with_the_right_recovery_key() {
    let (v, _s, a, _b) = setup();
    let rk = v.init().unwrap();
    v.put(&a, "k", &val("secret"), false, 0).unwrap();
    v.seal();
    assert_eq!(v.state(), VaultState::Sealed);
    assert!(matches!(v.current_values(&a), Err(VaultError::Sealed)));
    assert!(matches!(
        v.unseal(&val("00")),
        Err(VaultError::MalformedRecoveryKey)
    ));
    let wrong = SecretValue::new(format_recovery(&[7u8; 32]).into_bytes());
    assert!(matches!(
        v.unseal(&wrong),
        Err(VaultError::WrongRecoveryKey)
    ));
    assert_eq!(v.state(), VaultState::Sealed);
    v.unseal(&rk).unwrap();
    assert_eq!(v.current_values(&a).unwrap()[0].2.expose(), b"secret");
    // Rekey: a new recovery key; the old one stops working; values still open.
    let rk2 = v.rekey().unwrap();
    v.seal();
    assert!(matches!(v.unseal(&rk), Err(VaultError::WrongRecoveryKey)));
    v.unseal(&rk2).unwrap();
    assert_eq!(v.current_values(&a).unwrap()[0].2.expose(), b"secret");
    // A new data key encrypts new writes; old values still open.
    let id = v.rotate_key().unwrap();
    assert_eq!(id, 2);
    let info = v.put(&a, "k2", &val("new"), false, 0).unwrap();
    assert_eq!(info.versions[0].data_key, 2);
    assert_eq!(v.current_values(&a).unwrap().len(), 2);
    let _ = crate::keyring::delete(&v.keyring_name());
}

#[test]
fn the_escrowed_audit_key_survives_a_rekey_and_comes_back_at_unseal() {
    let (v, store, _, _) = setup();
    let seed = [7u8; 32];
    assert!(v.escrow_audit_key(&seed).is_err(), "no vault, no escrow");
    v.init().unwrap();
    assert!(!v.has_audit_key());
    v.escrow_audit_key(&seed).unwrap();
    assert!(v.has_audit_key());
    assert_eq!(v.audit_key().unwrap().as_slice(), &seed);
    let blob: Vec<u8> = store
        .with(|c| {
            c.query_row(
                "SELECT value FROM vault_meta WHERE key = 'audit_key'",
                [],
                |r| r.get(0),
            )
        })
        .unwrap();
    assert!(
        !blob.windows(32).any(|w| w == seed),
        "sealed, not stored in the clear"
    );
    // A new master key rewraps it; the new recovery key opens it.
    let rk = v.rekey().unwrap();
    v.seal_and_forget().unwrap();
    assert!(v.audit_key().is_none(), "sealed: not readable");
    assert!(v.has_audit_key(), "but still held");
    v.unseal(&rk).unwrap();
    assert_eq!(v.audit_key().unwrap().as_slice(), &seed);
    assert!(
        v.escrow_audit_key(&[1u8; 31]).is_err(),
        "a key of the wrong size"
    );
}
