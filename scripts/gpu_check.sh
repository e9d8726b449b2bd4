#!/usr/bin/env bash
# The GPU check kit (benchmarks/gpu_check.py) on a machine where embedforge is not installed.
#
#   scripts/gpu_check.sh wheels             # where pip reaches an index: the wheels a bare GPU box lacks -> .whl/
#   scripts/gpu_check.sh run --out DIR      # on the GPU box (no network): stage them and the package, run the kit
#   scripts/gpu_check.sh run --tiny --out DIR
#
# A bare GPU box has torch, triton, sentence-transformers, transformers and the rest of the kit's needs, but not
# embedforge's own pure-Python dependencies that the kit imports (pydantic for the train config, datasets for
# sentence-transformers' mine_hard_negatives). `wheels` downloads those, at the versions installed here, for
# CPython 3.12 on manylinux x86_64 (a few MiB; the working tree plus .whl/ must stay under 64 MiB). `run`
# installs .whl/ into a private directory (never into the box's site-packages), copies engine/ and kernels/
# there as the `embedforge` package when it is not importable, and runs the kit. `.whl/` is git-ignored: name
# it in whatever carries the tree to the GPU box. EMBEDFORGE_STAGE=1 stages the package even where one is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
WHEELS=(pydantic pydantic-core annotated-types typing-inspection datasets dill multiprocess)

case "${1:-}" in
wheels)
    LOCAL_PY=${LOCAL_PYTHON:-.venv/bin/python}
    rm -rf .whl && mkdir -p .whl
    pins=()
    for name in "${WHEELS[@]}"; do
        version=$("$LOCAL_PY" -c "from importlib.metadata import version; print(version('$name'))")
        pins+=("$name==$version")
    done
    "$LOCAL_PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${pins[@]}"
    git describe --always --dirty >.whl/GIT_SHA 2>/dev/null || echo unknown >.whl/GIT_SHA
    du -sh .whl
    ls .whl
    ;;
run)
    shift
    SITE=${EMBEDFORGE_SITE:-/tmp/embedforge-site}
    mkdir -p "$SITE"
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl ||
            echo "gpu_check.sh: .whl/ did not install (built for CPython 3.12 x86_64); the kit skips what needs it" >&2
    fi
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    if [ "${EMBEDFORGE_STAGE:-0}" = 1 ] || ! "$PY" -P -c "import embedforge.kernels" 2>/dev/null; then
        rm -rf "$SITE/embedforge"
        cp -r engine "$SITE/embedforge"
        cp -r kernels "$SITE/embedforge/kernels"
    fi
    if [ -z "${EMBEDFORGE_GIT_SHA:-}" ]; then
        EMBEDFORGE_GIT_SHA=$(git describe --always --dirty 2>/dev/null || cat .whl/GIT_SHA 2>/dev/null || echo unknown)
        export EMBEDFORGE_GIT_SHA
    fi
    export PYTHONUNBUFFERED=1
    exec "$PY" -P benchmarks/gpu_check.py "$@"
    ;;
*)
    sed -n '2,6p' "$0" >&2
    exit 2
    ;;
esac
