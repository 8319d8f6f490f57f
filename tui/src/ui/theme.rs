//! Colours and styles. With `NO_COLOR` set, only bold and reverse video are used.

use agenfleet_protocol::AgentState;
use ratatui::style::{Color, Modifier, Style};

pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn new(color: bool) -> Theme {
        Theme { color }
    }

    fn fg(&self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    pub fn state(&self, s: AgentState) -> Style {
        match s {
            AgentState::Running => self.fg(Color::Green),
            AgentState::Pending => self.fg(Color::Cyan),
            AgentState::BackingOff => self.fg(Color::Yellow),
            AgentState::Failed => self.fg(Color::Red).add_modifier(Modifier::BOLD),
            AgentState::Stopped => self.fg(Color::DarkGray),
            AgentState::Unknown => self.fg(Color::Magenta),
        }
    }

    /// A line a diff adds.
    pub fn added(&self) -> Style {
        self.fg(Color::Green)
    }

    /// A line a diff removes.
    pub fn removed(&self) -> Style {
        self.fg(Color::Red)
    }

    pub fn title(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }

    pub fn header_bar(&self) -> Style {
        if self.color {
            Style::default().bg(Color::Blue).fg(Color::White)
        } else {
            Style::default().add_modifier(Modifier::REVERSED)
        }
    }

    pub fn alert(&self) -> Style {
        if self.color {
            Style::default()
                .bg(Color::Red)
                .fg(Color::White)
                .add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        }
    }

    pub fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }

    pub fn dim(&self) -> Style {
        self.fg(Color::DarkGray)
    }

    pub fn error(&self) -> Style {
        self.fg(Color::Red).add_modifier(Modifier::BOLD)
    }

    pub fn key(&self) -> Style {
        self.fg(Color::Cyan).add_modifier(Modifier::BOLD)
    }
}
