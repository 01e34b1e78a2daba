#!/usr/bin/env bash
# The test command (README, CI): formatting, module cycles, lints, every test of the workspace, the
# distributed tests on Open MPI, and the kernels again on the optional OpenBLAS backend.
# Installs what the tests need when missing: libopenblas-dev, chromium, Open MPI and libclang
# (Debian), and tokenizers, tiktoken, openai, transformers, jinja2 and gguf in .venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n== %s\n' "$*"; }

if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
    step "installing libopenblas-dev (for the openblas feature's tests)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q libopenblas-dev
fi

# The pages' browser tests drive headless Chromium over the DevTools protocol.
if ! command -v chromium >/dev/null 2>&1; then
    step "installing chromium (for the pages' browser tests)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium
fi

# Distributed training's tests run real Open MPI (mpirun -np 2); the mpi crate's bindings are
# generated with libclang at build time.
if ! dpkg -s libopenmpi-dev openmpi-bin libclang-dev >/dev/null 2>&1; then
    step "installing Open MPI and libclang (for the distributed tests)"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q libopenmpi-dev openmpi-bin libclang-dev
fi

# The tokenizer agreement test compares ids with HF tokenizers and tiktoken (small wheels); the
# server's tests drive it with the official openai client; the export's tests read it with
# transformers' tokenizer and chat template (jinja2; no PyTorch: its logits come from fixtures)
# and with the gguf package.
if ! .venv/bin/python -c 'import tokenizers, tiktoken, openai, transformers, jinja2, gguf' >/dev/null 2>&1; then
    step "installing tokenizers, tiktoken, openai, transformers, jinja2 and gguf into .venv (for the tokenizer, server and export tests)"
    [ -x .venv/bin/python ] || python3 -m venv .venv
    .venv/bin/pip install -q tokenizers tiktoken openai transformers jinja2 gguf
fi

step "cargo fmt --check"
cargo fmt --all -- --check
step "module cycles (Cargo keeps crates one-way; this keeps each crate's modules one-way)"
python3 scripts/module-cycles.py --self-test
python3 scripts/module-cycles.py
step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo clippy --features mpi,nccl (the distributed backends; NCCL without CUDA installed)"
cargo clippy -p frugal-cli --features mpi,nccl --all-targets -- -D warnings
step "cargo test --workspace"
cargo test --workspace
step "distributed tests: mpirun -np 2, on a binary built with the mpi and nccl features"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cargo test -p frugal-cli --features mpi,nccl --test distributed -- --test-threads=1
step "cargo test -p tensor --features openblas"
cargo test -p tensor --features openblas
