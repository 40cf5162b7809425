# One image for every Kairos service: `kairos run <ingest|timer|validator|sender>`.
# Build:  docker build -t kairos:0.1.0 .
# Needs no Java: the image talks to your Kafka cluster (KAIROS_KAFKA_BOOTSTRAP).

# -- build: wheels of kairos and its dependencies -------------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kairos ./kairos
COPY schemas ./schemas
COPY services ./services
RUN pip wheel --wheel-dir /wheels .

# -- runtime: the wheels, a non-root user, nothing else -------------------------------------
FROM python:3.11-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    KAIROS_STATE_DIR=/var/lib/kairos KAIROS_HTTP_HOST=0.0.0.0 KAIROS_LOG_FORMAT=json
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels kairos \
 && groupadd --system --gid 10001 kairos \
 && useradd --system --uid 10001 --gid kairos --home-dir /var/lib/kairos --create-home kairos
USER 10001:10001
WORKDIR /var/lib/kairos
EXPOSE 8080 2525 8081 8082 8083
ENTRYPOINT ["kairos"]
CMD ["run", "ingest"]
