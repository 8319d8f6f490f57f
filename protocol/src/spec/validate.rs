//! Validation of an agent spec: every value checked, the first problem returned with the
//! field it is in. Nothing is created from a spec that fails here.

use super::*;

impl AgentSpec {
    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), SpecError> {
        check_name("agent", &self.name).map_err(|r| err("name", r))?;
        check_name("tenant", &self.tenant).map_err(|r| err("tenant", r))?;
        check_name("project", &self.project).map_err(|r| err("project", r))?;
        if self.description.chars().count() > 200 || self.description.chars().any(char::is_control)
        {
            return Err(err(
                "description",
                "must be one line of at most 200 characters",
            ));
        }
        let image = self.image.trim();
        if image.is_empty() {
            return Err(err(
                "image",
                "is empty; use `agenfleet/agent` for the built-in image",
            ));
        }
        if image.len() > 255 || image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err(
                "image",
                format!("`{image}` is not a valid image reference"),
            ));
        }
        let r = &self.runs;
        if !(1..=64).contains(&r.max_concurrent) {
            return Err(err(
                "runs.max_concurrent",
                format!("{} is out of range (1 to 64)", r.max_concurrent),
            ));
        }
        if !(1..=86_400).contains(&r.timeout_secs) {
            return Err(err(
                "runs.timeout_secs",
                format!("{} is out of range (1 to 86400 seconds)", r.timeout_secs),
            ));
        }
        if r.queue > 10_000 {
            return Err(err(
                "runs.queue",
                format!("{} is out of range (0 to 10000)", r.queue),
            ));
        }
        self.validate_program()?;
        self.validate_placement()?;
        let l = &self.limits;
        if !(16..=65_536).contains(&l.memory_mb) {
            return Err(err(
                "limits.memory_mb",
                format!("{} is out of range (16 to 65536 MiB)", l.memory_mb),
            ));
        }
        if !l.cpus.is_finite() || !(0.01..=64.0).contains(&l.cpus) {
            return Err(err(
                "limits.cpus",
                format!("{} is out of range (0.01 to 64 cores)", l.cpus),
            ));
        }
        if !(8..=32_768).contains(&l.pids) {
            return Err(err(
                "limits.pids",
                format!("{} is out of range (8 to 32768)", l.pids),
            ));
        }
        let r = &self.restart;
        if r.attempts > 1000 {
            return Err(err(
                "restart.attempts",
                format!("{} is out of range (0 to 1000)", r.attempts),
            ));
        }
        if !(1..=86_400).contains(&r.interval_secs) {
            return Err(err(
                "restart.interval_secs",
                format!("{} is out of range (1 to 86400)", r.interval_secs),
            ));
        }
        if !(10..=3_600_000).contains(&r.delay_ms) {
            return Err(err(
                "restart.delay_ms",
                format!("{} is out of range (10 to 3600000)", r.delay_ms),
            ));
        }
        if r.max_delay_ms < r.delay_ms || r.max_delay_ms > 3_600_000 {
            return Err(err(
                "restart.max_delay_ms",
                format!(
                    "{} must be at least restart.delay_ms ({}) and at most 3600000",
                    r.max_delay_ms, r.delay_ms
                ),
            ));
        }
        for (i, cu) in self.credentials.iter().enumerate() {
            let c = &cu.name;
            let ok = !c.is_empty()
                && c.len() <= 64
                && c.chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
                && c.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_alphanumeric());
            if !ok {
                return Err(err(
                    &format!("credentials[{i}]"),
                    format!("`{c}` is not a credential name (1–64 of A-Z a-z 0-9 - _ ., starting with a letter or digit)"),
                ));
            }
            self.validate_delivery(i, cu)?;
        }
        let w = &self.workload;
        if w.message.len() > 1024 {
            return Err(err("workload.message", "is longer than 1024 bytes"));
        }
        if w.log_interval_ms != 0 && w.log_interval_ms < 10 {
            return Err(err(
                "workload.log_interval_ms",
                "must be 0 (off) or at least 10",
            ));
        }
        if !(0..=255).contains(&w.exit_code) {
            return Err(err("workload.exit_code", "must be between 0 and 255"));
        }
        if w.alloc_mb_per_sec > 4096 {
            return Err(err("workload.alloc_mb_per_sec", "must be at most 4096"));
        }
        for (i, m) in w.model_calls.iter().enumerate() {
            let targets = std::iter::once((m.provider.as_str(), m.url.as_str())).chain(
                m.fallback
                    .iter()
                    .map(|f| (f.provider.as_str(), f.url.as_str())),
            );
            for (p, u) in targets {
                if p.is_empty() || p.len() > 64 {
                    return Err(err(
                        &format!("workload.model_calls[{i}].provider"),
                        "must be 1 to 64 bytes",
                    ));
                }
                if !u.starts_with("http://") {
                    return Err(err(
                        &format!("workload.model_calls[{i}].url"),
                        format!("`{u}` must be an http:// URL"),
                    ));
                }
            }
        }
        if w.model_call_interval_ms < 10 {
            return Err(err(
                "workload.model_call_interval_ms",
                "must be at least 10",
            ));
        }
        for (i, f) in self.model_fallbacks.iter().enumerate() {
            if f.is_empty() || f.len() > 64 {
                return Err(err(
                    &format!("model_fallbacks[{i}]"),
                    "must be 1 to 64 bytes",
                ));
            }
        }
        for (field, names) in [
            ("providers", &self.providers),
            ("connections", &self.connections),
        ] {
            if names.len() > 16 {
                return Err(err(field, "at most 16"));
            }
            for (i, n) in names.iter().enumerate() {
                let f = format!("{field}[{i}]");
                crate::upstream::check_upstream_name(n).map_err(|e| err(&f, e))?;
                if names[..i].contains(n) {
                    return Err(err(&f, format!("`{n}` is listed twice")));
                }
            }
        }
        if w.tool_calls.len() > 1000 {
            return Err(err("workload.tool_calls", "at most 1000 calls"));
        }
        for (i, step) in w.tool_calls.iter().enumerate() {
            // `{gateway}` stands for the host; the shim puts its address in before asking.
            let call = crate::policy::ToolCall {
                tool: step.tool.clone(),
                args_json: step.args.replace("{gateway}", "192.0.2.1"),
            };
            if let Err(why) = crate::policy::parse_call(&call) {
                return Err(err(&format!("workload.tool_calls[{i}]"), why));
            }
        }
        Ok(())
    }

    /// How credential `i` reaches the program: one entry per name; `file` and `env` only
    /// where the shim is the init; a variable that names nothing else.
    fn validate_delivery(&self, i: usize, cu: &CredentialUse) -> Result<(), SpecError> {
        let field = format!("credentials[{i}]");
        if self.credentials[..i].iter().any(|o| o.name == cu.name) {
            return Err(err(&field, format!("`{}` is listed twice", cu.name)));
        }
        if cu.var.is_some() && cu.delivery != Delivery::Env {
            return Err(err(
                &format!("{field}.var"),
                "is for a credential delivered `as = \"env\"`",
            ));
        }
        if cu.delivery != Delivery::Api && self.image.trim() == BUILTIN_IMAGE {
            return Err(err(
                &format!("{field}.as"),
                format!(
                    "the built-in image `{BUILTIN_IMAGE}` takes its credentials over the gateway; \
                     `as = \"{}\"` is for an image of your own",
                    cu.delivery.as_str()
                ),
            ));
        }
        if cu.delivery == Delivery::Env {
            let var = cu.env_var();
            let name_ok = !var.is_empty()
                && var.len() <= 128
                && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && var.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !name_ok {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` is not a variable name (1–128 of A-Z a-z 0-9 _, not starting with a digit)"),
                ));
            }
            let upper = var.to_ascii_uppercase();
            if upper.starts_with("AGENFLEET_")
                || ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].contains(&upper.as_str())
            {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` is set by the agent's init"),
                ));
            }
            if self.env.contains_key(&var) {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` is also set in `env`; a variable holds one value"),
                ));
            }
            if self.credentials[..i]
                .iter()
                .any(|o| o.delivery == Delivery::Env && o.env_var() == var)
            {
                return Err(err(
                    &format!("{field}.var"),
                    format!("`{var}` already holds another credential"),
                ));
            }
        }
        Ok(())
    }

    /// `[[files]]`: a source that stays in the spec's directory, a target that is an
    /// absolute path the agent's own mounts do not claim, limits on count and size.
    /// Placement constraints as Swarm reads them: `KEY==VALUE` or `KEY!=VALUE`, the key one
    /// of the node's attributes or labels (Swarm takes an unknown key as a constraint no
    /// node meets, which would leave the agent pending for a typo).
    fn validate_placement(&self) -> Result<(), SpecError> {
        const KEYS: &[&str] = &[
            "node.id",
            "node.hostname",
            "node.role",
            "node.platform.os",
            "node.platform.arch",
        ];
        const LABELS: &[&str] = &["node.labels.", "engine.labels."];
        let p = &self.placement;
        if p.constraints.len() > 32 {
            return Err(err("placement.constraints", "at most 32 constraints"));
        }
        let known = |k: &str| {
            KEYS.contains(&k)
                || LABELS.iter().any(|l| {
                    k.strip_prefix(l).is_some_and(|n| {
                        !n.is_empty()
                            && n.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    })
                })
        };
        for (i, c) in p.constraints.iter().enumerate() {
            let field = format!("placement.constraints[{i}]");
            let Some((k, v)) = c.split_once("==").or_else(|| c.split_once("!=")) else {
                return Err(err(
                    &field,
                    format!("`{c}` is not `KEY==VALUE` or `KEY!=VALUE`"),
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            if !known(k) {
                return Err(err(
                    &field,
                    format!("`{k}` is not a node attribute (node.id, node.hostname, node.role, node.platform.os, node.platform.arch) or label (node.labels.NAME, engine.labels.NAME)"),
                ));
            }
            if v.is_empty()
                || v.len() > 255
                || v.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(err(&field, format!("`{c}` has no valid value")));
            }
        }
        if !p.spread.is_empty() && !LABELS.iter().any(|l| p.spread.starts_with(l))
            || p.spread.len() > 255
        {
            return Err(err(
                "placement.spread",
                format!(
                    "`{}` is not a node or engine label (node.labels.NAME)",
                    p.spread
                ),
            ));
        }
        Ok(())
    }

    fn validate_files(&self) -> Result<(), SpecError> {
        if self.files.len() > MAX_FILES {
            return Err(err("files", format!("has more than {MAX_FILES} files")));
        }
        if !self.files.is_empty() && self.image.trim() == BUILTIN_IMAGE {
            return Err(err(
                "files",
                format!("the built-in image `{BUILTIN_IMAGE}` runs its `[workload]`; `files` are for an image of your own"),
            ));
        }
        let mut total = 0usize;
        for (i, f) in self.files.iter().enumerate() {
            let s = &f.source;
            if s.is_empty()
                || s.starts_with('/')
                || s.contains('\0')
                || s.split('/').any(|c| c == "..")
            {
                return Err(err(
                    &format!("files[{i}].source"),
                    format!(
                        "`{s}` must be a path inside the spec file's directory (relative, no `..`)"
                    ),
                ));
            }
            let t = &f.target;
            let parts: Vec<&str> = t.split('/').skip(1).collect();
            if !t.starts_with('/')
                || t.len() > 4096
                || t.contains(['\0', ':', ','])
                || parts
                    .iter()
                    .any(|c| c.is_empty() || *c == "." || *c == "..")
            {
                return Err(err(
                    &format!("files[{i}].target"),
                    format!(
                        "`{t}` is not an absolute path to a file (no `.`, `..` or empty parts, no `:` or `,`)"
                    ),
                ));
            }
            let reserved = [
                "/run/agenfleet",
                "/proc",
                "/sys",
                "/dev",
                "/tmp",
                WORKSPACE_IN_CONTAINER,
            ];
            if let Some(r) = reserved
                .iter()
                .find(|r| t == *r || t.starts_with(&format!("{r}/")))
            {
                return Err(err(
                    &format!("files[{i}].target"),
                    format!("`{t}` is under {r}, which the container's own mounts hold"),
                ));
            }
            if self.files[..i].iter().any(|o| &o.target == t) {
                return Err(err(
                    &format!("files[{i}].target"),
                    format!("`{t}` is the target of another file"),
                ));
            }
            if f.content.len() > MAX_FILE_BYTES {
                return Err(err(
                    &format!("files[{i}].source"),
                    format!("`{s}` is larger than {} KiB", MAX_FILE_BYTES / 1024),
                ));
            }
            total += f.content.len();
        }
        if total > MAX_FILES_BYTES {
            return Err(err(
                "files",
                format!(
                    "{total} bytes in all, more than {} KiB",
                    MAX_FILES_BYTES / 1024
                ),
            ));
        }
        Ok(())
    }

    /// `command`, `workdir` and `env`.
    fn validate_program(&self) -> Result<(), SpecError> {
        if !self.command.is_empty() && self.image.trim() == BUILTIN_IMAGE {
            return Err(err(
                "command",
                format!("the built-in image `{BUILTIN_IMAGE}` runs its `[workload]`; `command` is for an image of your own"),
            ));
        }
        if self.command.len() > 256 {
            return Err(err("command", "has more than 256 arguments"));
        }
        for (i, a) in self.command.iter().enumerate() {
            if i == 0 && a.trim().is_empty() {
                return Err(err("command[0]", "the program to run is empty"));
            }
            if a.len() > 4096 || a.contains('\0') {
                return Err(err(
                    &format!("command[{i}]"),
                    "must be at most 4096 bytes, without NUL",
                ));
            }
        }
        let w = &self.workdir;
        if !w.is_empty() && (!w.starts_with('/') || w.len() > 4096 || w.contains('\0')) {
            return Err(err(
                "workdir",
                format!("`{w}` is not an absolute path (at most 4096 bytes)"),
            ));
        }
        if let Some(h) = &self.health {
            match (h.command.is_empty(), h.http.is_empty()) {
                (true, true) | (false, false) => return Err(err(
                    "health",
                    "give either `command` (run in the container) or `http` (a path, with `port`)",
                )),
                (false, true) => {
                    if h.command[0].trim().is_empty()
                        || h.command.len() > 64
                        || h.command.iter().any(|a| a.len() > 4096 || a.contains('\0'))
                    {
                        return Err(err(
                            "health.command",
                            "must name a program, with at most 64 arguments of 4096 bytes, without NUL",
                        ));
                    }
                }
                (true, false) => {
                    if !h.http.starts_with('/')
                        || h.http.len() > 1024
                        || h.http.chars().any(|c| c.is_whitespace() || c.is_control())
                    {
                        return Err(err(
                            "health.http",
                            format!("`{}` is not a path such as /healthz", h.http),
                        ));
                    }
                    if h.port == 0 {
                        return Err(err(
                            "health.port",
                            "the port the program serves `http` on (1 to 65535)",
                        ));
                    }
                }
            }
            for (field, v, lo, hi) in [
                ("health.interval_secs", h.interval_secs, 1, 3600),
                ("health.timeout_secs", h.timeout_secs, 1, 600),
                ("health.retries", u64::from(h.retries), 1, 100),
                ("health.start_period_secs", h.start_period_secs, 0, 3600),
            ] {
                if !(lo..=hi).contains(&v) {
                    return Err(err(field, format!("{v} is out of range ({lo} to {hi})")));
                }
            }
        }
        self.validate_files()?;
        if let Some(w) = &self.workspace {
            if self.image.trim() == BUILTIN_IMAGE {
                return Err(err(
                    "workspace",
                    format!("the built-in image `{BUILTIN_IMAGE}` runs its `[workload]`; a workspace is for an image of your own"),
                ));
            }
            if !(1..=1_048_576).contains(&w.size_mb) {
                return Err(err(
                    "workspace.size_mb",
                    format!("{} is out of range (1 to 1048576 MiB)", w.size_mb),
                ));
            }
        }
        if self.env.len() > 256 {
            return Err(err("env", "has more than 256 variables"));
        }
        for (k, v) in &self.env {
            let field = format!("env.{k}");
            let name_ok = k.len() <= 128
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && k.chars().next().is_some_and(|c| !c.is_ascii_digit());
            if !name_ok {
                return Err(err(
                    &field,
                    "is not a variable name (1–128 of A-Z a-z 0-9 _, not starting with a digit)",
                ));
            }
            if k.to_ascii_uppercase().starts_with("AGENFLEET_") {
                return Err(err(
                    &field,
                    "names starting with AGENFLEET_ are set by the agent's init, not by a spec",
                ));
            }
            if looks_secret(k) {
                return Err(err(
                    &field,
                    format!(
                        "`{k}` looks like a secret: `env` is visible in the engine's container config and in `agents show`. \
                         Store the value in the vault (`agenfleet creds set`) and list it under `credentials`"
                    ),
                ));
            }
            if v.len() > 32 * 1024 || v.contains('\0') {
                return Err(err(&field, "the value must be at most 32 KiB, without NUL"));
            }
        }
        Ok(())
    }
}
