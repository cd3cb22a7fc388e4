# dxf-bridge container image.
#
#   docker build -t dxf-bridge .
#   docker run -d --name dxf -p 8080:8080 -v dxf-data:/srv/data dxf-bridge
#   docker exec dxf dxf-bridge token --scope "system/*.cruds"
#
# The default database is embedded SQLite at /srv/data/dxf-bridge.db, next to the signing key
# (/srv/data/signing-key.json); keep /srv/data on a volume. To use PostgreSQL, set
# DXF_DATABASE_URL=postgresql://user:password@host:5432/db. The schema must be migrated before
# `serve` starts: with DXF_MIGRATE_ON_START=1 (the default here) docker/entrypoint.sh runs
# `dxf-bridge migrate` first; with DXF_MIGRATE_ON_START=0, migrate as a separate step:
#   docker run --rm -e DXF_DATABASE_URL=... dxf-bridge dxf-bridge migrate
# See README.md ("Docker") and docs/configuration.md.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: build the dxf-bridge wheel and install it, with its dependencies, into /opt/venv --
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --upgrade pip

WORKDIR /build

# Dependencies first, read from pyproject.toml, so this layer is reused while only code changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
 && /opt/venv/bin/pip install -r requirements.txt

# Then the project itself. setuptools packages `app` and `migrations` (with its versions/*.py
# scripts); README.md is the package's readme, so the build needs it.
COPY README.md ./
COPY app ./app
COPY migrations ./migrations
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /build/dist . \
 && /opt/venv/bin/pip install --no-deps /build/dist/dxf_bridge-*.whl \
 && /opt/venv/bin/dxf-bridge --help > /dev/null

# ---- runtime: the venv, a non-root user and a data volume ----------------------------------------
FROM ${PYTHON_IMAGE}

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DXF_HOST=0.0.0.0 \
    DXF_PORT=8080 \
    DXF_MIGRATE_ON_START=1

RUN groupadd --system --gid 10001 dxf \
 && useradd --system --uid 10001 --gid dxf --home-dir /srv --no-create-home \
        --shell /usr/sbin/nologin dxf \
 && mkdir -p /srv/data \
 && chown dxf:dxf /srv/data \
 && chmod 0700 /srv/data

COPY --from=builder /opt/venv /opt/venv
COPY docker/entrypoint.sh /usr/local/bin/dxf-entrypoint
RUN chmod 0755 /usr/local/bin/dxf-entrypoint

WORKDIR /srv
USER dxf
# Relative defaults (./data/dxf-bridge.db, ./data/signing-key.json) resolve to /srv/data.
VOLUME ["/srv/data"]
# 2575: the HL7v2 MLLP listener, when enabled (DXF_MLLP_ENABLED=true, DXF_MLLP_HOST=0.0.0.0)
EXPOSE 8080 2575

# /healthz answers without a token. It follows DXF_PORT; a port given as `serve --port` is not seen.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('DXF_PORT', '8080'), timeout=4)"]

ENTRYPOINT ["/usr/local/bin/dxf-entrypoint"]
CMD ["dxf-bridge", "serve"]
