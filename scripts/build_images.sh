#!/usr/bin/env bash
# Builds modelhost's runtime images (deploy/images/Containerfile) with buildah: no daemon, no base
# image pulled, no package index reached from inside the build. The base is a Debian bookworm
# root filesystem made by mmdebstrap; the Python packages come from a wheelhouse downloaded here
# for the image's CPython 3.11 (manylinux x86_64), pinned by deploy/images/constraints.txt.
#
#   bash scripts/build_images.sh tabular|full|torch|llm|all...  build those images
#   bash scripts/build_images.sh lock      re-resolve deploy/images/constraints.txt
#   bash scripts/build_images.sh storage   print buildah's storage options, for
#                                          `buildah $(bash scripts/build_images.sh storage) images`
#   bash scripts/build_images.sh clean     delete the build state (images, wheelhouse, rootfs)
#
# It installs nothing: where buildah or mmdebstrap is missing it says how to get them
# (scripts/install_test_services.sh installs both where apt-get and root are there).
# An image whose inputs (Containerfile, requirements, constraints, modelhost's wheel, the base)
# have not changed since its last build is kept as it is.
#
# Environment:
#   MODELHOST_IMAGES_DIR  the build state: buildah's storage (vfs driver), the rootfs tarball and
#                         the wheelhouse (default: .tools/images, git-ignored; several GB)
#   SOURCE_DATE_EPOCH     timestamp of the image metadata, the files in its layers and the
#                         rootfs (default: the last commit's time)
#   PYTHON                a Python 3 with pip that downloads the wheels and builds modelhost's
#                         (default: .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
IMAGES_SRC=$REPO/deploy/images
STATE=${MODELHOST_IMAGES_DIR:-$REPO/.tools/images}
case "$STATE" in /*) ;; *) STATE=$REPO/$STATE ;; esac
STORAGE_OPTS=(--root "$STATE/storage" --runroot "$STATE/run" --storage-driver vfs)
# libgomp1: lightgbm's and xgboost's wheels load the system's OpenMP runtime. No python3-venv:
# `python3 -m venv --without-pip` needs none, and pip runs from the wheelhouse, so neither the
# images nor their base hold pip.
BASE_PACKAGES=python3,ca-certificates,libgomp1
WHEELHOUSE=$STATE/wheelhouse
IMAGE_PYTHON_VERSION=3.11
# Documentation, manuals and translations are left out (as Debian's slim images do); the
# merged-usr hook merges /usr without the usrmerge package, which pulls in perl.
MMDEBSTRAP_OPTS=(
    --variant=apt "--include=$BASE_PACKAGES"
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
    '--dpkgopt=path-exclude=/usr/share/doc/*'
    '--dpkgopt=path-include=/usr/share/doc/*/copyright'
    '--dpkgopt=path-exclude=/usr/share/man/*'
    '--dpkgopt=path-exclude=/usr/share/info/*'
    '--dpkgopt=path-exclude=/usr/share/locale/*'
    '--dpkgopt=path-include=/usr/share/locale/locale.alias'
    '--dpkgopt=path-exclude=/usr/share/lintian/*'
)
# The base is named after what makes it: changing the options above makes a new one.
BASE_ID=$(printf '%s\n' "${MMDEBSTRAP_OPTS[@]}" | sha256sum | cut -c1-12)
BASE_IMAGE=localhost/modelhost/debian-python:bookworm-$BASE_ID
ROOTFS=$STATE/rootfs-bookworm-$BASE_ID.tar

if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' modelhost/_version.py)
PIP_VERSION=$(sed -n 's/^pip==//p' "$IMAGES_SRC/constraints.txt")
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 1735689600)
fi
export SOURCE_DATE_EPOCH

usage() {
    sed -n '7,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

buildah_() { buildah "${STORAGE_OPTS[@]}" "$@"; }

require_tools() {
    local missing=()
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
    if [ ${#missing[@]} -gt 0 ]; then
        local IFS=,
        echo "build_images.sh: not found: ${missing[*]}. On Debian or Ubuntu, as root:" >&2
        echo "    apt-get install --no-install-recommends buildah mmdebstrap" >&2
        echo "  (or: bash scripts/install_test_services.sh, which does that where it can)" >&2
        exit 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "build_images.sh: needs root (buildah's chroot isolation and mmdebstrap's root mode)" >&2
        exit 1
    fi
}

# pip's --platform takes exact tags: every manylinux tag glibc 2.36 (bookworm) runs.
platform_args() {
    local minor
    for minor in $(seq 36 -1 17); do printf -- '--platform=manylinux_2_%s_x86_64\n' "$minor"; done
    printf -- '--platform=%s\n' manylinux2014_x86_64 manylinux2010_x86_64 manylinux1_x86_64
}

# The wheels the image installs, for its Python rather than this machine's.
pip_for_image() {
    local command=$1
    shift
    local platforms
    mapfile -t platforms < <(platform_args)
    "$PYTHON" -m pip "$command" --disable-pip-version-check --only-binary=:all: \
        --implementation=cp --python-version="$IMAGE_PYTHON_VERSION" --abi=cp311 \
        "${platforms[@]}" "$@"
}

modelhost_wheel() {
    local out=$STATE/modelhost-wheel
    rm -rf "$out"
    mkdir -p "$out"
    "$PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir "$out" "$REPO" >&2
    echo "$out/modelhost-$VERSION-py3-none-any.whl"
}

# requirements/IMAGE.txt with `modelhost[...]` pointing at the wheel just built (the name alone
# could resolve to a package of that name on the index).
local_requirements() {
    local image=$1 wheel=$2
    sed "s|^modelhost\[|${wheel}[|" "$IMAGES_SRC/requirements/$image.txt"
}

fill_wheelhouse() {
    local image=$1 wheel=$2 requirements
    requirements=$STATE/requirements-$image.txt
    # pip too: the build runs it from its wheel.
    { local_requirements "$image" "$wheel"; echo pip; } >"$requirements"
    mkdir -p "$WHEELHOUSE"
    if ! pip_for_image download --quiet --no-index --find-links="$WHEELHOUSE" --dest="$WHEELHOUSE" \
        --constraint="$IMAGES_SRC/constraints.txt" --requirement="$requirements" >/dev/null 2>&1; then
        echo "== $image: downloading wheels into $WHEELHOUSE"
        if ! pip_for_image download --quiet --find-links="$WHEELHOUSE" --dest="$WHEELHOUSE" \
            --constraint="$IMAGES_SRC/constraints.txt" --requirement="$requirements" \
            >"$STATE/download-$image.log" 2>&1; then
            cat "$STATE/download-$image.log" >&2
            exit 1
        fi
    fi
    # modelhost's wheel goes in by its own build context, never from the shared wheelhouse.
    rm -f "$WHEELHOUSE"/modelhost-*.whl
}

base_image() {
    if buildah_ inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
        return
    fi
    if [ ! -s "$ROOTFS" ]; then
        echo "== base: mmdebstrap bookworm ($BASE_PACKAGES)"
        local partial=$STATE/rootfs-bookworm.partial.tar
        rm -f "$STATE"/rootfs-bookworm-*.tar
        # Its hooks print what dpkg and apt do: shown only when it fails.
        if ! mmdebstrap --quiet "${MMDEBSTRAP_OPTS[@]}" bookworm "$partial" \
            >"$STATE/mmdebstrap.log" 2>&1; then
            cat "$STATE/mmdebstrap.log" >&2
            exit 1
        fi
        mv "$partial" "$ROOTFS"
    fi
    echo "== base: importing $ROOTFS as $BASE_IMAGE"
    local container
    container=$(buildah_ from scratch)
    buildah_ add --quiet "$container" "$ROOTFS" / >/dev/null
    buildah_ config --cmd '["python3"]' \
        --label org.opencontainers.image.title=debian-python \
        --label "org.opencontainers.image.description=Debian bookworm with $BASE_PACKAGES" \
        "$container"
    buildah_ commit --quiet --rm --timestamp "$SOURCE_DATE_EPOCH" "$container" "$BASE_IMAGE" \
        >/dev/null
}

# A digest of everything the image is built from: an image carrying it as a label is current.
# The list it hashes stays in the build state, to compare when an image is rebuilt.
inputs_digest() {
    local image=$1 wheel=$2 inputs=$STATE/build-inputs-$1.txt
    {
        buildah_ inspect --type image --format '{{.FromImageID}}{{"\n"}}' "$BASE_IMAGE"
        echo "$SOURCE_DATE_EPOCH"
        sha256sum "$IMAGES_SRC/Containerfile" "$IMAGES_SRC/entrypoint.sh" \
            "$IMAGES_SRC/constraints.txt" "$IMAGES_SRC/requirements/$image.txt" | cut -d' ' -f1
        # The wheel's file list with each file's hash: its zip metadata varies between builds.
        "$PYTHON" -c 'import sys, zipfile
for info in zipfile.ZipFile(sys.argv[1]).infolist(): print(info.filename, info.CRC)' "$wheel"
    } >"$inputs"
    sha256sum "$inputs" | cut -d' ' -f1
}

build_image() {
    local image=$1 wheel=$2 started tag digest
    started=$(date +%s)
    tag=modelhost/modelhost-$image:$VERSION
    fill_wheelhouse "$image" "$wheel"
    digest=$(inputs_digest "$image" "$wheel")
    if [ "$(buildah_ inspect --type image --format '{{index .Docker.Config.Labels "dev.modelhost.build-inputs"}}' \
        "$tag" 2>/dev/null || true)" = "$digest" ]; then
        echo "== $image: $tag is up to date"
    else
        echo "== $image: building $tag"
        buildah_ bud --quiet --isolation chroot --timestamp "$SOURCE_DATE_EPOCH" \
            --build-arg "BASE=$BASE_IMAGE" --build-arg "IMAGE=$image" \
            --build-arg "MODELHOST_VERSION=$VERSION" --build-arg "PIP_VERSION=$PIP_VERSION" \
            --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" \
            --label "dev.modelhost.build-inputs=$digest" \
            --build-context "wheelhouse=$WHEELHOUSE" \
            --build-context "modelhost-wheel=$(dirname "$wheel")" \
            --file "$IMAGES_SRC/Containerfile" --tag "$tag" "$IMAGES_SRC" \
            >"$STATE/build-$image.log" 2>&1 || {
            cat "$STATE/build-$image.log" >&2
            echo "build_images.sh: building $tag failed (log: $STATE/build-$image.log)" >&2
            exit 1
        }
        # Without --layers nothing but the images is kept; drop the image this tag replaced.
        buildah_ rmi --prune >/dev/null 2>&1 || true
    fi
    echo "== $image: $tag $(buildah_ images --format '{{.Size}}' "$tag") in $(($(date +%s) - started)) s"
}

lock() {
    local wheel report all_requirements=$STATE/requirements-all.txt
    mkdir -p "$STATE"
    wheel=$(modelhost_wheel)
    report=$STATE/lock-report.json
    : >"$all_requirements"
    for image in tabular full torch llm; do local_requirements "$image" "$wheel" >>"$all_requirements"; done
    echo pip >>"$all_requirements"
    echo "== lock: resolving every image's requirements together"
    pip_for_image install --quiet --dry-run --ignore-installed --target "$STATE/lock-target" \
        --report "$report" --requirement "$all_requirements"
    "$PYTHON" - "$report" "$IMAGES_SRC/constraints.txt" <<'EOF'
import json
import sys

report, out = sys.argv[1], sys.argv[2]
pins = sorted(
    (item["metadata"]["name"].lower(), item["metadata"]["version"])
    for item in json.load(open(report))["install"]
    if item["metadata"]["name"].lower() != "modelhost"
)
with open(out, "w") as file:
    file.write("# Every package the images install, and the pip that installs them, pinned\n")
    file.write("# (scripts/build_images.sh lock writes this file).\n")
    file.write("# torch is the CPU build from the machine's wheel directory, never the CUDA one.\n")
    file.writelines(f"{name}=={version}\n" for name, version in pins)
print(f"== lock: {len(pins)} pins in {out}")
EOF
}

# Removes what this script makes, by name: MODELHOST_IMAGES_DIR may be a folder with more in it.
clean() {
    if [ -d "$STATE/storage" ] && command -v buildah >/dev/null 2>&1; then
        buildah_ rm --all >/dev/null 2>&1 || true
        buildah_ rmi --all --force >/dev/null 2>&1 || true
    fi
    rm -rf "$STATE/storage" "$STATE/run" "$WHEELHOUSE" "$STATE/modelhost-wheel" \
        "$STATE/lock-target" "$STATE"/rootfs-bookworm*.tar "$STATE"/*.log \
        "$STATE"/requirements-*.txt "$STATE"/build-inputs-*.txt "$STATE/lock-report.json"
    rmdir "$STATE" 2>/dev/null || true
    echo "== removed the build state in $STATE"
}

main() {
    local targets=()
    [ $# -gt 0 ] || usage
    for target in "$@"; do
        case "$target" in
            tabular | full | torch | llm) targets+=("$target") ;;
            all) targets+=(tabular full torch llm) ;;
            lock) lock; return ;;
            storage) echo "${STORAGE_OPTS[*]}"; return ;;
            clean) clean; return ;;
            -h | --help) usage ;;
            *) echo "build_images.sh: unknown target '$target'" >&2; usage ;;
        esac
    done
    require_tools
    mkdir -p "$STATE"
    echo "== buildah $(buildah --version | cut -d' ' -f3), storage: ${STORAGE_OPTS[*]}"
    echo "== SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH"
    local started
    started=$(date +%s)
    base_image
    echo "== base: $BASE_IMAGE ready in $(($(date +%s) - started)) s"
    local wheel
    wheel=$(modelhost_wheel)
    for target in "${targets[@]}"; do build_image "$target" "$wheel"; done
    buildah_ images --format '{{.Name}}:{{.Tag}} {{.Size}}' | grep modelhost || true
}

main "$@"
