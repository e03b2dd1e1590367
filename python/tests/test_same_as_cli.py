"""Every method's numbers equal the vit command's, bit for bit, on the
shipped model and (with ../shared) a real timm checkpoint; a path and the
decoded array of that file give the same bits."""
import csv
import os

import numpy as np
import pytest

import vitc
from conftest import ROOT, SAMPLES, vit


def npy_per_image(directory, images):
    """The .npy vit wrote into DIR/ for each input, named after it."""
    out = []
    for path in images:
        stem = os.path.splitext(os.path.basename(path))[0]
        out.append(np.load(os.path.join(directory, stem + ".npy")))
    return np.stack(out)


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, a.shape, b.dtype, b.shape)
    assert a.tobytes() == b.tobytes(), f"max |diff| {np.nanmax(np.abs(a.astype(np.float64) - b))}"


def test_classify_csv(case, tmp_path):
    model, path, images = case
    out = tmp_path / "top.csv"
    vit("classify", "-m", path, "-k", 5, "-q", "-o", out, *images)
    rows = list(csv.DictReader(open(out, newline="")))
    got = model.classify(images, top_k=5)
    assert len(rows) == len(images) == len(got)
    for row, image, top in zip(rows, images, got):
        assert row["path"] == image and not row["error"]
        for k, item in enumerate(top, 1):
            assert item["index"] == int(row[f"index_{k}"])
            assert item["label"] == row[f"label_{k}"]
            assert f"{item['score']:.6f}" == row[f"probability_{k}"]


def test_probabilities_and_logits(case, tmp_path):
    model, path, images = case
    for what, method in (("probs", model.probabilities), ("logits", model.logits)):
        out = tmp_path / f"{what}.npy"
        vit("classify", "-m", path, "--all-classes", what, "-q", "-o", out, *images)
        same_bits(method(images), np.load(out))


@pytest.mark.parametrize("pool,l2", [("model", False), ("cls", False), ("mean", True), ("none", False)])
def test_features(case, tmp_path, pool, l2):
    model, path, images = case
    out = tmp_path / "f.npy"
    vit("features", "-m", path, "--pool", pool, *(["--l2"] if l2 else []), "-q", "-o", out, *images)
    same_bits(model.features(images, pool=pool, l2=l2), np.load(out))


def test_features_raw_layer(case, tmp_path):
    model, path, images = case
    out = tmp_path / "f.npy"
    vit("features", "-m", path, "--layer", 3, "-q", "-o", out, *images)
    same_bits(model.features(images, pool=None, layer=3), np.load(out))
    vit("features", "-m", path, "--layer", "embed", "-q", "-o", out, *images)
    same_bits(model.features(images, pool=None, layer="embed"), np.load(out))


@pytest.mark.parametrize("options,kwargs", [([], {}), (["--layer", "5", "--head", "1"], {"layer": 5, "head": 1}),
                                            (["--layer", "-2"], {"layer": -2})])
def test_attention(case, tmp_path, options, kwargs):
    model, path, images = case
    vit("attention", "-m", path, *options, "-q", "-o", f"{tmp_path}/pic/", "--npy", f"{tmp_path}/npy/", *images)
    same_bits(model.attention(images, **kwargs), npy_per_image(tmp_path / "npy", images))


def test_attention_grid(case, tmp_path):
    model, path, images = case
    vit("attention", "-m", path, "--grid", "-q", "-o", f"{tmp_path}/pic/", "--npy", f"{tmp_path}/npy/", *images)
    same_bits(model.attention(images, head="all"), npy_per_image(tmp_path / "npy", images))


@pytest.mark.parametrize("options,kwargs", [([], {}), (["--discard", "0.9", "--layer", "7"],
                                                       {"discard": 0.9, "layer": 7})])
def test_rollout(case, tmp_path, options, kwargs):
    model, path, images = case
    vit("attention", "--rollout", "-m", path, *options, "-q", "-o", f"{tmp_path}/pic/", "--npy",
        f"{tmp_path}/npy/", *images)
    same_bits(model.rollout(images, **kwargs), npy_per_image(tmp_path / "npy", images))


def test_patch_logits(case, tmp_path):
    model, path, images = case
    vit("patches", "-m", path, "-q", "-o", f"{tmp_path}/pic/", "--npy", f"{tmp_path}/npy/", *images)
    same_bits(model.patch_logits(images), npy_per_image(tmp_path / "npy", images))


@pytest.mark.parametrize("options,kwargs", [([], {}), (["--clusters", "3", "--seed", "7", "--feature", "key",
                                                        "--layer", "9"],
                                                       {"clusters": 3, "seed": 7, "feature": "key", "layer": 9})])
def test_segment(case, tmp_path, options, kwargs):
    model, path, images = case
    vit("segment", "-m", path, *options, "-q", "-o", f"{tmp_path}/pic/", "--npy", f"{tmp_path}/npy/", *images)
    same_bits(model.segment(images, **kwargs), npy_per_image(tmp_path / "npy", images))


def test_overlay_is_the_attention_picture(tmp_path):
    """model.overlay draws vit attention's picture (the same bytes)."""
    model = vitc.Model()
    image = os.path.join(SAMPLES, "chelsea.png")
    vit("attention", "--rollout", "-q", "-o", tmp_path / "r.png", image)
    picture = model.overlay(image, model.rollout(image)[0])
    same_bits(picture, vitc.load_image(tmp_path / "r.png"))
    vitc.write_png(tmp_path / "again.png", picture)
    same_bits(vitc.load_image(tmp_path / "again.png"), picture)


def test_path_and_decoded_array_same_bits(case):
    model, path, images = case
    arrays = [vitc.load_image(p) for p in images]
    same_bits(model.preprocess(images), model.preprocess(arrays))
    same_bits(model.logits(images), model.logits(arrays))
    same_bits(model.attention(images), model.attention(arrays))
    # A preprocessed batch goes in as it is.
    same_bits(model.features(images), model.features(model.preprocess(images)))


def test_pil_decoded_png_same_bits():
    """PNG is lossless: PIL's decoded pixels are the file's, so they give
    the file's bits (a JPEG decoder may round differently: load_image is
    the library's own decoder)."""
    PIL = pytest.importorskip("PIL.Image")
    model = vitc.Model()
    path = os.path.join(SAMPLES, "chelsea.png")
    pixels = np.asarray(PIL.open(path).convert("RGB"))
    same_bits(model.probabilities(path), model.probabilities(pixels))


def test_batch_does_not_change_bits():
    model = vitc.Model()
    names = sorted(os.listdir(SAMPLES))
    images = [os.path.join(SAMPLES, n) for n in names if n.endswith(".png")] * 2  # 14 > one chunk of 8
    together = model.logits(images)
    alone = np.concatenate([model.logits(p) for p in images])
    same_bits(together, alone)


def test_info_and_labels(case):
    model, path, images = case
    lines = vit("info", "-m", path).splitlines()
    info = {line[:14].strip(): line[14:] for line in lines}
    assert model.info == info
    assert len(model.labels) == 1000 and model.labels[285].startswith("Egyptian cat")
    assert model.grid == (14, 14) and model.image_size == 224


def test_readme_example_prints_what_the_readme_says(tmp_path):
    """README's From Python block (tests/docs_test.py runs it too) prints the
    two lines the text after it quotes, and writes its picture."""
    import re
    import subprocess
    import sys
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## From Python"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    for name in ("data", "weights", "build"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    done = subprocess.run([sys.executable, "-"], input=block, capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    quoted = re.findall(r"`(whole photo: [^`]*|top quarter: [^`]*)`", section.replace("\n", " "))
    assert done.stdout.splitlines() == quoted
    assert vitc.load_image(tmp_path / "chelsea-rollout.png").shape == (300, 902, 3)
