"""Shared pieces of the binding's tests: where the build is, running vit."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
# ctest passes the build under test; by hand, build/ of this tree.
PROGRAM = os.environ.get("VITC_PROGRAM", os.path.join(ROOT, "build", "vit"))
DEFAULT_MODEL = os.path.join(ROOT, "weights", "vit-tiny-augreg-int8.safetensors")
SAMPLES = os.path.join(ROOT, "data", "samples")
TIMM_MODEL = os.path.join(SHARED, "models", "vit_tiny_patch16_224.augreg_in21k_ft_in1k")
SHARED_IMAGES = os.path.join(SHARED, "images")


def vit(*args, cwd=None):
    """Runs the vit program; its stdout. A failure fails the test with stderr."""
    done = subprocess.run([PROGRAM, *map(str, args)], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, f"vit {' '.join(map(str, args))}: exit {done.returncode}\n{done.stderr}"
    return done.stdout


def sample_images():
    return [os.path.join(SAMPLES, "chelsea.png"), os.path.join(SAMPLES, "bag-0018.png")]


def shared_images():
    if not os.path.isdir(SHARED_IMAGES):
        return []
    names = sorted(n for n in os.listdir(SHARED_IMAGES) if n.lower().endswith((".jpg", ".jpeg")))
    return [os.path.join(SHARED_IMAGES, n) for n in names[:2]]


# (id, model path, images): the shipped model on the samples, and a real
# checkpoint from ../shared on photos (skipped, saying why, without it).
CASES = [pytest.param((DEFAULT_MODEL, "samples"), id="shipped-int8"),
         pytest.param((TIMM_MODEL, "shared"), id="timm-augreg-fp32",
                      marks=pytest.mark.skipif(not os.path.isdir(TIMM_MODEL),
                                               reason="../shared is absent: the real-checkpoint "
                                                      "comparisons need ../shared/models"))]


@pytest.fixture(scope="module", params=CASES)
def case(request):
    import vitc
    path, which = request.param
    images = sample_images() if which == "samples" else shared_images() + [sample_images()[0]]
    return vitc.Model(path, threads=2), path, images
