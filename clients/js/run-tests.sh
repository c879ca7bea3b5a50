#!/usr/bin/env bash
# The JS client's tests: builds the engine they run against (debug; a no-op when fresh),
# installs the locked dev dependencies (ws, typescript), checks ringrpc.d.ts, then runs
# Node's test runner. RINGRPC_ENGINE=path skips the cargo build; RINGRPC_REQUIRE_BROWSER=1
# makes a missing Chromium a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")"

if [ -z "${RINGRPC_ENGINE:-}" ]; then
    (cd ../.. && cargo build --quiet -p ringrpc-cli)
    target="${CARGO_TARGET_DIR:-../../target}"
    RINGRPC_ENGINE="$(cd "$target" && pwd)/debug/engine"
    export RINGRPC_ENGINE
fi
[ -x "$RINGRPC_ENGINE" ] || { echo "run-tests.sh: no engine at $RINGRPC_ENGINE" >&2; exit 1; }

npm ci --no-audit --no-fund --loglevel=error
npm run --silent typecheck
# What `npm publish` would ship: the module, its types and the README, nothing else.
packed=$(npm pack --dry-run --json --loglevel=error | node -e '
    const files = JSON.parse(require("fs").readFileSync(0, "utf8"))[0].files.map((f) => f.path).sort();
    console.log(files.join(" "));')
[ "$packed" = "README.md package.json ringrpc.d.ts ringrpc.js" ] \
    || { echo "run-tests.sh: npm pack would ship [$packed], not the module, types and README" >&2; exit 1; }
node --test test/*.test.js
