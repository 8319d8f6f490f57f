#!/bin/sh
# An AgenFleet agent in POSIX shell that uses nothing but its local API ($AGENFLEET_API,
# HTTP + JSON, assets/api/openapi.yaml) and wget (busybox's will do): it checks the API is
# up, reads an `api` credential (the value stays in a variable and is never printed), asks
# before each file it wants to read and acts only on "allow", reporting how that went.
#
# Settings (environment, from the spec's `env`):
#   CREDENTIAL   name of a credential to read (default: none)
#   AGENT_FILES  paths to read, separated by spaces (default: /data/report.txt)
set -u
api="${AGENFLEET_API:-http://127.0.0.1:4180}"

# The local API is reached directly, never through the egress proxy (busybox's wget does
# not read NO_PROXY).
get() { http_proxy='' wget -q -O - "$api$1"; }
post() { http_proxy='' wget -q -O - --header 'Content-Type: application/json' --post-data "$2" "$api$1"; }
# The value of a string field of a flat JSON object (enough for these answers).
str() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
num() { sed -n "s/.*\"$1\":\([0-9][0-9]*\).*/\1/p"; }

if ! health=$(get /v1/health); then
  echo "agent: no local API at $api" >&2
  exit 1
fi
echo "agent: local API up for $(printf '%s' "$health" | str agent)"

if [ -n "${CREDENTIAL:-}" ]; then
  if ! answer=$(get "/v1/credentials/$CREDENTIAL"); then
    echo "agent: credential $CREDENTIAL was not delivered" >&2
    exit 1
  fi
  value=$(printf '%s' "$answer" | str value)
  echo "agent: credential $CREDENTIAL version $(printf '%s' "$answer" | num version) in memory (${#value} bytes)"
fi

for path in ${AGENT_FILES:-/data/report.txt}; do
  if ! answer=$(post /v1/authorize "{\"tool\":\"read_file\",\"args\":{\"path\":\"$path\"}}"); then
    echo "agent: could not ask about $path" >&2
    continue
  fi
  decision=$(printf '%s' "$answer" | str decision)
  seq=$(printf '%s' "$answer" | num audit_seq)
  if [ "$decision" = allow ]; then
    echo "agent: read_file $path: allowed (audit record $seq)"
    # (Here the agent would read the file.) Then it reports the outcome.
    post /v1/report "{\"kind\":\"tool_call\",\"provider\":\"files\",\"outcome\":\"ok\",\"detail\":\"$path\"}" >/dev/null
  else
    echo "agent: read_file $path: denied (audit record $seq): $(printf '%s' "$answer" | str reason)"
  fi
done
echo "agent: done"
exec sleep 100000
