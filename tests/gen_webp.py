#!/usr/bin/python3
"""WebP fixtures for tests/test_webp.c: PIL writes them (lossless, lossy, with
alpha, animated) and decodes them back with convert('RGB'); the raw RGB bytes
it decodes are stored beside each file (NAME.rgb) for the C decoder to match.
PIL's WebP plugin uses libwebp, as vitc does. Run: /usr/bin/python3 tests/gen_webp.py"""
import os

from PIL import Image, features

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "webp")
os.makedirs(OUT, exist_ok=True)
print("PIL WebP (libwebp)", features.version("webp"))

photo = Image.open(os.path.join(HERE, "fixtures", "real", "apple.png")).convert("RGB")
rgb = photo.resize((40, 30), Image.BICUBIC)
# Alpha: a ramp with fully transparent and fully opaque parts, so dropping it
# (not blending) shows.
alpha = Image.linear_gradient("L").resize((40, 30))
rgba = rgb.copy()
rgba.putalpha(alpha)


def save(name, image, **kw):
    path = os.path.join(OUT, name + ".webp")
    image.save(path, "WEBP", **kw)
    with Image.open(path) as im:
        im.load()
        decoded = im.convert("RGB")
    with open(os.path.join(OUT, name + ".rgb"), "wb") as f:
        f.write(decoded.tobytes())
    print(name, decoded.size, os.path.getsize(path), "bytes")
    return path


save("lossless", rgb, lossless=True)
save("lossy", rgb, quality=80)
save("lossy_alpha", rgba, quality=80)
save("lossless_alpha", rgba, lossless=True, exact=True)
# Two frames: the first is what is read.
second = rgb.transpose(Image.FLIP_LEFT_RIGHT)
save("animated", rgb, save_all=True, append_images=[second], duration=100, loop=0, lossless=True)
# A cut-off download: the header is whole, the data is not.
with open(os.path.join(OUT, "lossy.webp"), "rb") as f:
    data = f.read()
with open(os.path.join(OUT, "truncated.webp"), "wb") as f:
    f.write(data[: len(data) // 2])
