//! The one spelling of a target that scopes and policies see: file paths collapsed, URL
//! hosts without case or the root dot, unreserved escapes decoded (`//` segments, an
//! encoded `/` and NUL refused), and JSON re-encoded with sorted keys and no spaces.

/// The one canonical spelling of the file a `read_file` path names, as the kernel
/// resolves it: runs of `/` collapse to one (Linux treats a leading `//` as `/`), a
/// trailing `/` goes (except for the root). `.` and `..` are refused, not resolved: what
/// they lead to depends on symlinks the gateway cannot see.
pub fn canonical_file_path(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("must be absolute");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    let mut out = String::with_capacity(path.len());
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err("has `.` or `..` components");
        }
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The canonical form of a URL's host: what the `url` crate gives (lowercase, IDNA,
/// IPv4 in dotted form, IPv6 in brackets) without a trailing root dot, since
/// `api.example.com.` is the same host as `api.example.com`.
pub(super) fn canonical_host(host: &str) -> Result<String, &'static str> {
    let h = host.strip_suffix('.').unwrap_or(host);
    if h.is_empty() || h.ends_with('.') || h.contains("..") {
        return Err("has an empty host label");
    }
    Ok(h.to_string())
}

/// The canonical form of a URL path (after the `url` crate resolved `.`/`..` and
/// `%2e` segments): percent-encoded unreserved characters are decoded, other escapes
/// get uppercase hex. An empty segment (`//`), an encoded `/` or `\\`, or an encoded
/// NUL is refused: servers differ on what they mean, so no one spelling is "the" target.
pub fn canonical_url_path(path: &str) -> Result<String, &'static str> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err("must start with `/`");
    }
    if path.len() > 1 && path[1..].split('/').rev().skip(1).any(str::is_empty) {
        return Err("has an empty segment (`//`)");
    }
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("has a `%` that starts no escape");
            };
            let v = hi * 16 + lo;
            match v {
                b'/' | b'\\' => return Err("has an encoded `/` or `\\`"),
                0 => return Err("has an encoded NUL"),
                _ if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                    out.push(v as char)
                }
                _ => {
                    out.push('%');
                    out.push_str(&format!("{v:02X}"));
                }
            }
            i += 3;
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    // A decoded `.` may have made a dot segment (`/%2E/` is one to the url crate too,
    // so this only catches what it kept).
    if out.split('/').any(|s| s == "." || s == "..") {
        return Err("has a `.` or `..` segment");
    }
    Ok(out)
}

/// Whether `path` lies under `prefix` on component bounds.
pub(super) fn under_prefix(path: &str, prefix: &str) -> bool {
    if prefix.ends_with('/') {
        // What is inside the directory, not the directory itself (which is canonically
        // spelled without the slash, so `/data/reports/` is refused the same way).
        path.starts_with(prefix)
    } else {
        path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

pub(super) fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => pattern == host,
    }
}

/// Writes `v` with object keys sorted at every level and no spaces, whatever order the
/// map type keeps: the same arguments always give the same text (and request hash).
pub fn canonical_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}
