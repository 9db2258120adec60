#!/bin/sh
# `make podman-up`: docker-compose.yml's Redis, embeddings job and ranker with podman-compose
# (plus deploy/podman/compose.yml), from images already built (deploy/image/build.sh).
#
# One service at a time, each with --no-deps, with the file's depends_on conditions checked
# here: podman 4.3 cannot wait for `service_healthy` (podman-compose then starts the job at
# once), and podman-compose's `--requires` links break after a one-shot job: podman cannot
# start the ranker once the job has exited ("generating dependency graph ... not found in
# input list") or starts the job again (podman-compose issues 683 and 1467).
#   redis        then its healthcheck, run by hand (no systemd timer runs it here), passes
#   embed-items  then it exits 0 (service_completed_successfully)
#   ranker
# PROJECT (default moerank, docker-compose.yml's name), PODMAN_COMPOSE (the command) and
# what deploy/podman/compose.yml reads (IMAGE, EMBED_IMAGE, REDIS_IMAGE, RANKER_PORT) come
# from the environment.
set -eu
PODMAN=${PODMAN:-podman}
PROJECT=${PROJECT:-moerank}
here=$(cd "$(dirname "$0")" && pwd)
compose() {
    ${PODMAN_COMPOSE:-podman-compose} --project-name "$PROJECT" \
        -f "$here/../../docker-compose.yml" -f "$here/compose.yml" "$@"
}
container() {
    $PODMAN ps -a --filter "label=io.podman.compose.project=$PROJECT" \
        --filter "label=com.docker.compose.service=$1" --format '{{.Names}}'
}

compose up --detach --no-build --no-deps redis
redis=$(container redis)
tries=0
until $PODMAN healthcheck run "$redis" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -ge 60 ]; then echo "$redis is not healthy after 30 s" >&2; exit 1; fi
    sleep 0.5
done

compose up --detach --no-build --no-deps embed-items
job=$(container embed-items)
status=$($PODMAN wait "$job")
if [ "$status" != 0 ]; then
    $PODMAN logs --tail 20 "$job" >&2
    echo "the embeddings job $job failed (exit status $status)" >&2
    exit 1
fi

compose up --detach --no-build --no-deps ranker
