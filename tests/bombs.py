#!/usr/bin/env python3
"""Decompression bombs: small files that declare a huge image.

usage: tests/bombs.py DIR [SIZE]   writes DIR/bomb.{png,webp,jpg,gif} and
                                   DIR/bomb-truncated.jpg, SIZE x SIZE
                                   (default 10000), and prints their names

Imported by tests/serve_test.py and tests/attack.py, run by
bench/serve_load.sh --soak. The standard library only (ctest's Python may
have neither numpy nor PIL). Each file is a valid image of its format as
far as its header goes; decoding any of them allocates hundreds of bytes
per byte of the file:

  png            SIZE x SIZE RGB, all zero rows: ~3 KB of file per megapixel
  webp           an animation whose canvas is SIZE x SIZE and whose one
                 frame is 1 x 1 (libwebp's animation decoder allocates two
                 RGBA canvases): ~100 bytes
  jpg            baseline, 3 components at full resolution, every block the
                 shortest code (2 bits): ~12 KB per megapixel
  truncated.jpg  the same cut after 50 bytes of scan and closed with an EOI
                 marker: ~200 bytes (stb_image fills the rest with zeros)
  gif            a SIZE x SIZE logical screen holding one 1 x 1 image (stb
                 allocates the screen four times over): ~40 bytes
"""
import os
import struct
import sys
import zlib


def png(size):
    """An RGB PNG of size x size zero pixels, compressed row by row."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    z = zlib.compressobj(9)
    row = b"\0" * (1 + 3 * size)  # filter byte + RGB
    data = b"".join(z.compress(row) for _ in range(size)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)) +
            chunk(b"IDAT", data) + chunk(b"IEND", b""))


# A 1 x 1 black lossless WebP's VP8L payload (PIL's encoder made it).
VP8L_1X1 = bytes.fromhex("2f00000000071011fd0f4444ff03")


def webp_animation(size):
    """An animated WebP: canvas size x size, one 1 x 1 frame at the corner."""
    def chunk(kind, body):
        return kind + struct.pack("<I", len(body)) + body + (b"\0" if len(body) % 2 else b"")

    def u24(v):
        return struct.pack("<I", v)[:3]
    vp8x = chunk(b"VP8X", bytes([0x02]) + b"\0\0\0" + u24(size - 1) + u24(size - 1))
    anim = chunk(b"ANIM", b"\0\0\0\0" + struct.pack("<H", 0))
    frame = u24(0) + u24(0) + u24(0) + u24(0) + u24(100) + b"\0"
    anmf = chunk(b"ANMF", frame + chunk(b"VP8L", VP8L_1X1))
    body = b"WEBP" + vp8x + anim + anmf
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _jpeg_head(size):
    def segment(marker, body):
        return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body
    dqt = segment(0xDB, b"\x00" + b"\x01" * 64)
    sof = segment(0xC0, struct.pack(">BHHB", 8, size, size, 3) +
                  b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))
    # One code each, '0': DC difference 0, AC end-of-block.
    dht = segment(0xC4, b"\x00" + b"\x01" + b"\0" * 15 + b"\x00" +
                  b"\x10" + b"\x01" + b"\0" * 15 + b"\x00")
    sos = segment(0xDA, b"\x03" + b"".join(bytes([c, 0x00]) for c in (1, 2, 3)) + b"\x00\x3f\x00")
    return b"\xff\xd8" + dqt + sof + dht + sos


def jpeg(size):
    """A whole baseline JPEG of size x size: 2 zero bits per block."""
    blocks = ((size + 7) // 8) ** 2 * 3
    return _jpeg_head(size) + b"\0" * ((2 * blocks + 7) // 8) + b"\xff\xd9"


def jpeg_truncated(size):
    """The same with only 50 bytes of scan, then an end-of-image marker."""
    return _jpeg_head(size) + b"\0" * 50 + b"\xff\xd9"


def gif(size):
    """A GIF89a with a size x size screen and one 1 x 1 image."""
    screen = b"GIF89a" + struct.pack("<HHBBB", size, size, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
    lzw = b"\x02\x02\x44\x01\x00"  # minimum code size 2: clear, index 0, end
    return screen + image + lzw + b"\x3b"


BOMBS = {"bomb.png": png, "bomb.webp": webp_animation, "bomb.jpg": jpeg,
         "bomb-truncated.jpg": jpeg_truncated, "bomb.gif": gif}


def write_all(directory, size=10000):
    paths = []
    for name, make in BOMBS.items():
        path = os.path.join(directory, name)
        with open(path, "wb") as f:
            f.write(make(size))
        paths.append(path)
    return paths


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.split("\n\n")[1])
    for p in write_all(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else 10000):
        print(p)
