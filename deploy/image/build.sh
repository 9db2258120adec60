#!/bin/sh
# `make image`: the cpu target of the Dockerfile built with podman, from ./artifacts (`make
# bundle`), tagged $IMAGE. The base is python:3.11-slim when it can be pulled; where no
# registry answers, a Python base bootstrapped from Debian (build_base.sh) instead. The
# machine's CA bundle is mounted for pip (a no-op where pip trusts its own). Prints each
# build's seconds and the image's size.
#
# TARGETS names what to build (default cpu): `make podman-up` adds the compose stack's other
# images, `embed` (the embeddings job, tagged $EMBED_IMAGE) and `redis` (Debian's
# redis-server on the bootstrapped Debian base, redis.Dockerfile, tagged $REDIS_IMAGE: for
# where redis:7.2-alpine cannot be pulled).
set -eu
PODMAN=${PODMAN:-podman}
IMAGE=${IMAGE:-moerank:cpu}
EMBED_IMAGE=${EMBED_IMAGE:-moerank-embed:latest}
REDIS_IMAGE=${REDIS_IMAGE:-localhost/moerank-redis:bookworm}
TARGETS=${TARGETS:-cpu}
BASE=${PYTHON_IMAGE:-python:3.11-slim}
CONTEXT=${CONTEXT:-.}
here=$(cd "$(dirname "$0")" && pwd)

report() {  # report TAG STARTED
    size=$($PODMAN image inspect --format '{{.Size}}' "$1")
    echo "built $1 in $(( $(date +%s) - $2 )) s: $(( size / 1000000 )) MB"
}

started=$(date +%s)
if ! $PODMAN image exists "$BASE" && ! $PODMAN pull -q "$BASE" >/dev/null 2>&1; then
    echo "cannot pull $BASE: using a Python base bootstrapped from Debian" >&2
    BASE=$(PODMAN="$PODMAN" "$here/build_base.sh")
fi
certs=""
if [ -r /etc/ssl/certs/ca-certificates.crt ]; then certs="-v /etc/ssl/certs:/etc/ssl/certs:ro"; fi
for target in $TARGETS; do
    case $target in
        cpu) tag=$IMAGE ;;
        embed) tag=$EMBED_IMAGE ;;
        redis)
            # The Debian root build_base.sh imports (it makes it if missing; idempotent).
            PODMAN="$PODMAN" "$here/build_base.sh" >/dev/null
            $PODMAN build --format docker -t "$REDIS_IMAGE" -f "$here/redis.Dockerfile" "$here"
            report "$REDIS_IMAGE" "$started"
            started=$(date +%s)
            continue ;;
        *) echo "unknown target $target (cpu, embed, redis)" >&2; exit 2 ;;
    esac
    # shellcheck disable=SC2086
    $PODMAN build --format docker --target "$target" --build-arg PYTHON_IMAGE="$BASE" \
        --build-arg ARTIFACTS_FROM=local $certs -t "$tag" -f "$CONTEXT/Dockerfile" "$CONTEXT"
    report "$tag" "$started"
    started=$(date +%s)
done
