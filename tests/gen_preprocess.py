#!/usr/bin/python3
"""Generates the preprocessing fixtures in tests/fixtures/preprocess/.

Run with Debian's interpreter (python3-pil 9.4, python3-torch 1.13,
python3-torchvision 0.14, numpy):

    /usr/bin/python3 tests/gen_preprocess.py [/work/shared/images]

Every expected value here comes from PIL, torchvision or (for Hugging Face
processors, since transformers is not installed) a line-by-line transcription
of transformers' image_transforms (resize via PIL with reducing_gap=None,
center_crop with floor offsets and zero padding, rescale in float64 then
float32, normalize in float32) -- never from vitc itself.

Inputs to resize tests are PNGs, so both sides see identical pixels. Photo
inputs are PIL-decoded crops of /work/shared/images saved losslessly; the
fixture directory is self-contained once generated.

Outputs:
  src_*.png                 resize/pipeline inputs
  resize_cases.txt          "src width height filter expected.png" per line
  rs_*.png                  PIL Image.resize results
  pipeline_cases.txt        "src config kind expected height width" per line; kind is
                            f32 (raw little-endian float32 CHW tensor) or
                            u8 (8-bit PNG of the image just before ToTensor /
                            rescale, for full-size photo pipelines)
  cfg_*.json, model_*/      recipe configs
  decode_cases.txt          "file expected.png max_abs_diff" per line
  dec_*                     decoder inputs and PIL convert('RGB') results
  huge_*                    headers claiming 50000x50000 pixels
"""
import io
import json
import math
import os
import struct
import sys
import zlib

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image
from torchvision.transforms import InterpolationMode

ROOT = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(ROOT, "fixtures", "preprocess")
IMAGES = sys.argv[1] if len(sys.argv) > 1 else "/work/shared/images"

PIL_FILTERS = {0: Image.NEAREST, 2: Image.BILINEAR, 3: Image.BICUBIC}
TV_MODES = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR,
            "bicubic": InterpolationMode.BICUBIC}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def path(name):
    return os.path.join(OUT, name)


def save_png(img, name):
    img.save(path(name), optimize=True)


def write_png(name, width, height, bit_depth, colour_type, rows):
    """A minimal PNG writer for layouts PIL cannot save (16-bit RGB, 4-bit grey)."""
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + r for r in rows)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))
    with open(path(name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- sources

def make_sources():
    rng = np.random.default_rng(20240611)
    srcs = {}
    srcs["noise_37x23"] = Image.fromarray(rng.integers(0, 256, (23, 37, 3), dtype=np.uint8))
    srcs["noise_200x150"] = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    y, x = np.mgrid[0:48, 0:64]
    grad = np.stack([x * 4, y * 5, ((x // 8 + y // 8) % 2) * 255], axis=-1)
    grad[20:28, 30:34] = (255, 0, 255)  # a sharp block to provoke bicubic overshoot
    srcs["grad_64x48"] = Image.fromarray(np.clip(grad, 0, 255).astype(np.uint8))
    srcs["col_1x17"] = Image.fromarray(rng.integers(0, 256, (17, 1, 3), dtype=np.uint8))
    srcs["row_23x1"] = Image.fromarray(rng.integers(0, 256, (1, 23, 3), dtype=np.uint8))
    polars = Image.open(os.path.join(IMAGES, "polars.jpeg")).convert("RGB")
    srcs["polars"] = polars  # full 286x176 photo, also the JPEG decode reference
    cheetah = Image.open(os.path.join(IMAGES, "cheetah.jpg")).convert("RGB")
    srcs["cheetah_crop"] = cheetah.crop((760, 420, 1080, 620))  # 320x200, the animal's head
    for name, img in srcs.items():
        save_png(img, "src_%s.png" % name)
    return srcs


RESIZE_CASES = [
    ("noise_37x23", 80, 50, [0, 2, 3]),
    ("noise_37x23", 16, 9, [0, 2, 3]),
    ("noise_37x23", 37, 50, [3]),      # vertical pass only
    ("noise_37x23", 60, 23, [2]),      # horizontal pass only
    ("noise_37x23", 5, 3, [3]),
    ("noise_37x23", 1, 1, [2]),
    ("noise_37x23", 74, 46, [0]),
    ("noise_37x23", 111, 23, [0]),
    ("noise_37x23", 37, 23, [3]),      # same size: a copy
    ("grad_64x48", 224, 224, [3]),
    ("grad_64x48", 13, 7, [2]),
    ("grad_64x48", 64, 17, [3]),
    ("col_1x17", 1, 40, [3]),
    ("col_1x17", 3, 5, [2]),
    ("row_23x1", 7, 1, [3]),
    ("row_23x1", 50, 2, [0, 3]),
    ("noise_200x150", 40, 30, [3]),
    ("noise_200x150", 41, 29, [2]),
    ("noise_200x150", 17, 150, [3]),
    ("noise_200x150", 190, 20, [3]),    # scale just above 1 horizontally
    ("noise_200x150", 33, 31, [0]),
    ("polars", 256, 256, [3]),          # the DeiT preprocessor_config step
    ("polars", 403, 248, [3]),          # timm crop_pct 0.9: shorter side 248
    ("polars", 100, 61, [3, 0]),
    ("cheetah_crop", 396, 248, [3]),
    ("cheetah_crop", 64, 40, [3, 2]),
]


def make_resize_cases(srcs):
    lines = []
    for src, w, h, filters in RESIZE_CASES:
        for f in filters:
            name = "rs_%s_%dx%d_f%d.png" % (src, w, h, f)
            save_png(srcs[src].resize((w, h), PIL_FILTERS[f]), name)
            lines.append("src_%s.png %d %d %d %s" % (src, w, h, f, name))
    with open(path("resize_cases.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")


# ---------------------------------------------------------------- pipelines

def timm_transform(cfg):
    """timm's transforms_imagenet_eval for crop_mode center/squash, built from torchvision."""
    pc = cfg["pretrained_cfg"]
    h, w = pc.get("input_size", [3, 224, 224])[1:]
    crop_pct = pc.get("crop_pct") or 0.875
    scale = (math.floor(h / crop_pct), math.floor(w / crop_pct))
    interp = TV_MODES[pc.get("interpolation", "bicubic")]
    if pc.get("crop_mode", "center") == "squash":
        resize = T.Resize(scale, interpolation=interp)
    else:
        assert scale[0] == scale[1]
        resize = T.Resize(scale[0], interpolation=interp)
    crop = T.CenterCrop((h, w))
    norm = T.Compose([T.ToTensor(), T.Normalize(pc.get("mean", IMAGENET_MEAN),
                                                pc.get("std", IMAGENET_STD))])
    return T.Compose([resize, crop]), norm


def hf_center_crop(a, ch, cw):
    """transformers.image_transforms.center_crop on an HWC array."""
    h, w = a.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    bottom, right = top + ch, left + cw
    if top >= 0 and bottom <= h and left >= 0 and right <= w:
        return a[top:bottom, left:right]
    nh, nw = max(ch, h), max(cw, w)
    new = np.zeros((nh, nw) + a.shape[2:], dtype=a.dtype)
    tp, lp = math.ceil((nh - h) / 2), math.ceil((nw - w) / 2)
    new[tp:tp + h, lp:lp + w] = a
    top, bottom, left, right = top + tp, bottom + tp, left + lp, right + lp
    return new[max(0, top):min(nh, bottom), max(0, left):min(nw, right)]


def hf_size(v):
    if isinstance(v, int):
        return {"height": v, "width": v}
    if isinstance(v, (list, tuple)):
        return {"height": v[0], "width": v[1]}
    return v


def hf_pipeline(img, cfg):
    """ViT/DeiT image processor preprocess(), transcribed; returns (uint8 HWC, float32 CHW)."""
    deit = "DeiT" in (cfg.get("image_processor_type") or cfg.get("feature_extractor_type") or "")
    size = hf_size(cfg.get("size") or ({"height": 256, "width": 256} if deit else
                                       {"height": 224, "width": 224}))
    crop = hf_size(cfg.get("crop_size") or {"height": 224, "width": 224})
    do_crop = cfg.get("do_center_crop")
    if do_crop is None:
        do_crop = "crop_size" in cfg or deit
    resample = cfg.get("resample", 3 if deit else 2)
    mean = cfg.get("image_mean", IMAGENET_MEAN if deit else (0.5, 0.5, 0.5))
    std = cfg.get("image_std", IMAGENET_STD if deit else (0.5, 0.5, 0.5))
    a = np.array(img)
    if cfg.get("do_resize", True):
        if "shortest_edge" in size:
            s = size["shortest_edge"]
            h, w = a.shape[:2]
            short, long = (w, h) if w <= h else (h, w)
            ns, nl = s, int(s * long / short)
            nw, nh = (ns, nl) if w <= h else (nl, ns)
        else:
            nh, nw = size["height"], size["width"]
        a = np.array(Image.fromarray(a).resize((nw, nh), resample=resample, reducing_gap=None))
    if do_crop:
        a = hf_center_crop(a, crop["height"], crop["width"])
    u8 = a.copy()
    if cfg.get("do_rescale", True):
        a = (a.astype(np.float64) * cfg.get("rescale_factor", 1 / 255)).astype(np.float32)
    if cfg.get("do_normalize", True):
        if not np.issubdtype(a.dtype, np.floating):
            a = a.astype(np.float32)
        a = (a - np.array(mean, dtype=a.dtype)) / np.array(std, dtype=a.dtype)
    return u8, np.ascontiguousarray(a.astype(np.float32).transpose(2, 0, 1))


def timm_cfg(**pc):
    return {"architecture": "vit_test", "pretrained_cfg": pc}


PIPELINES = [
    # (source, config name, config, kind)
    ("noise_37x23", "cfg_timm_small.json",
     timm_cfg(input_size=[3, 16, 16], crop_pct=0.84, interpolation="bicubic",
              mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]), "f32"),
    ("noise_37x23", "cfg_timm_pad.json",
     timm_cfg(input_size=[3, 16, 16], crop_pct=1.2, interpolation="bilinear"), "f32"),
    ("grad_64x48", "cfg_timm_squash.json",
     timm_cfg(input_size=[3, 20, 20], crop_pct=0.9, interpolation="nearest", crop_mode="squash",
              mean=[0.1, 0.2, 0.3], std=[0.9, 0.8, 0.7]), "f32"),
    ("noise_37x23", "cfg_hf_deit_small.json",
     {"feature_extractor_type": "DeiTFeatureExtractor", "size": {"height": 19, "width": 27},
      "crop_size": 16, "resample": 3, "do_center_crop": True}, "f32"),
    ("polars", "cfg_hf_vit_int.json",
     {"image_processor_type": "ViTImageProcessor", "size": 24}, "f32"),
    ("noise_37x23", "cfg_hf_shortest_pad.json",
     {"image_processor_type": "BitImageProcessor", "size": {"shortest_edge": 13},
      "crop_size": {"height": 16, "width": 16}, "do_center_crop": True, "resample": 2,
      "image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.25, 0.3],
      "rescale_factor": 0.5 / 255}, "f32"),
    ("grad_64x48", "cfg_hf_no_rescale.json",
     {"image_processor_type": "ViTImageProcessor", "size": [12, 10], "resample": 0,
      "do_rescale": False, "image_mean": [100, 110, 120], "image_std": [50, 60, 70]}, "f32"),
    ("row_23x1", "cfg_hf_no_normalize.json",
     {"image_processor_type": "ViTImageProcessor", "size": {"height": 3, "width": 9},
      "do_normalize": False}, "f32"),
    # real configs on real photos; the 8-bit image before ToTensor is stored
    ("polars", "model_timm/config.json", None, "u8"),
    ("polars", "model_deit/preprocessor_config.json", None, "u8"),
    ("cheetah_crop", "model_timm/config.json", None, "u8"),
    ("cheetah_crop", "model_deit/preprocessor_config.json", None, "u8"),
]


def make_models():
    models = "/work/shared/models"
    os.makedirs(path("model_deit"), exist_ok=True)
    os.makedirs(path("model_timm"), exist_ok=True)
    os.makedirs(path("model_plain"), exist_ok=True)
    deit = os.path.join(models, "deit-tiny-patch16-224", "preprocessor_config.json")
    timm = os.path.join(models, "vit_tiny_patch16_224.augreg_in21k_ft_in1k", "config.json")
    deit_cfg = json.load(open(deit)) if os.path.exists(deit) else {
        "crop_size": 224, "do_center_crop": True, "do_normalize": True, "do_resize": True,
        "feature_extractor_type": "DeiTFeatureExtractor", "image_mean": list(IMAGENET_MEAN),
        "image_std": list(IMAGENET_STD), "resample": 3, "size": 256}
    timm_full = json.load(open(timm)) if os.path.exists(timm) else timm_cfg(
        input_size=[3, 224, 224], interpolation="bicubic", crop_pct=0.9, crop_mode="center",
        mean=[0.5] * 3, std=[0.5] * 3)
    with open(path("model_deit/preprocessor_config.json"), "w") as f:
        json.dump(deit_cfg, f, indent=2)
    # an HF config.json beside it must not be mistaken for a timm one
    with open(path("model_deit/config.json"), "w") as f:
        json.dump({"model_type": "vit", "image_size": 224, "patch_size": 16}, f, indent=2)
    with open(path("model_timm/config.json"), "w") as f:
        json.dump(timm_full, f, indent=1)
    with open(path("model_plain/config.json"), "w") as f:
        json.dump({"model_type": "vit", "image_size": 224}, f, indent=2)
    return {"model_deit/preprocessor_config.json": deit_cfg, "model_timm/config.json": timm_full}


def make_pipelines(srcs):
    real = make_models()
    lines = []
    for src, cfg_name, cfg, kind in PIPELINES:
        if cfg is None:
            cfg = real[cfg_name]
        else:
            with open(path(cfg_name), "w") as f:
                json.dump(cfg, f, indent=2)
        img = srcs[src]
        if "pretrained_cfg" in cfg:
            geometry, to_tensor = timm_transform(cfg)
            u8 = geometry(img)
            tensor = to_tensor(u8).numpy().astype(np.float32)
            u8 = np.array(u8)
        else:
            u8, tensor = hf_pipeline(img, cfg)
        stem = "pl_%s_%s" % (src, cfg_name.replace("/", "_").replace(".json", ""))
        if kind == "f32":
            out = stem + ".f32"
            tensor.astype("<f4").tofile(path(out))
            lines.append("src_%s.png %s f32 %s %d %d" % (src, cfg_name, out, tensor.shape[1],
                                                          tensor.shape[2]))
        else:
            out = stem + ".png"
            save_png(Image.fromarray(u8), out)
            lines.append("src_%s.png %s u8 %s %d %d" % (src, cfg_name, out, u8.shape[0],
                                                         u8.shape[1]))
    with open(path("pipeline_cases.txt"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    # Normalisation constants as torchvision computes them, for every 8-bit
    # value: ToTensor (float32 p / 255) then Normalize(mean, std) in float32.
    p = torch.arange(256, dtype=torch.uint8).view(1, 1, 256).expand(3, 1, 256).contiguous()
    t = T.Normalize(IMAGENET_MEAN, IMAGENET_STD)(p.float().div(255)).numpy()
    t.astype("<f4").tofile(path("norm_imagenet_256.f32"))


# ---------------------------------------------------------------- decoding

def make_decode_cases(srcs):
    cases = []

    def expect(name, tol=0, exp=None):
        if exp is None:  # else an existing PNG already holds PIL's pixels
            rgb = Image.open(path(name)).convert("RGB")
            base, ext = os.path.splitext(name)
            exp = base + ("" if ext == ".png" else "_" + ext[1:]) + ".expected.png"
            save_png(rgb, exp)
        cases.append("%s %s %d" % (name, exp, tol))

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:10, 0:20]
    grey = (x * 13 + y * 7).astype(np.uint8)
    alpha = (255 - x * 12).astype(np.uint8)
    Image.fromarray(grey, "L").save(path("dec_grey.png")); expect("dec_grey.png")
    Image.fromarray(np.stack([grey, alpha], -1), "LA").save(path("dec_grey_alpha.png"))
    expect("dec_grey_alpha.png")
    rgba = np.concatenate([rng.integers(0, 256, (10, 20, 3), dtype=np.uint8), alpha[..., None]], -1)
    Image.fromarray(rgba, "RGBA").save(path("dec_rgba.png")); expect("dec_rgba.png")
    pal = Image.fromarray(rng.integers(0, 256, (10, 20, 3), dtype=np.uint8)).quantize(16)
    pal.save(path("dec_palette.png")); expect("dec_palette.png")
    pal.save(path("dec_palette_trns.png"), transparency=3); expect("dec_palette_trns.png")
    Image.fromarray(grey > 100).save(path("dec_1bit.png")); expect("dec_1bit.png")
    g16 = (x * 3000 + y * 50).astype(np.uint16)
    g16[0, :6] = [0, 1, 254, 255, 256, 65535]
    Image.fromarray(g16.astype(np.int32), "I").convert("I;16").save(path("dec_grey16.png"))
    expect("dec_grey16.png")
    rgb16 = rng.integers(0, 65536, (10, 20, 3), dtype=np.uint16)
    write_png("dec_rgb16.png", 20, 10, 16, 2, [r.astype(">u2").tobytes() for r in rgb16])
    expect("dec_rgb16.png")
    rgba16 = rng.integers(0, 65536, (10, 20, 4), dtype=np.uint16)
    write_png("dec_rgba16.png", 20, 10, 16, 6, [r.astype(">u2").tobytes() for r in rgba16])
    expect("dec_rgba16.png")
    la16 = rng.integers(0, 65536, (10, 20, 2), dtype=np.uint16)
    write_png("dec_la16.png", 20, 10, 16, 4, [r.astype(">u2").tobytes() for r in la16])
    expect("dec_la16.png")
    g4 = (x % 16).astype(np.uint8)
    write_png("dec_grey4.png", 20, 10, 4, 0,
              [bytes((r[i] << 4) | r[i + 1] for i in range(0, 20, 2)) for r in g4])
    expect("dec_grey4.png")
    srcs["noise_37x23"].save(path("dec_rgb.bmp")); expect("dec_rgb.bmp")
    pal.convert("RGB").save(path("dec_palette.gif")); expect("dec_palette.gif")
    with open(path("dec_grey.pgm"), "wb") as f:
        f.write(b"P5\n# comment\n20 10\n255\n" + grey.tobytes())
    expect("dec_grey.pgm")
    with open(path("dec_grey1000.pgm"), "wb") as f:
        f.write(b"P5 20 10 1000\n" + (x * 50 + y).astype(">u2").tobytes())
    expect("dec_grey1000.pgm")
    with open(path("dec_rgb16.ppm"), "wb") as f:
        f.write(b"P6 20 10 65535\n" + rgb16.astype(">u2").tobytes())
    expect("dec_rgb16.ppm")
    with open(path("dec_rgb100.ppm"), "wb") as f:
        f.write(b"P6 20 10 100\n" + (rgb16 % 101).astype(np.uint8).tobytes())
    expect("dec_rgb100.ppm")
    # JPEG: stb's decoder is not libjpeg-turbo's, so small differences are allowed
    with open(os.path.join(IMAGES, "polars.jpeg"), "rb") as f:
        data = f.read()
    with open(path("dec_photo.jpg"), "wb") as f:
        f.write(data)
    expect("dec_photo.jpg", tol=JPEG_TOL, exp="src_polars.png")
    srcs["polars"].save(path("dec_photo_prog.jpg"), quality=90, progressive=True)
    expect("dec_photo_prog.jpg", tol=JPEG_TOL)
    srcs["polars"].convert("L").save(path("dec_grey.jpg"), quality=90)
    expect("dec_grey.jpg", tol=JPEG_TOL)
    srcs["polars"].save(path("dec_444.jpg"), quality=95, subsampling=0)
    expect("dec_444.jpg", tol=JPEG_TOL)
    with open(path("decode_cases.txt"), "w") as fh:
        fh.write("\n".join(cases) + "\n")


# stb_image vs libjpeg-turbo: IDCT, upsampling and colour conversion rounding
# (measured: max 3 levels, mean 0.07 on the polars photo)
JPEG_TOL = 4


def make_hostile():
    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", 50000, 50000, 8, 2, 0, 0, 0)
    with open(path("huge_50000.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    # baseline JPEG: SOI, SOF0 claiming 50000x50000x3, then EOI
    sof = struct.pack(">BBHBHHB", 0xFF, 0xC0, 17, 8, 50000, 50000, 3)
    sof += bytes([1, 0x11, 0, 2, 0x11, 0, 3, 0x11, 0])
    with open(path("huge_50000.jpg"), "wb") as f:
        f.write(b"\xFF\xD8" + sof + b"\xFF\xD9")


def main():
    os.makedirs(OUT, exist_ok=True)
    srcs = make_sources()
    make_resize_cases(srcs)
    make_pipelines(srcs)
    make_decode_cases(srcs)
    make_hostile()
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print("fixtures: %d bytes in %s" % (total, OUT))


if __name__ == "__main__":
    main()
