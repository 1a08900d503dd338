#!/usr/bin/env bash
# Local stand-ins for the images the Dockerfile and docker/compose.yaml pull from Docker Hub, for
# machines that cannot reach it (air-gapped, or only a Debian mirror and PyPI). Everything comes
# from Debian packages:
#
#   kan-local/debian:bookworm   debootstrap --variant=minbase bookworm, imported as one layer
#   kan-local/python:3.11       Debian's python3.11 + venv (stands in for python:3.11-slim)
#   kan-local/postgres:15       Debian's postgresql-15, POSTGRES_USER/PASSWORD/DB like postgres:16
#   kan-local/redis:7           Debian's redis-server, like redis:7
#   kan-local/wheels:latest     the torch CPU wheel from $TORCH_WHEELS_DIR (a files-only image the
#                               Dockerfile bind-mounts with TORCH_WHEELS_IMAGE)
#
# Then: docker/drill.sh --local-images, or by hand
#   DOCKER_BUILDKIT=1 docker build --build-arg BASE_IMAGE=kan-local/python:3.11 \
#     --build-arg TORCH_WHEELS_IMAGE=kan-local/wheels --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt \
#     -t kan-service:latest .
#   POSTGRES_IMAGE=kan-local/postgres:15 REDIS_IMAGE=kan-local/redis:7 docker compose -f docker/compose.yaml up -d
#
# Images that already exist are kept (FORCE=1 rebuilds them). Needs root (debootstrap), debootstrap,
# and a Debian mirror (DEBIAN_MIRROR) reachable from the host and from containers.
set -euo pipefail

DOCKER=${DOCKER:-docker}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
TORCH_WHEELS_DIR=${TORCH_WHEELS_DIR:-/opt/wheels}
HERE=$(cd "$(dirname "$0")" && pwd)
FORCE=${FORCE:-0}

have() { [ "$FORCE" != 1 ] && $DOCKER image inspect "$1" >/dev/null 2>&1; }
say() { printf '[local-images] %s\n' "$*" >&2; }

if ! have kan-local/debian:$SUITE; then
    command -v debootstrap >/dev/null || { say "debootstrap is missing (apt-get install debootstrap)"; exit 1; }
    root=$(mktemp -d /var/tmp/kan-debian.XXXXXX)
    trap 'rm -rf "$root"' EXIT
    say "debootstrap $SUITE into $root"
    debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >&2
    # like the Docker Hub debian images: no recommends, no docs, an apt cache that is cleaned
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' > "$root/etc/apt/apt.conf.d/90kan-local"
    printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\n' \
        > "$root/etc/dpkg/dpkg.cfg.d/90kan-local"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/*
    tar -C "$root" -c . | $DOCKER import -c 'CMD ["bash"]' -c 'ENV LANG=C.UTF-8' - kan-local/debian:$SUITE >/dev/null
    rm -rf "$root"; trap - EXIT
fi

build() {  # build TAG DOCKERFILE
    if have "$1"; then say "$1 exists"; return; fi
    say "building $1"
    $DOCKER build -q --build-arg DEBIAN_MIRROR="$MIRROR" -t "$1" -f "$HERE/local/$2" "$HERE/local" >/dev/null
}
build kan-local/python:3.11 python.Dockerfile
build kan-local/postgres:15 postgres.Dockerfile
build kan-local/redis:7 redis.Dockerfile

if ! have kan-local/wheels:latest; then
    shopt -s nullglob
    wheels=("$TORCH_WHEELS_DIR"/torch-2.13.0*-cp311-*linux*x86_64.whl)
    [ ${#wheels[@]} -gt 0 ] || { say "no torch 2.13.0 cp311 wheel in $TORCH_WHEELS_DIR"; exit 1; }
    say "kan-local/wheels from ${wheels[*]}"
    tar -C "$TORCH_WHEELS_DIR" -c "${wheels[@]##*/}" | $DOCKER import - kan-local/wheels:latest >/dev/null
fi
$DOCKER image ls 'kan-local/*' >&2
