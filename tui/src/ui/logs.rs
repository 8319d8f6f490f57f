//! The full-screen logs of one agent: the window of lines ending where the view is
//! scrolled to (the newest while following), wrapped by characters when wrap is on,
//! with timestamps when asked, and the search's matches highlighted.

use super::theme::Theme;
use crate::app::App;
use agenfleet_protocol::{LogLine, LogStream};
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};
use ratatui::Frame;

/// One log line's text as shown: its time first when timestamps are on.
fn shown_text(l: &LogLine, timestamps: bool) -> String {
    if timestamps {
        let ts = crate::fmt::timestamp(l.ts_ms);
        format!("{} {}", ts.get(11..23).unwrap_or(&ts), l.text)
    } else {
        l.text.clone()
    }
}

/// `text` as spans, the search's matches highlighted.
fn highlighted(text: &str, base: Style, app: &App, t: &Theme) -> Vec<Span<'static>> {
    let Some(re) = &app.logs_pane.search_re else {
        return vec![Span::styled(text.to_string(), base)];
    };
    let mut out = Vec::new();
    let mut at = 0;
    for m in re.find_iter(text) {
        if m.start() > at {
            out.push(Span::styled(text[at..m.start()].to_string(), base));
        }
        out.push(Span::styled(m.as_str().to_string(), t.selected()));
        at = m.end();
    }
    if at < text.len() {
        out.push(Span::styled(text[at..].to_string(), base));
    }
    out
}

/// `s` cut into pieces of at most `width` characters (at least one piece).
fn chunks(s: &str, width: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() || width == 0 {
        return vec![s.to_string()];
    }
    chars.chunks(width).map(|c| c.iter().collect()).collect()
}

pub fn draw(f: &mut Frame, area: Rect, app: &App, t: &Theme) {
    let p = &app.logs_pane;
    let name = p
        .agent
        .as_ref()
        .map(|(tn, n)| format!("{tn}/{n}"))
        .unwrap_or_default();
    let mut marks = vec![if p.follow {
        "following".to_string()
    } else {
        format!("paused, {} back", p.back)
    }];
    if p.wrap {
        marks.push("wrap".into());
    }
    if p.timestamps {
        marks.push("timestamps".into());
    }
    if p.search_re.is_some() {
        marks.push(format!("search: {}", p.search));
    }
    let title = format!(
        " Logs of {name} ({}) — {} ",
        app.logs.len(),
        marks.join(" · ")
    );
    let block = Block::bordered().title(Span::styled(title, t.title()));
    let inner = block.inner(area);
    f.render_widget(block, area);
    let height = inner.height as usize;
    let width = inner.width as usize;
    let end = app.logs.len().saturating_sub(p.back);
    // Lines from the end of the window upwards until the screen is full.
    let mut rows: Vec<Line> = Vec::new();
    for l in app.logs.range(..end).rev() {
        if rows.len() >= height {
            break;
        }
        let base = match l.stream {
            LogStream::Stdout => Style::default(),
            LogStream::Stderr => t.error(),
        };
        let base = if p.hit == Some(l.seq) {
            base.patch(t.title())
        } else {
            base
        };
        let text = shown_text(l, p.timestamps);
        let pieces = if p.wrap {
            chunks(&text, width)
        } else {
            vec![text]
        };
        for piece in pieces.into_iter().rev() {
            rows.push(Line::from(highlighted(&piece, base, app, t)));
        }
    }
    if app.logs.is_empty() {
        rows.push(Line::from(Span::styled("(no log lines yet)", t.dim())));
    }
    rows.reverse();
    let skip = rows.len().saturating_sub(height);
    let shown: Vec<Line> = rows.into_iter().skip(skip).collect();
    f.render_widget(Paragraph::new(shown), inner);
}

#[cfg(test)]
mod tests {
    use crate::app::tests::sample_app;
    use crate::ui::testing::{render, screen_text};
    use agenfleet_protocol::{LogChunk, LogLine, LogStream};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn key(app: &mut crate::app::App, c: KeyCode) {
        app.on_key(KeyEvent::new(c, KeyModifiers::NONE));
    }

    fn feed(app: &mut crate::app::App, n: u64) {
        let k = ("acme".to_string(), "crawler".to_string());
        let lines = (0..n)
            .map(|i| LogLine {
                seq: i,
                ts_ms: 1_764_806_400_000 + i * 1000,
                stream: if i % 10 == 9 {
                    LogStream::Stderr
                } else {
                    LogStream::Stdout
                },
                text: format!("line {i} {}", if i % 7 == 0 { "needle" } else { "hay" }),
            })
            .collect();
        app.apply_logs(
            &k,
            LogChunk {
                lines,
                next_seq: n,
                missed: 0,
                dropped_total: 0,
            },
        );
    }

    #[test]
    fn full_screen_logs_follow_scroll_search_wrap_and_timestamps() {
        let mut app = sample_app();
        key(&mut app, KeyCode::Char('l'));
        feed(&mut app, 100);
        let s = screen_text(&render(&app, 80, 24));
        assert!(s.contains("Logs of acme/crawler (100) — following"), "{s}");
        assert!(
            s.contains("line 99 hay") && !s.contains("line 50 hay"),
            "{s}"
        );
        // Search for the needle: the newest match first, then n / N.
        key(&mut app, KeyCode::Char('/'));
        for c in "needle".chars() {
            key(&mut app, KeyCode::Char(c));
        }
        key(&mut app, KeyCode::Enter);
        assert_eq!(app.logs_pane.hit, Some(98));
        key(&mut app, KeyCode::Char('N'));
        assert_eq!(app.logs_pane.hit, Some(91));
        let s = screen_text(&render(&app, 80, 24));
        assert!(
            s.contains("paused, 8 back") && s.contains("search: needle"),
            "{s}"
        );
        assert!(
            s.contains("line 91 needle") && !s.contains("line 92 hay"),
            "{s}"
        );
        key(&mut app, KeyCode::Char('n'));
        assert_eq!(app.logs_pane.hit, Some(98));
        key(&mut app, KeyCode::Char('n'));
        assert!(app
            .flash
            .as_ref()
            .is_some_and(|f| f.text.contains("no more matches below")));
        // Timestamps, then wrap, then follow again.
        key(&mut app, KeyCode::Char('t'));
        let s = screen_text(&render(&app, 80, 24));
        assert!(s.contains("00:01:38.000 line 98 needle"), "{s}");
        key(&mut app, KeyCode::Char('G'));
        assert!(app.logs_pane.follow);
        feed_more(&mut app);
        let s = screen_text(&render(&app, 40, 12));
        assert!(
            !s.contains("wrapped-tail"),
            "without wrap the end is cut: {s}"
        );
        key(&mut app, KeyCode::Char('w'));
        let s = screen_text(&render(&app, 40, 12));
        assert!(s.contains("wrapped-tail"), "{s}");
        insta::assert_snapshot!(render(&app, 40, 12).backend());
    }

    fn feed_more(app: &mut crate::app::App) {
        let k = ("acme".to_string(), "crawler".to_string());
        app.apply_logs(
            &k,
            LogChunk {
                lines: vec![LogLine {
                    seq: 100,
                    ts_ms: 1_764_806_500_000,
                    stream: LogStream::Stdout,
                    text: format!("{} wrapped-tail", "x".repeat(50)),
                }],
                next_seq: 101,
                missed: 0,
                dropped_total: 0,
            },
        );
    }
}
