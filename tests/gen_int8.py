#!/usr/bin/python3
"""Writes the int8-compute fixtures under tests/fixtures/int8/<case>/.

Each case directory holds
  f32/model.safetensors  the float32 source model (random, non-trivial weights as
                         in gen_parity.py; __metadata__ {"format": "pt"})
  f32/config.json        its config (timm-style or HF-style)
  model.safetensors      the int8 copy, byte for byte what
                         `vit quantize -m f32 -o model.safetensors --dtype int8` writes:
                         the encoder blocks' linear-layer matrices as I8 with an F32
                         "<name>_scale" [rows, groups] right after each, everything else
                         F32, __metadata__ "format", "config" (f32/config.json's text)
                         and "quantization"; loads without any file beside it
  expected.safetensors   F32 input [B,3,S,S] (B = 3, standard normal, see "Inputs"),
                         logits_int8_emul [B,C], block0_int8_emul [B,T,D] (residual
                         stream after block 0), logits_dequant [B,C], logits_f32 [B,C]
  case.json              layout, sizes, scale shapes, notes
and, once, linear.safetensors: single-layer (kernel) cases, see linear_fixture.

The int8 scheme (weights as weights/quantize.c stores them; activations
quantised dynamically per row, i.e. per token, and per group of the weights'
groups along it, at the input of every quantised linear layer y = x W^T + b):
  weights: group = 32 weights along a row (the whole row when cols % 32 != 0),
           s_w = float32(max|w| / 127) (1 when the group is all zero),
           q_w = clamp(rint(float32(w * float32(1 / s_w))), -127, 127)
  inputs:  per group g of row m: amax = max_{k in g} |x[m,k]| (float32);
           amax == 0: q_x = 0, s_x = 1; else inv = min(float32(127 / amax), FLT_MAX),
           s_x[m,g] = float32(amax / 127), q_x = clamp(rint(float32(x * inv)), -127, 127)
  output:  y[m,n] = b[n] + sum_g (s_w[n,g] s_x[m,g]) * (sum_{k in g} q_x[m,k] q_w[n,k])
for all four of each block's linear layers (qkv, the attention output
projection, fc1, fc2). rint is round-half-to-even. (vitc sums the groups in
float32, one fused multiply-add per group, vit/kernels_int8.h; the emulation
sums them in float64, the ideal the tests hold vitc to within 1e-4.) The timm qkv matrix is the fused [3D, D] one; HF's
query/key/value are separate tensors with their own scales, which is the same
thing row by row. Everything else (patch embedding, LayerNorm, softmax, GELU,
residual adds, head) is the ordinary model.

logits_int8_emul / block0_int8_emul: that scheme with the forward in float64
(inputs rounded to float32 before each activation quantisation, so every
quantisation step is the exact float32 one; integer inner sums exact), i.e. the
ideal result of the scheme. logits_dequant: the float32 model run on the
dequantised weights float32(q_w) * s_w (what vitc computes with int8 files
without an int8 path). logits_f32: the float32 source model.

Inputs: rounding x * 127 / amax is discontinuous, so an implementation whose
float32 activations differ from the float64 emulation by a few ulps can round
one of the ~10^4 quantised activations per image the other way, which moves
the logits by up to ~2e-2 (a single flip). The B images are therefore the
ones, out of CANDIDATES standard-normal draws, whose quantised activations stay
farthest from a rounding boundary over the whole forward (about 2.5e-4 steps,
i.e. ~16 float32 ulps of the row's amax, against ~2e-5 for a typical draw);
perturbing every activation by up to 4 ulps of its row's amax then flips
nothing and moves the logits by ~2e-6, where the first draws move by ~2e-2.
The script prints these checks.

Deterministic: every case draws from its own torch.Generator with a fixed seed.

Usage: /usr/bin/python3 tests/gen_int8.py [--out DIR] [--vit build/vit]
  --vit: also run `vit quantize --dtype int8` on each f32 model and require the
         result to be byte-identical to model.safetensors.
"""

import argparse
import copy
from collections import OrderedDict
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit import RefViT, save_safetensors, load_safetensors  # noqa: E402
from gen_parity import timm_config, hf_config, NUMBER_WORDS, state_dict_for  # noqa: E402

BATCH = 3
CANDIDATES = 1024  # inputs drawn; the BATCH farthest from rounding boundaries kept
GROUP = 32  # WEIGHTS_INT8_GROUP
SCALE_SUFFIX = "_scale"  # WEIGHTS_SCALE_SUFFIX
# vit/model.c vit_model_quantize's "quantization" metadata value for int8
QUANT_NOTE = ("int8: encoder linear-layer weights, symmetric, one float32 scale per "
              "32 weights of a row (<name>_scale); activations quantised per row and group at run time")

CASES = [
    dict(name="timm_d64_h4", seed=1501, layout="timm",
         model=dict(embed_dim=64, depth=2, num_heads=4, mlp_dim=128, patch_size=4, img_size=16,
                    num_classes=10, eps=1e-6),
         config="timm", zero_group=("blocks.0.mlp.fc1.weight", 3, 1),
         notes="timm layout, fused qkv [192, 64]; every matrix has cols % 32 == 0 "
               "(groups of 32: 2 per row for qkv/proj/fc1, 4 for fc2). "
               "blocks.0.mlp.fc1.weight row 3, group 1 (cols 32..63) is all zero: scale 1.0, "
               "q 0. 4 heads (dh 16) from config.json model_args; 17 tokens."),
    dict(name="hf_vit_d48_h3", seed=1502, layout="hf_vit",
         model=dict(embed_dim=48, depth=2, num_heads=3, mlp_dim=96, patch_size=4, img_size=16,
                    num_classes=5, eps=1e-12),
         config="hf_vit",
         notes="HF ViT layout: separate query/key/value [48, 48] each with its own scales. "
               "D = 48 is not a multiple of 32, so query/key/value/attention.output.dense/"
               "intermediate.dense have one scale per row ([rows, 1]); output.dense "
               "(cols 96) has groups of 32 ([48, 3]). 3 heads (dh 16), eps 1e-12; 17 tokens."),
]


# ------------------------------------------------------------ quantisation

def is_linear_weight(name, t):
    """weights/quantize.c is_linear_weight."""
    in_block = "blocks." in name or "encoder.layer." in name
    return in_block and t.dim() == 2 and name.endswith(".weight") and len(name) > len(".weight")


def quantize_matrix(w):
    """weights/quantize.c quantize_groups, in float32: returns (int8 [rows, cols],
    float32 scales [rows, groups])."""
    w = np.ascontiguousarray(w.detach().cpu().numpy(), dtype=np.float32)
    rows, cols = w.shape
    group = GROUP if cols % GROUP == 0 else cols
    g = w.reshape(rows, cols // group, group)
    max_abs = np.abs(g).max(axis=-1)
    with np.errstate(divide="ignore"):
        scale = np.where(max_abs > 0, max_abs / np.float32(127.0), np.float32(1.0)).astype(np.float32)
        inv = (np.float32(1.0) / scale).astype(np.float32)
    v = np.rint((g * inv[..., None]).astype(np.float32))  # rint: half to even, like nearbyintf
    q = np.clip(v, -127, 127).astype(np.int8).reshape(rows, cols)
    assert scale.dtype == np.float32
    return torch.from_numpy(q), torch.from_numpy(scale)


def dequantize(q, s):
    rows, cols = q.shape
    group = cols // s.shape[1]
    return (q.float().reshape(rows, s.shape[1], group) * s[..., None]).reshape(rows, cols)


def quantize_state_dict(sd):
    """weights_quantize(WEIGHTS_QUANT_INT8): same order, scales right after their matrix."""
    out = OrderedDict()
    for name, t in sd.items():
        if is_linear_weight(name, t):
            q, s = quantize_matrix(t)
            out[name] = q
            out[name + SCALE_SUFFIX] = s
        else:
            out[name] = t.float()
    return out


def fused_quantised(qsd, layout, depth):
    """Per block: {role: (q int64 [N, K], s float32 [N, G])} in the timm roles, HF
    query/key/value concatenated row-wise into the fused qkv."""
    blocks = []
    for i in range(depth):
        if layout == "timm":
            p = f"blocks.{i}."
            names = {"qkv": [p + "attn.qkv.weight"], "proj": [p + "attn.proj.weight"],
                     "fc1": [p + "mlp.fc1.weight"], "fc2": [p + "mlp.fc2.weight"]}
        else:
            p = f"{layout[3:]}.encoder.layer.{i}."
            names = {"qkv": [p + f"attention.attention.{n}.weight" for n in ("query", "key", "value")],
                     "proj": [p + "attention.output.dense.weight"],
                     "fc1": [p + "intermediate.dense.weight"], "fc2": [p + "output.dense.weight"]}
        blk = {}
        for role, ns in names.items():
            q = torch.cat([qsd[n] for n in ns], 0).long()
            s = torch.cat([qsd[n + SCALE_SUFFIX] for n in ns], 0)
            blk[role] = (q, s)
        blocks.append(blk)
    return blocks


# ------------------------------------------------------------ the int8 forward

MARGINS = None  # a list: quantize_rows appends each call's rounding margins


def quantize_rows(x, gs):
    """Dynamic activation quantisation per row and per group of gs inputs along
    it (the weights' groups), every step in float32. x: [..., K] (any float
    dtype; rounded to float32 first). Returns (q float64 integers [..., K],
    s_x float32 [..., K // gs]). With MARGINS a list, appends the per-image [B]
    smallest distance, in quantisation steps, of x * 127 / amax (float64) from
    a rounding boundary (a half-integer)."""
    lead, K = x.shape[:-1], x.shape[-1]
    xg = x.reshape(*lead, K // gs, gs)
    if MARGINS is not None:
        x64 = xg.double()
        a64 = x64.abs().amax(dim=-1, keepdim=True)
        r = (x64 * 127 / torch.where(a64 == 0, torch.ones_like(a64), a64)).abs()
        d = (r - torch.floor(r) - 0.5).abs()
        MARGINS.append(d.reshape(d.shape[0], -1).amin(dim=1))
    x32 = xg.float()
    amax = x32.abs().amax(dim=-1, keepdim=True)
    zero = amax == 0
    safe = torch.where(zero, torch.ones_like(amax), amax)
    inv = torch.tensor(127.0, dtype=torch.float32) / safe          # float32 division
    inv = inv.clamp(max=torch.finfo(torch.float32).max)              # qinv: never inf
    s_x = torch.where(zero, torch.ones_like(amax), safe / torch.tensor(127.0, dtype=torch.float32))
    q = torch.round(x32 * inv).clamp(-127, 127)                      # float32 product, half-even
    q = torch.where(zero, torch.zeros_like(q), q)
    return q.double().reshape(*lead, K), s_x.reshape(*lead, K // gs)


def int8_linear(x, qw, sw, b, dtype):
    """y = b + sum_g (s_w[:, g] * s_x[:, g]) * (integer sum over group g); the
    integer sums are exact (float64 holds them: |sum| <= 127^2 * K), the
    combination in dtype."""
    N, K = qw.shape
    G = sw.shape[1]
    gs = K // G
    qx, s_x = quantize_rows(x, gs)
    lead = qx.shape[:-1]
    qx = qx.reshape(-1, G, gs)                                         # [M, G, gs]
    isum = torch.einsum("mgk,ngk->mng", qx, qw.double().reshape(N, G, gs))  # exact integers
    step = sw.to(dtype).unsqueeze(0) * s_x.reshape(-1, 1, G).to(dtype)  # [M, N, G]
    y = b.to(dtype) + (isum.to(dtype) * step).sum(-1)
    return y.reshape(*lead, N)


def forward_int8(m, qblocks, x, dtype=torch.float64):
    """RefViT.forward with the four encoder linears replaced by int8_linear;
    everything else in dtype. Returns (logits, block0)."""
    P = lambda t: t.detach().to(dtype)
    D, H = m.embed_dim, m.num_heads
    dh = D // H
    x = x.to(dtype)
    B = x.shape[0]
    t = F.conv2d(x, P(m.patch_w), P(m.patch_b), stride=m.patch_size).flatten(2).transpose(1, 2)
    pre = [P(m.cls_token).expand(B, -1, -1)]
    if m.dist_token is not None:
        pre.append(P(m.dist_token).expand(B, -1, -1))
    h = torch.cat(pre + [t], 1)
    assert h.shape[1] == m.pos_embed.shape[1], "run at the native size only"
    h = h + P(m.pos_embed)
    ln = lambda v, w, bb: F.layer_norm(v, (D,), P(w), P(bb), m.eps)
    block0 = None
    for i, blk in enumerate(m.blocks):
        qb = qblocks[i]
        y = ln(h, blk.norm1_w, blk.norm1_b)
        T = y.shape[1]
        qkv = int8_linear(y, *qb["qkv"], blk.qkv_b, dtype)
        qkv = qkv.reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = ((q * dh ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        o = (a @ v).transpose(1, 2).reshape(B, T, D)
        h = h + int8_linear(o, *qb["proj"], blk.proj_b, dtype)
        y = ln(h, blk.norm2_w, blk.norm2_b)
        f = F.gelu(int8_linear(y, *qb["fc1"], blk.fc1_b, dtype))
        h = h + int8_linear(f, *qb["fc2"], blk.fc2_b, dtype)
        if i == 0:
            block0 = h
    h = ln(h, m.norm_w, m.norm_b)
    out = F.linear(h[:, 0], P(m.head_w), P(m.head_b))
    if m.dist_head:
        out = (out + F.linear(h[:, 1], P(m.head_dist_w), P(m.head_dist_b))) / 2
    return out, block0


# ------------------------------------------------------------ vitc's file format

def _json_string(s):
    """weights/safetensors.c text_json_string: escapes '"' and '\\', control
    bytes as \\u00xx, everything else (UTF-8 included) as is."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_DTYPE = {torch.float32: ("F32", "<f4"), torch.int8: ("I8", "i1")}


def write_like_vitc(path, tensors, meta):
    """weights_write: metadata first (in the given order), tensors in order,
    compact JSON, header padded with spaces to a multiple of 8 (the header
    itself, not 8 + header: 8 is a multiple of 8 anyway)."""
    parts = ["{"]
    if meta:
        parts.append('"__metadata__":{')
        parts.append(",".join(_json_string(k) + ":" + _json_string(v) for k, v in meta))
        parts.append("}," if tensors else "}")
    entries, blobs, off = [], [], 0
    for name, t in tensors.items():
        st, npd = _DTYPE[t.dtype]
        raw = t.contiguous().numpy().astype(npd, copy=False).tobytes()
        shape = ",".join(str(d) for d in t.shape)
        entries.append(f'{_json_string(name)}:{{"dtype":"{st}","shape":[{shape}],'
                       f'"data_offsets":[{off},{off + len(raw)}]}}')
        blobs.append(raw)
        off += len(raw)
    parts.append(",".join(entries))
    parts.append("}")
    header = "".join(parts).encode("utf-8")
    header += b" " * ((8 - len(header) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        for raw in blobs:
            f.write(raw)


def build_config(kind, m):
    if kind == "timm":
        return timm_config("vit_int8_fixture_patch4_16", m.num_classes,
                           {"embed_dim": m.embed_dim, "depth": m.depth, "num_heads": m.num_heads,
                            "mlp_ratio": m.mlp_dim / m.embed_dim, "patch_size": m.patch_size,
                            "img_size": m.img_size}, m.img_size)
    if kind == "hf_vit":
        return hf_config("ViTForImageClassification", "vit", m,
                         [f"class {NUMBER_WORDS[i]}" for i in range(m.num_classes)])
    raise ValueError(kind)


def compare_with_vit(vit, f32_dir, int8_path):
    """vit quantize of the f32 model must give our file byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "q.safetensors")
        r = subprocess.run([vit, "quantize", "-m", f32_dir, "-o", out, "--dtype", "int8"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"vit quantize failed: {r.stderr}")
        ours, theirs = open(int8_path, "rb").read(), open(out, "rb").read()
        a, ma = load_safetensors(int8_path)
        b, mb = load_safetensors(out)
        assert list(a) == list(b), "tensor names/order differ"
        for k in a:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            assert torch.equal(a[k], b[k]), f"{k}: values differ from vit quantize"
        assert ma == mb, "metadata differs"
        assert ours == theirs, "files differ in bytes (header formatting?)"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(here, "fixtures", "int8"))
    ap.add_argument("--vit", default=None, help="vit binary: check against vit quantize")
    args = ap.parse_args()
    torch.set_num_threads(1)  # deterministic reduction order

    os.makedirs(args.out, exist_ok=True)
    for c in CASES:
        d = os.path.join(args.out, c["name"])
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(os.path.join(d, "f32"))
        g = torch.Generator().manual_seed(c["seed"])
        m = RefViT(**c["model"]).random_init(g)
        m.eval()
        if "zero_group" in c:
            name, row, grp = c["zero_group"]
            assert name == "blocks.0.mlp.fc1.weight"
            with torch.no_grad():
                m.blocks[0].fc1_w[row, grp * GROUP:(grp + 1) * GROUP] = 0

        # float32 source model + config
        sd = state_dict_for(m, c["layout"])
        f32_path = os.path.join(d, "f32", "model.safetensors")
        save_safetensors(f32_path, sd, {"format": "pt"})
        cfg_text = json.dumps(build_config(c["config"], m), indent=2) + "\n"
        with open(os.path.join(d, "f32", "config.json"), "w") as f:
            f.write(cfg_text)

        # int8 copy, as vit quantize writes it
        qsd = quantize_state_dict(sd)
        meta = [("format", "pt"), ("config", cfg_text), ("quantization", QUANT_NOTE)]
        int8_path = os.path.join(d, "model.safetensors")
        write_like_vitc(int8_path, qsd, meta)
        back, back_meta = load_safetensors(int8_path)
        assert list(back) == list(qsd) and all(torch.equal(back[k], qsd[k]) for k in qsd)
        assert list(back_meta.items()) == meta

        # references
        S = m.img_size
        qblocks = fused_quantised(qsd, c["layout"], m.depth)
        cand = torch.randn(CANDIDATES, 3, S, S, generator=g)
        with torch.no_grad():
            margins = image_margins(m, qblocks, cand)
        pick = torch.argsort(margins, descending=True)[:BATCH]
        x = cand[pick].contiguous()
        mdq = copy.deepcopy(m)
        with torch.no_grad():
            for blk, qb in zip(mdq.blocks, qblocks):
                blk.qkv_w.copy_(dequantize(*qb["qkv"]))
                blk.proj_w.copy_(dequantize(*qb["proj"]))
                blk.fc1_w.copy_(dequantize(*qb["fc1"]))
                blk.fc2_w.copy_(dequantize(*qb["fc2"]))
            logits_f32 = m(x)
            logits_dq = mdq(x)
            logits_emul, block0_emul = forward_int8(m, qblocks, x, torch.float64)
            logits_emul32, _ = forward_int8(m, qblocks, x, torch.float32)
            # float64 dequant, to separate the activation quantisation's effect
            logits_dq64, _ = forward_int8_dequant64(mdq, x)

        exp = OrderedDict([("input", x), ("logits_int8_emul", logits_emul),
                           ("block0_int8_emul", block0_emul), ("logits_dequant", logits_dq),
                           ("logits_f32", logits_f32)])
        exp = OrderedDict((k, v.float().contiguous()) for k, v in exp.items())
        save_safetensors(os.path.join(d, "expected.safetensors"), exp,
                         {"case": c["name"], "generator": "tests/gen_int8.py"})

        groups = {k: list(v.shape) for k, v in qsd.items() if k.endswith(SCALE_SUFFIX)}
        info = OrderedDict([
            ("layout", c["layout"]), ("run_size", S), ("native_size", m.img_size),
            ("patch_size", m.patch_size), ("embed_dim", m.embed_dim), ("depth", m.depth),
            ("num_heads", m.num_heads), ("mlp_dim", m.mlp_dim), ("num_classes", m.num_classes),
            ("layer_norm_eps", m.eps), ("tokens", int(block0_emul.shape[1])), ("batch", BATCH),
            ("group", GROUP), ("scale_shapes", groups), ("notes", c["notes"]),
        ])
        with open(os.path.join(d, "case.json"), "w") as f:
            json.dump(info, f, indent=2)
            f.write("\n")

        if args.vit:
            compare_with_vit(args.vit, os.path.join(d, "f32"), int8_path)

        E = logits_emul
        rng = (E.max() - E.min()).item()
        mx = lambda a, b: (a.double() - b.double()).abs().max().item()
        print(f"{c['name']}: logits {list(E.shape)} range {rng:.3f} (|max| {E.abs().max().item():.3f})")
        for label, other in (("dequant f32", logits_dq), ("dequant f64", logits_dq64),
                             ("f32 model", logits_f32), ("emul in f32", logits_emul32)):
            e = mx(E, other)
            print(f"   max|emul - {label:11s}| = {e:.3e}  ({e / rng:.2e} of the range)")
        print(f"   max|dequant - f32 model| = {mx(logits_dq, logits_f32):.3e}; "
              f"top-1 emul/dequant/f32: {E.argmax(1).tolist()} {logits_dq.argmax(1).tolist()} "
              f"{logits_f32.argmax(1).tolist()}")
        print(f"   inputs: candidates {pick.tolist()} of {CANDIDATES}; smallest rounding margin "
              f"{margins[pick].min().item():.2e} steps (median candidate "
              f"{margins.median().item():.2e}, first {BATCH}: {margins[:BATCH].min().item():.2e})")
        with torch.no_grad():
            for k in (4, 16):
                sel = flip_check(m, qblocks, x, k)
                raw = flip_check(m, qblocks, cand[:BATCH], k)
                print(f"   activations off by {k} ulp(amax) at random: max|dlogit| "
                      f"{sel[0]:.1e} ({sel[1]} flips) with these inputs, {raw[0]:.1e} "
                      f"({raw[1]} flips) with the first {BATCH} candidates")
        if args.vit:
            print("   vit quantize: byte-identical")
    lin = linear_fixture(torch.Generator().manual_seed(1599))
    save_safetensors(os.path.join(args.out, "linear.safetensors"), lin,
                     {"generator": "tests/gen_int8.py"})
    print("linear.safetensors: " + ", ".join(f"{k} {list(v.shape)}" for k, v in lin.items()))
    total = sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(args.out) for f in fs)
    print(f"total {total / 1024:.0f} KiB under {args.out}")


def linear_fixture(gen):
    """Kernel-level cases: one int8 linear layer on given float32 inputs, where
    the activation quantisation must come out bit for bit (no upstream float
    error to excuse a different rounding). For K in (64, 48): N = 24 outputs,
    M = 6 input rows: 0 N(0, 1); 1 all zero (q 0, s_x 1); 2 amax 127 exactly
    (inv = 1, s_x = 1) with many exact halves (ties to even: 0.5 -> 0, 1.5 -> 2,
    -2.5 -> -2 ...); 3 amax 254 at a negative entry (inv = 0.5, s_x = 2) with odd
    integers (ties again); 4 N(0, 1000^2); 5 N(0, 0.001^2). Weights N(0, 1/K)
    quantised as weights/quantize.c does; row 2 is zero in its first group (K 64:
    cols 0..31; K 48: the whole row, scale 1), row 5 has one weight 10x the rest."""
    out = OrderedDict()
    for K in (64, 48):
        N, M = 24, 6
        w = torch.randn(N, K, generator=gen) / math.sqrt(K)
        w[2, :GROUP if K % GROUP == 0 else K] = 0
        w[5, 7] = 10 * w[5].abs().max()
        q_w, s_w = quantize_matrix(w)
        b = -0.1 + 0.2 * torch.rand(N, generator=gen)
        x = torch.empty(M, K)
        x[0] = torch.randn(K, generator=gen)
        x[1] = 0
        x[2] = torch.randint(-253, 254, (K,), generator=gen).float() * 0.5  # halves and integers
        x[2, 3] = 127.0
        x[2, 4], x[2, 5], x[2, 6], x[2, 8] = 0.5, 1.5, -2.5, -126.5
        x[3] = (2 * torch.randint(-126, 126, (K,), generator=gen) + 1).float()  # odd: x / 2 ties
        x[3, 1] = -254.0
        x[2, 35], x[3, 33] = 127.0, -254.0  # the same scales in the second group (K 64)
        x[4] = torch.randn(K, generator=gen) * 1000
        x[5] = torch.randn(K, generator=gen) * 1e-3
        qx, s_x = quantize_rows(x, K // s_w.shape[1])
        assert (s_x[1] == 1.0).all() and (s_x[2] == 1.0).all() and (s_x[3] == 2.0).all()
        y = int8_linear(x, q_w.long(), s_w, b, torch.float64)
        name = f"k{K}"
        out[f"x_{name}"] = x
        out[f"w_{name}"] = q_w
        out[f"w_{name}{SCALE_SUFFIX}"] = s_w
        out[f"b_{name}"] = b
        out[f"xq_{name}"] = qx.to(torch.int8)
        out[f"xs_{name}"] = s_x
        out[f"y_{name}"] = y.float()
    return out


def image_margins(m, qblocks, x):
    """Per image, the smallest distance (in quantisation steps) of any quantised
    activation from a rounding boundary over the whole int8 forward."""
    global MARGINS
    MARGINS = []
    try:
        forward_int8(m, qblocks, x, torch.float64)
        return torch.stack(MARGINS, 1).amin(dim=1)
    finally:
        MARGINS = None


def flip_check(m, qblocks, x, ulps, trials=20):
    """Perturbs every quantised activation by up to `ulps` float32 ulps of its
    row's amax (what a float32 implementation's rounding differences look
    like) and returns (max |logit change|, activation rounding flips)."""
    global quantize_rows
    exact = quantize_rows
    ref, _ = forward_int8(m, qblocks, x, torch.float64)
    worst, flips = 0.0, 0
    for t in range(trials):
        gen = torch.Generator().manual_seed(t)

        def noisy(v, gs):
            nonlocal flips
            v = v.double()
            amax = v.abs().amax(dim=-1, keepdim=True)
            noise = (2 * torch.rand(v.shape, generator=gen, dtype=torch.float64) - 1) * ulps
            q0, _ = exact(v, gs)
            q, s = exact(v + noise * amax * 2.0 ** -23, gs)
            flips += int((q != q0).sum())
            return q, s
        quantize_rows = noisy
        try:
            out, _ = forward_int8(m, qblocks, x, torch.float64)
        finally:
            quantize_rows = exact
        worst = max(worst, (out - ref).abs().max().item())
    return worst, flips


def forward_int8_dequant64(mdq, x):
    """The dequantised model in float64 (no activation quantisation)."""
    m64 = copy.deepcopy(mdq).double()
    return m64(x.double()), None


if __name__ == "__main__":
    main()
