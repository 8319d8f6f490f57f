//! Images that are not ours, built locally (there is no registry): Debian's static busybox
//! (fetched by tests/run.sh into `target/test-assets/`) alone in a `FROM scratch` image,
//! its applets installed by busybox itself. Tagged by a digest of what goes in, so each
//! machine builds it once.

use std::path::{Path, PathBuf};

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

/// 64-bit FNV-1a over what goes into an image: its tag, so each machine builds it once.
struct Digest(u64);

impl Digest {
    fn new() -> Digest {
        Digest(0xcbf2_9ce4_8422_2325)
    }

    fn eat(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// `repo:<digest>`, built from `dockerfile` and what `fill` puts beside it in a fresh
/// context directory, unless the engine has it already.
fn image_once(repo: &str, digest: Digest, dockerfile: &str, fill: impl FnOnce(&Path)) -> String {
    let tag = format!("{repo}:{:016x}", digest.0);
    let present = std::process::Command::new("docker")
        .args(["image", "inspect", &tag])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !present {
        let ctx = std::env::temp_dir().join(format!(
            "agf-image-ctx-{}-{}",
            std::process::id(),
            super::daemon::rand_suffix()
        ));
        std::fs::create_dir_all(&ctx).expect("build context");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        fill(&ctx);
        super::docker(&["build", "-q", "-t", &tag, ctx.to_str().expect("path")]);
        let _ = std::fs::remove_dir_all(&ctx);
    }
    tag
}

/// None, after saying the test skips — which CI does not allow.
fn unavailable(test: &str, what: &str) -> Option<String> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {what} (CI machines must have it; tests/run.sh sets it up)");
    }
    eprintln!("\n!!! SKIPPED {test}: {what} !!!\n");
    None
}

/// The busybox image's tag, built if missing; None (after saying so) when there is no
/// busybox binary here — which CI does not allow.
pub fn busybox_image(test: &str) -> Option<String> {
    let Some(bin) = busybox_binary() else {
        return unavailable(
            test,
            "no static busybox in target/test-assets (tests/run.sh fetches it)",
        );
    };
    let bytes = std::fs::read(&bin).expect("read busybox");
    let mut digest = Digest::new();
    digest.eat(&bytes);
    digest.eat(BUSYBOX_DOCKERFILE.as_bytes());
    Some(image_once(
        "agf-test/busybox",
        digest,
        BUSYBOX_DOCKERFILE,
        |ctx| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::write(ctx.join("busybox"), &bytes).expect("busybox");
            std::fs::set_permissions(ctx.join("busybox"), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        },
    ))
}

/// Files of the host's own Python 3 (Debian's `python3.11`, its standard library and the
/// shared libraries it and its extension modules load), for an image with a real
/// interpreter. None when this host has no such Python.
fn python_files() -> Option<Vec<PathBuf>> {
    let bin = [
        "/usr/bin/python3.11",
        "/usr/bin/python3.12",
        "/usr/bin/python3.13",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())?;
    let version = bin
        .file_name()?
        .to_str()?
        .strip_prefix("python")?
        .to_string();
    let stdlib = PathBuf::from(format!("/usr/lib/python{version}"));
    if !stdlib.is_dir() {
        return None;
    }
    let mut files = vec![bin.clone()];
    let mut objects = vec![bin];
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().to_string();
            if matches!(
                name.as_str(),
                "test"
                    | "idlelib"
                    | "tkinter"
                    | "ensurepip"
                    | "lib2to3"
                    | "turtledemo"
                    | "site-packages"
                    | "dist-packages"
            ) {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, out),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    let mut lib = Vec::new();
    walk(&stdlib, &mut lib);
    objects.extend(
        lib.iter()
            .filter(|p| p.extension().is_some_and(|e| e == "so"))
            .cloned(),
    );
    files.extend(lib);
    // The loader and every shared library the interpreter and its modules need.
    let mut libs = std::collections::BTreeSet::new();
    for o in &objects {
        let out = std::process::Command::new("ldd").arg(o).output().ok()?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(p) = path.filter(|p| p.starts_with('/')) {
                libs.insert(PathBuf::from(p));
            }
        }
    }
    files.extend(libs);
    Some(files)
}

/// An image with the host's Python 3 in it (no registry, no package from outside: the
/// interpreter, its standard library and its libraries copied from this host), tagged by a
/// digest of the file list and sizes. None, after saying so, where the host has no Python
/// (CI machines have it).
pub fn python_image(test: &str) -> Option<String> {
    let Some(files) = python_files() else {
        return unavailable(
            test,
            "no /usr/bin/python3.x with its standard library to build an image from",
        );
    };
    let dockerfile = "FROM scratch\nCOPY rootfs/ /\nENV PATH=/usr/bin\nCMD [\"python3\", \"-c\", \"print('python image')\"]\n";
    let mut digest = Digest::new();
    digest.eat(dockerfile.as_bytes());
    for f in &files {
        digest.eat(f.to_string_lossy().as_bytes());
        digest.eat(
            &std::fs::metadata(f)
                .map(|m| m.len())
                .unwrap_or(0)
                .to_le_bytes(),
        );
    }
    Some(image_once("agf-test/python", digest, dockerfile, |ctx| {
        let root = ctx.join("rootfs");
        for f in &files {
            let rel = f.strip_prefix("/").expect("absolute");
            let to = root.join(rel);
            std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
            // Copy the bytes (a symlink is followed: the image gets the file itself).
            std::fs::copy(f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
        }
        std::os::unix::fs::symlink(
            files[0].file_name().expect("name"),
            root.join("usr/bin/python3"),
        )
        .expect("python3 link");
    }))
}

/// The Python example agent (assets/examples/python/agent.py) for a spec: written beside
/// the daemon's specs and handed in as a read-only file (it is larger than a command-line
/// argument may be). Answers (the `command = …` line, the `[[files]]` table to end the spec
/// with).
pub fn python_example(d: &crate::Daemon) -> (String, String) {
    let source = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/examples/python/agent.py"),
    )
    .expect("the Python example");
    d.file("agent.py", &source);
    (
        "command = [\"python3\", \"/app/agent.py\"]\n".to_string(),
        "[[files]]\nsource = \"agent.py\"\ntarget = \"/app/agent.py\"\n".to_string(),
    )
}

/// A service agent: takes runs one by one; echoes the input as its result, fails when the
/// input says `"fail"`, never answers when it says `"hang"`.
pub fn service_agent(name: &str, image: &str, timeout_secs: u64) -> String {
    format!(
        r#"name = "{name}"
image = "{image}"
command = ["sh", "-c", '''
trap 'exit 0' TERM
while :; do
  resp=$(printf 'GET /v1/runs/next?wait_ms=20000 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n' | nc 127.0.0.1 4180)
  case "$resp" in *"HTTP/1.1 200"*) ;; *) sleep 0.2; continue ;; esac
  id=$(echo "$resp" | sed -n 's/.*"id":\([0-9]*\).*/\1/p')
  input=$(echo "$resp" | sed -n 's/.*"input":\({{[^}}]*}}\).*/\1/p')
  case "$input" in
    *hang*) continue ;;
    *fail*) body='{{"ok":false,"error":"asked to fail"}}' ;;
    *) body="{{\"ok\":true,\"result\":{{\"echo\":$input}}}}" ;;
  esac
  printf 'POST /v1/runs/%s/result HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n%s' "$id" "${{#body}}" "$body" | nc 127.0.0.1 4180 >/dev/null
done
''']
[runs]
timeout_secs = {timeout_secs}
"#
    )
}
