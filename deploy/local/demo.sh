#!/usr/bin/env bash
# `npm run demo`: installs what is missing, builds, and starts the whole mesh
# (nats-server, registry, monitor, 2 inference replicas, router) with a demo
# fraud model and some traffic. Extra arguments go to `infermesh up`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/ensure-deps.sh nats
exec node dist/services/cli/main.js up --demo "$@"
