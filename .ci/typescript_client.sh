#!/usr/bin/env bash
# The typed TypeScript client (clients/typescript) against a served app: its committed types must
# be what openapi-typescript makes of the running app's /openapi.json today, the example must pass
# `tsc --strict`, and running it must behave as the API promises (it exits non-zero otherwise).
# Needs Node.js 20+ and npm, and `python` able to run the app (CI's virtualenv).
# Run from anywhere: bash .ci/typescript_client.sh
# After an API change: bash .ci/typescript_client.sh --update writes the regenerated types into
# clients/typescript/src/schema.d.ts (to commit) instead of failing on the difference.
set -euo pipefail

UPDATE=false
case "${1:-}" in
    "") ;;
    --update) UPDATE=true ;;
    *) echo "usage: bash .ci/typescript_client.sh [--update]" >&2; exit 2 ;;
esac

cd "$(dirname "$0")/.."
ROOT=$(pwd)
CLIENT="$ROOT/clients/typescript"

for tool in node npm python; do
    command -v "$tool" >/dev/null || { echo "typescript client: $tool is not installed" >&2; exit 1; }
done

WORK=$(mktemp -d)
SERVER_LOG="$WORK/server.log"
PORT=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
EMAIL="typescript-client@example.com"
PASSWORD=$(python -c 'import secrets; print(secrets.token_urlsafe(24))')
SERVER_PID=""

stop_server() {
    if [[ -n "$SERVER_PID" ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
fail() {
    echo "typescript client failed: $*" >&2
    exit 1
}
fail_with_log() {
    echo "--- server output (last 40 lines)" >&2
    tail -n 40 "$SERVER_LOG" >&2 || true
    fail "$@"
}
trap 'stop_server; rm -rf "$WORK"' EXIT

# A fresh SQLite file in a scratch folder, and every setting at its default (.env.example names
# them all): the schema shows some of them (page and list limits), so the committed types are
# made with the defaults.
unset_settings=()
while read -r name; do
    unset_settings+=(-u "$name")
done < <(sed -nE 's/^#? ?([A-Z][A-Z0-9_]*)=.*/\1/p' "$ROOT/.env.example")
(
    cd "$WORK"
    exec env "${unset_settings[@]}" ADMIN_EMAIL="$EMAIL" ADMIN_PASSWORD="$PASSWORD" \
        PYTHONPATH="$ROOT" PYTHONUNBUFFERED=1 python -m app --port "$PORT"
) >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

echo "npm ci (while the app starts on $URL)"
(cd "$CLIENT" && npm ci --no-audit --no-fund --loglevel=error)

DEADLINE=$((SECONDS + 30))
until curl -fsS -o /dev/null "$URL/health/ready" 2>/dev/null; do
    kill -0 "$SERVER_PID" 2>/dev/null || fail_with_log "the server exited before it was ready"
    ((SECONDS < DEADLINE)) || fail_with_log "/health/ready not 200 within 30s"
    sleep 0.2
done

echo "regenerating the types from $URL/openapi.json"
(cd "$CLIENT" && OPENAPI_URL="$URL/openapi.json" SCHEMA_OUT="$WORK/schema.d.ts" npm run --silent generate) \
    || fail_with_log "openapi-typescript could not read the app's schema"
if cmp -s "$CLIENT/src/schema.d.ts" "$WORK/schema.d.ts"; then
    echo "clients/typescript/src/schema.d.ts is up to date"
elif [[ "$UPDATE" == true ]]; then
    cp "$WORK/schema.d.ts" "$CLIENT/src/schema.d.ts"
    echo "updated clients/typescript/src/schema.d.ts: commit it with the API change"
else
    diff -u --label "committed clients/typescript/src/schema.d.ts" \
        --label "generated from the running app" "$CLIENT/src/schema.d.ts" "$WORK/schema.d.ts" || true
    fail "clients/typescript/src/schema.d.ts is out of date with the app's /openapi.json:" \
        "run 'bash .ci/typescript_client.sh --update' and commit the result"
fi

echo "tsc --strict"
(cd "$CLIENT" && npm run --silent typecheck) || fail "the example does not type-check"

echo "running the example against $URL"
(cd "$CLIENT" && CRM_API_URL="$URL" CRM_EMAIL="$EMAIL" CRM_PASSWORD="$PASSWORD" npm run --silent example) \
    || fail_with_log "the example did not behave as expected"

stop_server
echo "typescript client: types match the app, tsc --strict clean, example passed"
