#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets under tests/fuzz/corpus/.

Small real files of each input kind, plus truncated and mutated copies:
  safetensors/  tiny timm / Hugging Face / DeiT checkpoints (also the two
                models fuzz_config loads: hf_tiny, timm_tiny)
  config/       config.json (HF, timm) and preprocessor_config.json
  image/        every format the decoder reads, a few pixels each
  labels/       label lists and labels CSVs
Deterministic (fixed seeds); needs numpy and Pillow. Run from anywhere:
  /usr/bin/python3 tests/fuzz/make_corpus.py   (Debian python3-numpy, python3-pil)
Inputs the fuzzers found (crashes, timeouts) are kept beside these seeds as
regress-*; this script never deletes them.
"""
import io
import json
import os
import shutil
import struct

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "corpus")
FIXTURES = os.path.join(HERE, "..", "fixtures")
rng = np.random.default_rng(8)


def out(kind, name, data):
    d = os.path.join(ROOT, kind)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def variants(kind, name, data, cuts=(0.5,), flips=2):
    """data, truncated at each fraction in cuts, and with a few bytes flipped."""
    if isinstance(data, str):
        data = data.encode()
    out(kind, name, data)
    stem, dot, ext = name.rpartition(".")
    for c in cuts:
        out(kind, f"{stem}.cut{int(c * 100)}.{ext}", data[: int(len(data) * c)])
    r = np.random.default_rng(len(data))
    for k in range(flips):
        b = bytearray(data)
        for _ in range(3):
            i = int(r.integers(0, len(b)))
            b[i] ^= 1 << int(r.integers(0, 8))
        out(kind, f"{stem}.flip{k}.{ext}", bytes(b))


# ------------------------------------------------------------ safetensors

def safetensors(tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name, arr in tensors.items():
        dtype = {np.float32: "F32", np.float16: "F16"}[arr.dtype.type]
        raw = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


D, MLP, P, C, GRID, CLASSES = 8, 16, 4, 3, 2, 3


def w(*shape, dtype=np.float32):
    return (rng.standard_normal(shape) * 0.1).astype(dtype)


def timm_tensors(dist=False, dtype=np.float32, qkv_bias=True):
    t = {"patch_embed.proj.weight": w(D, C, P, P, dtype=dtype), "patch_embed.proj.bias": w(D, dtype=dtype),
         "cls_token": w(1, 1, D, dtype=dtype),
         "pos_embed": w(1, GRID * GRID + (2 if dist else 1), D, dtype=dtype)}
    if dist:
        t["dist_token"] = w(1, 1, D, dtype=dtype)
    t.update({"blocks.0.norm1.weight": w(D, dtype=dtype), "blocks.0.norm1.bias": w(D, dtype=dtype),
              "blocks.0.attn.qkv.weight": w(3 * D, D, dtype=dtype),
              "blocks.0.attn.proj.weight": w(D, D, dtype=dtype), "blocks.0.attn.proj.bias": w(D, dtype=dtype),
              "blocks.0.norm2.weight": w(D, dtype=dtype), "blocks.0.norm2.bias": w(D, dtype=dtype),
              "blocks.0.mlp.fc1.weight": w(MLP, D, dtype=dtype), "blocks.0.mlp.fc1.bias": w(MLP, dtype=dtype),
              "blocks.0.mlp.fc2.weight": w(D, MLP, dtype=dtype), "blocks.0.mlp.fc2.bias": w(D, dtype=dtype),
              "norm.weight": w(D, dtype=dtype), "norm.bias": w(D, dtype=dtype),
              "head.weight": w(CLASSES, D, dtype=dtype), "head.bias": w(CLASSES, dtype=dtype)})
    if qkv_bias:
        t["blocks.0.attn.qkv.bias"] = w(3 * D, dtype=dtype)
    if dist:
        t["head_dist.weight"] = w(CLASSES, D, dtype=dtype)
        t["head_dist.bias"] = w(CLASSES, dtype=dtype)
    return t


def hf_tensors(prefix="vit."):
    e, l = prefix + "embeddings.", prefix + "encoder.layer.0."
    t = {e + "patch_embeddings.projection.weight": w(D, C, P, P), e + "patch_embeddings.projection.bias": w(D),
         e + "cls_token": w(1, 1, D), e + "position_embeddings": w(1, GRID * GRID + 1, D)}
    for part in ("query", "key", "value"):
        t[l + f"attention.attention.{part}.weight"] = w(D, D)
        t[l + f"attention.attention.{part}.bias"] = w(D)
    t.update({l + "attention.output.dense.weight": w(D, D), l + "attention.output.dense.bias": w(D),
              l + "layernorm_before.weight": w(D), l + "layernorm_before.bias": w(D),
              l + "layernorm_after.weight": w(D), l + "layernorm_after.bias": w(D),
              l + "intermediate.dense.weight": w(MLP, D), l + "intermediate.dense.bias": w(MLP),
              l + "output.dense.weight": w(D, MLP), l + "output.dense.bias": w(D),
              prefix + "layernorm.weight": w(D), prefix + "layernorm.bias": w(D),
              "classifier.weight": w(CLASSES, D), "classifier.bias": w(CLASSES)})
    return t


HF_CONFIG = {"architectures": ["ViTForImageClassification"], "model_type": "vit", "hidden_size": D,
             "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": MLP,
             "patch_size": P, "image_size": P * GRID, "num_channels": C, "layer_norm_eps": 1e-12,
             "id2label": {"0": "cat", "1": "dog, hound", "2": "bird"},
             "label2id": {"cat": 0, "dog, hound": 1, "bird": 2}}
TIMM_CONFIG = {"architecture": "vit_tiny_patch4_8", "num_classes": CLASSES,
               "model_args": {"embed_dim": D, "depth": 1, "num_heads": 2, "mlp_ratio": 2.0,
                              "patch_size": P, "img_size": P * GRID},
               "pretrained_cfg": {"input_size": [3, 8, 8], "interpolation": "bicubic",
                                  "crop_pct": 0.875, "crop_mode": "center",
                                  "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}


def make_safetensors():
    hf = safetensors(hf_tensors())
    timm = safetensors(timm_tensors())
    out("safetensors", "hf_tiny.safetensors", hf)  # fuzz_config loads these two
    out("safetensors", "timm_tiny.safetensors", timm)
    variants("safetensors", "hf_meta.safetensors",
             safetensors(hf_tensors(), {"config": json.dumps(HF_CONFIG), "format": "pt"}), cuts=(0.05, 0.6))
    variants("safetensors", "deit_dist_f16.safetensors",
             safetensors(timm_tensors(dist=True, dtype=np.float16, qkv_bias=False)), cuts=(0.3,))
    variants("safetensors", "hf_deit.safetensors", safetensors(hf_tensors("deit.")), cuts=(0.9,))
    for name in ("mixed.safetensors", "expected.safetensors"):
        with open(os.path.join(FIXTURES, "safetensors", name), "rb") as f:
            variants("safetensors", "fixture_" + name, f.read(), cuts=(0.4,))
    # Malformed headers, written out by hand.
    def raw(name, header):
        h = header.encode()
        out("safetensors", name, struct.pack("<Q", len(h)) + h + b"\0" * 16)
    raw("bad_overlap.safetensors", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                   '"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}')
    raw("bad_overflow.safetensors", '{"a":{"dtype":"F64","shape":[4294967296,4294967296,16],'
                                    '"data_offsets":[0,16]}}')
    raw("bad_dtype.safetensors", '{"a":{"dtype":"F8_E4M3","shape":[],"data_offsets":[0,1]},'
                                 '"__metadata__":{"k":"v","k":"w"}}')
    raw("bad_nested.safetensors", '{"a":' + "[" * 200 + "]" * 200 + "}")
    out("safetensors", "bad_length.safetensors", struct.pack("<Q", 2**63) + b"{}")


def make_configs():
    variants("config", "hf_config.json", json.dumps(HF_CONFIG, indent=1), cuts=(0.5,))
    variants("config", "timm_config.json", json.dumps(TIMM_CONFIG, indent=1), cuts=(0.7,))
    hf_pre = {"image_processor_type": "ViTImageProcessor", "do_resize": True, "size": {"height": 8, "width": 8},
              "resample": 2, "do_rescale": True, "rescale_factor": 0.00392156862745098,
              "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}
    variants("config", "preprocessor_config.json", json.dumps(hf_pre, indent=1))
    deit_pre = {"feature_extractor_type": "DeiTFeatureExtractor", "size": {"shortest_edge": 10},
                "crop_size": [8, 8], "do_center_crop": True, "resample": 3}
    out("config", "preprocessor_deit.json", json.dumps(deit_pre))
    pre_dir = os.path.join(FIXTURES, "preprocess")
    for name in sorted(os.listdir(pre_dir)):
        if name.startswith("cfg_") and name.endswith(".json"):
            shutil.copy(os.path.join(pre_dir, name), os.path.join(ROOT, "config", name))
    out("config", "bad_eps.json", '{"hidden_size": 8, "layer_norm_eps": 1e300, "num_attention_heads": 3,'
                                  ' "id2label": {"0": "a", "00": "b", "x": 1}}')
    out("config", "bad_timm.json", '{"architecture": "vit_base_x", "model_args": {"mlp_ratio": 1e308,'
                                   ' "embed_dim": 8}, "pretrained_cfg": {"input_size": [3, 1e9, 8],'
                                   ' "crop_pct": 1e-300, "interpolation": "lanczos\\n"}}')
    out("config", "deep.json", "[" * 100 + "]" * 100)


def make_images():
    rgb = (rng.random((6, 5, 3)) * 255).astype(np.uint8)
    grey = rgb[:, :, 0]
    im = Image.fromarray(rgb)

    def encode(img, fmt, **kw):
        b = io.BytesIO()
        img.save(b, fmt, **kw)
        return b.getvalue()

    variants("image", "rgb.png", encode(im, "PNG"))
    variants("image", "rgba.png", encode(im.convert("RGBA"), "PNG"), flips=1)
    variants("image", "palette.png", encode(im.convert("P"), "PNG"), flips=1)
    variants("image", "grey16.png", encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"), flips=1)
    variants("image", "baseline.jpg", encode(im, "JPEG", quality=80), cuts=(0.5, 0.97))
    variants("image", "progressive.jpg", encode(im, "JPEG", progressive=True), cuts=(0.6,))
    variants("image", "grey.jpg", encode(Image.fromarray(grey), "JPEG"), flips=1)
    variants("image", "rgb.bmp", encode(im, "BMP"), cuts=(0.8,))
    variants("image", "anim.gif", encode(im.convert("P"), "GIF"), cuts=(0.7,))
    variants("image", "rgb.tga", encode(im, "TGA"), flips=1)
    # WebP (libwebp): lossy with alpha, so the VP8X, ALPH and VP8 chunks are all there.
    alpha = (np.arange(30).reshape(6, 5) * 8).astype(np.uint8)
    out("image", "rgba.webp", encode(Image.fromarray(np.dstack([rgb, alpha])), "WEBP", quality=80))
    variants("image", "rgb.ppm", encode(im, "PPM"), cuts=(0.9,))
    variants("image", "grey.pgm", encode(Image.fromarray(grey), "PPM"), flips=1)
    out("image", "grey16.pgm", b"P5 3 2 1000\n" + bytes(range(12)))
    out("image", "claims_huge.pgm", b"P5 100000 100000 255\n\0\0\0\0")
    # A PNG whose IHDR claims 20000 x 20000 (checked before decoding).
    png = bytearray(encode(im, "PNG"))
    png[16:24] = struct.pack(">II", 20000, 20000)
    out("image", "claims_huge.png", bytes(png))
    for name in ("dec_1bit.png", "dec_palette.gif", "dec_rgb100.ppm", "dec_la16.png", "dec_photo.jpg"):
        shutil.copy(os.path.join(FIXTURES, "preprocess", name), os.path.join(ROOT, "image", "fixture_" + name))


def make_labels():
    variants("labels", "labels.txt", "cat\ndog, hound\r\nbird\n\n", flips=1)
    variants("labels", "labels.csv", "file,class_index,note\nn01/a.jpg,0,x\r\n\"b,\"\"c\"\".png\",999\n\nd.jpg,5\n",
             cuts=(0.5,))
    out("labels", "bad_index.csv", "a.jpg,1000\n")
    out("labels", "bad_text.csv", "a.jpg,\"12\nb.jpg,x\n")
    out("labels", "no_rows.csv", "file,class\n")


if __name__ == "__main__":
    make_safetensors()
    make_configs()
    make_images()
    make_labels()
    total = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(ROOT) for f in fs)
    print(f"corpus: {total} bytes under {ROOT}")
