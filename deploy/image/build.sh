#!/bin/sh
# `make image`: the cpu target of the Dockerfile built with podman, from ./artifacts (`make
# bundle`), tagged $IMAGE. The base is python:3.11-slim when it can be pulled; where no
# registry answers, a Python base bootstrapped from Debian (build_base.sh) instead. The
# machine's CA bundle is mounted for pip (a no-op where pip trusts its own). Prints the
# build's seconds and the image's size.
set -eu
PODMAN=${PODMAN:-podman}
IMAGE=${IMAGE:-moerank:cpu}
BASE=${PYTHON_IMAGE:-python:3.11-slim}
CONTEXT=${CONTEXT:-.}
here=$(cd "$(dirname "$0")" && pwd)
started=$(date +%s)

if ! $PODMAN image exists "$BASE" && ! $PODMAN pull -q "$BASE" >/dev/null 2>&1; then
    echo "cannot pull $BASE: using a Python base bootstrapped from Debian" >&2
    BASE=$(PODMAN="$PODMAN" "$here/build_base.sh")
fi
certs=""
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then certs="-v /etc/ssl/certs:/etc/ssl/certs:ro"; fi
# shellcheck disable=SC2086
$PODMAN build --format docker --target cpu --build-arg PYTHON_IMAGE="$BASE" \
    --build-arg ARTIFACTS_FROM=local $certs -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT"
size=$($PODMAN image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE on $BASE in $(( $(date +%s) - started )) s: $(( size / 1000000 )) MB"
