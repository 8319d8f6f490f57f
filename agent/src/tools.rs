//! Tool calls from inside the agent's container, each decided by the gateway first:
//! the scripted workload's calls (made only when allowed), `agenfleet-agent call` (JSON
//! lines on stdin → one decision per line on stdout, for scripts and tests run with
//! `docker exec`), and `agenfleet-agent bench` (decisions per second and latencies).

use agenfleet_protocol::gateway::{GatewayClient, GATEWAY_DIR_IN_CONTAINER, GATEWAY_SOCKET_NAME};
use agenfleet_protocol::policy::{
    AgentReport, ReportKind, ReportOutcome, ToolCall, TOOL_HTTP, TOOL_READ_FILE,
};
use agenfleet_protocol::transport::{connect_gateway, context_with_timeout};
use agenfleet_protocol::Workload;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// An escalated call may wait this long for a person (the policy's timeout is shorter).
const AUTHORIZE_DEADLINE: Duration = Duration::from_secs(3700);

fn default_socket() -> PathBuf {
    Path::new(GATEWAY_DIR_IN_CONTAINER).join(GATEWAY_SOCKET_NAME)
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}

async fn connect(socket: &Path) -> Result<GatewayClient, String> {
    connect_gateway(socket, 1024 * 1024)
        .await
        .map_err(|e| format!("cannot reach the gateway at {}: {e}", socket.display()))
}

/// Asks the gateway; answers the decision as a JSON object (or an error object).
async fn decide(gw: &GatewayClient, call: ToolCall) -> serde_json::Value {
    match gw
        .authorize(context_with_timeout(AUTHORIZE_DEADLINE), call)
        .await
    {
        Ok(Ok(d)) => serde_json::to_value(&d).unwrap_or_default(),
        Ok(Err(e)) => {
            serde_json::json!({"allowed": false, "error": e.message, "code": e.code.as_str()})
        }
        Err(e) => serde_json::json!({"allowed": false, "error": format!("gateway: {e}")}),
    }
}

/// Sends one report; answers its audit sequence number.
async fn report(gw: &GatewayClient, r: AgentReport) -> Result<u64, String> {
    match gw
        .report(context_with_timeout(Duration::from_secs(10)), r)
        .await
    {
        Ok(Ok(seq)) => Ok(seq),
        Ok(Err(e)) => Err(e.message),
        Err(e) => Err(format!("gateway: {e}")),
    }
}

/// `{gateway}` in an http_request's URL stands for the host (the agent's bridge gateway).
fn expand_call(call: ToolCall) -> ToolCall {
    if call.tool != TOOL_HTTP || !call.args_json.contains("{gateway}") {
        return call;
    }
    let mut v: serde_json::Value = serde_json::from_str(&call.args_json).unwrap_or_default();
    if let Some(u) = v
        .get("url")
        .and_then(|u| u.as_str())
        .map(crate::http::expand)
    {
        v["url"] = u.into();
    }
    ToolCall {
        tool: call.tool,
        args_json: v.to_string(),
    }
}

/// An allowed http_request to an http:// URL is made for real; its outcome is reported.
async fn perform_http(gw: Option<&GatewayClient>, call: &ToolCall) -> Option<String> {
    if call.tool != TOOL_HTTP {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(&call.args_json).ok()?;
    let url = v["url"].as_str()?.to_string();
    if !url.starts_with("http://") {
        return None;
    }
    let method = v["method"].as_str().unwrap_or("GET").to_ascii_uppercase();
    let body = v.get("body").map(|b| b.to_string()).unwrap_or_default();
    let o = tokio::task::spawn_blocking(move || crate::http::call(&method, &url, &body))
        .await
        .ok()?;
    let text = format!(
        "{} {}{}",
        o.endpoint,
        o.outcome,
        o.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
    );
    if let Some(gw) = gw {
        let r = AgentReport {
            kind: ReportKind::ToolCall,
            provider: o.endpoint,
            outcome: o.outcome,
            status: o.status,
            latency_ms: o.latency_ms,
            fallback_used: false,
            detail: o.detail,
        };
        let _ = report(gw, r).await;
    }
    Some(text)
}

/// The workload's model calls, round after round: a real POST to the provider (and to the
/// fallback when the provider fails), each outcome reported, one `model-call` line each.
pub fn run_models(socket: PathBuf, w: Workload) {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenfleet-agent: model calls: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let mut gw = None;
        loop {
            for step in &w.model_calls {
                if gw.is_none() {
                    gw = connect(&socket).await.ok();
                }
                let call = |url: String| {
                    tokio::task::spawn_blocking(move || {
                        crate::http::call("POST", &crate::http::expand(&url), r#"{"prompt":"triage the next ticket"}"#)
                    })
                };
                let Ok(primary) = call(step.url.clone()).await else { continue };
                let mut fallback = None;
                if primary.outcome != ReportOutcome::Ok {
                    if let Some(f) = &step.fallback {
                        if let Ok(o) = call(f.url.clone()).await {
                            fallback = Some((f.provider.clone(), o));
                        }
                    }
                }
                let used = fallback.as_ref().is_some_and(|(_, o)| o.outcome == ReportOutcome::Ok);
                let mut reports = vec![(step.provider.clone(), primary, used)];
                if let Some((p, o)) = fallback {
                    reports.push((p, o, false));
                }
                for (provider, o, fallback_used) in reports {
                    println!(
                        "model-call {}",
                        serde_json::json!({"provider": provider, "outcome": o.outcome.to_string(), "status": o.status, "fallback_used": fallback_used})
                    );
                    let r = AgentReport {
                        kind: ReportKind::ModelCall,
                        provider,
                        outcome: o.outcome,
                        status: o.status,
                        latency_ms: o.latency_ms,
                        fallback_used,
                        detail: o.detail,
                    };
                    if let Some(g) = &gw {
                        if report(g, r).await.is_err() {
                            gw = None;
                        }
                    }
                }
                let _ = std::io::stdout().flush();
                tokio::time::sleep(Duration::from_millis(w.model_call_interval_ms)).await;
            }
        }
    });
}

/// `agenfleet-agent report`: one `AgentReport` as JSON per stdin line, sent to the
/// gateway; answers one line per report (its audit sequence number, or the error).
pub fn report_main() -> i32 {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let unreachable = |e: String| println!("{}", serde_json::json!({"error": e}));
    with_gateway("report", &socket_arg(&args), unreachable, |gw| async move {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let out = match serde_json::from_str::<AgentReport>(&line) {
                Ok(r) => match report(&gw, r).await {
                    Ok(seq) => serde_json::json!({"seq": seq}),
                    Err(e) => serde_json::json!({"error": e}),
                },
                Err(e) => serde_json::json!({"error": format!("bad report line: {e}")}),
            };
            println!("{out}");
            let _ = std::io::stdout().flush();
        }
        0
    })
}

/// Makes an allowed call (what this shim can do itself: read a file); says what happened.
fn perform(call: &ToolCall) -> String {
    if call.tool == TOOL_READ_FILE {
        let path = serde_json::from_str::<serde_json::Value>(&call.args_json)
            .ok()
            .and_then(|v| v["path"].as_str().map(str::to_string))
            .unwrap_or_default();
        return match std::fs::read(&path) {
            Ok(b) => format!("read {} bytes", b.len()),
            Err(e) => format!("read failed: {e}"),
        };
    }
    "done".into()
}

/// The workload's tool calls, in order, round after round; each asked first, made only
/// when allowed, and logged as one `tool-call {json}` line.
pub fn run_workload(socket: PathBuf, w: Workload) {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenfleet-agent: tool calls: {e}");
            return;
        }
    };
    rt.block_on(async move {
        let mut gw = None;
        let mut n = 0u64;
        let mut round = 0u32;
        loop {
            round += 1;
            for step in &w.tool_calls {
                n += 1;
                let call = expand_call(ToolCall {
                    tool: step.tool.clone(),
                    args_json: step.args.clone(),
                });
                if gw.is_none() {
                    gw = connect(&socket).await.ok();
                }
                let mut d = match &gw {
                    Some(g) => decide(g, call.clone()).await,
                    None => serde_json::json!({"allowed": false, "error": "no gateway"}),
                };
                if d.get("error").is_some() && d.get("code").is_none() {
                    gw = None; // reconnect next time
                }
                let allowed = d["allowed"].as_bool() == Some(true);
                d["n"] = n.into();
                d["tool"] = call.tool.clone().into();
                d["outcome"] = if !allowed {
                    "not called".into()
                } else if let Some(done) = perform_http(gw.as_ref(), &call).await {
                    done.into()
                } else {
                    perform(&call).into()
                };
                println!("tool-call {d}");
                let _ = std::io::stdout().flush();
                tokio::time::sleep(Duration::from_millis(w.tool_call_interval_ms)).await;
            }
            if w.tool_call_rounds != 0 && round >= w.tool_call_rounds {
                break;
            }
        }
    });
}

/// Runs `f` with a gateway connection on a runtime of its own: the common part of `call`,
/// `report` and `bench`. Exit 70 without a runtime; 69 (after `unreachable`) without a
/// gateway; else what `f` answers.
fn with_gateway<F, Fut>(what: &str, socket: &Path, unreachable: impl FnOnce(String), f: F) -> i32
where
    F: FnOnce(GatewayClient) -> Fut,
    Fut: std::future::Future<Output = i32>,
{
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("agenfleet-agent {what}: {e}");
            return 70;
        }
    };
    rt.block_on(async move {
        match connect(socket).await {
            Ok(gw) => f(gw).await,
            Err(e) => {
                unreachable(e);
                69
            }
        }
    })
}

fn socket_arg(args: &[String]) -> PathBuf {
    args.windows(2)
        .find(|w| w[0] == "--gateway")
        .map(|w| PathBuf::from(&w[1]))
        .unwrap_or_else(default_socket)
}

fn arg_value<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

/// `agenfleet-agent call`: one JSON object per stdin line — `{"tool": .., "args": {..}}`
/// or `{"tool": .., "args_json": "raw text"}` — answered by one decision per line.
pub fn call_main() -> i32 {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let unreachable = |e: String| println!("{}", serde_json::json!({"allowed": false, "error": e}));
    with_gateway("call", &socket_arg(&args), unreachable, |gw| async move {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = match serde_json::from_str(&line) {
                Ok(v) => v,
                Err(e) => {
                    println!(
                        "{}",
                        serde_json::json!({"allowed": false, "error": format!("bad input line: {e}")})
                    );
                    continue;
                }
            };
            let call = ToolCall {
                tool: v["tool"].as_str().unwrap_or_default().to_string(),
                args_json: match v.get("args_json").and_then(|a| a.as_str()) {
                    Some(raw) => raw.to_string(),
                    None => v.get("args").cloned().unwrap_or_default().to_string(),
                },
            };
            let d = decide(&gw, call).await;
            println!("{d}");
            let _ = std::io::stdout().flush();
        }
        0
    })
}

/// `agenfleet-agent bench --calls N --start-at UNIX_MS --tool T --args JSON`: waits until
/// the start time (so that many agents start together), makes N sequential decisions and
/// prints one JSON summary: count, allowed, elapsed, latency percentiles in µs.
pub fn bench_main() -> i32 {
    let args: Vec<String> = std::env::args().skip(2).collect();
    let socket = socket_arg(&args);
    let calls: usize = arg_value(&args, "--calls", 1000);
    let start_at: u64 = arg_value(&args, "--start-at", 0);
    let tool: String = arg_value(&args, "--tool", "search".to_string());
    let call_args: String = arg_value(&args, "--args", "{}".to_string());
    let unreachable = |e: String| eprintln!("agenfleet-agent bench: {e}");
    with_gateway("bench", &socket, unreachable, |gw| async move {
        let now = agenfleet_protocol::now_ms();
        if start_at > now {
            tokio::time::sleep(Duration::from_millis(start_at - now)).await;
        }
        let began_ms = agenfleet_protocol::now_ms();
        let t0 = Instant::now();
        let mut lat = Vec::with_capacity(calls);
        let mut allowed = 0usize;
        let mut errors = 0usize;
        for _ in 0..calls {
            let t = Instant::now();
            let call = ToolCall {
                tool: tool.clone(),
                args_json: call_args.clone(),
            };
            match gw
                .authorize(context_with_timeout(Duration::from_secs(30)), call)
                .await
            {
                Ok(Ok(d)) => allowed += usize::from(d.allowed),
                _ => errors += 1,
            }
            lat.push(t.elapsed().as_micros() as u64);
        }
        let elapsed_us = t0.elapsed().as_micros() as u64;
        lat.sort_unstable();
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "{}",
            serde_json::json!({
                "calls": calls, "allowed": allowed, "errors": errors,
                "began_ms": began_ms, "elapsed_us": elapsed_us,
                "p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99), "max_us": pct(1.0),
                "latencies_us": lat,
            })
        );
        0
    })
}
