"""Bad input raises, never crashes; threads; memory; a missing library."""
import json
import os
import resource
import subprocess
import sys
import threading

import numpy as np
import pytest

import vitc
from conftest import DEFAULT_MODEL, ROOT, SAMPLES

CHELSEA = os.path.join(SAMPLES, "chelsea.png")


@pytest.fixture(scope="module")
def model():
    return vitc.Model(threads=2)


def test_bad_arrays(model):
    with pytest.raises(TypeError, match="float64"):
        model.logits(np.zeros((224, 224, 3)))                       # wrong dtype
    with pytest.raises(TypeError, match="int16"):
        model.logits([np.zeros((9, 9, 3), np.int16)])
    with pytest.raises(vitc.InvalidInput, match="H x W x 3"):
        model.logits(np.zeros((20, 20, 4), np.uint8))               # wrong shape
    with pytest.raises(ValueError, match="H x W x 3"):
        model.logits(np.zeros((20, 20), np.uint8))                  # wrong rank
    with pytest.raises(vitc.InvalidInput, match="N x 3 x 224 x 224"):
        model.logits(np.zeros((1, 3, 32, 32), np.float32))          # wrong preprocessed size
    with pytest.raises(vitc.InvalidInput, match="N x 3 x 224 x 224"):
        model.logits(np.zeros((3, 224, 224), np.float32))           # rank 3
    with pytest.raises(vitc.InvalidInput, match="at least one pixel"):
        model.logits(np.zeros((0, 5, 3), np.uint8))                 # no pixels
    with pytest.raises(TypeError):
        model.logits(42)


def test_empty_batch(model):
    for empty in ([], (), np.zeros((0, 3, 224, 224), np.float32)):
        with pytest.raises(vitc.InvalidInput, match="empty batch"):
            model.features(empty)


def test_non_contiguous_arrays_are_copied(model):
    """Slices and transposes are copied, not refused: same bits as the copy."""
    image = vitc.load_image(CHELSEA)
    flipped = image[:, ::-1]
    assert not flipped.flags.c_contiguous
    assert model.logits(flipped).tobytes() == model.logits(flipped.copy()).tobytes()
    batch = model.preprocess([CHELSEA, CHELSEA])
    strided = np.concatenate([batch, batch])[::2]
    assert not strided.flags.c_contiguous
    assert model.logits(strided).tobytes() == model.logits(batch).tobytes()
    transposed = np.ascontiguousarray(image.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert model.logits(transposed).tobytes() == model.logits(image).tobytes()


def test_missing_and_bad_files(model, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        model.classify(str(tmp_path / "nope.png"))
    with pytest.raises(vitc.FileNotFound):
        vitc.load_image(tmp_path / "nope.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(vitc.Error, match="junk.png"):
        model.logits(str(junk))
    with pytest.raises(vitc.Error):
        model.logits([CHELSEA, str(junk)])                          # one bad file fails the call


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="layer 12"):
        model.attention(CHELSEA, layer=12)
    with pytest.raises(ValueError, match="head"):
        model.attention(CHELSEA, head=3)
    with pytest.raises(ValueError, match="discard"):
        model.rollout(CHELSEA, discard=1.0)
    with pytest.raises(ValueError, match="pool"):
        model.features(CHELSEA, pool="max")
    with pytest.raises(ValueError, match="clusters"):
        model.segment(CHELSEA, clusters=197)
    with pytest.raises(ValueError, match="clusters"):
        model.segment(CHELSEA, clusters=0)
    with pytest.raises(ValueError, match="top_k"):
        model.classify(CHELSEA, top_k=0)
    with pytest.raises(ValueError):
        vitc.Model(threads=0)
    with pytest.raises(TypeError):
        vitc.write_png("x.png", np.zeros((4, 4), np.float32))


def test_non_finite_input_is_an_error(model):
    batch = model.preprocess(CHELSEA)
    batch[0, 0, 0, 0] = np.nan
    with pytest.raises(vitc.Error, match="not finite"):
        model.probabilities(batch)


def hostile_models():
    base = os.path.join(ROOT, "tests", "fixtures", "family", "hostile")
    return sorted(os.path.join(base, d) for d in os.listdir(base) if os.path.isdir(os.path.join(base, d)))


@pytest.mark.parametrize("path", hostile_models(), ids=os.path.basename)
def test_hostile_models_raise(path):
    with pytest.raises(vitc.Error) as e:
        vitc.Model(path)
    assert str(e.value) and "\n" not in str(e.value)


def test_broken_model_files(tmp_path):
    blob = open(DEFAULT_MODEL, "rb").read()
    cases = {"truncated.safetensors": blob[: len(blob) // 3], "empty.safetensors": b"",
             "header.safetensors": (10**12).to_bytes(8, "little") + b"{}",
             "json.safetensors": (8).to_bytes(8, "little") + b'{"a":1,}'}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(vitc.Error, match=name):
            vitc.Model(tmp_path / name)
    with pytest.raises(FileNotFoundError):
        vitc.Model(tmp_path / "absent.safetensors")
    with pytest.raises(vitc.Error):
        vitc.Model(tmp_path)                                        # a directory with no model
    with pytest.raises(FileNotFoundError, match="get-model|cache"):
        vitc.Model("no-such-org/no-such-model")                     # a hub name not in the cache


def test_hub_name_from_the_cache(tmp_path):
    """Model("org/name") finds the snapshot in the Hugging Face cache, as -m does."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--vitc-test--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    os.symlink(DEFAULT_MODEL, repo / "snapshots" / commit / "model.safetensors")
    env = dict(os.environ, HF_HUB_CACHE=str(tmp_path), PYTHONPATH=os.path.join(ROOT, "python"))
    done = subprocess.run([sys.executable, "-c", "import vitc; m = vitc.Model('vitc-test/tiny'); "
                           "print(m.classify(%r, top_k=1)[0][0]['index'])" % CHELSEA],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.split() == ["285"], done.stderr


def test_two_models_in_two_threads():
    """Each thread its own model: results equal a serial run's bits, and the
    two run at once (ctypes releases the GIL in every call)."""
    images = [os.path.join(SAMPLES, n) for n in sorted(os.listdir(SAMPLES)) if n.endswith(".png")]
    expected = vitc.Model(threads=1).features(images)
    results, errors = {}, []

    def work(i):
        try:
            m = vitc.Model(threads=1)
            results[i] = [m.features(images) for _ in range(3)]
        except Exception as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for runs in results.values():
        for got in runs:
            assert got.tobytes() == expected.tobytes()


def test_calls_release_the_gil():
    """ctypes.CDLL (not PyDLL) drops the GIL around every foreign call: the
    forward pass of one thread leaves Python free for the others."""
    import ctypes
    assert isinstance(vitc._LIB, ctypes.CDLL) and not isinstance(vitc._LIB, ctypes.PyDLL)


def test_one_model_shared_by_threads(model):
    """One model from several threads: its lock serialises the calls."""
    expected = model.logits(CHELSEA)
    got = []
    threads = [threading.Thread(target=lambda: got.append(model.logits(CHELSEA))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(g.tobytes() == expected.tobytes() for g in got)


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def test_no_leak_over_10000_calls():
    """10,000 calls of every kind, a failing one among them, at a small input
    size (32: 4 patches) to keep it quick: RSS stays flat once warm."""
    model = vitc.Model(threads=1, size=32)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    batch = model.preprocess(image)
    calls = [lambda: model.logits(batch), lambda: model.classify(batch, top_k=3),
             lambda: model.features(batch, pool="none"), lambda: model.attention(batch),
             lambda: model.rollout(batch), lambda: model.patch_logits(batch),
             lambda: model.segment(batch, clusters=2), lambda: model.preprocess(image),
             lambda: model.overlay(image, model.attention(batch)[0])]

    def bad():
        with pytest.raises(vitc.Error):
            model.logits(os.path.join(ROOT, "no-such-file.png"))
    calls.append(bad)
    for i in range(1000):  # warm: allocator pools, lazy OpenBLAS, caches
        calls[i % len(calls)]()
    before = rss_kib()
    for i in range(10000):
        calls[i % len(calls)]()
    grown = rss_kib() - before
    print(f"RSS {before} KiB after 1,000 warm-up calls, {grown:+d} KiB over 10,000 more")
    assert grown < 2048, f"RSS grew by {grown} KiB over 10,000 calls"
    for _ in range(200):  # models themselves are freed
        vitc.Model(size=32).close()
    assert rss_kib() - before < 8192


def run_python(code, env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


def test_missing_library_says_how_to_build(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"), VITC_LIBRARY=str(tmp_path / "libvitc.so"))
    done = run_python("import vitc", env)
    assert done.returncode != 0 and "cmake" in done.stderr and "libvitc.so" in done.stderr
    # A copy of the package with no library anywhere near it.
    package = tmp_path / "pkg" / "vitc"
    package.mkdir(parents=True)
    for name in ("__init__.py", "_lib.py"):
        (package / name).write_text(open(os.path.join(ROOT, "python", "vitc", name)).read())
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "pkg"))
    env.pop("VITC_LIBRARY", None)
    done = run_python("import vitc", env)
    assert done.returncode != 0
    assert "libvitc.so was not found" in done.stderr and "cmake --build build" in done.stderr


def test_info_is_json_safe(model):
    assert json.loads(json.dumps(model.info))["layout"] == "timm"
    assert model.num_classes == 1000 and model.hidden_size == 192 and model.num_heads == 3


@pytest.mark.skipif(not os.environ.get("VITC_BUILD_DIR"), reason="ctest names the build to install from")
def test_cmake_install(tmp_path):
    """cmake --install puts a package that works on its own: library and
    default model inside it, nothing from the source tree needed."""
    prefix = tmp_path / "prefix"
    subprocess.run(["cmake", "--install", os.environ["VITC_BUILD_DIR"], "--prefix", str(prefix)],
                   check=True, capture_output=True)
    site = next(prefix.glob("lib/python3*/dist-packages"))
    env = dict(os.environ, PYTHONPATH=str(site))
    env.pop("VITC_LIBRARY", None)
    done = subprocess.run([sys.executable, "-c", "import vitc; m = vitc.Model(); "
                           "print(vitc.library_path); print(m.path); print(m.classify(%r, top_k=1)[0][0]['index'])"
                           % CHELSEA], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    library, model, index = done.stdout.split()
    assert library.startswith(str(site)) and model.startswith(str(site)) and index == "285"
