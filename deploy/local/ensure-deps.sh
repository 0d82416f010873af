#!/usr/bin/env bash
# Installs what infermesh needs on a fresh Debian machine with Node 20:
# npm packages (npm ci, which also builds dist/), and the Debian packages
# named on the command line when their command is missing:
#   nats      -> nats-server (the mesh's NATS with JetStream)
#   pyclient  -> python3-grpcio, python3-protobuf, protobuf-compiler (the
#                independent OIP client used by the tests)
#   h2load    -> nghttp2-client (the benchmark's load generator)
#   promtool  -> prometheus (promtool checks /metrics and the alert rules in tests)
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for want in "$@"; do
  case "$want" in
    nats) command -v nats-server >/dev/null || need+=(nats-server) ;;
    pyclient)
      /usr/bin/python3 -c 'import grpc, google.protobuf' 2>/dev/null || need+=(python3-grpcio python3-protobuf)
      command -v protoc >/dev/null || need+=(protobuf-compiler) ;;
    h2load) command -v h2load >/dev/null || need+=(nghttp2-client) ;;
    promtool) command -v promtool >/dev/null || need+=(prometheus) ;;
    *) echo "ensure-deps: unknown dependency '$want'" >&2; exit 2 ;;
  esac
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "infermesh needs: ${need[*]}. Install them with: sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "installing ${need[*]} (apt-get)…" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "installing npm packages (npm ci)…" >&2
  # No CUDA download (onnxruntime-node's install script): npm 10 runs it unless told to skip;
  # npm 11 runs no dependency install script that package.json's allowScripts does not allow.
  ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund >&2
fi
npx tsc -p tsconfig.json >&2
# The typed client's declarations (import { InferenceApi } from 'infermesh/client').
npx tsc -p tsconfig.client.json >&2
