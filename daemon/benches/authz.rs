//! The permission check in-process (`cargo bench -p agenfleet-daemon --bench authz`): the
//! scoped check itself, and resolving a uid to its caller through the cache that every
//! request goes through.

use agenfleet_daemon::authz::{Authz, Binding, Caller, Permission, Scope, ScopedRole};
use agenfleet_daemon::store::Store;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let member = Caller {
        uid: 1000,
        operator: "m".into(),
        platform_admin: false,
        known: true,
        bindings: vec![
            Binding {
                role: ScopedRole::ProjectViewer,
                tenant: "acme".into(),
                project: Some("db".into()),
            },
            Binding {
                role: ScopedRole::ProjectContributor,
                tenant: "acme".into(),
                project: Some("web".into()),
            },
            Binding {
                role: ScopedRole::ProjectAdmin,
                tenant: "beta".into(),
                project: Some("core".into()),
            },
        ],
        token: None,
        denial: None,
    };
    let n = 10_000_000u64;
    let t = Instant::now();
    let mut ok = 0u64;
    for i in 0..n {
        let project = if i % 2 == 0 { "web" } else { "api" };
        ok += u64::from(black_box(&member).can(
            Permission::AgentControl,
            Scope::Project(black_box("acme"), black_box(project)),
        ));
    }
    let check_ns = t.elapsed().as_nanos() as f64 / n as f64;
    assert_eq!(ok, n / 2);

    let store = Store::open_in_memory().expect("store");
    let authz = Authz::new(store);
    let m = 2_000_000u64;
    let t = Instant::now();
    for i in 0..m {
        black_box(authz.caller(black_box(60_000 + (i % 4) as u32)));
    }
    let resolve_ns = t.elapsed().as_nanos() as f64 / m as f64;
    println!("# permission check, in-process, one core");
    println!("scoped check (member with 3 role bindings): {check_ns:.1} ns per check");
    println!("caller resolution per request (cached by uid, invalidated on role changes): {resolve_ns:.1} ns");
    println!(
        "together: {:.0} ns per RPC, next to a ~60 µs RPC round trip ({:.2}%)",
        check_ns + resolve_ns,
        (check_ns + resolve_ns) / 60_000.0 * 100.0
    );
}
