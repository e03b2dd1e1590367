#!/usr/bin/python3
"""Writes the safetensors fixtures used by tests/test_safetensors.c.

Run with the system Python that has PyTorch:  /usr/bin/python3 tests/gen_safetensors.py

There is no `safetensors` package here, so the format is written by hand:
  u64 little-endian header length N, N bytes of JSON, then the data section.

Outputs (tests/fixtures/safetensors/):
  mixed.safetensors     F32, F16, BF16 (and I64, a scalar, an empty tensor),
                        with __metadata__. Two F32 tensors sit at byte offsets
                        that are not multiples of 4, as the format allows, so
                        the reader's handling of misaligned data is exercised.
  expected.safetensors  for every floating tensor of mixed.safetensors, the
                        float32 values PyTorch's `.float()` gives, same names.
"""
import json
import os
import struct

import torch

OUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "safetensors")

DTYPE_NAMES = {
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
}


def raw_bytes(t):
    """Little-endian bytes of t; bf16 has no numpy dtype, so go through int16."""
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None, align_header=True):
    """tensors: list of (name, tensor) in data-section order, no padding between
    them (so odd-sized tensors push their successors off alignment). JSON keys
    are written in sorted order, which differs from the data order on purpose."""
    entries = {}
    blobs = []
    offset = 0
    for name, t in tensors:
        data = raw_bytes(t)
        entries[name] = {
            "dtype": DTYPE_NAMES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(entries):
        header[name] = entries[name]
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    if align_header:
        text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)


def f16_from_bits(bits):
    return torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.float16)


def bf16_from_bits(bits):
    return torch.tensor(bits, dtype=torch.int32).to(torch.int16).view(torch.bfloat16)


def main():
    torch.manual_seed(1234)
    os.makedirs(OUT_DIR, exist_ok=True)

    f16_special = f16_from_bits([
        0x0000, 0x8000,          # +0, -0
        0x0001, 0x8001,          # smallest subnormals, 2^-24
        0x0002, 0x0155, 0x03FF,  # subnormals up to the largest
        0x83FF, 0x0200,
        0x0400, 0x8400,          # smallest normals, 2^-14
        0x3C00, 0xBC00, 0x3555,  # 1, -1, ~1/3
        0x3BFF, 0x3C01,          # neighbours of 1
        0x7BFF, 0xFBFF,          # +-65504, the largest finite
        0x7800, 0x5640,          # 32768, 100
        0x7C00, 0xFC00,          # +-inf
        0x7E00, 0xFE00,          # quiet NaNs
        0x7C01, 0x7D55,          # signalling NaN payloads
    ])
    f16_random = (torch.randn(4, 6) * 1000).to(torch.float16)
    f16_odd = torch.tensor([0.5, -2.25, 1e-6], dtype=torch.float16)

    bf16_special = bf16_from_bits([
        0x0000, 0x8000, 0x3F80, 0xBF80,  # +-0, +-1
        0x0001, 0x807F,                  # bf16 subnormals
        0x0080, 0x7F7F, 0xFF7F,          # smallest normal, +-largest finite
        0x7F80, 0xFF80, 0x7FC0, 0x7F81,  # +-inf, NaNs
        0x4049,                          # ~pi
    ]).reshape(2, 7)
    bf16_random = torch.randn(3, 4).to(torch.bfloat16)

    f32_weight = torch.randn(3, 5)
    f32_misaligned = torch.tensor([[1.5, -0.0], [3.0e38, 1.0e-40]], dtype=torch.float32)
    f32_scalar = torch.tensor(2.75, dtype=torch.float32)
    f32_empty = torch.zeros(0, 3, dtype=torch.float32)
    i64_steps = torch.tensor([0, -1, 2**40, 7], dtype=torch.int64)

    # Data-section order. f16.odd is 6 bytes, so f32.misaligned starts at an
    # offset = 2 (mod 4); f32.scalar follows it, also misaligned.
    tensors = [
        ("f32.weight", f32_weight),
        ("f16.special", f16_special),
        ("f16.odd", f16_odd),
        ("f32.misaligned", f32_misaligned),
        ("f32.scalar", f32_scalar),
        ("bf16.special", bf16_special),
        ("f16.random", f16_random),
        ("bf16.random", bf16_random),
        ("f32.empty", f32_empty),
        ("i64.steps", i64_steps),
    ]
    metadata = {"format": "pt", "producer": "gen_safetensors.py", "note": "caf\u00e9 \u2713"}
    write_safetensors(os.path.join(OUT_DIR, "mixed.safetensors"), tensors, metadata)

    expected = [(name, t.float()) for name, t in tensors if t.is_floating_point()]
    write_safetensors(os.path.join(OUT_DIR, "expected.safetensors"), expected,
                      {"source": "mixed.safetensors", "torch": torch.__version__})


if __name__ == "__main__":
    main()
