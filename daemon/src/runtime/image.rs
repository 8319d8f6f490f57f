//! The built-in agent image: the static `agenfleet-agent` shim (embedded in the daemon at
//! build time) alone in a `FROM scratch` image, built locally through the engine's build
//! API — there is no registry to pull from. The tag carries a digest of the shim and the
//! Dockerfile, so a new shim gets a new image and an unchanged one is never rebuilt.

use super::engine::{bollard_err, is_not_found};
use agenfleet_protocol::{ApiError, ImageInfo, BUILTIN_IMAGE};
use bollard::query_parameters::BuildImageOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// The static shim, built by `build.rs`.
pub static AGENT_BINARY: &[u8] = include_bytes!(env!("AGENFLEET_AGENT_BIN"));
/// The Dockerfile of the agent image.
pub static DOCKERFILE: &str = include_str!("../../../assets/agent.Dockerfile");

/// `agenfleet/agent:<12 hex of sha256(shim ‖ Dockerfile)>`.
pub fn builtin_tag() -> String {
    let mut h = Sha256::new();
    h.update(AGENT_BINARY);
    h.update(DOCKERFILE.as_bytes());
    let d = hex::encode(h.finalize());
    format!("{BUILTIN_IMAGE}:{}", &d[..12])
}

/// Adds a file (owned by root, time 0) to a build context.
fn append_file(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), std::io::Error> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, data)
}

fn context_tar() -> Result<Vec<u8>, std::io::Error> {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "Dockerfile", DOCKERFILE.as_bytes(), 0o644)?;
    append_file(&mut b, "agenfleet-agent", AGENT_BINARY, 0o755)?;
    b.into_inner()
}

async fn inspect(docker: &Docker, tag: &str) -> Result<Option<ImageInfo>, ApiError> {
    match docker.inspect_image(tag).await {
        Ok(i) => Ok(Some(ImageInfo {
            tag: tag.to_string(),
            id: i.id.unwrap_or_default(),
            built: false,
            size_bytes: i.size.unwrap_or(0).max(0) as u64,
            log: Vec::new(),
        })),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(bollard_err("inspect the agent image", e)),
    }
}

/// Builds the built-in image unless it is present (or `force`).
/// `ops`: where a build shows its progress (None: quietly, as when an agent needs it).
pub async fn ensure_builtin(
    docker: &Docker,
    force: bool,
    ops: Option<&crate::ops::Ops>,
) -> Result<ImageInfo, ApiError> {
    let tag = builtin_tag();
    if !force {
        if let Some(info) = inspect(docker, &tag).await? {
            return Ok(info);
        }
    }
    tracing::info!(%tag, bytes = AGENT_BINARY.len(), "building the agent image");
    let tar = context_tar().map_err(|e| ApiError::internal(format!("agent image context: {e}")))?;
    let op = ops.map(|o| o.start(format!("building the agent image {tag}"), "steps", 0));
    let info = build_from_tar(docker, &tag, tar, "the agent image", op.as_ref())
        .await
        .map_err(|(e, _)| e)?;
    tracing::info!(%tag, id = %info.id, "agent image built");
    Ok(info)
}

/// How many of the engine's last build lines are kept for the caller.
const BUILD_LOG_LINES: usize = 40;

/// Builds `tag` from a tar of a Dockerfile directory through the engine's build API.
/// On failure the error carries the engine's reason and the build's last lines.
async fn build_from_tar(
    docker: &Docker,
    tag: &str,
    tar: Vec<u8>,
    what: &str,
    op: Option<&crate::ops::OpHandle>,
) -> Result<ImageInfo, (ApiError, Vec<String>)> {
    let opts = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .build();
    let mut log: std::collections::VecDeque<String> = Default::default();
    let mut stream = docker.build_image(opts, None, Some(bollard::body_full(tar.into())));
    while let Some(item) = stream.next().await {
        let info = match item {
            Ok(i) => i,
            // The engine refused the build itself (a base image it cannot pull, say).
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err((
                    ApiError::invalid(format!("building {what} failed: {error}")),
                    log.into(),
                ))
            }
            Err(e) => return Err((bollard_err(&format!("build {what}"), e), log.into())),
        };
        for line in info.stream.iter().flat_map(|s| s.lines()) {
            if let (Some(op), Some((done, total))) = (op, crate::ops::build_step(line)) {
                // "Step 3/7" starts step 3: two are done.
                op.progress(done.saturating_sub(1), total);
            }
            if !line.trim().is_empty() {
                if log.len() == BUILD_LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line.trim_end().to_string());
            }
        }
        if let Some(detail) = info.error_detail {
            let log: Vec<String> = log.into();
            return Err((
                ApiError::invalid(format!(
                    "building {what} failed: {}{}",
                    detail.message.unwrap_or_default(),
                    if log.is_empty() {
                        String::new()
                    } else {
                        format!("\n{}", log.join("\n"))
                    }
                )),
                log,
            ));
        }
    }
    let mut info = match inspect(docker, tag).await {
        Ok(Some(i)) => i,
        Ok(None) => {
            return Err((
                ApiError::internal(format!("the engine built {what} but cannot find it")),
                log.into(),
            ))
        }
        Err(e) => return Err((e, log.into())),
    };
    info.built = true;
    info.log = log.into();
    Ok(info)
}

/// Whether `tag` is an image reference the engine accepts for a local build:
/// `name[:tag]`, name in lowercase path components, never the built-in image's.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let (name, t) = match tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t)),
        _ => (tag, None),
    };
    let component_ok = |c: &str| {
        !c.is_empty()
            && c.len() <= 128
            && c.chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
            && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
    };
    if tag.len() > 255 || !name.split('/').all(component_ok) {
        return Err(format!(
            "`{tag}` is not an image name (lowercase components a-z 0-9 . _ - separated by /, then an optional :tag)"
        ));
    }
    if let Some(t) = t {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(format!(
                "`{t}` is not an image tag (1–128 of A-Z a-z 0-9 . _ -)"
            ));
        }
    }
    if name == BUILTIN_IMAGE {
        return Err(format!(
            "`{BUILTIN_IMAGE}` is the built-in image (`agenfleet image build` without a directory builds it)"
        ));
    }
    Ok(())
}

/// Builds an operator's image from the tar of a Dockerfile directory.
pub async fn build_context(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    ops: &crate::ops::Ops,
) -> Result<ImageInfo, ApiError> {
    check_tag(tag).map_err(|e| ApiError::invalid(format!("image tag: {e}")))?;
    if context.len() > agenfleet_protocol::MAX_BUILD_CONTEXT_BYTES {
        return Err(ApiError::invalid(format!(
            "the build context is {} bytes; at most {} travel to the daemon",
            context.len(),
            agenfleet_protocol::MAX_BUILD_CONTEXT_BYTES
        )));
    }
    if !tar_has_dockerfile(&context) {
        return Err(ApiError::invalid(
            "the build context has no Dockerfile at its top (or is not a tar)",
        ));
    }
    tracing::info!(%tag, bytes = context.len(), "building an image from a context");
    let op = ops.start(format!("building image {tag}"), "steps", 0);
    build_from_tar(docker, tag, context, &format!("image `{tag}`"), Some(&op))
        .await
        .map_err(|(e, _)| e)
}

fn tar_has_dockerfile(context: &[u8]) -> bool {
    let mut a = tar::Archive::new(context);
    let Ok(entries) = a.entries() else {
        return false;
    };
    for e in entries {
        let Ok(e) = e else { return false };
        if e.path().is_ok_and(|p| {
            p == std::path::Path::new("Dockerfile") || p == std::path::Path::new("./Dockerfile")
        }) {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags_are_checked_before_the_engine_sees_them() {
        for ok in [
            "myagent",
            "team/agent:1.2",
            "a.b-c_d/e:latest",
            "localhost/x",
        ] {
            assert!(check_tag(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "Upper/case",
            "a:",
            "a:-x",
            "a//b",
            "agenfleet/agent",
            "agenfleet/agent:v9",
            "a b",
            "-a",
        ] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_context_without_a_dockerfile_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "README", &b"hi"[..]).unwrap();
        let no = b.into_inner().unwrap();
        assert!(!tar_has_dockerfile(&no));
        assert!(!tar_has_dockerfile(b"not a tar at all"));
        assert!(tar_has_dockerfile(&context_tar().unwrap()));
    }

    #[test]
    fn agents_starting_at_once_each_get_the_whole_shim() {
        // After a restore every agent starts at once into a state dir with no shim yet.
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let paths: Vec<_> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..8)
                    .map(|_| s.spawn(|| super::shim_on_host(dir.path())))
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for p in paths {
                let p = p.expect("every caller gets the shim");
                assert_eq!(std::fs::read(&p).unwrap(), super::AGENT_BINARY);
            }
        }
    }
}

/// The shim as a file on the host, `<state_dir>/bin/agenfleet-agent-<12 hex>`, written
/// once (atomically) per shim: the daemon bind-mounts it read-only into the containers of
/// agents whose image is not ours.
pub fn shim_on_host(state_dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let tag = builtin_tag();
    let digest = tag.rsplit(':').next().unwrap_or("shim");
    let dir = state_dir.join("bin");
    let path = dir.join(format!("agenfleet-agent-{digest}"));
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == AGENT_BINARY.len() as u64) {
        return Ok(path);
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    // A name of this call's own: several agents may start at once (after a restore, all
    // of them), and with one shared temporary name one writer's rename would take the
    // file from under another's.
    let tmp = dir.join(format!(
        ".agenfleet-agent-{digest}.{}.{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    std::fs::write(&tmp, AGENT_BINARY)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// The repository of the init images (swarm mode).
pub const INIT_IMAGE: &str = "agenfleet/init";

/// The tag of `base`'s init image for the agent user `user`:
/// `agenfleet/init:<12 hex of sha256(base id ‖ shim ‖ user)>`.
fn init_tag(base_id: &str, user: &str) -> String {
    let mut h = Sha256::new();
    h.update(base_id.as_bytes());
    h.update([0]);
    h.update(AGENT_BINARY);
    h.update([0]);
    h.update(user.as_bytes());
    format!("{INIT_IMAGE}:{}", &hex::encode(h.finalize())[..12])
}

/// The build context of an init image: `base` (by id), the shim at `SHIM_IN_IMAGE`, and
/// an empty `/workspace` of the agent's user (a new named volume mounted there takes its
/// owner from it).
fn init_context(base_id: &str, user: &str) -> Result<Vec<u8>, std::io::Error> {
    let dockerfile = format!(
        "# An agent's image with the agenfleet shim as its init (swarm mode).\n\
         FROM {base_id}\n\
         COPY --chown={user} workspace {}\n\
         COPY agenfleet-agent {}\n",
        agenfleet_protocol::spec::WORKSPACE_IN_CONTAINER,
        agenfleet_protocol::gateway::SHIM_IN_IMAGE,
    );
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "Dockerfile", dockerfile.as_bytes(), 0o644)?;
    append_file(&mut b, "agenfleet-agent", AGENT_BINARY, 0o755)?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "workspace/", std::io::empty())?;
    b.into_inner()
}

/// Swarm mode: the init image of the agent image `base_ref` — that image with the shim
/// inside, built once per image, shim and agent user — so that its task starts the same
/// on any node that holds the image (there is no registry: an image is loaded on each
/// node, this one as the agent's own would be). Answers its tag.
pub async fn ensure_init_image(
    docker: &Docker,
    base_ref: &str,
    user: &str,
) -> Result<String, ApiError> {
    let base = docker
        .inspect_image(base_ref)
        .await
        .map_err(|e| bollard_err("inspect the agent's image", e))?;
    let base_id = base.id.unwrap_or_default();
    let tag = init_tag(&base_id, user);
    if inspect(docker, &tag).await?.is_some() {
        return Ok(tag);
    }
    let tar = init_context(&base_id, user)
        .map_err(|e| ApiError::internal(format!("init image context: {e}")))?;
    let what = format!("the init image of {base_ref}");
    let info = build_from_tar(docker, &tag, tar, &what, None)
        .await
        .map_err(|(e, _)| e)?;
    tracing::info!(%tag, base = %base_ref, id = %info.id, "init image built");
    Ok(tag)
}

/// An image's own program: its entrypoint followed by its command.
pub async fn image_program(docker: &Docker, image_ref: &str) -> Result<Vec<String>, ApiError> {
    let i = docker
        .inspect_image(image_ref)
        .await
        .map_err(|e| bollard_err("inspect the agent's image", e))?;
    let config = i.config.unwrap_or_default();
    let mut argv = config.entrypoint.unwrap_or_default();
    argv.extend(config.cmd.unwrap_or_default());
    Ok(argv)
}

/// The images agents run: a spec's image is checked on the engine (there is no registry);
/// the built-in one is built once and its tag kept. Builds are serialised.
#[derive(Default)]
pub struct Images {
    builtin: tokio::sync::Mutex<Option<String>>,
}

impl Images {
    /// The image reference to run for `spec_image`; builds the built-in image if needed.
    pub async fn resolve(&self, docker: &Docker, spec_image: &str) -> Result<String, ApiError> {
        if spec_image == BUILTIN_IMAGE {
            let mut ready = self.builtin.lock().await;
            if let Some(tag) = ready.as_ref() {
                return Ok(tag.clone());
            }
            let info = ensure_builtin(docker, false, None).await?;
            *ready = Some(info.tag.clone());
            return Ok(info.tag);
        }
        match docker.inspect_image(spec_image).await {
            Ok(_) => Ok(spec_image.to_string()),
            Err(e) if is_not_found(&e) => Err(ApiError::invalid(format!(
                "spec field `image`: image `{spec_image}` is not present on the engine \
                 (there is no registry to pull from; build or load it first, or use `{BUILTIN_IMAGE}`)"
            ))),
            Err(e) => Err(bollard_err("inspect image", e)),
        }
    }

    /// Builds the built-in agent image (again, with `force`).
    pub async fn build(
        &self,
        docker: &Docker,
        force: bool,
        ops: &crate::ops::Ops,
    ) -> Result<ImageInfo, ApiError> {
        let mut ready = self.builtin.lock().await;
        let info = ensure_builtin(docker, force, Some(ops)).await?;
        *ready = Some(info.tag.clone());
        Ok(info)
    }
}
