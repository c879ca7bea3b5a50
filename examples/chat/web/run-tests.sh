#!/usr/bin/env bash
# The chat application's end-to-end test in a headless browser (test/e2e.test.mjs): builds
# chat-server and chat-client (debug; a no-op when fresh), installs clients/js's locked dev
# dependencies (the test drives Chromium with clients/js/support/chromium.js, which needs
# `ws`), then runs Node's test runner. RINGRPC_CHAT_SERVER and RINGRPC_CHAT_CLIENT (both)
# skip the cargo build; RINGRPC_REQUIRE_BROWSER=1 makes a missing Chromium a failure instead
# of a skip; RINGRPC_WRITE_SCREENSHOT=1 refreshes docs/chat.png.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../../.. && pwd)"

if [ -z "${RINGRPC_CHAT_SERVER:-}" ] || [ -z "${RINGRPC_CHAT_CLIENT:-}" ]; then
    (cd "$root" && cargo build --quiet -p ringrpc-chat)
    # CARGO_TARGET_DIR, when relative, is relative to where cargo ran: the root.
    target="$(cd "$root" && cd "${CARGO_TARGET_DIR:-target}" && pwd)"
    export RINGRPC_CHAT_SERVER="$target/debug/chat-server" RINGRPC_CHAT_CLIENT="$target/debug/chat-client"
fi
for bin in "$RINGRPC_CHAT_SERVER" "$RINGRPC_CHAT_CLIENT"; do
    [ -x "$bin" ] || { echo "run-tests.sh: no binary at $bin" >&2; exit 1; }
done

(cd "$root/clients/js" && npm ci --no-audit --no-fund --loglevel=error)
node --test test/*.test.mjs
