#!/usr/bin/env bash
# Regenerates crates/interop/tests/fixtures: frugal writes an export of the seeded test model
# and its tokenizer, then transformers (with PyTorch, from .venv) scores and writes the rest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/python -c 'import torch, transformers, peft' || {
    echo "needs torch, transformers and peft in .venv: .venv/bin/pip install torch transformers peft" >&2
    exit 1
}
cargo test -p interop --test hf -- --ignored --exact write_fixtures
.venv/bin/python bench/interop/make_fixtures.py crates/interop/tests/fixtures
ls -la crates/interop/tests/fixtures
