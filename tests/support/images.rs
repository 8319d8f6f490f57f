//! Images that are not ours, built locally (there is no registry): Debian's static busybox
//! (fetched by tests/run.sh into `target/test-assets/`) alone in a `FROM scratch` image,
//! its applets installed by busybox itself. Tagged by a digest of what goes in, so each
//! machine builds it once.

use std::path::PathBuf;

const BUSYBOX_DOCKERFILE: &str = "FROM scratch\n\
COPY busybox /bin/busybox\n\
RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
ENV PATH=/bin\n\
CMD [\"sh\", \"-c\", \"echo image default program; exec sleep 100000\"]\n";

/// Debian's static busybox: `AGENFLEET_TEST_BUSYBOX`, else `target/test-assets/busybox`.
pub fn busybox_binary() -> Option<PathBuf> {
    let p = std::env::var_os("AGENFLEET_TEST_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-assets/busybox")
        });
    p.is_file().then_some(p)
}

/// The busybox image's tag, built if missing; None (after saying so) when there is no
/// busybox binary here — which CI does not allow.
pub fn busybox_image(test: &str) -> Option<String> {
    let Some(bin) = busybox_binary() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: target/test-assets/busybox is missing in CI (tests/run.sh fetches it)");
        }
        eprintln!("\n!!! SKIPPED {test}: no static busybox (run tests/run.sh to fetch it) !!!\n");
        return None;
    };
    let bytes = std::fs::read(&bin).expect("read busybox");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes.iter().chain(BUSYBOX_DOCKERFILE.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let tag = format!("agf-test/busybox:{h:016x}");
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", &tag])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let ctx = std::env::temp_dir().join(format!(
            "agf-busybox-ctx-{}-{}",
            std::process::id(),
            super::daemon::rand_suffix()
        ));
        std::fs::create_dir_all(&ctx).expect("build context");
        std::fs::write(ctx.join("Dockerfile"), BUSYBOX_DOCKERFILE).expect("Dockerfile");
        std::fs::write(ctx.join("busybox"), &bytes).expect("busybox");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(ctx.join("busybox"), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        super::docker(&["build", "-q", "-t", &tag, ctx.to_str().expect("path")]);
        let _ = std::fs::remove_dir_all(&ctx);
    }
    Some(tag)
}
