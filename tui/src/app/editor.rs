//! A small multi-line text editor for the console's in-place edits (lines of chars, a
//! cursor; the keys an operator expects of a terminal editor). No drawing here.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// A small multi-line text editor (lines of chars, a cursor).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Editor {
    pub lines: Vec<String>,
    pub row: usize,
    /// Cursor column in chars.
    pub col: usize,
}

fn byte_at(s: &str, col: usize) -> usize {
    s.char_indices().nth(col).map(|(i, _)| i).unwrap_or(s.len())
}

impl Editor {
    pub fn new(text: &str) -> Editor {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.is_empty() {
            lines.push(String::new());
        }
        Editor {
            lines,
            ..Default::default()
        }
    }

    pub fn text(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    fn line_len(&self) -> usize {
        self.lines
            .get(self.row)
            .map(|l| l.chars().count())
            .unwrap_or(0)
    }

    /// Applies an editing key; answers whether the text changed.
    pub fn key(&mut self, k: KeyEvent) -> bool {
        match k.code {
            KeyCode::Char(c) if !k.modifiers.contains(KeyModifiers::CONTROL) => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.insert(at, c);
                self.col += 1;
                true
            }
            KeyCode::Tab => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                line.insert_str(at, "  ");
                self.col += 2;
                true
            }
            KeyCode::Enter => {
                let line = &mut self.lines[self.row];
                let at = byte_at(line, self.col);
                let rest = line.split_off(at);
                self.lines.insert(self.row + 1, rest);
                self.row += 1;
                self.col = 0;
                true
            }
            KeyCode::Backspace => {
                if self.col > 0 {
                    let line = &mut self.lines[self.row];
                    let at = byte_at(line, self.col - 1);
                    line.remove(at);
                    self.col -= 1;
                    true
                } else if self.row > 0 {
                    let line = self.lines.remove(self.row);
                    self.row -= 1;
                    self.col = self.line_len();
                    self.lines[self.row].push_str(&line);
                    true
                } else {
                    false
                }
            }
            KeyCode::Delete => {
                if self.col < self.line_len() {
                    let line = &mut self.lines[self.row];
                    let at = byte_at(line, self.col);
                    line.remove(at);
                    true
                } else if self.row + 1 < self.lines.len() {
                    let next = self.lines.remove(self.row + 1);
                    self.lines[self.row].push_str(&next);
                    true
                } else {
                    false
                }
            }
            KeyCode::Left => {
                if self.col > 0 {
                    self.col -= 1;
                } else if self.row > 0 {
                    self.row -= 1;
                    self.col = self.line_len();
                }
                false
            }
            KeyCode::Right => {
                if self.col < self.line_len() {
                    self.col += 1;
                } else if self.row + 1 < self.lines.len() {
                    self.row += 1;
                    self.col = 0;
                }
                false
            }
            KeyCode::Up => {
                self.row = self.row.saturating_sub(1);
                self.col = self.col.min(self.line_len());
                false
            }
            KeyCode::Down => {
                self.row = (self.row + 1).min(self.lines.len() - 1);
                self.col = self.col.min(self.line_len());
                false
            }
            KeyCode::Home => {
                self.col = 0;
                false
            }
            KeyCode::End => {
                self.col = self.line_len();
                false
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn the_editor_edits_lines() {
        let mut e = Editor::new("ab\ncd");
        e.key(key(KeyCode::End));
        e.key(key(KeyCode::Enter));
        for c in "xy".chars() {
            e.key(key(KeyCode::Char(c)));
        }
        assert_eq!(e.text(), "ab\nxy\ncd\n");
        e.key(key(KeyCode::Home));
        e.key(key(KeyCode::Backspace));
        assert_eq!(e.text(), "abxy\ncd\n");
        e.key(key(KeyCode::Down));
        e.key(key(KeyCode::Home));
        e.key(key(KeyCode::Delete));
        assert_eq!(e.text(), "abxy\nd\n");
    }
}
