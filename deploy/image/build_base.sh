#!/bin/sh
# The Python base image from a Debian bootstrap, for a machine without registry access:
#   debootstrap --variant=minbase bookworm -> podman import -> python-base.Dockerfile.
# Prints the tag to pass as PYTHON_IMAGE. Idempotent: an image already built is reused.
# Needs root, debootstrap and podman (apt-get install podman runc debootstrap).
set -eu
PODMAN=${PODMAN:-podman}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DEBIAN_TAG=localhost/moerank-debian:$SUITE-min
PYTHON_TAG=${PYTHON_TAG:-localhost/moerank-python:3.11-$SUITE}
here=$(cd "$(dirname "$0")" && pwd)

if $PODMAN image exists "$PYTHON_TAG"; then echo "$PYTHON_TAG"; exit 0; fi
if ! $PODMAN image exists "$DEBIAN_TAG"; then
    root=$(mktemp -d "${TMPDIR:-/var/tmp}/moerank-debootstrap.XXXXXX")
    trap 'rm -rf "$root"' EXIT
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2
    # What a slim image leaves out: the downloaded .debs, package lists, docs, man pages.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
    tar -C "$root" -c . | $PODMAN import - "$DEBIAN_TAG" >&2
fi
$PODMAN build --format docker --build-arg DEBIAN_IMAGE="$DEBIAN_TAG" -t "$PYTHON_TAG" \
    -f "$here/python-base.Dockerfile" "$here" >&2
echo "$PYTHON_TAG"
