#!/usr/bin/python3
"""Exports a ViT checkpoint to ONNX for the ONNX Runtime peer (bench/peer_ort.mjs).

usage: bench/export_onnx.py --model DIR --out FILE.onnx [--opset 17] [--int8] [--force]

Loads DIR/model.safetensors exactly as bench/peer_torch.py does (RefViT from
tests/torch_vit.py, heads/eps from config.json) and writes it with
torch.onnx.export (tracing; input "pixel_values" [batch, 3, S, S], output
"logits" [batch, classes], batch axis dynamic, weights inside the file).
Opset 17 (torch 1.13's newest) exports LayerNorm as one LayerNormalization op;
GELU is exported as its erf formula, which ORT fuses back into one Gelu node.

Also writes FILE.onnx.check.json: torch's logits for a small deterministic
input that JavaScript can rebuild bit for bit, so peer_ort.mjs can verify the
exported graph under ONNX Runtime (python onnxruntime is not installable
here). The input is
    x.flat[i] = ((i * 2654435761) mod 2^32) / 2^32 * 4 - 2     (float32)
for i over a [check_batch, 3, S, S] tensor in C order.

--int8 writes ONNX Runtime's *dynamic int8 quantization* instead, in the form
onnxruntime.quantization.quantize_dynamic (Python-only, not installable here)
would emit, built directly by the exporter: every Linear of the encoder blocks
and the head becomes
    DynamicQuantizeLinear(x) -> MatMulInteger(x_u8, W_s8, x_zp, 0) -> Cast(float)
    -> Mul(x_scale * w_scale[col]) -> Add(bias)
with W quantized symmetric per output column (int8, zero point 0); the patch
convolution, LayerNorm, softmax and GELU stay fp32. ORT fuses this pattern into
DynamicQuantizeMatMul. The check file then holds the fp32 logits with a
tolerance of twice the int8 error of an exact torch emulation of that
arithmetic (whose logits are kept as "logits_int8_emulation"): a single layer
matches the emulation to 1e-6, a whole model only to about the int8 error, since
one flipped rounding re-quantizes differently downstream. Weights default to
7-bit ("s8-7bit", quantize_dynamic's reduce_range): ORT's u8 x s8 kernels on
AVX2 without VNNI saturate int16 pair sums (255 * 127 * 2 > 32767), which full
8-bit s8 weights hit (--int8-weights s8 shows it); "u8" weights avoid it too,
through a slower kernel.

Skips the export when FILE.onnx is newer than the checkpoint (--force redoes it).
Exit 3 if torch or the model is missing.
"""

import argparse
import json
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

CHECK_BATCH = 2


def int8_linear_patch(model, weights="s8-7bit"):
    """Returns (proxy for torch_vit.F, restore function): F.linear on the weights of
    the blocks and the head becomes a dynamically quantized linear (see --int8)."""
    import torch
    import torch.nn.functional as F
    import torch_vit

    class QLinear(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, wq_t, w_scale, w_zp, bias):
            # exact emulation of ONNX DynamicQuantizeLinear + MatMulInteger (u8 x s8)
            xd = x.double()
            lo = torch.clamp(xd.min(), max=0.0)
            hi = torch.clamp(xd.max(), min=0.0)
            scale = ((hi - lo) / 255.0).float().double()
            scale = torch.where(scale == 0, torch.ones_like(scale), scale)
            zp = torch.clamp(torch.round(-lo / scale), 0, 255)
            xq = torch.clamp(torch.round(xd / scale) + zp, 0, 255)
            acc = (xq - zp) @ (wq_t.double() - w_zp.double())  # exact: integers below 2^53
            return (acc * (scale * w_scale.double())).float() + bias

        @staticmethod
        def symbolic(g, x, wq_t, w_scale, w_zp, bias):
            xq, xs, xzp = g.op("DynamicQuantizeLinear", x, outputs=3)
            y = g.op("MatMulInteger", xq, wq_t, xzp, w_zp)
            y = g.op("Cast", y, to_i=1)  # TensorProto.FLOAT
            s = g.op("Mul", xs, w_scale)
            y = g.op("Mul", y, s)
            return g.op("Add", y, bias)

    # quantize once, per output column, symmetric int8
    qmap = {}
    linears = []
    for blk in model.blocks:
        linears += [blk.qkv_w, blk.proj_w, blk.fc1_w, blk.fc2_w]
    if model.num_classes:
        linears.append(model.head_w)
        if model.dist_head:
            linears.append(model.head_dist_w)
    qmax = {"s8": 127, "s8-7bit": 63, "u8": 127}[weights]
    for w in linears:
        amax = w.detach().abs().amax(dim=1).clamp(min=1e-12)
        sc = (amax / qmax).float()
        wq = torch.clamp(torch.round(w.detach() / sc[:, None]), -qmax, qmax)
        if weights == "u8":  # unsigned, zero point 128
            wq, wzp = (wq + 128).to(torch.uint8), torch.full((w.shape[0],), 128, dtype=torch.uint8)
        else:
            wq, wzp = wq.to(torch.int8), torch.zeros(w.shape[0], dtype=torch.int8)
        qmap[id(w)] = (wq.t().contiguous(), sc, wzp)

    class FProxy:
        def __getattr__(self, k):
            return getattr(F, k)

        @staticmethod
        def linear(x, w, b=None):
            q = qmap.get(id(w))
            if q is None:
                return F.linear(x, w, b)
            return QLinear.apply(x, q[0], q[1], q[2], b)

    old = torch_vit.F
    torch_vit.F = FProxy()
    return lambda: setattr(torch_vit, "F", old)


def check_input(batch, size):
    import numpy as np
    n = batch * 3 * size * size
    i = np.arange(n, dtype=np.uint64)
    h = (i * np.uint64(2654435761)) % np.uint64(2 ** 32)
    x = (h.astype(np.float64) / 2.0 ** 32 * 4.0 - 2.0).astype(np.float32)
    return x.reshape(batch, 3, size, size)


def main():
    ap = argparse.ArgumentParser(description="export a ViT checkpoint to ONNX")
    ap.add_argument("--model", required=True, help="model directory (or its model.safetensors)")
    ap.add_argument("--out", required=True, help="output .onnx file")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--force", action="store_true", help="export even if FILE.onnx is up to date")
    ap.add_argument("--int8", action="store_true",
                    help="dynamic int8 quantization of the Linear layers (ORT quantize_dynamic form)")
    ap.add_argument("--int8-weights", choices=["s8-7bit", "s8", "u8"], default="s8-7bit",
                    help="weight type for --int8 (default s8-7bit = quantize_dynamic reduce_range)")
    a = ap.parse_args()
    try:
        import torch
        from peer_torch import load_model, model_file
    except ImportError as e:
        print(f"export_onnx: PyTorch not installed ({e})", file=sys.stderr)
        return 3
    d, st = model_file(a.model)
    if not os.path.isfile(st):
        print(f"export_onnx: no model at {st} (run bench/gen_models.py?)", file=sys.stderr)
        return 3
    check_path = a.out + ".check.json"
    if (not a.force and os.path.isfile(a.out) and os.path.isfile(check_path)
            and os.path.getmtime(a.out) >= os.path.getmtime(st)):
        print(f"export_onnx: {a.out} is up to date, skipped", file=sys.stderr)
        return 0

    model = load_model(a.model)
    S = model.img_size
    x = torch.from_numpy(check_input(CHECK_BATCH, S))
    with torch.inference_mode():
        ref = ref32 = model(x)
    restore = None
    if a.int8:
        restore = int8_linear_patch(model, a.int8_weights)
        with torch.inference_mode():
            ref = model(x)
        print(f"export_onnx: int8 emulation vs fp32: max |diff| = "
              f"{(ref - ref32).abs().max().item():.3g} (logits up to {ref32.abs().max().item():.3g})",
              file=sys.stderr)

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    tmp = a.out + ".tmp.part"
    t0 = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # g.op deprecation, tracer notes on shapes
        torch.onnx.export(
            model, (x,), tmp,
            input_names=["pixel_values"], output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=a.opset, do_constant_folding=True,
        )
    if restore:
        restore()
    os.replace(tmp, a.out)
    check = {
        "model": os.path.basename(os.path.normpath(d)),
        "source": os.path.abspath(st),
        "opset": a.opset,
        "quantization": "dynamic int8 (u8 activations per tensor, s8 weights per column)" if a.int8 else None,
        "torch": torch.__version__,
        "input": {"name": "pixel_values", "shape": [CHECK_BATCH, 3, S, S],
                  "formula": "((i*2654435761) mod 2^32)/2^32*4-2"},
        "output": {"name": "logits", "shape": list(ref.shape)},
        # int8: ONNX Runtime cannot match an emulation bit for bit through 12 layers
        # (a rounding tie flipped anywhere re-quantizes differently downstream), so
        # the check is against fp32, with twice the emulation's own int8 error.
        "tolerance": max(1e-3, float(2 * (ref - ref32).abs().max())) if a.int8 else 1e-3,
        "logits": [[float(v) for v in row] for row in ref32.tolist()],
    }
    if a.int8:
        check["logits_int8_emulation"] = [[float(v) for v in row] for row in ref.tolist()]
    with open(check_path, "w") as f:
        json.dump(check, f)
    print(f"export_onnx: {a.out} ({os.path.getsize(a.out) / 2**20:.1f} MiB, opset {a.opset}"
           f"{', int8' if a.int8 else ''}, "
          f"{time.perf_counter() - t0:.1f} s) + {os.path.basename(check_path)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
