#!/bin/sh
# Entrypoint of the dxf-bridge image (see Dockerfile).
#
# Files the server creates (the SQLite database, the signing key) are private to the container
# user. When DXF_MIGRATE_ON_START=1 and the command is `dxf-bridge serve`, the database schema is
# upgraded (`dxf-bridge migrate`) before the server starts; any other command runs unchanged,
# so `docker run IMAGE dxf-bridge migrate` and `docker exec CONTAINER dxf-bridge token ...` work.
set -eu

umask 077

if [ "${DXF_MIGRATE_ON_START:-0}" = "1" ] && [ "$#" -ge 2 ] \
    && [ "$1" = "dxf-bridge" ] && [ "$2" = "serve" ]; then
    dxf-bridge migrate
fi

exec "$@"
