#!/usr/bin/env bash
# Build a local Debian base image without any image registry: debootstrap a minimal Debian
# with Python 3.11, then `docker import` it.
#
#   containers/make-base-image.sh [TAG]          (default TAG: genbrain-base:bookworm)
#
# Environment: SUITE (bookworm: Python 3.11), MIRROR (a Debian mirror, default
# deb.debian.org), EXTRA_CA (folder of extra CA certificates the image must trust, e.g. a
# site proxy's; default /usr/local/share/ca-certificates when it holds any).
# The image behaves as the public python:3.11-slim for the Dockerfile: python3 with venv,
# apt, CA certificates. Needs root, debootstrap and a running docker daemon.
set -euo pipefail
TAG=${1:-genbrain-base:bookworm}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
EXTRA_CA=${EXTRA_CA:-/usr/local/share/ca-certificates}
command -v debootstrap >/dev/null || { echo "make-base-image: debootstrap not found (apt-get install debootstrap)" >&2; exit 2; }
docker info >/dev/null 2>&1 || { echo "make-base-image: no docker daemon (start dockerd)" >&2; exit 2; }

in_root() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/genbrain-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$ROOTFS" "$MIRROR"
if compgen -G "$EXTRA_CA/*.crt" >/dev/null; then
    cp "$EXTRA_CA"/*.crt "$ROOTFS/usr/local/share/ca-certificates/"
    in_root update-ca-certificates
fi
in_root apt-get clean
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/*
# pip inside builds trusts the system CA bundle (which holds EXTRA_CA), as python:3.11-slim
# users would configure for a proxy
tar -C "$ROOTFS" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap $SUITE minbase + python3 (containers/make-base-image.sh)" \
    - "$TAG"
docker run --rm --network none "$TAG" python3 -c 'import sys, venv; print("base image ok:", sys.version.split()[0])'
