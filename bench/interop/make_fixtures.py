#!/usr/bin/env python3
"""Writes the interop crate's test fixtures with the real readers (run by
scripts/interop-fixtures.sh, after the Rust side has written fixtures/export and
fixtures/tokenizer.json):

    export-logits.safetensors   transformers' logits on the frugal export in fixtures/export
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import hf_readers  # noqa: E402


def main(fixtures):
    hf_readers.logits(os.path.join(fixtures, "export"),
                      os.path.join(fixtures, "export-logits.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
