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

# The engine and browser tests again over wss://: the engine serving TLS with a self-signed
# certificate for localhost, trusted by Node (NODE_EXTRA_CA_CERTS) and pinned in Chromium.
if command -v openssl > /dev/null; then
    tls_dir=$(mktemp -d)
    trap 'rm -rf "$tls_dir"' EXIT
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost \
        -keyout "$tls_dir/key.pem" -out "$tls_dir/cert.pem" 2> /dev/null
    RINGRPC_JS_TLS_CERT="$tls_dir/cert.pem" RINGRPC_JS_TLS_KEY="$tls_dir/key.pem" \
        NODE_EXTRA_CA_CERTS="$tls_dir/cert.pem" node --test test/engine.test.js test/browser.test.js
elif [ "${RINGRPC_REQUIRE_BROWSER:-}" = 1 ]; then
    echo "run-tests.sh: openssl is needed to make the wss:// run's certificate" >&2
    exit 1
else
    echo "note: openssl not found: the wss:// run is skipped (apt-get install openssl)" >&2
fi
