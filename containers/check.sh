#!/usr/bin/env bash
# End-to-end container check without any image registry, run as a site would:
#   1. a local Debian base image (containers/make-base-image.sh: debootstrap + docker import)
#   2. docker build with that base, torch 2.13.0 from a local wheel folder (served on
#      127.0.0.1 to the build), the offline template fallback
#   3. `docker run --network none` as a non-root user, the BIDS input mounted read-only:
#      simulate a dataset, participant level, group level
#   4. the same two levels outside the container (the host's bids_genbrain), and a comparison:
#      the same output names, every output valid (NIfTI, JSON, TSV, pybids derivatives),
#      GeneratedBy.Container filled, the input untouched, files owned by the container user
# Usage: containers/check.sh [WORK_DIR]            (default: a new folder under $TMPDIR)
# Environment (defaults in brackets):
#   IMAGE [genbrain:check]   BASE_IMAGE [genbrain-base:bookworm; built when absent]
#   TORCH_WHEELS [pip's find-links folder holding torch-2.13.0*.whl]  WHEEL_PORT [8765]
#   TEMPLATES [fallback]     N_SUBJECTS [8]    STEPS [100]    NATIVE [1: also run on the host]
#   SKIP_BUILD [0]  ONLY_BUILD [0]
#   STAGES ["simulate participant group native-participant native-group compare"]
#   (build only, run only, or some stages: each part fits a shared 15-minute compute slot)
#   DOCKER_BUILD_ARGS [extra arguments of docker build]
# Timings of every phase are printed at the end and written to WORK_DIR/timings.tsv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/genbrain-check.XXXXXX")}
IMAGE=${IMAGE:-genbrain:check}
BASE_IMAGE=${BASE_IMAGE:-genbrain-base:bookworm}
TEMPLATES=${TEMPLATES:-fallback}
N_SUBJECTS=${N_SUBJECTS:-8}
STEPS=${STEPS:-100}
NATIVE=${NATIVE:-1}
WHEEL_PORT=${WHEEL_PORT:-8765}
UID_IN=1000  # the image's user (Dockerfile: useradd --uid 1000 genbrain)
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
TIMINGS="$WORK/timings.tsv"
[ -f "$TIMINGS" ] || printf 'phase\tseconds\n' > "$TIMINGS"
die() { echo "check.sh: error: $*" >&2; exit 2; }
phase() {  # phase NAME COMMAND...: run and time one phase
    local name=$1; shift
    local t0; t0=$(date +%s)
    echo "== $name"
    "$@"
    printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" | tee -a "$TIMINGS"
}

docker info >/dev/null 2>&1 || die "no docker daemon; start one (as root: dockerd &)"
export DOCKER_BUILDKIT=${DOCKER_BUILDKIT:-0}  # the legacy builder needs no buildx plugin

# --- 1. base image ------------------------------------------------------------------------
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    [ "$BASE_IMAGE" = genbrain-base:bookworm ] || die "base image $BASE_IMAGE not found"
    phase base-image "$ROOT/containers/make-base-image.sh" "$BASE_IMAGE"
fi

# --- 2. build -----------------------------------------------------------------------------
find_wheels() {
    local dirs="${TORCH_WHEELS:-} ${PIP_FIND_LINKS:-} $(pip config get global.find-links 2>/dev/null || true)"
    for d in $dirs; do
        d=${d#file://}
        if compgen -G "$d/torch-2.13.0*.whl" >/dev/null; then echo "$d"; return; fi
    done
    return 1
}
SERVER=
trap '[ -z "$SERVER" ] || kill "$SERVER" 2>/dev/null || true' EXIT
build() {
    local wheels args=()
    if wheels=$(find_wheels); then
        # closes every inherited descriptor first: a lock held by the caller (a job slot)
        # must not outlive this script in the server
        python3 -c 'import os, runpy, sys; os.closerange(3, 65536); sys.argv = ["http.server",
            *sys.argv[1:]]; runpy.run_module("http.server", run_name="__main__")' \
            "$WHEEL_PORT" --bind 127.0.0.1 --directory "$wheels" >"$WORK/wheel-server.log" 2>&1 &
        SERVER=$!
        sleep 1
        args+=(--network host --build-arg "TORCH_FIND_LINKS=http://127.0.0.1:$WHEEL_PORT/")
        echo "torch wheel from $wheels (served on 127.0.0.1:$WHEEL_PORT)"
    else
        echo "no local torch 2.13.0 wheel: the build uses the public PyTorch index"
    fi
    docker build "${args[@]}" --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        --build-arg "TEMPLATES=$TEMPLATES" --build-arg "IMAGE_TAG=$IMAGE" \
        ${DOCKER_BUILD_ARGS:-} -t "$IMAGE" "$ROOT"
    if [ -n "$SERVER" ]; then kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=; fi
}
if [ "${SKIP_BUILD:-0}" != 1 ]; then
    phase build build
fi
if [ "${ONLY_BUILD:-0}" = 1 ]; then
    echo "== image $IMAGE built (ONLY_BUILD=1: nothing run)"
    exit 0
fi

# --- 3. run in the container, offline, non-root, input read-only ---------------------------
# STAGES picks what runs (default all, in order); each stage reuses WORK_DIR's earlier ones
STAGES=${STAGES:-"simulate participant group native-participant native-group compare"}
want() { [[ " $STAGES " == *" $1 "* ]]; }
RUN=(docker run --rm --network none)
REFERENCE=derivatives/groundtruth/space-MNI152NLin6Asym_res-4_label-GM_desc-diagnosis_effect.nii.gz
PARTICIPANT=(participant --sloppy --resolution 4 --nprocs 2 --omp-nthreads 1 --seed 0)
GROUP=(group --resolution 4 --preset tiny --steps "$STEPS" --batch-size 8 --n-synthetic 16
       --sampling-steps 10 --condition age sex --contrast diagnosis --seed 0 --omp-nthreads 2)
input_hash() { (cd "$WORK/bids" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }
in_container() {  # a level in the container: offline, non-root, the input read-only
    local before; before=$(input_hash)
    phase "container-$1" "${RUN[@]}" -v "$WORK/bids:/data:ro" -v "$WORK/out-container:/out" \
        "$IMAGE" /data /out "${@:2}" -w /out/work
    [ "$(input_hash)" = "$before" ] || die "the input dataset changed"
}
if want simulate; then
    rm -rf "$WORK/bids" "$WORK/sim" "$WORK/out-container" "$WORK/out-native"
    mkdir -p "$WORK/sim"
    chown "$UID_IN" "$WORK/sim"
    phase simulate "${RUN[@]}" -v "$WORK/sim:/sim" --entrypoint genbrain "$IMAGE" simulate \
        /sim/bids --n-subjects "$N_SUBJECTS" --n-sites 1 --modality T1w --fast --seed 0 --quiet
    mv "$WORK/sim/bids" "$WORK/bids" && rmdir "$WORK/sim"
fi
[ -f "$WORK/bids/$REFERENCE" ] || die "no simulated dataset in $WORK/bids (run the simulate stage)"
if want participant; then
    [ "$(docker run --rm --network none --entrypoint id "$IMAGE" -u)" = "$UID_IN" ] \
        || die "$IMAGE does not run as uid $UID_IN"
    rm -rf "$WORK/out-container"
    mkdir -p "$WORK/out-container"
    chown "$UID_IN" "$WORK/out-container"
    in_container participant "${PARTICIPANT[@]}"
fi
if want group; then  # from a clean slate (an earlier group run may have used other options)
    rm -rf "$WORK/out-container/"{group,synthetic,group.html,work/group}
    in_container group "${GROUP[@]}" --reference-map "/data/$REFERENCE"
fi

# --- 4. the same outside the container, then compare ---------------------------------------
if [ "$NATIVE" = 1 ] && { want native-participant || want native-group; }; then
    command -v bids_genbrain >/dev/null || die "NATIVE=1 needs bids_genbrain on PATH (or NATIVE=0)"
    export GENBRAIN_TEMPLATES=$TEMPLATES
    if want native-participant; then
        rm -rf "$WORK/out-native"
        phase native-participant bids_genbrain "$WORK/bids" "$WORK/out-native" "${PARTICIPANT[@]}" \
            -w "$WORK/out-native/work"
    fi
    if want native-group; then
        rm -rf "$WORK/out-native/"{group,synthetic,group.html,work/group}
        phase native-group bids_genbrain "$WORK/bids" "$WORK/out-native" "${GROUP[@]}" \
            --reference-map "$WORK/bids/$REFERENCE" -w "$WORK/out-native/work"
    fi
fi
if want compare; then
    NATIVE_MOUNT=()
    [ "$NATIVE" = 1 ] && NATIVE_MOUNT=(-v "$WORK/out-native:/native:ro")
    phase compare "${RUN[@]}" -v "$WORK/out-container:/out:ro" "${NATIVE_MOUNT[@]}" \
        -v "$ROOT/containers:/checks:ro" --entrypoint python "$IMAGE" \
        /checks/compare_outputs.py /out ${NATIVE_MOUNT:+/native} --tag "$IMAGE" --uid "$UID_IN"
    echo "== container check passed"
fi
echo "== timings (s):"
column -t "$TIMINGS"
