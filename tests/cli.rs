//! End-to-end: the CLI's answers to bad input and to a missing daemon, and the operator
//! socket's handling of malformed frames and unknown callers.

use agenfleet_e2e::*;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::time::Duration;

#[test]
fn invalid_specs_name_file_field_and_reason_and_create_nothing() {
    if !docker_available("invalid_specs_name_file_field_and_reason_and_create_nothing") {
        return;
    }
    let d = Daemon::start("badspec", "");
    let cases = [
        (
            "unknown.toml",
            "name = \"a\"\nimage = \"agenfleet/agent\"\ncolour = \"red\"\n",
            "colour",
        ),
        (
            "limit.toml",
            "name = \"a\"\nimage = \"agenfleet/agent\"\n[limits]\nmemory_mb = 4\n",
            "limits.memory_mb",
        ),
        ("noimage.toml", "name = \"a\"\n", "image"),
        (
            "badname.toml",
            "name = \"Not Valid\"\nimage = \"agenfleet/agent\"\n",
            "name",
        ),
        (
            "typo.toml",
            "name = \"a\"\nimage = \"agenfleet/agent\"\n[restart]\nmode = \"sometimes\"\n",
            "mode",
        ),
        (
            "absent-image.toml",
            "name = \"a\"\nimage = \"no-such-image:1\"\n",
            "image",
        ),
    ];
    for (file, text, field) in cases {
        let p = d.dir.join(file);
        std::fs::write(&p, text).unwrap();
        let out = d.cli(&["agents", "create", "-f", p.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(6), "{file}: {err}");
        assert!(
            err.contains(file),
            "{file}: error does not name the file: {err}"
        );
        assert!(
            err.contains(field),
            "{file}: error does not name `{field}`: {err}"
        );
        // --json gives the same as a structured error.
        let out = d.cli(&["--json", "agents", "create", "-f", p.to_str().unwrap()]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["error"]["code"], "invalid_argument", "{file}");
    }
    assert_eq!(d.json(&["agents", "list"]), serde_json::json!([]));
    assert!(d.containers().is_empty());
    // Duplicate names are refused, and the first agent is untouched.
    d.create(&healthy("dup"));
    let p = d.dir.join("dup.toml");
    std::fs::write(&p, healthy("dup")).unwrap();
    let out = d.cli(&["agents", "create", "-f", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(d.containers().len(), 1);
    // Unknown agents: clear message and exit code.
    let out = d.cli(&["agents", "stop", "nobody"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named `nobody`"));
}

#[test]
fn no_daemon_gives_a_clear_message_and_exit_code() {
    let sock = std::env::temp_dir().join(format!("agf-none-{}.sock", std::process::id()));
    let out = std::process::Command::new(bin("agenfleet"))
        .args(["--socket", sock.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("daemon is not running"), "{err}");
    let out = std::process::Command::new(bin("agenfleet"))
        .args([
            "--socket",
            sock.to_str().unwrap(),
            "--json",
            "agents",
            "list",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["error"]["code"], "not_running");
}

#[test]
fn oversized_and_malformed_frames_close_only_their_connection() {
    if !docker_available("oversized_and_malformed_frames_close_only_their_connection") {
        return;
    }
    let d = Daemon::start("frames", "max_frame_bytes = 65536");
    // A long-poll client that must survive the bad ones.
    let mut watcher = Watcher::start(&d);
    std::thread::sleep(Duration::from_millis(300));
    for (what, frame) in [
        ("oversized", {
            let mut f = (1u32 << 30).to_be_bytes().to_vec();
            f.extend(vec![0u8; 1024]);
            f
        }),
        ("malformed", {
            let mut f = 16u32.to_be_bytes().to_vec();
            f.extend([0xffu8; 16]);
            f
        }),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(&frame);
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "{what} frame: the daemon should close the connection");
    }
    // Others carry on: a fresh CLI call works, and the watcher still gets news.
    let st = d.json(&["status"]);
    assert!(st["daemon"]["engine"]["connected"].as_bool().unwrap());
    d.create(&healthy("after-bad-frames"));
    assert!(watcher.running(), "the watcher's connection was dropped");
    watcher.wait_for(Duration::from_secs(10), "the new agent", |v| {
        v["change"]["Agent"]["name"] == "after-bad-frames"
    });
}

#[test]
fn socket_and_daemon_refuse_unknown_uids() {
    if !docker_available("socket_and_daemon_refuse_unknown_uids") {
        return;
    }
    let cli = bin_for_other_uids("agenfleet");
    let d = Daemon::start("uids", "");
    // The socket is 0660 root-owned: another uid cannot even connect.
    let run_as = |uid: u32| {
        std::process::Command::new(&cli)
            .args(["--socket", d.socket.to_str().unwrap(), "status"])
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap()
    };
    // The test dir must be traversable by the other uid.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run_as(54321);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not permitted to open the daemon's socket")
    );
    // With the socket opened up, the daemon itself refuses a uid it does not know.
    std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = run_as(54321);
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("uid 54321 is not a registered operator"),
        "{err}"
    );
}

/// The `agenfleet` CLI is linked statically where the C toolchain has the static libraries
/// (tools/agenfleet-cc): no program interpreter (`ld.so`) to run before it and no
/// relocations to apply, so a command starts almost as fast as `/bin/true`.
#[test]
fn the_cli_is_a_static_executable_with_nothing_to_load_or_relocate() {
    let cc = std::process::Command::new("cc")
        .arg("-print-file-name=libc.a")
        .output();
    let has_static_libc = matches!(&cc, Ok(o) if o.stdout.starts_with(b"/"));
    if !has_static_libc || std::env::var_os("AGENFLEET_DYNAMIC_CLI").is_some() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "CI machines have libc.a (libc6-dev): the CLI must be linked statically there"
        );
        eprintln!("SKIP: no static libc here (or AGENFLEET_DYNAMIC_CLI): the CLI is dynamic");
        return;
    }
    let elf = std::fs::read(bin("agenfleet")).unwrap();
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF file");
    // e_type 2 (ET_EXEC): linked for its address; a static PIE (3, ET_DYN) would relocate
    // itself first (AGENFLEET_STATIC_PIE=1 links one, for comparison).
    let pie = std::env::var_os("AGENFLEET_STATIC_PIE").is_some();
    assert_eq!(u16_at(16), if pie { 3 } else { 2 }, "ELF type of the CLI");
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let types: Vec<u32> = (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect();
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    assert!(
        !types.contains(&PT_INTERP),
        "the CLI asks for a program interpreter (dynamically linked): {types:?}"
    );
    assert!(
        pie || !types.contains(&PT_DYNAMIC),
        "the CLI has a dynamic section (relocations to apply at start): {types:?}"
    );
    // And it runs.
    let out = std::process::Command::new(bin("agenfleet"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("agenfleet "));
}
