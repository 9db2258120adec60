# Redis for the compose stack where redis:7.2-alpine cannot be pulled (no registry): Debian's
# redis-server on the bootstrapped Debian base (build_base.sh makes DEBIAN_IMAGE; build.sh
# builds this with REDIS_IMAGE set). Like the official image it runs as the redis user in
# /data and serves other containers without a password: protected mode is off whatever
# command compose gives (redis-server with arguments only reads no config file).
ARG DEBIAN_IMAGE=localhost/moerank-debian:bookworm-min
FROM ${DEBIAN_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
    /usr/share/doc/* /usr/share/man/* \
 && mkdir /data && chown redis:redis /data \
 && printf '#!/bin/sh\nif [ "$1" = redis-server ]; then shift; set -- redis-server --protected-mode no "$@"; fi\nexec "$@"\n' \
    > /usr/local/bin/redis-entrypoint && chmod 755 /usr/local/bin/redis-entrypoint
USER redis
WORKDIR /data
EXPOSE 6379
ENTRYPOINT ["/usr/local/bin/redis-entrypoint"]
CMD ["redis-server"]
