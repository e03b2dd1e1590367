#!/usr/bin/python3
"""Attacks the vit program the way a careless or hostile user would.

Usage:  /usr/bin/python3 tests/attack.py [PATH/TO/vit [GROUP ...]]   (default build-sanitize/vit;
        GROUP: model_cases, image_cases, output_cases, option_cases,
        serve_start_cases, serve_hostile_cases; default all)

Every case builds its hostile input in a temporary directory (crafted
checkpoints and configs, broken and odd images, hostile directory trees,
outputs that alias inputs or cannot be written, concurrent and interrupted
runs) and runs one `vit` command on it. Whatever the case, these must hold:

  - it ends by itself (no hang: 120 s limit) and is not killed by a signal;
  - the exit status is 0, 1 or 2, and the one the case expects where it
    expects one (1 fatal, 2 some inputs failed);
  - no AddressSanitizer / UndefinedBehaviorSanitizer report on stderr;
  - no input is changed: every file the case made (models, configs, images)
    has the same bytes and inode afterwards;
  - every output is valid: JSON and JSON Lines parse strictly (no NaN or
    Infinity tokens) as UTF-8, CSV rows all have the header's width, PNG,
    .npy and .safetensors files are whole; no temporary file is left behind.

Only the standard library and numpy are used; PyTorch is not needed here.
Prints one line per failed case and closes with 'N passed, N failed'.
"""
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VIT = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build-sanitize", "vit"))
FIXTURE_MODEL = os.path.join(ROOT, "tests", "fixtures", "parity", "hf_vit_d48_h3")
TIMM_MODEL = os.path.join(ROOT, "tests", "fixtures", "parity", "timm_d128_h2")
PHOTO = os.path.join(ROOT, "tests", "fixtures", "real", "apple.png")
TIMEOUT = 120

ENV = dict(os.environ,
           ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:exitcode=99",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:exitcode=98",
           OMP_NUM_THREADS="2", OMP_WAIT_POLICY="passive")


# ------------------------------------------------------------ safetensors

def st_read(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    data = blob[8 + n:]
    meta = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        a, b = info["data_offsets"]
        assert info["dtype"] == "F32", name
        tensors[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"]).copy()
    return tensors, meta


def st_write(path, tensors, meta=None):
    header, chunks, offset = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, t in tensors.items():
        raw = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def st_valid(path):
    with open(path, "rb") as f:
        blob = f.read()
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8:8 + n])
    end = max([v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"] + [0])
    return 8 + n + end == len(blob)


# ----------------------------------------------------------------- images

def png_bytes(w, h, channels=3, seed=0):
    """A small valid PNG (zlib via the standard library)."""
    import zlib
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
    raw = b"".join(b"\x00" + pixels[y].tobytes() for y in range(h))
    color = {1: 0, 3: 2, 4: 6}[channels]

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, color, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bmp_bytes(w, h, top_down):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    row = (w * 3 + 3) & ~3
    rows = range(h) if top_down else range(h - 1, -1, -1)
    body = b"".join(pixels[y, :, ::-1].tobytes() + b"\0" * (row - w * 3) for y in rows)
    info = struct.pack("<IiiHHIIiiII", 40, w, -h if top_down else h, 1, 24, 0, len(body), 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(body), 0, 0, 54) + info + body


# --------------------------------------------------------------- checking

def strict_json(text):
    def no_constant(name):
        raise ValueError("non-finite number %s" % name)
    return json.loads(text, parse_constant=no_constant)


def csv_rows(path):
    import csv
    import io
    with open(path, "rb") as f:
        return len(list(csv.reader(io.StringIO(f.read().decode("utf-8", "surrogateescape"), newline=""))))


def check_output(path):
    """Returns a problem with the output file at path, or None."""
    base = os.path.basename(path)
    with open(path, "rb") as f:
        blob = f.read()
    try:
        if base.endswith(".jsonl") or base.endswith(".files.txt"):
            text = blob.decode("utf-8")
            for line in text.splitlines():
                if line.strip():
                    strict_json(line)
        elif base.endswith(".json"):
            strict_json(blob.decode("utf-8"))
        elif base.endswith(".csv"):
            import csv
            import io
            rows = list(csv.reader(io.StringIO(blob.decode("utf-8", "surrogateescape"), newline="")))
            if rows and any(len(r) != len(rows[0]) for r in rows):
                return "CSV rows of different widths"
            if blob and not blob.endswith(b"\n"):
                return "CSV ends inside a row"
        elif base.endswith(".png"):
            if not blob.startswith(b"\x89PNG\r\n\x1a\n") or blob[-12:-4] != b"\0\0\0\0IEND":
                return "not a whole PNG"
        elif base.endswith(".npy"):
            if not blob.startswith(b"\x93NUMPY"):
                return "not a .npy file"
            np.load(path, allow_pickle=False)
        elif base.endswith(".safetensors"):
            if not st_valid(path):
                return "not a whole safetensors file"
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        return "invalid %s: %s" % (base, e)
    return None


def snapshot(root):
    """(inode, sha256) of every regular file below root."""
    seen = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            p = os.path.join(dirpath, name)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    seen[p] = (st.st_ino, hashlib.sha256(f.read()).hexdigest())
    return seen


class Attack:
    def __init__(self):
        self.top = tempfile.mkdtemp(prefix="vitc-attack-")
        os.chmod(self.top, 0o755)
        self.passed, self.failed = 0, []
        self.index = 0

    def case_dir(self):
        self.index += 1
        d = os.path.join(self.top, "c%03d" % self.index)
        os.makedirs(os.path.join(d, "in"))
        os.makedirs(os.path.join(d, "out"))
        return d

    def model(self, d, source=FIXTURE_MODEL, name="model"):
        m = os.path.join(d, "in", name)
        shutil.copytree(source, m)
        return m

    def run(self, name, d, args, expect=None, stdout_format=None, check=None, prefix=(),
            background=None):
        """Runs vit ARGS in case directory d and checks the invariants."""
        inputs = snapshot(os.path.join(d, "in"))
        problems = []
        started = time.monotonic()
        try:
            proc = subprocess.run(list(prefix) + [VIT] + args, cwd=d, env=ENV, capture_output=True,
                                  timeout=TIMEOUT, stdin=subprocess.DEVNULL)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as e:
            code, out, err = None, e.stdout or b"", e.stderr or b""
            problems.append("hung (no exit after %d s)" % TIMEOUT)
        if background:
            background()
        err_text = err.decode("utf-8", "replace")
        if code is not None and code < 0:
            problems.append("killed by signal %d" % -code)
        elif code is not None and code not in (0, 1, 2):
            problems.append("exit status %d" % code)
        elif code is not None and expect is not None and code not in (expect if isinstance(expect, tuple) else (expect,)):
            problems.append("exit status %d, expected %s" % (code, expect))
        if "Sanitizer" in err_text or "runtime error:" in err_text:
            problems.append("sanitizer report")
        after = snapshot(os.path.join(d, "in"))
        for path, before in inputs.items():
            if after.get(path) != before:
                problems.append("input changed or removed: %s" % os.path.relpath(path, d))
        if stdout_format in ("json", "jsonl") and out:
            try:
                text = out.decode("utf-8")
                if stdout_format == "json":
                    strict_json(text)
                else:
                    for line in text.splitlines():
                        strict_json(line)
            except Exception as e:  # noqa: BLE001
                problems.append("stdout is not strict %s: %s" % (stdout_format, e))
        for dirpath, _, filenames in os.walk(os.path.join(d, "out")):
            for fname in filenames:
                p = os.path.join(dirpath, fname)
                if ".tmp." in fname:
                    problems.append("temporary file left: %s" % os.path.relpath(p, d))
                elif os.path.isfile(p):
                    bad = check_output(p)
                    if bad:
                        problems.append("%s: %s" % (os.path.relpath(p, d), bad))
        if check and not problems:
            bad = check(code, out.decode("utf-8", "replace"), err_text)
            if bad:
                problems.append(bad)
        seconds = time.monotonic() - started
        if problems:
            first_err = err_text.strip().splitlines()[:3]
            self.failed.append(name)
            print("FAIL %s (%.1f s): %s\n     vit %s\n     stderr: %s" %
                  (name, seconds, "; ".join(problems), " ".join(args), " | ".join(first_err)))
        else:
            self.passed += 1
        return code, out, err_text


def wait_for_rows(path, proc, seconds=60):
    """Waits until a running vit has written some rows to path."""
    end = time.monotonic() + seconds
    while time.monotonic() < end and proc.poll() is None:
        if os.path.exists(path) and os.path.getsize(path) > 200:
            return
        time.sleep(0.05)


def one_line_naming(word):
    def check(code, out, err):
        if code == 0:
            return None
        lines = [l for l in err.splitlines() if l.strip()]
        if not lines:
            return "no message on stderr"
        if word and word not in err:
            return "stderr does not name %r: %s" % (word, err.strip()[:200])
        return None
    return check


# ------------------------------------------------------------------ cases

def model_cases(a):
    """Crafted checkpoints and configs: each must be refused at load (exit 1)."""
    def config_case(label, change, expect=1, word=None):
        d = a.case_dir()
        m = a.model(d)
        path = os.path.join(m, "config.json")
        with open(path) as f:
            config = json.load(f)
        change(config)
        with open(path, "w") as f:
            json.dump(config, f)
        a.run("config " + label, d, ["classify", "-q", "-m", "in/model", PHOTO, "--format", "json"],
              expect=expect, stdout_format="json", check=one_line_naming(word))

    for value in (0, -3, "3", 3.5, 1e300, [3], True):
        config_case("num_attention_heads=%r" % (value,), lambda c, v=value: c.update(num_attention_heads=v),
                    word="num_attention_heads")
    # JSON null is taken as absent (the default, with a notice), as a
    # missing key is.
    config_case("num_attention_heads=null", lambda c: c.update(num_attention_heads=None), expect=0)
    config_case("layer_norm_eps='x'", lambda c: c.update(layer_norm_eps="x"), word="layer_norm_eps")
    config_case("layer_norm_eps=-1", lambda c: c.update(layer_norm_eps=-1), word="layer_norm_eps")
    config_case("num_hidden_layers=-1", lambda c: c.update(num_hidden_layers=-1), word="num_hidden_layers")
    config_case("patch_size=0", lambda c: c.update(patch_size=0), word="patch_size")
    config_case("image_size='224'", lambda c: c.update(image_size="224"), word="image_size")
    config_case("hidden_size=1e400", lambda c: c.update(hidden_size=float("inf")))
    config_case("id2label of 2 for 5 classes", lambda c: c.update(id2label={"0": "a", "1": "b"}), word="id2label")
    config_case("id2label of 7 for 5 classes",
                lambda c: c.update(id2label={str(i): "l%d" % i for i in range(7)}), word="id2label")
    config_case("id2label value not a string", lambda c: c["id2label"].update({"0": 5}), word="id2label")

    def preprocessor_case(label, pre, expect=1, extra=()):
        d = a.case_dir()
        m = a.model(d)
        with open(os.path.join(m, "preprocessor_config.json"), "w") as f:
            f.write(pre if isinstance(pre, str) else json.dumps(pre))
        a.run("preprocessor " + label, d, ["classify", "-q", "-m", "in/model", PHOTO, "--format", "json"] + list(extra),
              expect=expect, stdout_format="json", check=one_line_naming(None))

    preprocessor_case("size 8 crop 7", {"size": 8, "crop_size": 7, "do_center_crop": True})
    preprocessor_case("crop 32x24", {"size": {"height": 40, "width": 40}, "crop_size": {"height": 32, "width": 24},
                                     "do_center_crop": True})
    preprocessor_case("crop 64 for a 32 model", {"size": 72, "crop_size": 64, "do_center_crop": True})
    preprocessor_case("size 64 without crop", {"size": 64, "do_center_crop": False})
    preprocessor_case("on purpose with --size 64", {"size": 72, "crop_size": 64, "do_center_crop": True},
                      expect=0, extra=("--size", "64"))
    preprocessor_case("image_std 1e-45 (non-finite output)",
                      {"size": 32, "image_mean": [0.5, 0.5, 0.5], "image_std": [1e-45, 1e-45, 1e-45]}, expect=2)
    preprocessor_case("image_std 0", {"size": 32, "image_std": [0, 0, 0]})
    preprocessor_case("size 'x'", {"size": "x"})
    preprocessor_case("malformed", '{"size": 32,')
    preprocessor_case("a list", '[1, 2]')
    preprocessor_case("crop_pct 1e-300 (timm)", {"crop_pct": 1e-300})

    # Config files that are not regular files must not hang or be ignored.
    for kind in ("fifo", "dev-zero", "directory"):
        d = a.case_dir()
        m = a.model(d)
        cfg = os.path.join(m, "preprocessor_config.json")
        if kind == "fifo":
            os.mkfifo(cfg)
        elif kind == "dev-zero":
            os.symlink("/dev/zero", cfg)
        else:
            os.mkdir(cfg)
        a.run("preprocessor_config.json is a " + kind, d, ["info", "-m", "in/model"], expect=1,
              check=one_line_naming("preprocessor_config.json"))

    # The model itself as a FIFO, /dev/zero, an empty file, garbage, truncated.
    for kind in ("fifo", "dev-zero", "empty", "garbage", "truncated", "huge header length", "directory"):
        d = a.case_dir()
        p = os.path.join(d, "in", "model.safetensors")
        src = os.path.join(FIXTURE_MODEL, "model.safetensors")
        if kind == "fifo":
            os.mkfifo(p)
        elif kind == "dev-zero":
            os.symlink("/dev/zero", p)
        elif kind == "empty":
            open(p, "wb").close()
        elif kind == "garbage":
            with open(p, "wb") as f:
                f.write(os.urandom(4096))
        elif kind == "truncated":
            with open(src, "rb") as f:
                blob = f.read()
            with open(p, "wb") as f:
                f.write(blob[: len(blob) // 2])
        elif kind == "huge header length":
            with open(p, "wb") as f:
                f.write(struct.pack("<Q", 1 << 62) + b"{}")
        else:
            os.mkdir(p)
        a.run("model is " + kind, d, ["classify", "-q", "-m", "in/model.safetensors", PHOTO], expect=1,
              check=one_line_naming("model.safetensors"))

    # Tensors: 4 input channels, NaN and Inf weights.
    d = a.case_dir()
    m = a.model(d)
    tensors, meta = st_read(os.path.join(m, "model.safetensors"))
    key = [k for k in tensors if k.endswith("patch_embeddings.projection.weight")][0]
    w = tensors[key]
    tensors[key] = np.concatenate([w, w[:, :1]], axis=1)
    st_write(os.path.join(m, "model.safetensors"), tensors, meta)
    with open(os.path.join(m, "config.json")) as f:
        config = json.load(f)
    config.pop("num_channels", None)
    with open(os.path.join(m, "config.json"), "w") as f:
        json.dump(config, f)
    a.run("4-channel patch embedding", d, ["classify", "-q", "-m", "in/model", PHOTO], expect=1,
          check=one_line_naming("channel"))

    for value in (float("nan"), float("inf")):
        d = a.case_dir()
        m = a.model(d)
        tensors, meta = st_read(os.path.join(m, "model.safetensors"))
        key = [k for k in tensors if k.endswith("classifier.weight")][0]
        tensors[key] = np.full_like(tensors[key], value)
        st_write(os.path.join(m, "model.safetensors"), tensors, meta)
        for fmt in ("json", "jsonl"):
            a.run("%r head weights, --format %s" % (value, fmt), d,
                  ["classify", "-q", "-m", "in/model", PHOTO, PHOTO, "--format", fmt], expect=2, stdout_format=fmt)
        a.run("%r head weights, -o out/r.csv" % value, d, ["classify", "-q", "-m", "in/model", PHOTO, "-o", "out/r.csv"],
              expect=2)
        a.run("%r head weights, patches" % value, d,
              ["patches", "-q", "-m", "in/model", PHOTO, "-o", "out/p.png", "--npy", "out/p.npy"])

    # Labels files.
    d = a.case_dir()
    m = a.model(d)
    for label, body in (("BOM", b"\xef\xbb\xbfzero\none\ntwo\nthree\nfour\n"), ("too few", b"a\nb\n"),
                        ("binary", os.urandom(300)), ("CRLF", b"a\r\nb\r\nc\r\nd\r\ne\r\n")):
        p = os.path.join(d, "in", "labels-%d.txt" % len(label))
        with open(p, "wb") as f:
            f.write(body)
        a.run("--labels " + label, d, ["classify", "-q", "-m", "in/model", "--labels", p, PHOTO, "--format", "json"],
              stdout_format="json",
              check=(lambda c, o, e: None if "\ufeff" not in o else "BOM kept in a label") if label == "BOM" else None)


def image_cases(a):
    """Broken, odd and hostile image files and directory trees."""
    d = a.case_dir()
    a.model(d)
    images = os.path.join(d, "in", "images")
    os.makedirs(images)
    files = {
        "good.png": png_bytes(40, 30),
        "grey.png": png_bytes(20, 20, 1),
        "rgba.png": png_bytes(20, 20, 4),
        "empty.png": b"",
        "truncated.png": png_bytes(40, 30)[:60],
        "garbage.jpg": os.urandom(2000),
        "text.png": b"hello, I am not an image\n",
        "huge.png": png_bytes(40, 30).replace(struct.pack(">II", 40, 30), struct.pack(">II", 100000, 100000), 1),
        "topdown.bmp": bmp_bytes(32, 24, True),
        "bottomup.bmp": bmp_bytes(32, 24, False),
        "bitmap.pbm": b"P4\n8 2\n\xf0\x0f",
        "ascii.pgm": b"P2\n2 2\n255\n0 255 255 0\n",
        "comma,quote\".png": png_bytes(16, 16),
        "new\nline.png": png_bytes(16, 16),
        "carriage\rreturn.png": png_bytes(16, 16),
        "tab\there.png": png_bytes(16, 16),
    }
    for name, body in files.items():
        with open(os.path.join(images, name), "wb") as f:
            f.write(body)
    with open(os.fsencode(images) + b"/latin1-\xe9t\xe9.png", "wb") as f:
        f.write(png_bytes(16, 16))
    os.mkfifo(os.path.join(images, "fifo.png"))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(os.path.join(images, "socket.png"))
    os.symlink("/dev/zero", os.path.join(images, "zero.png"))
    os.symlink("nowhere.png", os.path.join(images, "dangling.png"))
    os.symlink(".", os.path.join(images, "loop"))
    os.mkdir(os.path.join(images, "dir.png"))
    deep = images
    for i in range(80):
        deep = os.path.join(deep, "d")
    os.makedirs(deep)
    with open(os.path.join(deep, "deep.png"), "wb") as f:
        f.write(png_bytes(16, 16))
    fmts = {"json": "out/r.json", "jsonl": "out/r.jsonl", "csv": "out/r.csv", "text": None}
    for fmt, out in fmts.items():
        args = ["classify", "-q", "-m", "in/model", "in/images", "--format", fmt]
        if out:
            args += ["-o", out]
        a.run("hostile directory, --format " + fmt, d, args, expect=2,
              stdout_format=fmt if not out else None)
    a.run("hostile directory, resume jsonl", d, ["classify", "-q", "-m", "in/model", "in/images", "-o", "out/r.jsonl",
                                                 "--resume"], expect=(0, 2),
          check=lambda c, o, e: None if csv_rows(os.path.join(d, "out/r.csv")) - 1 ==
          sum(1 for _ in open(os.path.join(d, "out/r.jsonl"), "rb")) else "resume changed the row count")
    a.run("hostile directory, resume csv", d, ["classify", "-q", "-m", "in/model", "in/images", "-o", "out/r.csv",
                                               "--resume"], expect=(0, 2))
    a.run("named FIFO, socket, /dev/zero and a directory", d,
          ["classify", "-q", "-m", "in/model", "in/images/fifo.png", "in/images/socket.png", "in/images/zero.png",
           "in/images/dir.png", "in/images/good.png", "--format", "json"], expect=2, stdout_format="json")
    a.run("/dev/stdin as an image", d, ["classify", "-q", "-m", "in/model", "/dev/stdin", "--format", "json"],
          expect=2, stdout_format="json")
    for cmd, extra in (("attention", ["--rollout"]), ("segment", []), ("patches", []), ("features", [])):
        out = "out/%s/" % cmd if cmd != "features" else "out/f.npy"
        a.run("hostile directory, " + cmd, d, [cmd, "-q", "-m", "in/model", "in/images", "-o", out] + extra, expect=2)

    # Empty walks.
    e = os.path.join(d, "in", "empty")
    os.mkdir(e)
    a.run("empty directory", d, ["classify", "-q", "-m", "in/model", "in/empty"], expect=1,
          check=one_line_naming("in/empty"))
    a.run("--ext matching nothing", d, ["classify", "-q", "-m", "in/model", "in/images", "--ext", "webp"], expect=1)
    a.run("empty directory, eval", d, ["eval", "-m", "in/model", "in/empty"], expect=1)
    a.run("empty directory, features", d, ["features", "-q", "-m", "in/model", "in/empty", "-o", "out/e.npy"], expect=1)

    # An unreadable subdirectory, as an unprivileged user (root reads all).
    setpriv = shutil.which("setpriv")
    if setpriv and os.geteuid() == 0:
        u = a.case_dir()
        m = a.model(u)
        tree = os.path.join(u, "in", "tree")
        os.makedirs(os.path.join(tree, "locked"))
        for p in ("a.png", "locked/b.png", "z.png"):
            with open(os.path.join(tree, p), "wb") as f:
                f.write(png_bytes(16, 16))
        for dirpath, dirnames, filenames in os.walk(u):
            for n in dirnames:
                os.chmod(os.path.join(dirpath, n), 0o777)
            for n in filenames:
                os.chmod(os.path.join(dirpath, n), 0o666)
        os.chmod(u, 0o777)
        os.chmod(os.path.join(tree, "locked"), 0o000)
        a.run("unreadable subdirectory", u, ["classify", "-q", "-m", "in/model", "in/tree", "--format", "jsonl"],
              expect=2, stdout_format="jsonl",
              prefix=[setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"],
              check=lambda c, o, e: None if [strict_json(l)["path"] for l in o.splitlines()
                                             if strict_json(l).get("error") is None] == ["a.png", "z.png"]
              else "the readable files were not all classified: " + o[:300])
        os.chmod(os.path.join(tree, "locked"), 0o755)


def output_cases(a):
    """Outputs that alias inputs, cannot be written, or are written twice."""
    d = a.case_dir()
    m = a.model(d)
    img = os.path.join(d, "in", "x.png")
    shutil.copy(PHOTO, img)
    os.link(img, os.path.join(d, "in", "hardlink.png"))
    os.symlink("x.png", os.path.join(d, "in", "symlink.png"))
    weights = "in/model/model.safetensors"
    for cmd in ("classify", "attention", "segment", "patches", "features", "eval", "quantize"):
        rest = {"quantize": ["--dtype", "int8"], "eval": ["in"]}.get(cmd, ["-q", "in/x.png"])
        for target in (weights, "in/model/config.json", "in/model/./model.safetensors"):
            a.run("%s -o %s" % (cmd, target), d, [cmd, "-m", "in/model", "-o", target] + rest, expect=1)
    for cmd in ("classify", "attention", "segment", "patches", "features"):
        for target in ("in/x.png", "in/hardlink.png", "in/symlink.png", "in/../in/x.png"):
            a.run("%s -o %s (an input)" % (cmd, target), d,
                  [cmd, "-q", "-m", "in/model", "in/x.png", "in/hardlink.png", "-o", target], expect=1)
    a.run("attention DIR -o DIR/", d, ["attention", "-q", "-m", "in/model", "in", "-o", "in/"], expect=1)
    a.run("segment --npy onto an input", d, ["segment", "-q", "-m", "in/model", "in/x.png", "-o", "out/s.png",
                                             "--npy", "in/x.png"], expect=1)
    a.run("train -o the model", d, ["train", "--data", "in", "-o", weights, "--epochs", "1"], expect=1)

    # Unwritable outputs.
    for target in ("/dev/full", "/proc/version", "out/missing/dir/r.csv", "out"):
        a.run("classify -o " + target, d, ["classify", "-q", "-m", "in/model", "in/x.png", "-o", target], expect=1,
              check=lambda c, o, e: None if len(e.strip().splitlines()) == 1 else "more than one stderr line")
    # Writers that rename a finished file over the target must not replace
    # a device (as root they replaced /dev/full): a FIFO stands in for one.
    os.mkfifo(os.path.join(d, "out", "fifo"))
    for cmd in ("attention", "segment", "patches", "features"):
        a.run("%s -o a FIFO" % cmd, d, [cmd, "-q", "-m", "in/model", "in/x.png", "-o", "out/fifo"], expect=1,
              check=lambda c, o, e: None if stat.S_ISFIFO(os.lstat(os.path.join(d, "out", "fifo")).st_mode)
              else "the FIFO was replaced")
    a.run("quantize -o a FIFO", d, ["quantize", "-m", "in/model", "--dtype", "bf16", "-o", "out/fifo"], expect=1,
          check=lambda c, o, e: None if stat.S_ISFIFO(os.lstat(os.path.join(d, "out", "fifo")).st_mode)
          else "the FIFO was replaced")
    os.unlink(os.path.join(d, "out", "fifo"))

    # Resume against a file another run wrote.
    a.run("first run, -k 2", d, ["classify", "-q", "-m", "in/model", "in/x.png", "-k", "2", "-o", "out/k.csv"],
          expect=0)
    a.run("resume with -k 3", d, ["classify", "-q", "-m", "in/model", "in/x.png", "-k", "3", "-o", "out/k.csv",
                                  "--resume"], expect=1)
    other = a.model(d, TIMM_MODEL, "other")
    a.run("resume with another model", d, ["classify", "-q", "-m", "in/other", "in/x.png", "in/hardlink.png", "-k", "2",
                                           "-o", "out/k.csv", "--resume"], expect=1)
    # Damaged on purpose, so kept out of out/ (whose files must all be valid).
    os.mkdir(os.path.join(d, "damaged"))
    with open(os.path.join(d, "damaged", "r.csv"), "w") as f:
        f.write("path,index_1,label_1,probability_1,error\n\"unterminated,1,a,0.5,\ngarbage\nx.png,1,a,0.5,\n")
    a.run("resume a damaged CSV", d, ["classify", "-q", "-m", "in/model", "in/x.png", "-k", "1",
                                      "-o", "damaged/r.csv", "--resume"], expect=1)
    with open(os.path.join(d, "damaged", "g.csv"), "w") as f:
        f.write("path,index_1,label_1,probability_1,error\ngarbage\nx.png,1,a,0.5,\n")
    a.run("resume a CSV with a garbage middle row", d, ["classify", "-q", "-m", "in/model", "in/x.png", "-k", "1",
                                                        "-o", "damaged/g.csv", "--resume"], expect=1)
    with open(os.path.join(d, "damaged", "j.jsonl"), "w") as f:
        f.write('{"path": "a.png", "top": [], "error": null}\nnot json\n{"path": "b.png", "top": [], "error": null}\n')
    a.run("resume a JSONL with a garbage middle line", d, ["classify", "-q", "-m", "in/model", "in/x.png",
                                                           "-o", "damaged/j.jsonl", "--resume"], expect=1)

    # Two writers at once: the second is refused, the first's output intact.
    many = os.path.join(d, "in", "many")
    os.mkdir(many)
    shutil.copy(PHOTO, os.path.join(many, "p0000.png"))
    for i in range(1, 4000):  # hard links: many files, little disk
        os.link(os.path.join(many, "p0000.png"), os.path.join(many, "p%04d.png" % i))
    first = subprocess.Popen([VIT, "classify", "-q", "-b", "1", "-t", "1", "-m", "in/model", "in/many",
                              "-o", "out/two.jsonl"], cwd=d, env=ENV, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    wait_for_rows(os.path.join(d, "out", "two.jsonl"), first)
    a.run("second writer of the same -o", d, ["classify", "-q", "-m", "in/model", "in/many", "-o", "out/two.jsonl",
                                              "--resume"], expect=1,
          background=lambda: first.terminate() or first.wait(timeout=TIMEOUT))

    # A signal in the middle of a JSON array.
    proc = subprocess.Popen([VIT, "classify", "-q", "-b", "1", "-t", "1", "-m", "in/model", "in/many",
                             "-o", "out/sig.json"], cwd=d, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_rows(os.path.join(d, "out", "sig.json"), proc)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=TIMEOUT)
        bad = check_output(os.path.join(d, "out", "sig.json"))
        if bad:
            a.failed.append("SIGTERM during -o x.json")
            print("FAIL SIGTERM during -o x.json: " + bad)
        else:
            a.passed += 1
    except subprocess.TimeoutExpired:
        proc.kill()
        a.failed.append("SIGTERM during -o x.json")
        print("FAIL SIGTERM during -o x.json: did not exit")


def option_cases(a):
    """Every option with values it cannot take."""
    d = a.case_dir()
    a.model(d)
    shutil.copy(PHOTO, os.path.join(d, "in", "x.png"))
    bad = ["-k", "0", "-k", "-1", "-k", "1e9", "-t", "0", "-b", "0", "-b", "99999999999", "--size", "0",
           "--size", "3", "--size", "-224", "--format", "xml", "--shard", "3/2", "--shard", "1/0",
           "--shard", "x", "--ext", "", "--pos-resample", "nearest", "--max-pixels", "0", "--max-json-depth", "-1",
           "--frobnicate", "x", "--resume", "", "-o", ""]
    for i in range(0, len(bad), 2):
        args = ["classify", "-q", "-m", "in/model", "in/x.png", bad[i]] + ([bad[i + 1]] if bad[i + 1] else [])
        a.run("classify %s %s" % (bad[i], bad[i + 1]), d, args, expect=(0, 1) if bad[i] in ("--size", "--ext") else 1)
    for cmd, args in (("attention", ["--grid", "--head", "1"]), ("attention", ["--head", "99"]),
                      ("attention", ["--layer", "99"]), ("attention", ["--discard", "1.5"]),
                      ("segment", ["--clusters", "0"]), ("segment", ["--clusters", "100000"]), ("features", ["--tokens", "x"]),
                      ("patches", ["--legend", "-1"])):
        out = "out/o.npy" if cmd == "features" else "out/o.png"
        a.run("%s %s" % (cmd, " ".join(args)), d, [cmd, "-q", "-m", "in/model", "in/x.png", "-o", out] + args,
              expect=(0, 1))
    for args in (["--patch", "29"], ["--patch", "0"], ["--dim", "7", "--heads", "2"], ["--epochs", "0"],
                 ["--lr", "nan"], ["--lr", "-1"], ["-b", "0"], ["--data", "in/nowhere"]):
        full = ["train", "-o", "out/t.safetensors"] + (["--data", "fashion-mnist"] if "--data" not in args else []) + args
        a.run("train " + " ".join(args), d, full, expect=1)


# ------------------------------------------------- issue 24 (not the server)

JPEG_PHOTO = os.path.join(ROOT, "tests", "fixtures", "preprocess", "dec_photo.jpg")
FAMILY_HOSTILE = os.path.join(ROOT, "tests", "fixtures", "family", "hostile")


def jpeg_scan_start(data):
    """(where the first scan's entropy-coded data starts, where the SOF
    payload starts) in a baseline JPEG."""
    i, frame = 2, None
    while data[i] == 0xFF:
        m, length = data[i + 1], data[i + 2] << 8 | data[i + 3]
        if 0xC0 <= m <= 0xC2:
            frame = i + 4
        i += 2 + length
        if m == 0xDA:
            return i, frame
    raise ValueError("no scan")


def says(*words, absent=()):
    """A check: stderr holds every word and none of absent."""
    def check(code, out, err):
        missing = [w for w in words if w not in err] + ["not %r" % w for w in absent if w in err]
        return "stderr lacks %s: %s" % (missing, err.strip()[:300]) if missing else None
    return check


def issue24_cases(a):
    """Issue 24: nothing the user names is silently ignored or overwritten."""
    # An end-of-image marker inside the scan data: one error row, every command.
    d = a.case_dir()
    a.model(d)
    with open(JPEG_PHOTO, "rb") as f:
        jpeg = f.read()
    first, frame = jpeg_scan_start(jpeg)
    huge = bytearray(jpeg)
    huge[frame + 1:frame + 5] = struct.pack(">HH", 10000, 10000)
    for name, body in (("early_eoi.jpg", jpeg[:first + 50] + b"\xff\xd9"),
                       ("half_scan.jpg", jpeg[:(first + len(jpeg)) // 2] + b"\xff\xd9"),
                       ("huge_50_bytes.jpg", bytes(huge[:first + 50]) + b"\xff\xd9")):
        with open(os.path.join(d, "in", name), "wb") as f:
            f.write(body)
        a.run("classify %s" % name, d, ["classify", "-q", "-m", "in/model", "in/" + name, "--format", "json"],
              expect=2, stdout_format="json", check=says(name, "truncated JPEG"))
    a.run("attention truncated JPEG", d, ["attention", "-q", "-m", "in/model", "in/early_eoi.jpg",
                                          "-o", "out/a.png"], expect=(1, 2), check=says("truncated JPEG"))

    # -o naming the --files-from list, by any spelling or link.
    d = a.case_dir()
    a.model(d)
    shutil.copy(PHOTO, os.path.join(d, "in", "x.png"))
    with open(os.path.join(d, "in", "list.txt"), "w") as f:
        f.write("in/x.png\n")
    os.link(os.path.join(d, "in", "list.txt"), os.path.join(d, "in", "hard.txt"))
    for cmd, target in (("classify", "in/list.txt"), ("classify", "in/hard.txt"), ("features", "in/./list.txt"),
                        ("attention", "in/list.txt"), ("segment", "in/hard.txt"), ("patches", "in/list.txt")):
        a.run("%s --files-from LIST -o %s" % (cmd, target), d,
              [cmd, "-q", "-m", "in/model", "--files-from", "in/list.txt", "-o", target], expect=1,
              check=says("would overwrite the --files-from list"))
    with open(os.path.join(d, "in", "long.txt"), "w") as f:
        f.write("x" * 5000 + "\nin/x.png\n")
    a.run("--files-from with an over-long line", d,
          ["classify", "-q", "-m", "in/model", "--files-from", "in/long.txt"], expect=1,
          check=says("longer than PATH_MAX", absent=("skipped",)))

    # A per-block tensor missing from block 0 only.
    for fault, word in (("ls1_missing_in_block0", "blocks.0.ls1.gamma"),
                        ("dinov2_lambda1_missing_in_layer0", "layer.0.layer_scale1.lambda1"),
                        ("q_norm_missing_in_block0", "blocks.0.attn.q_norm.weight")):
        d = a.case_dir()
        a.model(d, os.path.join(FAMILY_HOSTILE, fault))
        a.run("info " + fault, d, ["info", "-m", "in/model"], expect=1, check=says(word))

    # A config.json beside a file that carries another.
    d = a.case_dir()
    m = a.model(d)
    subprocess.run([VIT, "quantize", "-m", "in/model", "--dtype", "int8", "-o", "in/model/int8.safetensors"],
                   cwd=d, env=ENV, capture_output=True, timeout=TIMEOUT, check=True)
    a.run("int8 copy beside its own config", d, ["info", "-m", "in/model/int8.safetensors"], expect=0)
    with open(os.path.join(m, "config.json")) as f:
        config = json.load(f)
    config["layer_norm_eps"] = 1e-6
    with open(os.path.join(m, "config.json"), "w") as f:
        json.dump(config, f)
    a.run("int8 copy beside another config", d, ["classify", "-q", "-m", "in/model/int8.safetensors", PHOTO],
          expect=1, check=says("disagree", "layer_norm_eps", "config.json"))

    # A FIFO, a device and a huge file as refs/REV of a cached model.
    d = a.case_dir()
    repo = os.path.join(d, "in", "hub", "models--acme--m")
    os.makedirs(os.path.join(repo, "refs"))
    os.makedirs(os.path.join(repo, "snapshots"))
    shutil.copytree(FIXTURE_MODEL, os.path.join(repo, "snapshots", "0" * 40))
    os.mkfifo(os.path.join(repo, "refs", "fifo"))
    os.symlink("/dev/zero", os.path.join(repo, "refs", "zero"))
    with open(os.path.join(repo, "refs", "big"), "w") as f:
        f.write("0" * 40 + "\n" * 5000)
    ENV["HF_HUB_CACHE"] = os.path.join(d, "in", "hub")
    try:
        for ref in ("fifo", "zero", "big"):
            a.run("-m org/name --revision %s" % ref, d, ["info", "-m", "acme/m", "--revision", ref], expect=1,
                  check=says("refs/" + ref))
    finally:
        del ENV["HF_HUB_CACHE"]

    # train: an unreadable image is exit 2; an empty class folder is refused.
    d = a.case_dir()
    for cls in ("a", "b"):
        os.makedirs(os.path.join(d, "in", "data", cls))
        for i in range(2):
            shutil.copy(PHOTO, os.path.join(d, "in", "data", cls, "%d.png" % i))
    with open(os.path.join(d, "in", "data", "b", "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n broken")
    small = ["--arch", "custom", "--dim", "16", "--depth", "1", "--heads", "2", "--mlp", "32", "--patch", "8",
             "--image-size", "32", "--epochs", "1", "-b", "2", "-t", "1"]
    a.run("train with an unreadable image", d, ["train", "--data", "in/data", "-o", "out/t.safetensors"] + small,
          expect=2, check=says("broken.png"))
    os.makedirs(os.path.join(d, "in", "data", "empty"))
    a.run("train with an empty class folder", d, ["train", "--data", "in/data", "-o", "out/u.safetensors"] + small,
          expect=1, check=says("empty: class folder holds no images"))


# ------------------------------------------------------------ vit serve (issue 24)
# The server under hostile clients. These live apart from the other
# groups: they start `vit serve` in the background and talk HTTP to it.

def serve_start(d, args, env=None):
    """Starts vit serve -m in/model --port 0 ARGS in d; returns (proc, port,
    stderr lines) or (proc, None, lines) when it did not come up."""
    import re
    import threading
    proc = subprocess.Popen([VIT, "serve", "-m", "in/model", "--port", "0"] + args, cwd=d,
                            env=env or SERVE_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines, ready, port = [], threading.Event(), []

    def read():
        for line in proc.stderr:
            lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)$", line.strip())
            if m:
                port.append(int(m.group(1)))
                ready.set()
        ready.set()
    threading.Thread(target=read, daemon=True).start()
    ready.wait(TIMEOUT)
    return proc, (port[0] if port else None), lines


# ASan's quarantine (256 MB by default) would count as resident memory.
SERVE_ENV = dict(ENV, ASAN_OPTIONS=ENV["ASAN_OPTIONS"] + ":quarantine_size_mb=16")


def serve_post(port, body, headers=None, timeout=120):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/classify", body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    except OSError as e:
        return repr(e), b""
    finally:
        conn.close()


def serve_vm(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) // 1024
    return 0


def serve_start_cases(a):
    """vit serve refuses to start, with one line, on: a port in use, a
    model whose output is not finite, contradictory limits."""
    d = a.case_dir()
    model = a.model(d)
    first, port, _ = serve_start(d, [])
    try:
        a.run("serve on a port in use", d, ["serve", "-m", "in/model", "--port", str(port)], expect=1,
              check=one_line_naming("in use"))
    finally:
        first.terminate()
        first.wait(TIMEOUT)
    with open(os.path.join(model, "preprocessor_config.json"), "w") as f:
        json.dump({"do_resize": True, "size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3,
                   "image_std": [1e-40] * 3, "do_normalize": True, "rescale_factor": 1 / 255}, f)
    a.run("serve a model with image_std 1e-40", d, ["serve", "-m", "in/model", "--port", "0"], expect=1,
          check=one_line_naming("not finite"))
    a.run("serve --bodies-mb below --max-body-mb", d,
          ["serve", "-m", "in/model", "--port", "0", "--bodies-mb", "4", "--max-body-mb", "8"], expect=1,
          check=one_line_naming("--bodies-mb"))


def serve_hostile_cases(a):
    """One server under decompression bombs, many-part bodies, slowloris
    sockets and malformed heads at once: it answers every photo a normal
    client sends throughout,
    its peak memory grows by less than its decode budget, it stops with
    SIGTERM, exit 0, and no sanitizer speaks."""
    import threading
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import bombs
    d = a.case_dir()
    a.model(d)
    name = "serve under bombs, many parts, slowloris and malformed heads"
    proc, port, lines = serve_start(d, ["--decode-mb", "160", "--decode-wait-ms", "2000",
                                        "--head-timeout", "2", "--max-connections", "12"])
    problems = []
    if port is None:
        problems.append("did not start: " + "".join(lines)[-300:])
    else:
        photo = open(PHOTO, "rb").read()
        serve_post(port, photo)
        base = serve_vm(proc.pid, "VmRSS")
        stop = threading.Event()
        hostile = [bombs.png(10000), bombs.webp_animation(10000), bombs.jpeg_truncated(10000),
                   bombs.gif(10000), bombs.png(4500), bombs.jpeg(4000),
                   b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x\"\r\n\r\nA\r\n" * 200000]

        def bomber(i):
            while not stop.is_set():
                body = hostile[i % len(hostile)]
                headers = {"Content-Type": "multipart/form-data; boundary=b"} if i % len(hostile) == 6 else {}
                serve_post(port, body, headers)
                i += 1

        def slowloris():
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
                    while not stop.is_set():
                        s.sendall(b"X")
                        time.sleep(0.5)
                except OSError:
                    pass

        def malformed():
            while not stop.is_set():
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=5)
                    s.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n")
                    s.recv(100)
                    s.close()
                except OSError:
                    pass
                time.sleep(0.05)
        threads = [threading.Thread(target=bomber, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=slowloris) for _ in range(16)] + [threading.Thread(target=malformed)]
        for t in threads:
            t.daemon = True
            t.start()
        answered, end = [], time.monotonic() + 30
        while time.monotonic() < end:
            answered.append(serve_post(port, photo, timeout=60)[0])
            time.sleep(0.2)
        peak = serve_vm(proc.pid, "VmHWM")
        stop.set()
        good = answered.count(200)
        print("     serve under attack: %d of %d photos answered 200; peak memory grew %d MiB" %
              (good, len(answered), peak - base))
        if good < len(answered):
            problems.append("%d of %d photos answered 200 (%s)" % (good, len(answered), sorted(set(map(str, answered)))))
        if peak - base > 160 + 96:
            problems.append("peak memory grew by %d MiB (--decode-mb 160)" % (peak - base))
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = "hung"
    text = "".join(lines)
    if code != 0:
        problems.append("exit status %s" % code)
    if "Sanitizer" in text or "runtime error:" in text:
        problems.append("sanitizer report: " + text[text.find("Sanitizer") - 200:][:600])
    if problems:
        a.failed.append(name)
        print("FAIL %s: %s" % (name, "; ".join(problems)))
    else:
        a.passed += 1


def main():
    if not os.access(VIT, os.X_OK):
        print("attack: %s is not built" % VIT)
        return 1
    a = Attack()
    try:
        for group in (model_cases, image_cases, output_cases, option_cases, issue24_cases,
                      serve_start_cases, serve_hostile_cases):
            if len(sys.argv) > 2 and group.__name__ not in sys.argv[2:]:
                continue
            group(a)
    finally:
        shutil.rmtree(a.top, ignore_errors=True)
    print("attack: %d passed, %d failed" % (a.passed, len(a.failed)))
    return 1 if a.failed else 0


if __name__ == "__main__":
    sys.exit(main())
