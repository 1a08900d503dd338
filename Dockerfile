# syntax=docker/dockerfile:1
# kan-service image: CPU torch by default, non-root, `kan-service` entry point.
#
#   docker build -t kan-service .                                   # CPU image
#   docker build -t kan-service:cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 .   # CUDA image (docs/deployment.md)
#   docker compose -f docker/compose.yaml up -d --build              # API + Celery workers + Redis + PostgreSQL
#
# torch's version comes from constraints.txt (pyproject.toml accepts a range); TORCH_INDEX_URL picks its build.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# dependencies first (cached layer): torch from the chosen index, the rest from PyPI
COPY pyproject.toml README.md constraints.txt ./
RUN pip install -c constraints.txt torch --index-url "${TORCH_INDEX_URL}"
COPY kan_core ./kan_core
COPY service ./service
RUN pip install -c constraints.txt ".[scale]" && pip uninstall -y pip setuptools

FROM python:${PYTHON_VERSION}-slim AS runtime
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
