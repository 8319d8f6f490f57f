//! Vault benchmark (`cargo bench -p agenfleet-daemon --bench vault`): `rekey` with 10,000
//! stored credentials, on a real SQLite file with the master key in the real kernel
//! keyring. Rekey rewraps the data keys only, so its time should not grow with the number
//! of credentials; the set-up time (10,000 encryptions + inserts) is printed for scale.

use agenfleet_daemon::store::{AgentKey, AgentRecord, Store};
use agenfleet_daemon::vault::Vault;
use agenfleet_protocol::{AgentSpec, AgentState, DesiredState, SecretValue};
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    if let Err(e) = agenfleet_daemon::keyring::init() {
        eprintln!("!!! SKIPPED vault bench: {e}");
        return;
    }
    let dir = std::env::temp_dir().join(format!("agf-vault-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let store = Store::open(&dir.join("agenfleet.db")).expect("store");
    let agents = 100;
    let per_agent = 100;
    for a in 0..agents {
        let name = format!("agent-{a:03}");
        let spec =
            AgentSpec::from_toml(&format!("name = \"{name}\"\nimage = \"x\"\n")).expect("spec");
        store
            .insert_agent(&AgentRecord {
                desired: DesiredState::Stopped,
                state: AgentState::Stopped,
                ..AgentRecord::new(spec, 0)
            })
            .expect("agent");
    }
    let instance = format!("bench{:08x}", rand::random::<u32>());
    let vault = Vault::open(store.clone(), instance.clone());
    vault.init().expect("init");
    let t = Instant::now();
    for a in 0..agents {
        let key = AgentKey {
            tenant: "default".into(),
            name: format!("agent-{a:03}"),
        };
        for c in 0..per_agent {
            let v = SecretValue::new(
                format!("secret-value-{a}-{c}-padding-to-40-bytes..").into_bytes(),
            );
            vault
                .put(&key, &format!("cred-{c:03}"), &v, false, 0)
                .expect("put");
        }
    }
    let setup = t.elapsed();
    // A few data keys, as after some `rotate-key`s.
    for _ in 0..4 {
        vault.rotate_key().expect("rotate key");
    }
    let n = agents * per_agent;
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        vault.rekey().expect("rekey");
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    // Every value still opens after the rekeys.
    let key = AgentKey {
        tenant: "default".into(),
        name: "agent-042".into(),
    };
    let vals = vault.current_values(&key).expect("values");
    assert_eq!(vals.len(), per_agent);
    println!("# vault benchmark: {n} credentials in {agents} agents, 5 data keys, SQLite file, kernel keyring");
    println!(
        "set-up: {n} credentials stored in {:.2} s ({:.0}/s)",
        setup.as_secs_f64(),
        n as f64 / setup.as_secs_f64()
    );
    println!(
        "rekey with {n} credentials: median {:.1} ms, max {:.1} ms (target ≤ 1000 ms)",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    let _ = agenfleet_daemon::keyring::delete(&format!("vault-master-{instance}"));
    let _ = std::fs::remove_dir_all(&dir);
}
