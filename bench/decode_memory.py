#!/usr/bin/python3
"""Peak memory of decoding one image, per format and variant: the numbers
behind data_image_probe_memory's bytes-per-pixel factors (data/image.c),
which vit serve's decode budget (--decode-mb) counts images by.

usage: /usr/bin/python3 bench/decode_memory.py [VIT] [SIZE]
       (default build/vit, 4000: SIZE x SIZE images; needs numpy and PIL)

For each variant it writes the image, runs `vit classify` on it with the
small fixture model under GNU time and takes the peak resident size,
subtracts the same run on a 16 x 16 PNG and the file's own size (classify
holds the encoded file in memory; vit serve counts request bodies apart),
and prints the rest per pixel beside the probe's prediction, which it reads
from `vit serve --decode-mb 1` (every image is then over the budget and the
413 says how much it would take). A measured value above the prediction is
a bug in the factors.
"""
import http.client
import io
import os
import re
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "vit")
SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
MODEL = os.path.join(ROOT, "tests", "fixtures", "parity", "hf_vit_d48_h3")
sys.path.insert(0, os.path.join(ROOT, "tests"))
import bombs  # noqa: E402


def peak_kib(path):
    """The peak RSS of one vit classify run on path (KiB), from GNU time: a
    child forked by this (large) Python process would count the parent's
    pages it shares before exec."""
    out = subprocess.run(["/usr/bin/time", "-f", "PEAK %M", VIT, "classify", "-q", "-m", MODEL,
                          "-k", "1", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True).stderr
    return int(re.search(r"^PEAK (\d+)$", out, re.M).group(1))


def pattern(size, channels, dtype=np.uint8):
    """A smooth picture with some grain: every pixel differs from zero, the
    file compresses."""
    y, x = np.mgrid[0:size, 0:size]
    top = 65535 if dtype == np.uint16 else 255
    planes = [((x * (c + 1) + y * (3 - c)) % (top + 1)) for c in range(channels)]
    a = np.stack(planes, axis=-1).astype(dtype)
    rng = np.random.default_rng(0)
    a[::7, ::5] ^= rng.integers(0, 3, a[::7, ::5].shape).astype(dtype)
    return a


def png_raw(a, interlace=False):
    """PNG from a uint8/uint16 array (H, W, C), optionally Adam7."""
    h, w, c = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    color = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    be = a.astype(">u2") if depth == 16 else a

    def rows(img):
        return b"".join(b"\0" + img[r].tobytes() for r in range(img.shape[0]))
    if not interlace:
        raw = rows(be)
    else:
        raw = b""
        for x0, y0, dx, dy in ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                               (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)):
            sub = be[y0::dy, x0::dx]
            if sub.size:
                raw += rows(sub)

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" +
            chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 1 if interlace else 0)) +
            chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def psd_raw(a):
    """An uncompressed PSD (RGB or RGBA, 8 or 16 bits)."""
    h, w, c = a.shape
    depth = 16 if a.dtype == np.uint16 else 8
    head = b"8BPS" + struct.pack(">H6xHIIHH", 1, c, h, w, depth, 3)
    planes = b"".join((a[:, :, k].astype(">u2") if depth == 16 else a[:, :, k]).tobytes()
                      for k in range(c))
    return head + struct.pack(">I", 0) + struct.pack(">I", 0) + struct.pack(">I", 0) + \
        struct.pack(">H", 0) + planes


def pil(img, fmt, **kw):
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def variants(s):
    rgb = Image.fromarray(pattern(s, 3))
    rgba = Image.fromarray(pattern(s, 4))
    grey = Image.fromarray(pattern(s, 1)[:, :, 0])
    yield "PNG RGB 8", "png", png_raw(pattern(s, 3))
    yield "PNG RGBA 8", "png", png_raw(pattern(s, 4))
    yield "PNG grey 8", "png", png_raw(pattern(s, 1))
    yield "PNG grey+alpha 8", "png", png_raw(pattern(s, 2))
    yield "PNG palette", "png", pil(rgb.quantize(256), "PNG")
    yield "PNG palette+tRNS", "png", pil(rgb.quantize(256), "PNG", transparency=0)
    yield "PNG grey 1-bit", "png", pil(grey.convert("1"), "PNG")
    yield "PNG RGB 16", "png", png_raw(pattern(s, 3, np.uint16))
    yield "PNG RGBA 16", "png", png_raw(pattern(s, 4, np.uint16))
    yield "PNG grey 16", "png", png_raw(pattern(s, 1, np.uint16))
    yield "PNG RGBA 16 interlaced", "png", png_raw(pattern(s, 4, np.uint16), interlace=True)
    yield "PNG RGB 8 interlaced", "png", png_raw(pattern(s, 3), interlace=True)
    yield "JPEG grey", "jpg", pil(grey, "JPEG", quality=90)
    yield "JPEG 4:4:4", "jpg", pil(rgb, "JPEG", quality=90, subsampling=0)
    yield "JPEG 4:2:0", "jpg", pil(rgb, "JPEG", quality=90, subsampling=2)
    yield "JPEG progressive 4:4:4", "jpg", pil(rgb, "JPEG", quality=90, subsampling=0, progressive=True)
    yield "JPEG progressive 4:2:0", "jpg", pil(rgb, "JPEG", quality=90, subsampling=2, progressive=True)
    yield "JPEG CMYK", "jpg", pil(rgba.convert("CMYK"), "JPEG", quality=90)
    yield "JPEG progressive CMYK", "jpg", pil(rgba.convert("CMYK"), "JPEG", quality=90, progressive=True)
    yield "JPEG bomb (zero blocks)", "jpg", bombs.jpeg(s)
    yield "WebP lossy", "webp", pil(rgb, "WEBP", quality=80)
    yield "WebP lossy+alpha", "webp", pil(rgba, "WEBP", quality=80)
    yield "WebP lossless", "webp", pil(rgb, "WEBP", lossless=True)
    yield "WebP lossless+alpha", "webp", pil(rgba, "WEBP", lossless=True)
    yield "WebP animated, 1x1 frame", "webp", bombs.webp_animation(s)
    frames = [rgb, rgb.transpose(Image.FLIP_LEFT_RIGHT)]
    yield "WebP animated, lossless frames", "webp", pil(frames[0], "WEBP", save_all=True,
                                                        append_images=frames[1:], lossless=True)
    yield "WebP animated, lossy frames", "webp", pil(frames[0], "WEBP", save_all=True,
                                                     append_images=frames[1:], quality=80)
    yield "GIF full frame", "gif", pil(rgb.quantize(256), "GIF")
    yield "GIF screen, 1x1 image", "gif", bombs.gif(s)
    yield "BMP 24-bit", "bmp", pil(rgb, "BMP")
    yield "BMP 32-bit", "bmp", pil(rgba, "BMP")
    yield "BMP 8-bit palette", "bmp", pil(rgb.quantize(256), "BMP")
    yield "BMP 1-bit", "bmp", pil(grey.convert("1"), "BMP")
    yield "TGA RGB RLE", "tga", pil(rgb, "TGA", compression="tga_rle")
    yield "TGA RGBA RLE", "tga", pil(rgba, "TGA", compression="tga_rle")
    yield "PSD RGB 8", "psd", psd_raw(pattern(s, 3))
    yield "PSD RGBA 16", "psd", psd_raw(pattern(s, 4, np.uint16))
    yield "PPM 8", "ppm", pil(rgb, "PPM")
    yield "PPM 16", "ppm", b"P6 %d %d 65535\n" % (s, s) + pattern(s, 3, np.uint16).astype(">u2").tobytes()
    yield "PGM 8", "pgm", pil(grey, "PPM")


def predictor():
    """A vit serve that refuses every image with its predicted peak, and a
    function asking it about bytes (MiB, or None)."""
    proc = subprocess.Popen([VIT, "serve", "-m", MODEL, "--port", "0", "--decode-mb", "1",
                             "--max-body-mb", "1024", "--bodies-mb", "1024"],
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)$", line.strip())
        if m:
            port = int(m.group(1))
            break

    def ask(data):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/classify", data)
        body = conn.getresponse().read().decode()
        conn.close()
        m = re.search(r"takes about (\d+) MiB", body)
        return int(m.group(1)) if m else None
    return proc, ask


def main():
    server, ask = predictor()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            small = os.path.join(tmp, "small.png")
            Image.new("RGB", (16, 16)).save(small)
            base = min(peak_kib(small) for _ in range(3))
            print(f"vit classify on a 16x16 PNG: {base} KiB peak; {SIZE} x {SIZE} images below")
            print(f"{'variant':32} {'file KiB':>9} {'peak MiB':>9} {'B/pixel':>8} {'probe MiB':>9}")
            for name, ext, data in variants(SIZE):
                path = os.path.join(tmp, "img." + ext)
                with open(path, "wb") as f:
                    f.write(data)
                peak = peak_kib(path)
                per_pixel = (peak - base - len(data) / 1024) * 1024 / SIZE / SIZE
                predicted = ask(data)
                flag = "" if predicted and predicted >= (peak - base) / 1024 else "  UNDER"
                print(f"{name:32} {len(data) / 1024:9.0f} {(peak - base) / 1024:9.1f} {per_pixel:8.2f} "
                      f"{predicted if predicted else '-':>9}{flag}", flush=True)
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
