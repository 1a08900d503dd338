# kan-local/python:3.11: Debian's python3.11 with venv (pip comes with each venv), standing in for python:3.11-slim.
FROM kan-local/debian:bookworm
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
RUN echo "deb $DEBIAN_MIRROR bookworm main" > /etc/apt/sources.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
