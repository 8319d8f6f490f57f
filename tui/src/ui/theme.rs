//! Colours and styles, from theme files: `assets/themes/*.toml` are built in (`default`,
//! `high-contrast`), `$XDG_CONFIG_HOME/agenfleet/themes/NAME.toml` adds the user's own;
//! the client config (`config.rs`) picks one. With `NO_COLOR` set, only bold, underline and
//! reverse video are used. The theme is chosen once at start (`set_active`); views ask
//! for styles by their meaning (`t.state(..)`, `t.alert()`).

use agenfleet_protocol::AgentState;
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::OnceLock;

/// The themes that ship inside the binary.
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "default",
        include_str!("../../../assets/themes/default.toml"),
    ),
    (
        "high-contrast",
        include_str!("../../../assets/themes/high-contrast.toml"),
    ),
];

/// Every slot a theme sets.
pub const SLOTS: &[&str] = &[
    "running",
    "pending",
    "backing_off",
    "failed",
    "stopped",
    "unknown",
    "added",
    "removed",
    "title",
    "header_bar",
    "alert",
    "selected",
    "dim",
    "error",
    "key",
];

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotSpec {
    fg: Option<String>,
    bg: Option<String>,
    #[serde(default)]
    bold: bool,
    #[serde(default)]
    reversed: bool,
    #[serde(default)]
    underlined: bool,
}

/// A parsed theme: a style per slot.
#[derive(Debug, Clone, PartialEq)]
pub struct Palette {
    pub name: String,
    styles: BTreeMap<&'static str, (Style, Modifier)>,
}

fn color(slot: &str, what: &str, v: &str) -> Result<Color, String> {
    Color::from_str(v).map_err(|_| format!("`{slot}.{what}`: `{v}` is not a colour"))
}

impl Palette {
    /// Parses a theme file's text; every slot must be known, every colour valid. A slot
    /// the file leaves out takes the default theme's.
    pub fn parse(name: &str, text: &str) -> Result<Palette, String> {
        let map: BTreeMap<String, SlotSpec> =
            toml::from_str(text).map_err(|e| format!("theme {name}: {}", e.message()))?;
        let mut styles = match name {
            "default" => BTreeMap::new(),
            _ => Palette::default().styles,
        };
        for (slot, spec) in map {
            let Some(key) = SLOTS.iter().find(|s| **s == slot) else {
                return Err(format!(
                    "theme {name}: unknown slot `{slot}` (slots: {})",
                    SLOTS.join(", ")
                ));
            };
            let mut style = Style::default();
            if let Some(fg) = &spec.fg {
                style = style.fg(color(&slot, "fg", fg).map_err(|e| format!("theme {name}: {e}"))?);
            }
            if let Some(bg) = &spec.bg {
                style = style.bg(color(&slot, "bg", bg).map_err(|e| format!("theme {name}: {e}"))?);
            }
            let mut m = Modifier::empty();
            if spec.bold {
                m |= Modifier::BOLD;
            }
            if spec.reversed {
                m |= Modifier::REVERSED;
            }
            if spec.underlined {
                m |= Modifier::UNDERLINED;
            }
            styles.insert(key, (style, m));
        }
        if let Some(missing) = SLOTS.iter().find(|s| !styles.contains_key(**s)) {
            return Err(format!("theme {name}: slot `{missing}` is not set"));
        }
        Ok(Palette {
            name: name.to_string(),
            styles,
        })
    }

    /// A built-in theme, or `$XDG_CONFIG_HOME/agenfleet/themes/NAME.toml`.
    pub fn load(name: &str) -> Result<Palette, String> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
            return Palette::parse(name, text);
        }
        let ok_name = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let dir = crate::contexts::config_dir().map(|d| d.join("themes"));
        let Some(path) = dir
            .filter(|_| ok_name)
            .map(|d| d.join(format!("{name}.toml")))
        else {
            return Err(format!(
                "no theme `{name}` (built in: {})",
                BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "no theme `{name}`: {}: {e} (built in: {})",
                path.display(),
                BUILT_IN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        Palette::parse(name, &text)
    }
}

impl Default for Palette {
    fn default() -> Palette {
        // The built-in default is checked by a unit test; it always parses.
        Palette::parse("default", BUILT_IN[0].1).unwrap_or(Palette {
            name: "default".into(),
            styles: SLOTS
                .iter()
                .map(|s| (*s, (Style::default(), Modifier::empty())))
                .collect(),
        })
    }
}

static ACTIVE: OnceLock<Palette> = OnceLock::new();

/// Chooses the theme for this process (once, at start).
pub fn set_active(p: Palette) {
    let _ = ACTIVE.set(p);
}

fn active() -> &'static Palette {
    ACTIVE.get_or_init(Palette::default)
}

pub struct Theme {
    pub color: bool,
    palette: &'static Palette,
}

impl Theme {
    pub fn new(color: bool) -> Theme {
        Theme {
            color,
            palette: active(),
        }
    }

    /// The slot's style; without colour only its modifiers (and reverse video where the
    /// colours carried the meaning: the header bar and alarms).
    fn slot(&self, name: &str) -> Style {
        let (style, m) = self
            .palette
            .styles
            .get(name)
            .copied()
            .unwrap_or((Style::default(), Modifier::empty()));
        if self.color {
            return style.add_modifier(m);
        }
        let m = match name {
            "header_bar" => m | Modifier::REVERSED,
            "alert" => m | Modifier::REVERSED | Modifier::BOLD,
            _ => m,
        };
        Style::default().add_modifier(m)
    }

    pub fn state(&self, s: AgentState) -> Style {
        self.slot(match s {
            AgentState::Running => "running",
            AgentState::Pending => "pending",
            AgentState::BackingOff => "backing_off",
            AgentState::Failed => "failed",
            AgentState::Stopped => "stopped",
            AgentState::Unknown => "unknown",
        })
    }

    /// A line a diff adds.
    pub fn added(&self) -> Style {
        self.slot("added")
    }

    /// A line a diff removes.
    pub fn removed(&self) -> Style {
        self.slot("removed")
    }

    pub fn title(&self) -> Style {
        self.slot("title")
    }

    pub fn header_bar(&self) -> Style {
        self.slot("header_bar")
    }

    pub fn alert(&self) -> Style {
        self.slot("alert")
    }

    pub fn selected(&self) -> Style {
        self.slot("selected")
    }

    pub fn dim(&self) -> Style {
        self.slot("dim")
    }

    pub fn error(&self) -> Style {
        self.slot("error")
    }

    pub fn key(&self) -> Style {
        self.slot("key")
    }

    /// A picture's row: good news as running, warnings as backing off, bad as failed.
    pub fn tone(&self, tone: crate::pulse::Tone) -> Style {
        use crate::pulse::Tone;
        match tone {
            Tone::Plain => self.title(),
            Tone::Good => self.slot("running"),
            Tone::Warn => self.slot("backing_off"),
            Tone::Bad => self.slot("failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_themes_parse_and_set_every_slot() {
        for (name, text) in BUILT_IN {
            let p = Palette::parse(name, text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(p.styles.len(), SLOTS.len(), "{name}");
        }
        // The default is the one the console always had.
        let d = Palette::default();
        assert_eq!(d.styles["running"].0, Style::default().fg(Color::Green));
        assert_eq!(
            d.styles["header_bar"].0,
            Style::default().fg(Color::White).bg(Color::Blue)
        );
    }

    #[test]
    fn a_bad_theme_names_the_slot_and_what_is_wrong() {
        let e = Palette::parse("mine", "runing = { fg = \"green\" }").unwrap_err();
        assert!(e.contains("unknown slot `runing`"), "{e}");
        let e = Palette::parse("mine", "failed = { fg = \"reddish\" }").unwrap_err();
        assert!(e.contains("`failed.fg`: `reddish` is not a colour"), "{e}");
        let e = Palette::parse("mine", "failed = { blink = true }").unwrap_err();
        assert!(e.contains("blink"), "{e}");
        // A partial theme takes the rest from the default.
        let p = Palette::parse("mine", "failed = { fg = \"#ff0000\" }").expect("partial");
        assert_eq!(
            p.styles["failed"].0,
            Style::default().fg(Color::Rgb(255, 0, 0))
        );
        assert_eq!(p.styles["running"], Palette::default().styles["running"]);
        assert!(Palette::load("../etc/passwd").is_err());
    }

    #[test]
    fn no_color_keeps_only_modifiers_and_reverses_the_alarms() {
        let t = Theme::new(false);
        assert_eq!(t.state(AgentState::Running).fg, None);
        assert!(t.alert().add_modifier.contains(Modifier::REVERSED));
        assert!(t
            .state(AgentState::Failed)
            .add_modifier
            .contains(Modifier::BOLD));
    }
}
