# kan-local/redis:7: Debian's redis-server, run like redis:7 (data in /data, `redis-server ARGS`).
FROM kan-local/debian:bookworm
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
RUN echo "deb $DEBIAN_MIRROR bookworm main" > /etc/apt/sources.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/
USER redis
WORKDIR /data
VOLUME ["/data"]
EXPOSE 6379
ENTRYPOINT ["redis-entrypoint.sh"]
CMD ["redis-server"]
