#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-server from the sources vendored in the
# llama-cpp-python sdist (the package index has no llama.cpp of its own), into
# target/llama.cpp/build/bin. Needs cmake (installed into .venv from the index when missing).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=target/llama.cpp
bin=$out/build/bin
if [ -x "$bin/llama-bench" ] && [ -x "$bin/llama-server" ]; then
    echo "llama.cpp already built in $bin"; exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import cmake' 2>/dev/null || .venv/bin/pip install -q cmake
mkdir -p "$out"
if [ ! -d "$out/src" ]; then
    .venv/bin/pip download -q --no-binary llama-cpp-python --no-deps llama-cpp-python -d "$out/sdist"
    tar -xzf "$out"/sdist/llama_cpp_python-*.tar.gz -C "$out"
    mv "$out"/llama_cpp_python-*/vendor/llama.cpp "$out/src"
    ls "$out"/sdist/ > "$out/VERSION"
fi
cmake=.venv/bin/cmake
$cmake -S "$out/src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >/dev/null
$cmake --build "$out/build" --target llama-bench llama-server -j "$(nproc)"
echo "built $(cat "$out/VERSION") into $bin"
