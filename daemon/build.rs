//! Builds the `agenfleet-agent` shim as a static executable (for its `FROM scratch` image)
//! and hands its path to the daemon, which embeds it. `AGENFLEET_AGENT_BIN` overrides this
//! with a prebuilt static binary.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=AGENFLEET_AGENT_BIN");
    if let Ok(prebuilt) = env::var("AGENFLEET_AGENT_BIN") {
        println!("cargo:rustc-env=AGENFLEET_AGENT_BIN={prebuilt}");
        return;
    }
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("workspace root").to_path_buf();
    for p in [
        "agent/src",
        "agent/Cargo.toml",
        "protocol/src",
        "protocol/Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(p).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    // target/<profile>/build/<pkg>/out → target/agent-static, shared by every profile.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("agent-static"))
        .unwrap_or_else(|| out_dir.join("agent-static"));
    let triple = env::var("HOST").expect("HOST");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "agenfleet-agent", "--target"])
        .arg(&triple)
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            "-Ctarget-feature=+crt-static\x1f-Cstrip=symbols",
        )
        .env_remove("RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_MAKEFLAGS")
        .env_remove("MAKEFLAGS")
        .status()
        .expect("run cargo to build the static agent shim");
    if !status.success() {
        panic!("building the static agenfleet-agent failed ({status})");
    }
    let bin = target_dir
        .join(&triple)
        .join("release")
        .join("agenfleet-agent");
    println!("cargo:rustc-env=AGENFLEET_AGENT_BIN={}", bin.display());
}
