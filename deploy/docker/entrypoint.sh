#!/bin/sh
# infermesh container entrypoint: the first argument picks the service, the
# rest are its flags (INFERMESH_* variables work as well). Services start with
# the Node flags of SERVICE_NODE_FLAGS in libs/config/index.ts.
set -eu
SERVICE_NODE_FLAGS="--max-semi-space-size=8 --heap-growing-percent=100"
# The app root: /app in the image (this file is /app/deploy/docker/entrypoint.sh).
cd "$(dirname "$0")/../.."
service="${1:-help}"
[ "$#" -gt 0 ] && shift
case "$service" in
  router | registry | monitor | inference)
    # shellcheck disable=SC2086 # the flags are meant to split into words
    exec node $SERVICE_NODE_FLAGS "dist/services/$service/main.js" "$@" ;;
  cli | infermesh)
    exec node dist/services/cli/main.js "$@" ;;
  help | -h | --help)
    echo "usage: <router|registry|monitor|inference> [flags…] | cli <infermesh command…>" >&2
    exit 0 ;;
  *)
    echo "infermesh: unknown service '$service' (router, registry, monitor, inference or cli)" >&2
    exit 64 ;;
esac
