#!/usr/bin/env bash
# The Python client's tests: builds the engine and the client_peer example they run against
# (debug; a no-op when fresh), makes a venv under the target dir with
# `pip install ./clients/python[test]` (a real install, not the source tree), then runs
# pytest. RINGRPC_ENGINE / RINGRPC_CLIENT_PEER point at other binaries (skipping the
# build); RINGRPC_PYTHON picks the interpreter (default python3, at least 3.9).
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd ../.. && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
mkdir -p "$target"
target="$(cd "$target" && pwd)"

if [ -z "${RINGRPC_ENGINE:-}" ] || [ -z "${RINGRPC_CLIENT_PEER:-}" ]; then
    (cd "$root" && cargo build --quiet -p ringrpc-cli && cargo build --quiet -p ringrpc --example client_peer)
fi
export RINGRPC_ENGINE="${RINGRPC_ENGINE:-$target/debug/engine}"
export RINGRPC_CLIENT_PEER="${RINGRPC_CLIENT_PEER:-$target/debug/examples/client_peer}"
for bin in "$RINGRPC_ENGINE" "$RINGRPC_CLIENT_PEER"; do
    [ -x "$bin" ] || { echo "run-tests.sh: no binary at $bin" >&2; exit 1; }
done

python="${RINGRPC_PYTHON:-python3}"
venv="$target/python-venv"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || {
        echo "run-tests.sh: $python cannot make a venv (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check ".[test]"
# The install, not the source tree, is what the tests import.
cd tests
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@" .
