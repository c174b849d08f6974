# A stand-in for the official `postgres` image, for machines that reach no image registry. It honours the same
# POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGDATA and PGPORT, so docker/compose.yaml runs on either:
#   docker build -f docker/local/postgres.Dockerfile -t nmdc-local/postgres:bookworm docker/local
# The base is Debian's postgresql package made into an image by docker/local/base-image.sh.
ARG BASE_IMAGE=nmdc-local/postgres-base:bookworm
FROM ${BASE_IMAGE}
ENV PGDATA=/var/lib/postgresql/data
RUN mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER postgres
# SIGINT is PostgreSQL's fast shutdown: sessions are ended and the server stops cleanly within `docker stop`'s grace.
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]
