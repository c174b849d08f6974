#!/bin/sh
# A Docker engine for `make docker-test` on a Debian machine, as root (`make docker-engine`): installs Debian's
# docker.io, docker-compose (1.29) and debootstrap when missing, and starts dockerd in the background when none
# answers. No default bridge network: containers here use the host's network only (docs/deploy.md says why).
set -eu

missing=""
command -v dockerd >/dev/null || missing="$missing docker.io"
command -v docker-compose >/dev/null || missing="$missing docker-compose"
command -v debootstrap >/dev/null || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    apt-get update -qq
    # shellcheck disable=SC2086 # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

if docker info >/dev/null 2>&1; then
    echo "the Docker engine is running"
    exit 0
fi
log=/var/log/nmdc-dockerd.log
setsid /usr/sbin/dockerd --bridge=none --iptables=false --ip6tables=false --ip-masq=false >"$log" 2>&1 &
for _ in $(seq 60); do
    if docker info >/dev/null 2>&1; then
        echo "dockerd started (pid $!, log $log)"
        exit 0
    fi
    sleep 1
done
echo "dockerd did not answer within 60 s; see $log" >&2
exit 1
