//! An agent's own data on the host, mounted into its container: read-only copies of its
//! spec's `[[files]]` (the content travelled with the spec; no path of the operator's host
//! is mounted), and its `/workspace` — an ext4 filesystem of `size_mb` in an image file
//! of the daemon's state directory, loop-mounted by the daemon, so that its size is a hard
//! limit (a write beyond it fails with ENOSPC) on any host filesystem. The workspace lives
//! as long as the agent's record: restarts, new containers and daemon restarts keep it;
//! a spec applied with a larger size grows it in place; the purge unmounts and removes it.

use crate::store::AgentKey;
use std::path::{Path, PathBuf};

/// Where the copies of an agent's `[[files]]` are kept.
pub fn files_dir(state_dir: &Path, key: &AgentKey) -> PathBuf {
    state_dir
        .join("files")
        .join(format!("{}.{}", key.tenant, key.name))
}

/// Writes the spec's files (mode 0444, replaced atomically) and answers the binds that
/// put each read-only at its target.
pub fn write_files(
    state_dir: &Path,
    key: &AgentKey,
    files: &[agenfleet_protocol::FileSpec],
) -> std::io::Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let dir = files_dir(state_dir, key);
    std::fs::create_dir_all(&dir)?;
    let mut binds = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let path = dir.join(i.to_string());
        let tmp = dir.join(format!(".{i}.new"));
        std::fs::write(&tmp, &f.content)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o444))?;
        std::fs::rename(&tmp, &path)?;
        binds.push(format!("{}:{}:ro", path.display(), f.target));
    }
    Ok(binds)
}

/// The image file and the mount point of an agent's workspace.
fn workspace_paths(state_dir: &Path, key: &AgentKey) -> (PathBuf, PathBuf) {
    let base = state_dir.join("workspaces");
    let name = format!("{}.{}", key.tenant, key.name);
    (base.join(format!("{name}.ext4")), base.join(name))
}

/// Whether `dir` is a mount point (by the kernel's own table, not by a guess).
fn is_mounted(dir: &Path) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.display().to_string();
    table.lines().any(|l| {
        // Field 5 is the mount point, with spaces and the like escaped as \ooo.
        l.split(' ').nth(4).is_some_and(|m| unescape(m) == want)
    })
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    run_ok(program, args, &[0])
}

/// Runs `program`; the exit codes in `ok` are success (e2fsck's 1: errors corrected).
fn run_ok(program: &str, args: &[&str], ok: &[i32]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.code().is_some_and(|c| ok.contains(&c)) {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Makes sure the agent's workspace exists and is mounted; answers its mount point. The
/// first time it creates a sparse image of `size_mb` and an ext4 filesystem in it whose
/// root belongs to `owner` ("uid:gid", the agent's user).
pub fn ensure_workspace(
    state_dir: &Path,
    key: &AgentKey,
    size_mb: u64,
    owner: &str,
) -> Result<PathBuf, String> {
    let (img, dir) = workspace_paths(state_dir, key);
    let bytes = size_mb * 1024 * 1024;
    let img_s = img.display().to_string();
    if let Some(parent) = img.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    // As the kernel's mount table spells it (no symlink, no relative part).
    let dir = std::fs::canonicalize(&dir)
        .map_err(|e| format!("cannot resolve {}: {e}", dir.display()))?;
    match std::fs::metadata(&img) {
        Err(_) => {
            let f =
                std::fs::File::create(&img).map_err(|e| format!("cannot create {img_s}: {e}"))?;
            f.set_len(bytes)
                .map_err(|e| format!("cannot size {img_s}: {e}"))?;
            drop(f);
            let root_owner = format!("root_owner={owner}");
            if let Err(e) = run(
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-m",
                    "0",
                    "-E",
                    &root_owner,
                    "-L",
                    "workspace",
                    &img_s,
                ],
            ) {
                let _ = std::fs::remove_file(&img);
                return Err(e);
            }
        }
        Ok(m) if m.len() > bytes => {
            // `agents apply` refuses a smaller workspace: an image larger than the spec
            // says is not this spec's.
            return Err(format!(
                "{img_s} is {} MiB, the spec says {size_mb} MiB; a workspace cannot shrink (remove it, or delete the agent to start over)",
                m.len() / (1024 * 1024)
            ));
        }
        Ok(m) if m.len() < bytes => {
            // A spec applied with a larger size (its old container is gone by now): the
            // image and its filesystem grow offline, with their data. (Online growth
            // needs a privilege a daemon in a container may lack.)
            if is_mounted(&dir) {
                run("umount", &[&dir.display().to_string()])?;
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(&img)
                .and_then(|f| f.set_len(bytes))
                .map_err(|e| format!("cannot grow {img_s}: {e}"))?;
            run_ok("e2fsck", &["-f", "-p", &img_s], &[0, 1])?;
            run("resize2fs", &[&img_s])?;
            tracing::info!(workspace = %img_s, from_mb = m.len() / (1024 * 1024), to_mb = size_mb, "workspace grown");
        }
        Ok(_) => {}
    }
    if !is_mounted(&dir) {
        run(
            "mount",
            &[
                "-o",
                "loop,nosuid,nodev",
                &img_s,
                &dir.display().to_string(),
            ],
        )?;
    }
    Ok(dir)
}

/// Unmounts and removes the agent's workspace; answers its size in MiB if it had one.
pub fn remove_workspace(state_dir: &Path, key: &AgentKey) -> Result<Option<u64>, String> {
    let (img, dir) = workspace_paths(state_dir, key);
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let Ok(meta) = std::fs::metadata(&img) else {
        let _ = std::fs::remove_dir(&dir);
        return Ok(None);
    };
    if is_mounted(&dir) {
        run("umount", &[&dir.display().to_string()])?;
    }
    let _ = std::fs::remove_dir(&dir);
    std::fs::remove_file(&img).map_err(|e| format!("cannot remove {}: {e}", img.display()))?;
    Ok(Some(meta.len() / (1024 * 1024)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_unescaped_as_the_kernel_writes_them() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/x\\011y\\134"), "/x\ty\\");
    }

    #[test]
    fn the_root_is_mounted_and_a_fresh_dir_is_not() {
        assert!(is_mounted(Path::new("/")));
        let d = std::env::temp_dir().join(format!("agf-notmounted-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        assert!(!is_mounted(&d));
        let _ = std::fs::remove_dir(&d);
    }
}
