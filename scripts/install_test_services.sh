#!/usr/bin/env bash
# Installs the real servers the storage tests start on loopback: an OCI registry (Debian's
# docker-registry) and Azurite, the Azure Blob emulator (npm, into .tools/node). The
# S3 (moto) and GCS (gcp-storage-emulator) servers are Python packages of the test extra.
# PostgreSQL for the model registry's tests on it.
# Also buildah and mmdebstrap (Debian), which build and run the runtime images
# (scripts/build_images.sh, tests/deploy/test_image.py).
# Each step is skipped when the tool is already there; a test whose server is missing
# skips with the reason, so a machine without apt or npm still runs everything else.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker-registry >/dev/null 2>&1 && [ ! -x /usr/bin/docker-registry ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing docker-registry (Debian)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker-registry >/dev/null
        # The package starts a registry service on :5000 where systemd runs; tests start their own.
        (command -v systemctl >/dev/null 2>&1 && systemctl stop docker-registry) 2>/dev/null || true
    else
        echo "== docker-registry not installed (needs root and apt-get): OCI tests will skip"
    fi
fi

# buildah brings uidmap; with its vfs storage driver and chroot isolation nothing more is needed
# (no fuse-overlayfs, no daemon). mmdebstrap makes the images' Debian root filesystem as root.
if ! command -v buildah >/dev/null 2>&1 || ! command -v mmdebstrap >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing buildah and mmdebstrap (Debian)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            buildah mmdebstrap >/dev/null
    else
        echo "== buildah and mmdebstrap not installed (needs root and apt-get): image tests will skip"
    fi
fi

# PostgreSQL's server (Debian), for the model registry's tests on PostgreSQL: they start a
# cluster of their own in a temporary folder (tests/registry/conftest.py).
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "== installing postgresql (Debian)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            postgresql >/dev/null
        # The package starts a cluster where systemd runs; the tests start their own.
        (command -v systemctl >/dev/null 2>&1 && systemctl stop postgresql) 2>/dev/null || true
    else
        echo "== postgresql not installed (needs root and apt-get): its registry tests will skip"
    fi
fi

if [ ! -x .tools/node/node_modules/.bin/azurite-blob ]; then
    if command -v npm >/dev/null 2>&1; then
        echo "== installing azurite (npm) into .tools/node"
        mkdir -p .tools/node
        npm install --silent --no-audit --no-fund --prefix .tools/node azurite@3 >/dev/null
    else
        echo "== npm not found: Azure storage tests will skip"
    fi
fi
