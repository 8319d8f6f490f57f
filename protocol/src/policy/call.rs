//! A tool call's arguments checked and reduced to what scopes and policies judge: its
//! target (an HTTP request, a file read, an MCP call, another tool), on the canonical
//! spelling, with the arguments re-encoded canonically.

use super::canonical::{canonical_file_path, canonical_host, canonical_json, canonical_url_path};
use super::scopes::valid_name;
use super::{
    ToolCall, HTTP_METHODS, MAX_NAME, MAX_TOOL_ARGS_BYTES, TOOL_HTTP, TOOL_MCP, TOOL_MODEL,
    TOOL_READ_FILE,
};

/// A tool call whose arguments were checked: what scopes and policies look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    pub tool: String,
    pub target: Target,
    /// The arguments, re-encoded canonically (sorted keys, no spaces).
    pub canonical_args: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Http {
        method: String,
        host: String,
        /// The URL's port, or its scheme's (80, 443).
        port: u16,
        path: String,
    },
    File {
        path: String,
    },
    Mcp {
        server: String,
        tool: String,
    },
    /// `model.call`: one of the tenant's providers, the model the request names ("" when
    /// it names none) and the path below the provider's base URL.
    Model {
        provider: String,
        model: String,
        path: String,
    },
    Other,
}

fn arg<'a>(
    args: &'a serde_json::Map<String, serde_json::Value>,
    tool: &str,
    name: &str,
) -> Result<&'a str, String> {
    match args.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{tool}: argument `{name}` must be a string")),
        None => Err(format!("{tool}: argument `{name}` is missing")),
    }
}

/// Checks a call's shape: the tool name, the arguments' size and JSON, and for the tools
/// scopes constrain, the arguments they need (a URL with a host, a normalised absolute
/// path, a server name). Errors say what is wrong.
pub fn parse_call(call: &ToolCall) -> Result<ParsedCall, String> {
    if !valid_name(&call.tool) {
        return Err(format!(
            "`{}` is not a tool name",
            call.tool.chars().take(80).collect::<String>()
        ));
    }
    if call.args_json.len() > MAX_TOOL_ARGS_BYTES {
        return Err(format!(
            "arguments too large: {} bytes (at most {MAX_TOOL_ARGS_BYTES})",
            call.args_json.len()
        ));
    }
    let mut value: serde_json::Value = serde_json::from_str(&call.args_json)
        .map_err(|e| format!("malformed arguments (not JSON): {e}"))?;
    let serde_json::Value::Object(args) = &mut value else {
        return Err("malformed arguments: must be a JSON object".into());
    };
    // The target in its one canonical spelling; the canonical arguments are rewritten to it,
    // so scopes, policies, the request hash and an approval all see the same thing whatever
    // spelling the agent used.
    let tool = call.tool.as_str();
    let target = match tool {
        TOOL_HTTP => {
            let method = arg(args, tool, "method")?.to_ascii_uppercase();
            if !HTTP_METHODS.contains(&method.as_str()) {
                return Err(format!("{tool}: `{method}` is not an HTTP method"));
            }
            let raw = arg(args, tool, "url")?;
            let mut url = url::Url::parse(raw).map_err(|e| format!("{tool}: bad url: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!("{tool}: url scheme must be http or https"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!("{tool}: url must not carry credentials"));
            }
            let host = url
                .host_str()
                .ok_or_else(|| format!("{tool}: url has no host"))?;
            let host = canonical_host(host).map_err(|why| format!("{tool}: url host {why}"))?;
            let path =
                canonical_url_path(url.path()).map_err(|why| format!("{tool}: url path {why}"))?;
            if url.host_str() != Some(host.as_str()) {
                url.set_host(Some(&host))
                    .map_err(|e| format!("{tool}: url host: {e}"))?;
            }
            url.set_path(&path);
            url.set_fragment(None);
            let port = url.port_or_known_default().unwrap_or(443);
            args.insert("method".into(), method.clone().into());
            args.insert("url".into(), url.as_str().into());
            Target::Http {
                method,
                host,
                port,
                path,
            }
        }
        TOOL_READ_FILE => {
            let path = canonical_file_path(arg(args, tool, "path")?)
                .map_err(|why| format!("{tool}: path {why}"))?;
            args.insert("path".into(), path.clone().into());
            Target::File { path }
        }
        TOOL_MCP => {
            let server = arg(args, tool, "server")?.to_string();
            let name = arg(args, tool, "tool")?.to_string();
            for (what, v) in [("server", &server), ("tool", &name)] {
                if !valid_name(v) {
                    return Err(format!(
                        "{tool}: `{what}` must be a name (letters, digits, `_-.`, at most {MAX_NAME})"
                    ));
                }
            }
            Target::Mcp { server, tool: name }
        }
        TOOL_MODEL => {
            let provider = arg(args, tool, "provider")?.to_string();
            crate::upstream::check_upstream_name(&provider)
                .map_err(|why| format!("{tool}: provider {why}"))?;
            let model = arg(args, tool, "model")?.to_string();
            if model.len() > 256 || model.chars().any(char::is_control) {
                return Err(format!(
                    "{tool}: `model` must be at most 256 printable characters"
                ));
            }
            let path = canonical_url_path(arg(args, tool, "path")?)
                .map_err(|why| format!("{tool}: path {why}"))?;
            args.insert("path".into(), path.clone().into());
            Target::Model {
                provider,
                model,
                path,
            }
        }
        _ => Target::Other,
    };
    let mut canonical_args = String::with_capacity(call.args_json.len());
    canonical_json(&value, &mut canonical_args);
    Ok(ParsedCall {
        tool: call.tool.clone(),
        target,
        canonical_args,
    })
}
