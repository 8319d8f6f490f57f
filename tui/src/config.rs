//! The client's own settings: `config.toml` in `$XDG_CONFIG_HOME/agenfleet/` (else
//! `~/.config/agenfleet/`) — the console's theme and whether it uses the mouse. Flags
//! win over the file; a bad file is refused naming the field.

use crate::client::CliError;
use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// A built-in theme (`default`, `high-contrast`) or `themes/NAME.toml` beside this file.
    pub theme: Option<String>,
    /// Report the mouse to the console (`--mouse`).
    #[serde(default)]
    pub mouse: bool,
}

impl ClientConfig {
    /// The file's settings (the defaults when there is none).
    pub fn load() -> Result<ClientConfig, CliError> {
        let Some(path) = crate::contexts::config_dir().map(|d| d.join("config.toml")) else {
            return Ok(ClientConfig::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(ClientConfig::default())
            }
            Err(e) => {
                return Err(CliError::new(
                    6,
                    "invalid_argument",
                    format!("{}: {e}", path.display()),
                ))
            }
        };
        toml::from_str(&text).map_err(|e| {
            CliError::new(
                6,
                "invalid_argument",
                format!("{}: {}", path.display(), e.message()),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ClientConfig;

    #[test]
    fn the_file_takes_theme_and_mouse_and_names_what_it_does_not_know() {
        let c: ClientConfig =
            toml::from_str("theme = \"high-contrast\"\nmouse = true\n").expect("config");
        assert_eq!(c.theme.as_deref(), Some("high-contrast"));
        assert!(c.mouse);
        let e = toml::from_str::<ClientConfig>("colour = \"x\"").unwrap_err();
        assert!(e.message().contains("colour"), "{e}");
    }
}
