//! A view's filter (`/`): a case-insensitive regex, `!` in front to keep what does not
//! match. Text that is not a valid regex is matched as plain text and the footer says so.
//! Each view keeps its own; the compiled regex is made once per edit, not per row.

use regex::{Regex, RegexBuilder};

#[derive(Debug, Clone, Default)]
pub struct Filter {
    text: String,
    re: Option<Regex>,
    inverse: bool,
    /// Why the text is matched as plain text (not a regex).
    problem: Option<String>,
}

/// Bounds what a typed pattern may cost (the default is 10 MiB of compiled program).
const SIZE_LIMIT: usize = 1 << 20;

/// A case-insensitive regex for `pattern`, or plain text when it is not one (and why).
pub fn compile(pattern: &str) -> (Regex, Option<String>) {
    let build = |p: &str| {
        RegexBuilder::new(p)
            .case_insensitive(true)
            .size_limit(SIZE_LIMIT)
            .build()
    };
    match build(pattern) {
        Ok(re) => (re, None),
        Err(e) => {
            let why = e.to_string();
            let why = why.lines().last().unwrap_or("invalid").trim().to_string();
            // An escaped literal always compiles (and stays under the limit: it is as long
            // as what was typed).
            let re = build(&regex::escape(pattern))
                .unwrap_or_else(|_| Regex::new("$^").expect("a fixed regex"));
            (re, Some(why))
        }
    }
}

impl Filter {
    /// No filter (everything shown).
    pub const EMPTY: Filter = Filter {
        text: String::new(),
        re: None,
        inverse: false,
        problem: None,
    };

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Why the text is matched literally (not a valid regex), if it is.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    pub fn set(&mut self, text: impl Into<String>) {
        self.text = text.into();
        let (inverse, pattern) = match self.text.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, self.text.as_str()),
        };
        self.inverse = inverse;
        if pattern.is_empty() {
            self.re = None;
            self.problem = None;
            return;
        }
        let (re, problem) = compile(pattern);
        self.re = Some(re);
        self.problem = problem;
    }

    pub fn push(&mut self, c: char) {
        let mut t = std::mem::take(&mut self.text);
        t.push(c);
        self.set(t);
    }

    pub fn pop(&mut self) {
        let mut t = std::mem::take(&mut self.text);
        t.pop();
        self.set(t);
    }

    pub fn clear(&mut self) {
        self.set(String::new());
    }

    /// Whether a row whose text is `hay` is shown.
    pub fn matches(&self, hay: &str) -> bool {
        match &self.re {
            None => true,
            Some(re) => re.is_match(hay) != self.inverse,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(text: &str) -> Filter {
        let mut f = Filter::default();
        f.set(text);
        f
    }

    #[test]
    fn regex_case_insensitive_and_inverse() {
        assert!(f("").matches("anything"));
        assert!(f("^acme/").matches("ACME/crawler running"));
        assert!(!f("^acme/").matches("globex/acme"));
        assert!(f("crawl|pay").matches("acme/payer"));
        assert!(!f("!running").matches("acme/a running"));
        assert!(f("!running").matches("acme/b failed"));
        // `!` alone keeps everything (nothing typed after it yet).
        assert!(f("!").matches("x"));
    }

    #[test]
    fn what_is_not_a_regex_is_plain_text_and_says_why() {
        let bad = f("a(b");
        assert!(
            bad.problem().is_some_and(|p| p.contains("unclosed")),
            "{bad:?}"
        );
        assert!(bad.matches("xa(by"));
        assert!(!bad.matches("ab"));
        assert!(f("a(b)").problem().is_none());
    }

    #[test]
    fn a_pattern_too_big_to_compile_is_text_not_a_hang() {
        let big = f("\\w{1000}{1000}");
        assert!(big.problem().is_some(), "{big:?}");
        assert!(!big.matches("wwww"));
    }
}
