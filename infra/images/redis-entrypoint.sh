#!/bin/sh
# Entrypoint of the local Redis stand-in (infra/images/build.sh): like the official image, redis-server
# runs with protected mode off so the other containers of the network may connect (Debian's default
# would refuse them without a password).
set -eu

if [ "${1:-}" = redis-server ]; then
    shift
    set -- redis-server "$@" --protected-mode no
fi
exec "$@"
