# kan-service image: CPU torch by default, non-root, `kan-service` entry point. BuildKit builds it
# (Docker 23+ by default; DOCKER_BUILDKIT=1 on Docker 20.10).
#
#   docker build -t kan-service .                                   # CPU image
#   docker build -t kan-service:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .   # CUDA image (docs/deployment.md)
#   docker compose -f docker/compose.yaml up -d --build              # API + Celery workers + Redis + PostgreSQL
#
# Build arguments, for machines without Docker Hub or the PyTorch index (docker/local-images.sh makes
# the images; docs/deployment.md, "Air-gapped machines"):
#   BASE_IMAGE          the Python 3.11 base of both stages (python:3.11-slim)
#   TORCH_INDEX_URL     the index torch 2.13.0 comes from (PyTorch's CPU wheels)
#   TORCH_WHEELS_IMAGE  an image holding a torch wheel in its root directory: torch comes from it instead
#                       of TORCH_INDEX_URL (default: an empty one)
# Secret `pip_cert` (optional): a CA bundle for pip, e.g. a proxy's. It is mounted for the pip runs only
# and never stored in a layer: --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt

ARG BASE_IMAGE=python:3.11-slim
ARG TORCH_WHEELS_IMAGE=scratch

FROM ${TORCH_WHEELS_IMAGE} AS torch-wheels

FROM ${BASE_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# dependencies first (cached layer): torch from the wheel image or the chosen index, the rest from PyPI
RUN --mount=type=bind,from=torch-wheels,target=/wheels --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    if ls /wheels/torch-*.whl >/dev/null 2>&1; then from="--find-links /wheels"; \
    else from="--index-url ${TORCH_INDEX_URL}"; fi; \
    pip install "torch==2.13.0" $from
# the other dependencies (cached until pyproject.toml changes: the packages are empty stand-ins here)
COPY pyproject.toml README.md ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    mkdir kan_core service && touch kan_core/__init__.py service/__init__.py \
    && pip install ".[scale]" "torch==2.13.0" && rm -rf kan_core service build ./*.egg-info
# then the code
COPY kan_core ./kan_core
COPY service ./service
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    pip install --no-deps --force-reinstall . && pip uninstall -y pip setuptools

FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    KAN_DATA_DIR=/data \
    KAN_HOST=0.0.0.0 \
    KAN_PORT=8000
RUN groupadd --system --gid 10001 kan \
    && useradd --system --uid 10001 --gid kan --home-dir /data --no-create-home kan \
    && mkdir -p /data && chown kan:kan /data
COPY --from=build /opt/venv /opt/venv
USER kan
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
# liveness of `serve` (the default command); containers running `worker` have no HTTP server and
# turn it off (docker/compose.yaml does)
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["kan-service"]
CMD ["serve"]
