# syntax=docker/dockerfile:1
#
# stream-app image: the `stream-app` console script on python:3.11-slim, run as a non-root user.
#
#   docker build -t stream-app:local .
#   docker run --rm stream-app:local config          # any stream-app command; default: worker
#
# docker-compose.yml builds this image for the topics, train, worker and publisher services.
# The image holds no model: mount a registry at /models (STREAM_APP_MODELS_DIR) and a writable
# volume at /state (STREAM_APP_STATE_DIR) for the RocksDB tables.

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the project and its dependencies into a virtualenv ----------------------
FROM ${PYTHON_IMAGE} AS build

# A compiler only for dependencies without a wheel for the target platform (e.g. faust-streaming's
# Cython extensions on some architectures). It stays in this stage, not in the runtime image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv && /opt/venv/bin/pip install --upgrade pip

WORKDIR /src
# What the wheel needs: pyproject + README (metadata), the package, and the contract files that
# hatch force-includes as stream_app/_contract/{schemas,topics}.
COPY pyproject.toml README.md ./
COPY stream_app ./stream_app
COPY schemas ./schemas
COPY topics ./topics
RUN /opt/venv/bin/pip install . \
    && /opt/venv/bin/stream-app --help >/dev/null

# --- runtime ---------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG APP_UID=10001
ARG APP_GID=10001

# Non-root user. /models and /state exist and belong to it so that named volumes mounted there
# start out writable (Docker copies the directory's ownership into an empty named volume).
RUN groupadd --system --gid "${APP_GID}" app \
    && useradd --system --uid "${APP_UID}" --gid app --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && mkdir -p /models /state \
    && chown app:app /models /state

COPY --from=build /opt/venv /opt/venv

ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STREAM_APP_MODELS_DIR=/models \
    STREAM_APP_STATE_DIR=/state

USER app
WORKDIR /home/app

# Faust web (metrics, health): STREAM_APP_WEB_PORT.
EXPOSE 6066

ENTRYPOINT ["stream-app"]
CMD ["worker"]
