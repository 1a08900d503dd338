#!/bin/sh
# As redis:7 does: with no config file, listen on every interface of the container's network
# (protected mode off; the port is reachable only on the stack's network unless published).
set -e
if [ "$1" = redis-server ] && [ "${2#*.conf}" = "${2:-}" ]; then
    shift
    set -- redis-server --bind '* -::*' --protected-mode no --dir /data "$@"
fi
exec "$@"
