#!/bin/sh
# Make a Debian bookworm base image from Debian's packages, for machines that reach no image registry:
#   docker/local/base-image.sh NAME PACKAGE[,PACKAGE...]
# debootstrap installs the minimal system plus PACKAGES into a temporary folder, which `docker import` turns
# into the image NAME. The image is labelled so `make docker-clean` can find it.
set -eu

name=${1:?usage: base-image.sh NAME PACKAGE[,PACKAGE...]}
packages=${2:?usage: base-image.sh NAME PACKAGE[,PACKAGE...]}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

root=$(mktemp -d "${TMPDIR:-/tmp}/nmdc-base.XXXXXX")
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >"$root.log" 2>&1 || {
    cat "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"
# Package caches and lists are not needed at run time; the postgresql package's own cluster neither (the image's
# entrypoint makes one in PGDATA, as the official image does).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/lib/postgresql/*/main \
    "$root"/etc/postgresql/*/main
tar --numeric-owner -C "$root" -c . | docker import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.nmdc.local-base=bookworm org.nmdc.packages=$packages" \
    - "$name" >/dev/null
echo "$name"
