#!/usr/bin/env bash
# Regenerates libs/proto/gen from proto/ (needs Debian's protobuf-compiler).
# The output is committed: builds and tests never need protoc.
set -euo pipefail
cd "$(dirname "$0")/.."
out=libs/proto/gen
rm -rf "$out" && mkdir -p "$out"
protoc -I proto \
  --plugin=protoc-gen-ts_proto=node_modules/.bin/protoc-gen-ts_proto \
  --ts_proto_out="$out" \
  --ts_proto_opt=env=both,outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,forceLong=number,outputJsonMethods=false,outputPartialMethods=true,useOptionals=none,oneof=unions-value \
  $(cd proto && find . -name '*.proto' | sort | sed 's#^\./##')
