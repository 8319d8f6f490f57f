#!/bin/sh
# Sends a signed webhook to an agenfleet subscription (`agenfleet triggers add AGENT --webhook`).
#
#   AGENFLEET_HOOK_URL=http://127.0.0.1:8088/v1/hooks/trg_… \
#   AGENFLEET_HOOK_TOKEN=agfw_… AGENFLEET_HOOK_SECRET=whsec_… \
#   ./send-webhook.sh '{"ticket": 42}'        # or: ./send-webhook.sh @body.json
#
# The signature is HMAC-SHA256 under the secret of "<timestamp>.<raw body>", in hex, sent
# as `X-AgenFleet-Signature: sha256=<hex>` beside `X-AgenFleet-Timestamp: <unix seconds>`
# and `Authorization: Bearer <token>`. The daemon accepts a timestamp within 300 s of its
# clock and each signature once. Answers 202 with {"run": ID, "state": "queued"}; a refusal
# is its status alone (401, 403, 413, 429), the reason is in the daemon's audit log.
# Needs: openssl, curl.
set -eu
: "${AGENFLEET_HOOK_URL:?set AGENFLEET_HOOK_URL}"
: "${AGENFLEET_HOOK_TOKEN:?set AGENFLEET_HOOK_TOKEN}"
: "${AGENFLEET_HOOK_SECRET:?set AGENFLEET_HOOK_SECRET}"
body_file=$(mktemp)
trap 'rm -f "$body_file"' EXIT
case "${1:-}" in
  '') printf '{}' > "$body_file" ;;
  @*) cat "${1#@}" > "$body_file" ;;
  *) printf '%s' "$1" > "$body_file" ;;
esac
ts=$(date +%s)
# The MAC covers the exact bytes sent: the timestamp, a dot, then the body file as is.
sig=$( { printf '%s.' "$ts"; cat "$body_file"; } \
  | openssl dgst -sha256 -hmac "$AGENFLEET_HOOK_SECRET" -r | cut -d' ' -f1)
exec curl -sS --fail-with-body -X POST "$AGENFLEET_HOOK_URL" \
  -H "Authorization: Bearer $AGENFLEET_HOOK_TOKEN" \
  -H "X-AgenFleet-Timestamp: $ts" \
  -H "X-AgenFleet-Signature: sha256=$sig" \
  -H 'Content-Type: application/json' \
  --data-binary "@$body_file"
