# A Python 3.11 base built from Debian itself, for machines that cannot pull python:3.11-slim
# (no registry access). `deploy/image/build_base.sh` makes the Debian root it starts from;
# `make image` passes the result as the Dockerfile's PYTHON_IMAGE. Like python:3.11-slim it
# puts `python` and `pip` on PATH (a venv: Debian's own pip refuses to install system-wide).
ARG DEBIAN_IMAGE=localhost/moerank-debian:bookworm-min
FROM ${DEBIAN_IMAGE}
# PIP_CERT: pip trusts the system's CA bundle (a build here mounts this machine's over it).
ENV DEBIAN_FRONTEND=noninteractive PATH=/opt/venv/bin:$PATH \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
    /usr/share/doc/* /usr/share/man/* \
 && python3 -m venv /opt/venv \
 && ln -s /opt/venv/bin/python /usr/local/bin/python
