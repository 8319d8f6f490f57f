//! Tests of scopes, call parsing and canonical spellings (unit and property tests).

use super::canonical::*;
use super::scopes::*;
use super::*;

fn call(tool: &str, args: serde_json::Value) -> ToolCall {
    ToolCall {
        tool: tool.into(),
        args_json: args.to_string(),
    }
}

const SCOPES: &str = r#"
tools = ["http_request", "read_file", "mcp", "search"]
read_paths = ["/data/reports/", "/etc/app"]
mcp_servers = ["github"]

[[http]]
host = "api.example.com"
methods = ["GET", "POST"]

[[http]]
host = "*.internal.example"
path_prefix = "/v1"
"#;

fn decide(s: &Scopes, c: ToolCall) -> Result<(), String> {
    s.permits(&parse_call(&c)?)
}

#[test]
fn scopes_allow_what_they_list_and_nothing_else() {
    let s = Scopes::parse(SCOPES).expect("valid");
    let ok = |c| assert!(decide(&s, c).is_ok());
    let no = |c: ToolCall| {
        let r = decide(&s, c.clone());
        assert!(r.is_err(), "{c:?} should be denied");
    };
    ok(call(
        "http_request",
        serde_json::json!({"method": "post", "url": "https://api.example.com/x"}),
    ));
    no(call(
        "http_request",
        serde_json::json!({"method": "DELETE", "url": "https://api.example.com/x"}),
    ));
    no(call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "https://evil.com/api.example.com"}),
    ));
    no(call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "https://api.example.com.evil.com/"}),
    ));
    ok(call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "https://a.b.internal.example/v1/x"}),
    ));
    no(call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "https://internal.example/v1/x"}),
    ));
    no(call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "https://a.internal.example/v10"}),
    ));
    no(call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "https://a.internal.example/v1/../admin"}),
    ));
    ok(call(
        "read_file",
        serde_json::json!({"path": "/data/reports/q3.csv"}),
    ));
    ok(call("read_file", serde_json::json!({"path": "/etc/app"})));
    ok(call(
        "read_file",
        serde_json::json!({"path": "/etc/app/conf"}),
    ));
    no(call(
        "read_file",
        serde_json::json!({"path": "/etc/application"}),
    ));
    no(call(
        "read_file",
        serde_json::json!({"path": "/data/reports/../../etc/shadow"}),
    ));
    no(call(
        "read_file",
        serde_json::json!({"path": "/data/reportsX"}),
    ));
    ok(call(
        "mcp",
        serde_json::json!({"server": "github", "tool": "list_issues"}),
    ));
    no(call(
        "mcp",
        serde_json::json!({"server": "gitlab", "tool": "list_issues"}),
    ));
    ok(call("search", serde_json::json!({"q": "anything"})));
    no(call("shell", serde_json::json!({"cmd": "rm -rf /"})));
}

#[test]
fn bad_scopes_name_the_field_and_the_line() {
    let e = Scopes::parse("tools = [\"http_request\"]\n[[http]]\nhost = \"exa mple.com\"\n")
        .unwrap_err();
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("http[0].host"), "{e}");
    let e = Scopes::parse("tools = [\"x\"]\nbogus = 1\n").unwrap_err();
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("bogus"), "{e}");
    let e = Scopes::parse("tools = [\"read_file\"]\nread_paths = [\"/a/../b\"]\n").unwrap_err();
    assert!(e.message.contains("read_paths[0]"), "{e}");
    let e = Scopes::parse(
        "tools = [\"http_request\"]\n[[http]]\nhost = \"a.com\"\nmethods = [\"FETCH\"]\n",
    )
    .unwrap_err();
    assert_eq!(e.line, Some(4), "{e}");
    for bad in [
        "*", "*.com.*", "a..b", "-a.com", "A.com", "foo", "*.", "a.com/x",
    ] {
        assert!(host_pattern_problem(bad).is_some(), "{bad}");
    }
    for good in ["a.com", "*.a.com", "10.0.0.1", "x-1.y.example"] {
        assert!(host_pattern_problem(good).is_none(), "{good}");
    }
}

#[test]
fn malformed_and_oversized_calls_are_refused_with_a_reason() {
    let big = ToolCall {
        tool: "search".into(),
        args_json: format!("{{\"q\":\"{}\"}}", "x".repeat(MAX_TOOL_ARGS_BYTES)),
    };
    assert!(parse_call(&big).unwrap_err().contains("too large"));
    let bad = ToolCall {
        tool: "search".into(),
        args_json: "{not json".into(),
    };
    assert!(parse_call(&bad).unwrap_err().contains("not JSON"));
    assert!(
        parse_call(&call("read_file", serde_json::json!({"path": 3})))
            .unwrap_err()
            .contains("must be a string")
    );
    assert!(parse_call(&call(
        "http_request",
        serde_json::json!({"method": "GET", "url": "ftp://x.com/"})
    ))
    .unwrap_err()
    .contains("scheme"));
    assert!(parse_call(&call("bad tool!", serde_json::json!({})))
        .unwrap_err()
        .contains("not a tool name"));
    let a = parse_call(&call("search", serde_json::json!({"b": 1, "a": 2}))).unwrap();
    assert_eq!(a.canonical_args, r#"{"a":2,"b":1}"#);
}

fn target_of(tool: &str, args: serde_json::Value) -> Result<ParsedCall, String> {
    parse_call(&call(tool, args))
}

#[test]
fn every_spelling_of_a_file_path_is_seen_in_its_canonical_form() {
    for spelled in [
        "//data/secrets/a",
        "///data/secrets/a",
        "/data//secrets/a",
        "/data/secrets//a/",
        "/data/secrets/a/",
    ] {
        let p = target_of("read_file", serde_json::json!({ "path": spelled })).unwrap();
        assert_eq!(
            p.target,
            Target::File {
                path: "/data/secrets/a".into()
            },
            "{spelled}"
        );
        assert_eq!(
            p.canonical_args, r#"{"path":"/data/secrets/a"}"#,
            "{spelled}"
        );
    }
    for bad in ["data/x", "/data/./x", "/data/../x", "/a\0b"] {
        assert!(
            target_of("read_file", serde_json::json!({ "path": bad })).is_err(),
            "{bad}"
        );
    }
    assert_eq!(canonical_file_path("//").unwrap(), "/");
    // Scope entries must already be canonical (a leading `//` would match nothing).
    assert!(path_problem("//data/").is_some());
    assert!(path_problem("/data/").is_none());
    let s = Scopes::parse(SCOPES).unwrap();
    // A `dir/` prefix admits what is inside, not the directory, however it is spelled.
    for p in ["/data/reports/", "//data/reports", "/data/reports"] {
        assert!(decide(&s, call("read_file", serde_json::json!({ "path": p }))).is_err());
    }
    assert!(decide(
        &s,
        call(
            "read_file",
            serde_json::json!({"path": "//data/reports//a"})
        )
    )
    .is_ok());
}

#[test]
fn every_spelling_of_a_url_is_seen_in_its_canonical_form() {
    let http = |url: &str| {
        target_of(
            "http_request",
            serde_json::json!({"method": "get", "url": url}),
        )
    };
    let want = Target::Http {
        method: "GET".into(),
        host: "api.example.com".into(),
        port: 443,
        path: "/v1/admin".into(),
    };
    for spelled in [
        "https://api.example.com/v1/admin",
        "https://API.Example.COM/v1/admin",
        "https://api.example.com./v1/admin",
        "https://api.example.com:443/v1/admin",
        "https://api.example.com/v1/%61dmin",
        "https://api.example.com/v1/%2e/admin",
        "https://api.example.com/v1/x/%2E%2E/admin",
        "https://api.example.com/v1/admin#frag",
    ] {
        let p = http(spelled).unwrap_or_else(|e| panic!("{spelled}: {e}"));
        assert_eq!(p.target, want, "{spelled}");
        assert_eq!(
            p.canonical_args, r#"{"method":"GET","url":"https://api.example.com/v1/admin"}"#,
            "{spelled}"
        );
    }
    let p = http("https://api.example.com/a%7cb%c3%a9").unwrap();
    assert_eq!(
        p.target,
        Target::Http {
            method: "GET".into(),
            host: "api.example.com".into(),
            port: 443,
            path: "/a%7Cb%C3%A9".into()
        }
    );
    for bad in [
        "https://api.example.com//v1/admin",
        "https://api.example.com/v1//admin",
        "https://api.example.com/v1%2fadmin",
        "https://api.example.com/v1%5cadmin",
        "https://api.example.com/v1/%00",
        "https://api.example.com../x",
        "https://user:pw@api.example.com/x",
    ] {
        assert!(http(bad).is_err(), "{bad} should be refused");
    }
    assert!(target_of("mcp", serde_json::json!({"server": "git hub", "tool": "x"})).is_err());
}

mod spellings {
    use super::*;
    use proptest::prelude::*;

    /// Respells a canonical file path: extra slashes anywhere between components, at
    /// the start, and a trailing slash.
    fn respell_path(canon: &str, extra: &[u8]) -> String {
        let mut out = String::new();
        for (i, c) in canon.split('/').skip(1).enumerate() {
            let n = 1 + usize::from(extra.get(i).copied().unwrap_or(0) % 3);
            out.push_str(&"/".repeat(n));
            out.push_str(c);
        }
        if extra.last().is_some_and(|x| x % 2 == 1) {
            out.push('/');
        }
        out
    }

    /// Respells a URL path: unreserved characters percent-encoded (upper or lower hex).
    fn respell_url_path(canon: &str, enc: &[bool]) -> String {
        canon
            .chars()
            .enumerate()
            .map(|(i, c)| match enc.get(i % enc.len().max(1)) {
                Some(true) if c.is_ascii_alphanumeric() || "-._~".contains(c) => {
                    if i % 2 == 0 {
                        format!("%{:02X}", c as u8)
                    } else {
                        format!("%{:02x}", c as u8)
                    }
                }
                _ => c.to_string(),
            })
            .collect()
    }

    fn segment() -> impl Strategy<Value = String> {
        "[a-z0-9_~-]{1,8}".prop_filter("not a dot segment", |s| s != "." && s != "..")
    }

    const POLICY_SCOPES: &str = r#"
tools = ["http_request", "read_file"]
read_paths = ["/data/"]
[[http]]
host = "*.example.com"
methods = ["GET", "POST"]
path_prefix = "/v1"
"#;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn file_paths(
            segs in prop::collection::vec(segment(), 1..6),
            extra in prop::collection::vec(any::<u8>(), 0..8),
            secret in any::<bool>(),
        ) {
            let mut canon = String::from(if secret { "/data/secrets" } else { "/data" });
            for s in &segs { canon.push('/'); canon.push_str(s); }
            let spelled = respell_path(&canon, &extra);
            let a = target_of("read_file", serde_json::json!({ "path": canon })).unwrap();
            let b = target_of("read_file", serde_json::json!({ "path": spelled }))
                .unwrap();
            // Every context field is its own canonical form.
            let Target::File { path } = &b.target else { panic!("not a file target") };
            prop_assert_eq!(&canonical_file_path(path).unwrap(), path);
            prop_assert!(path_problem(path).is_none());
            // Both spellings get one target, one hash input and one decision.
            prop_assert_eq!(&a, &b);
            let s = Scopes::parse(POLICY_SCOPES).unwrap();
            prop_assert_eq!(s.permits(&a), s.permits(&b));
            // And a `like "/data/secrets*"` rule sees the secret ones.
            prop_assert_eq!(path.starts_with("/data/secrets/"), secret);
        }

        #[test]
        fn urls(
            sub in "[a-z]{1,6}",
            segs in prop::collection::vec(segment(), 0..5),
            enc in prop::collection::vec(any::<bool>(), 1..8),
            upper_host in any::<bool>(),
            dot in any::<bool>(),
            port in any::<bool>(),
            method in prop::sample::select(vec!["get", "GET", "Post", "delete"]),
        ) {
            let mut canon_path = String::from("/v1");
            for s in &segs { canon_path.push('/'); canon_path.push_str(s); }
            let host = format!("{sub}.example.com");
            let canon = format!("https://{host}{canon_path}");
            let mut h = if upper_host { host.to_uppercase() } else { host.clone() };
            if dot { h.push('.'); }
            if port { h.push_str(":443"); }
            let spelled = format!("https://{h}{}", respell_url_path(&canon_path, &enc));
            let a = target_of("http_request", serde_json::json!({"method": method, "url": canon})).unwrap();
            let b = target_of("http_request", serde_json::json!({"method": method, "url": spelled}))
                .unwrap();
            let Target::Http { method: m, host: hb, path: pb, .. } = &b.target else {
                panic!("not an http target")
            };
            prop_assert_eq!(&canonical_url_path(pb).unwrap(), pb);
            prop_assert_eq!(&canonical_host(hb).unwrap(), hb);
            prop_assert_eq!(hb, &host);
            prop_assert_eq!(m, &m.to_ascii_uppercase());
            prop_assert_eq!(&a, &b);
            let s = Scopes::parse(POLICY_SCOPES).unwrap();
            prop_assert_eq!(s.permits(&a), s.permits(&b));
        }
    }
}

#[test]
fn ports_connect_and_private_addresses_are_ruled_per_http_scope() {
    let s = Scopes::parse(
        r#"tools = ["http_request"]

[[http]]
host = "api.example.com"
methods = ["GET", "CONNECT"]

[[http]]
host = "docs.example.com"
methods = ["GET", "CONNECT"]
path_prefix = "/v1"

[[http]]
host = "10.0.0.7"
methods = ["GET"]
ports = [8080]
private = true
"#,
    )
    .expect("valid");
    let req = |m: &str, url: &str| {
        decide(
            &s,
            call("http_request", serde_json::json!({"method": m, "url": url})),
        )
    };
    // Ports: the scheme's by default, others only when listed.
    assert!(req("GET", "https://api.example.com/x").is_ok());
    assert!(req("GET", "http://api.example.com/x").is_ok());
    let e = req("GET", "https://api.example.com:8443/x").unwrap_err();
    assert!(e.contains(":8443"), "{e}");
    assert!(req("GET", "http://10.0.0.7:8080/x").is_ok());
    assert!(req("GET", "http://10.0.0.7/x").is_err());
    // CONNECT: only where named, and never through a rule with a path prefix.
    assert!(req("CONNECT", "https://api.example.com:443").is_ok());
    let e = req("CONNECT", "https://docs.example.com:443").unwrap_err();
    assert!(e.contains("path_prefix"), "{e}");
    let e = req("CONNECT", "https://10.0.0.7:8080").unwrap_err();
    assert!(e.contains("CONNECT"), "{e}");
    // Private addresses: only the rule that says so.
    assert!(s.allows_private("10.0.0.7", 8080, "GET", "/x"));
    assert!(!s.allows_private("10.0.0.7", 80, "GET", "/x"));
    // Only the rule that admits the request counts: not another method's.
    assert!(!s.allows_private("10.0.0.7", 8080, "POST", "/x"));
    assert!(!s.allows_private("api.example.com", 443, "GET", "/x"));
    // A rule without ports is refused.
    let e =
        Scopes::parse("tools = []\n[[http]]\nhost = \"a.example.com\"\nports = []\n").unwrap_err();
    assert!(e.message.contains("ports"), "{e}");
}
