#!/usr/bin/env bash
# `npm test`: installs what the tests need, builds, and runs the whole suite
# (vitest) against real nats-server, real gRPC servers and ONNX Runtime.
# Extra arguments go to vitest (e.g. a test file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/ensure-deps.sh nats pyclient promtool
exec npx vitest run "$@"
