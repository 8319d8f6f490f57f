#!/usr/bin/env python3
"""An AgenFleet agent in Python with nothing but the standard library.

It uses its local API ($AGENFLEET_API, HTTP + JSON, assets/api/openapi.yaml) to read a
credential and to ask before each tool call, reads credentials the daemon delivers as a
file or in its environment (`as = "file"` / `as = "env"` in the spec), and reaches the outside only through the
egress proxy its environment names (HTTP_PROXY/HTTPS_PROXY): every request it sends out is
decided and recorded by the daemon, and a denied one comes back as 403 with the reason.

Settings (environment, from the spec's `env`):
  CREDENTIAL       name of an `api` credential to read (default: none)
  CREDENTIAL_FILE  name of a `file` credential (read from /run/agenfleet/secrets/NAME)
  CREDENTIAL_ENV   the variable that holds an `env` credential
  FETCH_URLS   URLs to GET through the proxy, separated by spaces
  READ_PATHS   file paths to ask about (read_file), separated by spaces
  ASK_MODELS   non-empty: ask each bound model provider one question through the base URL
               the daemon set for its SDK (OPENAI_BASE_URL, ANTHROPIC_BASE_URL) with the
               placeholder key it set beside it — the real key is added by the gateway
  STREAM       non-empty: stream the OpenAI-shaped answer and print when each event came

Model providers (`providers = [...]` in the spec) are called exactly as their SDKs would
call them; the daemon holds their keys, decides and records each call, and falls back to
another provider on a rate limit without this program knowing.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request

API = os.environ.get("AGENFLEET_API", "http://127.0.0.1:4180")
# The local API is reached directly; everything else goes through the proxy from the env.
direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
proxied = urllib.request.build_opener()


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(API + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with direct.open(req, timeout=120) as r:
        return json.load(r)


def say(*words):
    print("agent:", *words, flush=True)


def main():
    health = api("GET", "/v1/health")
    say("local API up for", health["tenant"] + "/" + health["agent"])

    name = os.environ.get("CREDENTIAL")
    if name:
        cred = api("GET", "/v1/credentials/" + name)
        secret = cred.get("value", "")
        # The value stays in memory; only its name, version and size are printed.
        say(f"credential {name} version {cred['version']} in memory ({len(secret)} bytes)")

    name = os.environ.get("CREDENTIAL_FILE")
    if name:
        with open("/run/agenfleet/secrets/" + name, "rb") as f:
            say(f"credential {name} from its file ({len(f.read())} bytes)")

    var = os.environ.get("CREDENTIAL_ENV")
    if var:
        say(f"credential in ${var} ({len(os.environ.get(var, ''))} bytes)")

    for path in os.environ.get("READ_PATHS", "").split():
        d = api("POST", "/v1/authorize", {"tool": "read_file", "args": {"path": path}})
        say(f"read_file {path}: {d['decision']} (audit record {d['audit_seq']})")

    for url in os.environ.get("FETCH_URLS", "").split():
        start = time.monotonic()
        try:
            with proxied.open(url, timeout=30) as r:
                body = r.read().decode(errors="replace")
                say(f"GET {url}: {r.status} {body.strip()}")
                outcome = "ok"
        except urllib.error.HTTPError as e:
            decision = e.headers.get("X-AgenFleet-Decision", "")
            reason = json.loads(e.read() or b"{}").get("reason", "")
            say(f"GET {url}: {e.code} {decision}: {reason}")
            outcome = "ok" if decision == "deny" else "server_error"
        except OSError as e:
            say(f"GET {url}: failed: {e}")
            outcome = "unreachable"
        if outcome != "ok":
            api("POST", "/v1/report", {
                "kind": "tool_call", "provider": url.split("/")[2], "outcome": outcome,
                "latency_ms": int((time.monotonic() - start) * 1000), "detail": url,
            })
    if os.environ.get("ASK_MODELS"):
        ask_models(bool(os.environ.get("STREAM")))
    say("done")
    sys.stdout.flush()
    while True:
        time.sleep(3600)


def ask_models(stream):
    """One question to each provider its SDK variables point at."""
    calls = []
    if os.environ.get("OPENAI_BASE_URL"):
        calls.append(("openai", os.environ["OPENAI_BASE_URL"] + "/chat/completions",
                      {"Authorization": "Bearer " + os.environ.get("OPENAI_API_KEY", "")},
                      {"model": "gpt-test", "stream": stream,
                       "messages": [{"role": "user", "content": "hello"}]}))
    if os.environ.get("ANTHROPIC_BASE_URL") and not stream:
        calls.append(("anthropic", os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages",
                      {"x-api-key": os.environ.get("ANTHROPIC_API_KEY", ""),
                       "anthropic-version": "2023-06-01"},
                      {"model": "claude-test", "max_tokens": 64,
                       "messages": [{"role": "user", "content": "hello"}]}))
    for vendor, url, headers, body in calls:
        headers = dict(headers, **{"Content-Type": "application/json"})
        req = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
        try:
            with direct.open(req, timeout=120) as r:
                if stream:
                    for line in r:
                        if line.startswith(b"data:"):
                            say(f"event at {time.monotonic_ns()}")
                    say(f"model {vendor}: {r.status} streamed")
                else:
                    answer = json.load(r)
                    say(f"model {vendor}: {r.status} usage {json.dumps(answer.get('usage'))}")
        except urllib.error.HTTPError as e:
            say(f"model {vendor}: {e.code} {e.read().decode(errors='replace')}")


if __name__ == "__main__":
    main()
