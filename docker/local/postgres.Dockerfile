# kan-local/postgres:15: Debian's postgresql-15, run like postgres:16 (POSTGRES_USER/PASSWORD/DB,
# data in /var/lib/postgresql/data, pg_isready for health checks).
FROM kan-local/debian:bookworm
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
RUN echo "deb $DEBIAN_MIRROR bookworm main" > /etc/apt/sources.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
    && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/
USER postgres
VOLUME ["/var/lib/postgresql/data"]
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
CMD ["postgres"]
