//! Contexts: the daemons this client knows by name — a local socket (`unix:///path`) or one
//! on another host reached with the system's `ssh` (`ssh://user@host[:port][/socket]`) —
//! kept in `$XDG_CONFIG_HOME/agenfleet/contexts.toml` (else `~/.config/…`), the current
//! one, and which daemon a command talks to: `--socket`, else `--context` /
//! `AGENFLEET_CONTEXT`, else the current context, else the local socket's discovery.

use crate::client::{choose_socket, CliError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Exit code for a bad context name, URL or file (the CLI's invalid-argument code).
const EXIT_INVALID: i32 = 6;

/// Where a daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// A daemon on another host: `ssh [-p PORT] [USER@]HOST -- BIN dial-stdio [--socket S]`.
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// The remote daemon's socket (None: the remote client finds it as it would here).
        socket: Option<String>,
        /// The `agenfleet` to run on the remote host.
        remote_bin: String,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Ssh {
                user,
                host,
                port,
                socket,
                ..
            } => {
                write!(f, "ssh://")?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                if host.contains(':') {
                    write!(f, "[{host}]")?;
                } else {
                    write!(f, "{host}")?;
                }
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                if let Some(s) = socket {
                    write!(f, "{s}")?;
                }
                Ok(())
            }
        }
    }
}

fn invalid(msg: impl Into<String>) -> CliError {
    CliError::new(EXIT_INVALID, "invalid_argument", msg)
}

/// A host or user as ssh takes it: no spaces, no option-looking `-` first, nothing a
/// shell or ssh's own syntax would read (`@`, `/`, quotes…).
fn plain(what: &str, s: &str, url: &str) -> Result<(), CliError> {
    let ok = !s.is_empty()
        && !s.starts_with('-')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '%'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "`{url}`: the {what} `{s}` is not a plain name"
        )))
    }
}

impl Endpoint {
    /// Parses `unix:///path` or `ssh://[user@]host[:port][/socket/path]` (IPv6 in
    /// brackets). `remote_bin` is the `agenfleet` the ssh side runs.
    pub fn parse(url: &str, remote_bin: Option<&str>) -> Result<Endpoint, CliError> {
        if let Some(path) = url.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "`{url}`: a unix:// context needs an absolute path (unix:///run/agenfleet/agenfleet.sock)"
                )));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let Some(rest) = url.strip_prefix("ssh://") else {
            return Err(invalid(format!(
                "`{url}`: a context is unix:///path/to.sock or ssh://[user@]host[:port][/path/to.sock]"
            )));
        };
        let (authority, socket) = match rest.find('/') {
            Some(i) => (&rest[..i], Some(rest[i..].to_string())),
            None => (rest, None),
        };
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_string()), h),
            None => (None, authority),
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let Some((h, after)) = v6.split_once(']') else {
                return Err(invalid(format!("`{url}`: an unclosed [ in the host")));
            };
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(invalid(format!("`{url}`: `{after}` after the host"))),
            };
            (h.to_string(), port)
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| invalid(format!("`{url}`: the port `{p}` is not 1–65535")))?,
            ),
            None => None,
        };
        plain("host", &host, url)?;
        if let Some(u) = &user {
            plain("user", u, url)?;
        }
        if let Some(s) = &socket {
            if s.chars()
                .any(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '\\' | '$' | '`' | ';'))
            {
                return Err(invalid(format!(
                    "`{url}`: the socket path has characters a remote shell would read"
                )));
            }
        }
        let remote_bin = remote_bin.unwrap_or("agenfleet").to_string();
        if remote_bin.is_empty()
            || remote_bin.starts_with('-')
            || remote_bin
                .chars()
                .any(|c| c.is_whitespace() || matches!(c, '\'' | '"' | '\\' | '$' | '`' | ';'))
        {
            return Err(invalid(format!(
                "the remote agenfleet `{remote_bin}` is not a plain path"
            )));
        }
        Ok(Endpoint::Ssh {
            user,
            host,
            port,
            socket,
            remote_bin,
        })
    }

    /// The ssh command line for an ssh endpoint (`ssh -T … -- agenfleet dial-stdio …`).
    pub fn ssh_args(&self) -> Option<Vec<String>> {
        let Endpoint::Ssh {
            user,
            host,
            port,
            socket,
            remote_bin,
        } = self
        else {
            return None;
        };
        // -T: no terminal (the bytes are frames); BatchMode: never prompt (the console owns
        // the terminal) — keys come from the user's agent or config.
        let mut a = vec!["-T".to_string(), "-o".into(), "BatchMode=yes".into()];
        if let Some(p) = port {
            a.push("-p".into());
            a.push(p.to_string());
        }
        a.push(match user {
            Some(u) => format!("{u}@{host}"),
            None => host.clone(),
        });
        a.push("--".into());
        a.push(remote_bin.clone());
        a.push("dial-stdio".into());
        if let Some(s) = socket {
            a.push("--socket".into());
            a.push(s.clone());
        }
        Some(a)
    }
}

/// One context as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub name: String,
    pub url: String,
    /// The `agenfleet` an ssh context runs on the remote host (default `agenfleet`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_bin: Option<String>,
}

impl Context {
    pub fn endpoint(&self) -> Result<Endpoint, CliError> {
        Endpoint::parse(&self.url, self.remote_bin.as_deref())
    }
}

/// The contexts file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default, rename = "context")]
    pub contexts: Vec<Context>,
}

/// The client's config directory: `$XDG_CONFIG_HOME/agenfleet`, else
/// `$HOME/.config/agenfleet`.
pub fn config_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("agenfleet"))
}

/// `contexts.toml` in the client's config directory.
pub fn file_path() -> Option<PathBuf> {
    Some(config_dir()?.join("contexts.toml"))
}

/// A context name: the names tenants and agents use (lowercase, digits, `-`), not `all`.
pub fn check_name(name: &str) -> Result<(), CliError> {
    agenfleet_protocol::names::check_name("context", name).map_err(invalid)?;
    if name == "all" {
        return Err(invalid("`all` means every context; pick another name"));
    }
    Ok(())
}

impl Contexts {
    /// The file's contexts (none when there is no file).
    pub fn load() -> Result<Contexts, CliError> {
        match file_path() {
            Some(p) => Self::load_from(&p),
            None => Ok(Contexts::default()),
        }
    }

    pub fn load_from(path: &Path) -> Result<Contexts, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Contexts::default()),
            Err(e) => return Err(invalid(format!("{}: {e}", path.display()))),
        };
        let c: Contexts = toml::from_str(&text)
            .map_err(|e| invalid(format!("{}: {}", path.display(), e.message())))?;
        for ctx in &c.contexts {
            check_name(&ctx.name)
                .map_err(|e| invalid(format!("{}: {}", path.display(), e.message)))?;
            ctx.endpoint().map_err(|e| {
                invalid(format!(
                    "{}: context `{}`: {}",
                    path.display(),
                    ctx.name,
                    e.message
                ))
            })?;
        }
        Ok(c)
    }

    /// Writes the file (0600, through a temporary file and a rename).
    pub fn save(&self) -> Result<PathBuf, CliError> {
        let path = file_path().ok_or_else(|| {
            invalid("no place for the contexts file: set HOME or XDG_CONFIG_HOME")
        })?;
        self.save_to(&path)?;
        Ok(path)
    }

    pub fn save_to(&self, path: &Path) -> Result<(), CliError> {
        use std::io::Write;
        let io = |e: std::io::Error| CliError::new(74, "io", format!("{}: {e}", path.display()));
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io)?;
        let text = toml::to_string(self).map_err(|e| invalid(e.to_string()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(text.as_bytes()).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name)
    }

    fn named(&self, name: &str) -> Result<&Context, CliError> {
        self.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.contexts.iter().map(|c| c.name.as_str()).collect();
            invalid(if known.is_empty() {
                format!("no context `{name}` (none defined: `agenfleet context add NAME URL`)")
            } else {
                format!("no context `{name}` (known: {})", known.join(", "))
            })
        })
    }
}

/// Which daemon a command talks to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The context's name (None: the local socket, no context).
    pub name: Option<String>,
    pub endpoint: Endpoint,
    /// `--socket`, `--context`, `AGENFLEET_CONTEXT`, `the current context`, or how the
    /// local socket was found.
    pub why: String,
}

/// Resolves the target: `--socket` (and `AGENFLEET_SOCKET`) win; else `--context` /
/// `AGENFLEET_CONTEXT`; else the file's current context; else the local socket's
/// discovery. `all` is not a single target: the caller asks `targets` for it.
pub fn resolve(socket: Option<&Path>, context: Option<&str>) -> Result<Target, CliError> {
    let env_socket = std::env::var_os("AGENFLEET_SOCKET").is_some_and(|v| !v.is_empty());
    if socket.is_some() || (env_socket && context.is_none()) {
        let c = choose_socket(socket);
        return Ok(Target {
            name: None,
            endpoint: Endpoint::Unix(crate::client::socket_path(socket)),
            why: c.why.to_string(),
        });
    }
    let file = Contexts::load()?;
    let (name, why) = match context {
        Some(n) => (Some(n.to_string()), "--context / AGENFLEET_CONTEXT"),
        None => (file.current.clone(), "the current context"),
    };
    if let Some(n) = name {
        let c = file.named(&n)?;
        return Ok(Target {
            endpoint: c.endpoint()?,
            name: Some(n),
            why: why.to_string(),
        });
    }
    let c = choose_socket(None);
    Ok(Target {
        name: None,
        endpoint: Endpoint::Unix(crate::client::socket_path(None)),
        why: c.why.to_string(),
    })
}

/// Every context of the file (`--context all`, `:ctx all`), in the file's order.
pub fn all() -> Result<Vec<Target>, CliError> {
    let file = Contexts::load()?;
    if file.contexts.is_empty() {
        return Err(invalid(
            "no contexts defined for `all` (`agenfleet context add NAME URL`)",
        ));
    }
    file.contexts
        .iter()
        .map(|c| {
            Ok(Target {
                name: Some(c.name.clone()),
                endpoint: c.endpoint()?,
                why: "--context all".into(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_print_back() {
        for url in [
            "unix:///run/agenfleet/agenfleet.sock",
            "ssh://oncall@fleet-1.example.com",
            "ssh://oncall@fleet-1.example.com:2222/run/agenfleet/agenfleet.sock",
            "ssh://host",
            "ssh://root@[::1]:22/tmp/a.sock",
        ] {
            let e = Endpoint::parse(url, None).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(e.to_string(), url);
        }
        let e = Endpoint::parse("ssh://u@h:2200/s.sock", Some("/opt/bin/agenfleet")).unwrap();
        assert_eq!(
            e.ssh_args().unwrap(),
            [
                "-T",
                "-o",
                "BatchMode=yes",
                "-p",
                "2200",
                "u@h",
                "--",
                "/opt/bin/agenfleet",
                "dial-stdio",
                "--socket",
                "/s.sock"
            ]
        );
    }

    #[test]
    fn bad_urls_are_named() {
        for (url, said) in [
            ("http://h", "a context is unix://"),
            ("unix://relative.sock", "absolute path"),
            ("ssh://h:0", "not 1–65535"),
            ("ssh://h:ssh", "not 1–65535"),
            ("ssh://-oProxyCommand=x", "not a plain name"),
            ("ssh://a b@h", "not a plain name"),
            ("ssh://[::1", "unclosed ["),
            ("ssh://h/a;rm -rf", "remote shell"),
        ] {
            let e = Endpoint::parse(url, None).expect_err(url);
            assert!(e.message.contains(said), "{url}: {}", e.message);
        }
        assert!(Endpoint::parse("ssh://h", Some("-x")).is_err());
        assert!(check_name("all").is_err());
        assert!(check_name("Prod").is_err());
    }

    #[test]
    fn the_file_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("agenfleet/contexts.toml");
        let c = Contexts {
            current: Some("b".into()),
            contexts: vec![
                Context {
                    name: "a".into(),
                    url: "unix:///tmp/a.sock".into(),
                    remote_bin: None,
                },
                Context {
                    name: "b".into(),
                    url: "ssh://u@h".into(),
                    remote_bin: Some("/opt/agenfleet".into()),
                },
            ],
        };
        c.save_to(&p).expect("save");
        assert_eq!(Contexts::load_from(&p).expect("load"), c);
        std::fs::write(&p, "[[context]]\nname = \"x\"\nurl = \"ftp://h\"\n").expect("write");
        let e = Contexts::load_from(&p).expect_err("bad url");
        assert!(e.message.contains("context `x`"), "{}", e.message);
    }
}
