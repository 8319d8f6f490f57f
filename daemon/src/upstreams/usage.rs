//! Tokens read from a provider's answer as it streams past: a JSON body (OpenAI's
//! `usage.prompt_tokens`/`completion_tokens`, Anthropic's `usage.input_tokens`/
//! `output_tokens`) or server-sent events, where the counts come in the events themselves
//! (OpenAI's last chunk with `usage`; Anthropic's `message_start` with the input and
//! `message_delta` with the output so far). The largest count seen of each wins, which is
//! right for both vendors' streams. Nothing of the content is kept beyond what one JSON
//! document or one event line needs.

/// Largest JSON body (or single event line) parsed for usage; past it, the tokens of that
/// answer are unknown (the bytes still pass through).
const MAX_PARSE: usize = 4 * 1024 * 1024;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

impl Tokens {
    pub fn total(&self) -> u64 {
        self.input + self.output
    }
}

/// The usage counts of one JSON document, if it carries any.
fn usage_of(v: &serde_json::Value) -> Option<Tokens> {
    let u = v
        .get("usage")
        .or_else(|| v.get("message").and_then(|m| m.get("usage")))?;
    let n = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| u.get(*k).and_then(serde_json::Value::as_u64))
    };
    let input = n(&["prompt_tokens", "input_tokens"]);
    let output = n(&["completion_tokens", "output_tokens"]);
    if input.is_none() && output.is_none() {
        return None;
    }
    Some(Tokens {
        input: input.unwrap_or(0),
        output: output.unwrap_or(0),
    })
}

/// Reads an answer's bytes as they pass.
#[derive(Debug)]
pub struct UsageReader {
    sse: bool,
    buf: Vec<u8>,
    overflow: bool,
    seen: Option<Tokens>,
}

impl UsageReader {
    /// For an answer with this `content-type`.
    pub fn new(content_type: &str) -> UsageReader {
        UsageReader {
            sse: content_type.starts_with("text/event-stream"),
            buf: Vec::new(),
            overflow: false,
            seen: None,
        }
    }

    fn note(&mut self, t: Tokens) {
        let s = self.seen.get_or_insert_with(Tokens::default);
        s.input = s.input.max(t.input);
        s.output = s.output.max(t.output);
    }

    fn event_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        if data.first() != Some(&b'{') {
            return; // `[DONE]` and the like
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
            if let Some(t) = usage_of(&v) {
                self.note(t);
            }
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if self.overflow {
            return;
        }
        if self.sse {
            let mut rest = chunk;
            while let Some(i) = rest.iter().position(|b| *b == b'\n') {
                if self.buf.is_empty() {
                    self.event_line(&rest[..i]);
                } else {
                    let mut line = std::mem::take(&mut self.buf);
                    line.extend_from_slice(&rest[..i]);
                    self.event_line(&line);
                }
                rest = &rest[i + 1..];
            }
            self.buf.extend_from_slice(rest);
        } else {
            self.buf.extend_from_slice(chunk);
        }
        if self.buf.len() > MAX_PARSE {
            self.overflow = true;
            self.buf = Vec::new();
        }
    }

    /// The tokens of the whole answer (None: it said nothing about them).
    pub fn finish(mut self) -> Option<Tokens> {
        if self.sse {
            let line = std::mem::take(&mut self.buf);
            self.event_line(&line);
        } else if !self.overflow && !self.buf.is_empty() {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&self.buf) {
                if let Some(t) = usage_of(&v) {
                    self.note(t);
                }
            }
        }
        self.seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(ct: &str, chunks: &[&str]) -> Option<Tokens> {
        let mut r = UsageReader::new(ct);
        for c in chunks {
            r.feed(c.as_bytes());
        }
        r.finish()
    }

    #[test]
    fn openai_json() {
        let body =
            r#"{"id":"x","usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        let (a, b) = body.split_at(20);
        assert_eq!(
            read("application/json", &[a, b]),
            Some(Tokens {
                input: 12,
                output: 30
            })
        );
    }

    #[test]
    fn anthropic_json() {
        let body = r#"{"type":"message","usage":{"input_tokens":7,"output_tokens":9}}"#;
        assert_eq!(
            read("application/json", &[body]),
            Some(Tokens {
                input: 7,
                output: 9
            })
        );
    }

    #[test]
    fn anthropic_stream_split_across_chunks() {
        let s = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"hi\"}}\n\n\
                 event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let chunks: Vec<String> = s
            .as_bytes()
            .chunks(7)
            .map(|c| String::from_utf8_lossy(c).to_string())
            .collect();
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        assert_eq!(
            read("text/event-stream; charset=utf-8", &refs),
            Some(Tokens {
                input: 25,
                output: 15
            })
        );
    }

    #[test]
    fn openai_stream_with_usage_last_and_done() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n\
                 data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":4}}\n\n\
                 data: [DONE]\n\n";
        assert_eq!(
            read("text/event-stream", &[s]),
            Some(Tokens {
                input: 3,
                output: 4
            })
        );
    }

    #[test]
    fn no_usage_is_none() {
        assert_eq!(read("application/json", &[r#"{"error":"x"}"#]), None);
        assert_eq!(read("application/json", &["not json"]), None);
        assert_eq!(read("text/event-stream", &["data: {}\n"]), None);
    }
}
