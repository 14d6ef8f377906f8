# promo-bridge container image.
#
#   docker build -t promo-bridge:0.1.0 .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/examples/rules.yaml:/etc/promo-bridge/rules.yaml:ro" \
#     -e PROMO_BRIDGE_KAFKA_BOOTSTRAP_SERVERS=broker:9092 \
#     -e PROMO_BRIDGE_CAPILLARY_TILL_CODE=... -e PROMO_BRIDGE_CAPILLARY_PASSWORD=... \
#     promo-bridge:0.1.0
#
# Rules: mount the rules file at /etc/promo-bridge/rules.yaml (PROMO_BRIDGE_RULES_FILE points
# there). The image ships no rules on purpose: a container that starts without the operator's
# rules would call the API with somebody else's promotions. Start-up fails naming the variable
# when the file is missing.
#
# Probes: the image has no HEALTHCHECK because Kubernetes ignores it; the chart wires
#   liveness  -> GET /healthz on 8080 (the event loop answers at all)
#   readiness -> GET /readyz  on 8080 (partitions assigned, broker reachable, API credentials
#                accepted, not stopping; 503 with the failing checks otherwise)
# and /metrics on the same port for Prometheus.
#
# Shutdown: SIGTERM drains buckets and in-flight calls for up to PROMO_BRIDGE_DRAIN_TIMEOUT_S,
# publishes outcomes and commits, so the orchestrator's grace period must be longer than that.
# The service is PID 1 without an init: it spawns no children to reap and installs its own
# SIGTERM/SIGINT handlers, which is what an init would otherwise be for.
#
# The root filesystem can be read-only: bytecode is compiled at build time and nothing writes
# outside /tmp.

FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# Only what the wheel needs (.dockerignore keeps tests, caches and venvs out of the context),
# and constraints.txt so the image gets the dependency versions CI tested, not PyPI's newest.
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY service ./service

# The wheel is built here, then installed with its dependencies into a self-contained venv at
# the same path the final stage uses, so the final stage copies one directory and needs neither
# the source nor any build tool. All runtime dependencies ship manylinux wheels for CPython
# 3.11, so no compiler is needed even here.
RUN python -m pip wheel --no-deps --wheel-dir /dist . \
    && python -m venv /opt/promo-bridge \
    && /opt/promo-bridge/bin/python -m pip install --constraint constraints.txt /dist/promo_bridge-*.whl \
    && /opt/promo-bridge/bin/python -m pip uninstall --yes pip \
    && /opt/promo-bridge/bin/promo-bridge --help

FROM python:3.11-slim-bookworm

LABEL org.opencontainers.image.title="promo-bridge" \
      org.opencontainers.image.description="Kafka commerce events to Capillary loyalty-promotion API calls"

# A fixed numeric UID/GID lets Kubernetes enforce runAsNonRoot without a name lookup and lets
# the chart set fsGroup for the mounted TLS files.
RUN groupadd --system --gid 10001 promo \
    && useradd --system --no-log-init --uid 10001 --gid 10001 \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin promo

COPY --from=builder /opt/promo-bridge /opt/promo-bridge

ENV PATH=/opt/promo-bridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROMO_BRIDGE_HTTP_HOST=0.0.0.0 \
    PROMO_BRIDGE_HTTP_PORT=8080 \
    PROMO_BRIDGE_RULES_FILE=/etc/promo-bridge/rules.yaml

USER 10001:10001
WORKDIR /tmp

EXPOSE 8080

ENTRYPOINT ["promo-bridge"]
CMD ["run"]
