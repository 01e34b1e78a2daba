#!/usr/bin/env python3
"""The `gguf` package (llama.cpp's own reader) on frugal's GGUF files.

    read FILE OUT.safetensors     every tensor dequantized to f32 under its GGUF name, shaped as
                                  llama.cpp sees it (rows, then the fastest dimension), with the
                                  metadata as JSON in the file's metadata field "gguf"
    quant F32FILE OTHER...        each OTHER (F16, BF16, Q8_0) holds, tensor by tensor, exactly
                                  the bytes gguf's quantizer makes of F32FILE's values; exits 1
                                  naming the first that differs
"""
import json
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize, quantize


def fields(reader):
    out = {}
    for name, f in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        v = f.contents()
        if isinstance(v, float):
            v = float(np.float32(v))
        out[name] = v
    return out


def read(path, out):
    from safetensors.numpy import save_file

    r = GGUFReader(path)
    tensors = {}
    for t in r.tensors:
        data = dequantize(t.data, t.tensor_type).astype(np.float32)
        tensors[t.name] = np.ascontiguousarray(data.reshape(list(reversed([int(d) for d in t.shape]))))
    save_file(tensors, out, metadata={"gguf": json.dumps(fields(r))})
    print(f"{path}: {len(tensors)} tensors, {len(r.fields)} fields read")


def quant(f32_path, *others):
    base = {t.name: t for t in GGUFReader(f32_path).tensors}
    for path in others:
        for t in GGUFReader(path).tensors:
            ref = base[t.name]
            if t.tensor_type == GGMLQuantizationType.F32:
                want = ref.data
            else:
                want = quantize(np.asarray(ref.data, dtype=np.float32), t.tensor_type)
            if want.tobytes() != np.asarray(t.data).tobytes():
                sys.exit(f"{path}: tensor {t.name} ({t.tensor_type.name}) differs from gguf's quantization")
        print(f"{path}: every tensor is gguf's own encoding of the f32 values")


if __name__ == "__main__":
    cmds = {"read": read, "quant": quant}
    if len(sys.argv) < 4 or sys.argv[1] not in cmds:
        sys.exit(__doc__)
    cmds[sys.argv[1]](*sys.argv[2:])
