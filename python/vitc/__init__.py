"""vitc from Python: a ViT image classifier in C, one import away.

    import vitc
    model = vitc.Model()                      # the shipped ViT-Ti/16 (int8)
    model.classify("data/samples/chelsea.png", top_k=3)
    heat = model.rollout("data/samples/chelsea.png")[0]   # 14 x 14 float32

A ctypes binding of libvitc.so (vit/vit_ffi.h): standard library and numpy
only. Every method gives the numbers the matching `vit` command writes, bit
for bit (docs/python.md lists which). Inputs, for every method:
  - a path (str or os.PathLike), decoded and preprocessed as the CLI does;
  - a numpy uint8 array H x W x 3 (RGB, as vitc.load_image or PIL give),
    preprocessed by the same code as a file's decoded pixels;
  - a numpy float32 array N x 3 x S x S, already preprocessed (S is
    model.image_size), used as it is;
  - a list or tuple of paths and uint8 images.
Arrays that are not C-contiguous (slices, transposes) are copied first, so
they are accepted. Outputs are numpy arrays that own their memory (or, for
classify, plain lists and dicts), one row per image.

Errors raise vitc.Error with the library's one-line message; its subclasses
are also the built-in exception that fits: vitc.FileNotFound
(FileNotFoundError), vitc.InvalidInput (ValueError), vitc.OutOfMemory
(MemoryError). A numpy input of the wrong dtype raises TypeError.

The forward pass runs without the GIL: two models in two threads run at
once. One model is used by one thread at a time (its calls take a lock).
"""
import ctypes
import json
import os
import threading

import numpy as np

from . import _lib

__all__ = ["Model", "Error", "FileNotFound", "InvalidInput", "OutOfMemory", "load_image",
           "write_png", "library_path"]

_LIB, library_path = _lib.load()
_MSG_SIZE = 1024

# base_status (base/base_error.h)
_E_IO, _E_FORMAT, _E_SHAPE, _E_UNSUPPORTED, _E_NOMEM, _E_ARG, _E_LIMIT = range(1, 8)
_POOLS = {"cls": 0, "mean": 1, "none": 2, "model": 3}
_DEFAULT_MODEL = "vit-tiny-augreg-int8.safetensors"


class Error(Exception):
    """A vitc failure: str(e) is the library's one-line message, e.code its
    base_status (base/base_error.h; 0 for checks made in Python)."""

    def __init__(self, message, code=0):
        super().__init__(message)
        self.code = code


class FileNotFound(Error, FileNotFoundError):
    """A file (image, model) that does not exist or cannot be read."""


class InvalidInput(Error, ValueError):
    """An argument or input the library refuses: shape, size, limit, range."""


class OutOfMemory(Error, MemoryError):
    pass


def _raise(code, msg, path=None):
    text = msg.value.decode("utf-8", "replace") if hasattr(msg, "value") else str(msg)
    if code == _E_IO and (path is None or not os.path.exists(path)):
        raise FileNotFound(text, code)
    if code in (_E_ARG, _E_SHAPE, _E_LIMIT):
        raise InvalidInput(text, code)
    if code == _E_NOMEM:
        raise OutOfMemory(text, code)
    raise Error(text, code)


def _check(code, msg, path=None):
    if code != 0:
        _raise(code, msg, path)


def _buf():
    return ctypes.create_string_buffer(_MSG_SIZE)


def _ptr(array, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


def _fspath(path):
    return os.fsencode(os.fspath(path))


def load_image(path):
    """Decodes an image file as every vit command does (stb_image / libwebp,
    grey and palette to RGB, alpha dropped, EXIF orientation ignored):
    an H x W x 3 uint8 array."""
    pixels, width, height, msg = ctypes.POINTER(ctypes.c_uint8)(), ctypes.c_int(), ctypes.c_int(), _buf()
    _check(_LIB.vit_ffi_load_image(_fspath(path), ctypes.byref(pixels), ctypes.byref(width),
                                   ctypes.byref(height), msg, _MSG_SIZE), msg, os.fspath(path))
    try:
        return np.ctypeslib.as_array(pixels, shape=(height.value, width.value, 3)).copy()
    finally:
        _LIB.vit_ffi_free(pixels)


def write_png(path, image):
    """Writes an H x W (grey), H x W x 3 (RGB) or H x W x 4 (RGBA) uint8
    array as a PNG file (atomically: a reader never sees half a file), with
    the library's writer; for pictures without matplotlib."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"vitc.write_png: expected a uint8 array, got {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InvalidInput(f"vitc.write_png: expected H x W, H x W x 3 or H x W x 4, got shape "
                           f"{image.shape}")
    image = np.ascontiguousarray(image)
    channels = 1 if image.ndim == 2 else image.shape[2]
    msg = _buf()
    _check(_LIB.vit_ffi_write_png(_fspath(path), image.shape[1], image.shape[0], channels,
                                  _ptr(image, ctypes.c_uint8), msg, _MSG_SIZE), msg, None)


def _default_model():
    here = os.path.dirname(os.path.abspath(__file__))
    compiled = _LIB.vit_ffi_default_model().decode()
    for path in (os.path.join(here, "weights", _DEFAULT_MODEL), compiled,
                 os.path.join(here, "..", "..", "weights", _DEFAULT_MODEL)):
        if path and os.access(path, os.R_OK):
            return os.path.normpath(path)
    raise FileNotFound(f"no model given, and the shipped model weights/{_DEFAULT_MODEL} is not "
                       f"found (looked beside the package and in {compiled or 'the build'})", _E_IO)


class Model:
    """A loaded checkpoint and its forward-pass context.

    path_or_hub_name: a model directory, a .safetensors file, or a hub name
    org/name in the local Hugging Face cache (scripts/get-model fills it);
    None: vitc's default model (weights/vit-tiny-augreg-int8.safetensors),
    as the vit commands use without -m. threads: None for one per processor.
    size: None for the model's input size, or another (position embeddings
    resampled, as --size). allow_unused: as --allow-unused.
    """

    def __init__(self, path_or_hub_name=None, threads=None, allow_unused=False, size=None):
        self._handle = None
        self._lock = threading.Lock()
        path = _default_model() if path_or_hub_name is None else os.fspath(path_or_hub_name)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidInput(f"threads must be a positive whole number or None, got {threads!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise InvalidInput(f"size must be a positive whole number or None, got {size!r}")
        handle, msg = ctypes.c_void_p(), _buf()
        _check(_LIB.vit_ffi_open(os.fsencode(path), threads or 0, size or 0, int(bool(allow_unused)),
                                 ctypes.byref(handle), msg, _MSG_SIZE), msg, path)
        self._handle = handle
        self.path = path
        size_of = lambda name: _LIB.vit_ffi_size(handle, name.encode())
        self.image_size = size_of("image_size")
        self.grid = (size_of("grid_h"), size_of("grid_w"))
        self.num_layers, self.num_heads = size_of("layers"), size_of("heads")
        self.num_tokens, self.num_prefix_tokens = size_of("tokens"), size_of("prefix")
        self.hidden_size, self.num_classes = size_of("hidden"), size_of("classes")
        self.threads = size_of("threads")
        self._outputs, self._pooled, self._patches = size_of("outputs"), size_of("pooled"), size_of("patches")
        self.info = json.loads(_LIB.vit_ffi_info_json(handle).decode("utf-8", "replace"))
        self.notices = _LIB.vit_ffi_notices(handle).decode("utf-8", "replace")
        labels = []
        for i in range(size_of("labels")):
            label = _LIB.vit_ffi_label(handle, i)
            labels.append(label.decode("utf-8", "replace") if label is not None else f"class {i}")
        self.labels = labels

    # -------------------------------------------------------------- lifetime
    def close(self):
        """Frees the model now (also done when it is garbage-collected)."""
        with self._lock:
            if self._handle is not None:
                _LIB.vit_ffi_close(self._handle)
                self._handle = None

    def __del__(self):
        if getattr(self, "_handle", None) is not None:
            _LIB.vit_ffi_close(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"vitc.Model({self.path!r})"

    def _call(self, fn, *args, path=None):
        msg = _buf()
        with self._lock:
            if self._handle is None:
                raise Error("the model is closed")
            code = fn(self._handle, *args, msg, _MSG_SIZE)
        _check(code, msg, path)

    # ---------------------------------------------------------------- inputs
    def preprocess(self, x):
        """x (any input form) as the model's input: N x 3 x S x S float32."""
        return self._images(x)

    def _one(self, item, out):
        if isinstance(item, (str, bytes, os.PathLike)):
            self._call(_LIB.vit_ffi_preprocess_file, _fspath(item), _ptr(out, ctypes.c_float),
                       path=os.fsdecode(os.fspath(item)))
            return
        image = item
        if not isinstance(image, np.ndarray):
            raise TypeError(f"vitc: an image is a path or a numpy uint8 H x W x 3 array, got "
                            f"{type(item).__name__}")
        if image.dtype != np.uint8:
            raise TypeError(f"vitc: an image array must be uint8 H x W x 3 (RGB), got {image.dtype} "
                            "(a preprocessed batch is float32 N x 3 x S x S)")
        if image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput(f"vitc: an image array must be H x W x 3 (RGB), got shape {image.shape}")
        image = np.ascontiguousarray(image)  # a slice or transpose: copied
        self._call(_LIB.vit_ffi_preprocess_pixels, _ptr(image, ctypes.c_uint8), image.shape[1],
                   image.shape[0], _ptr(out, ctypes.c_float))

    def _images(self, x):
        s = self.image_size
        if isinstance(x, np.ndarray) and x.dtype == np.float32:
            if x.ndim != 4 or x.shape[1:] != (3, s, s):
                raise InvalidInput(f"vitc: a preprocessed batch must be N x 3 x {s} x {s} float32, got "
                                   f"shape {x.shape}")
            if x.shape[0] == 0:
                raise InvalidInput("vitc: empty batch: no images given")
            return np.ascontiguousarray(x)  # copied when not contiguous
        if isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4:
            items = list(x)  # N x H x W x 3: a batch of images of one size
        elif isinstance(x, (list, tuple)):
            items = list(x)
        elif isinstance(x, np.ndarray) and x.dtype != np.uint8:
            raise TypeError(f"vitc: expected a uint8 H x W x 3 image or a float32 N x 3 x S x S batch, "
                            f"got a {x.dtype} array of shape {x.shape}")
        else:
            items = [x]
        if not items:
            raise InvalidInput("vitc: empty batch: no images given")
        out = np.empty((len(items), 3, s, s), dtype=np.float32)
        for i, item in enumerate(items):
            self._one(item, out[i])
        return out

    # --------------------------------------------------------------- outputs
    def _layer(self, layer, allow_embed=False):
        if allow_embed and layer == "embed":
            return -1
        if not isinstance(layer, (int, np.integer)) or isinstance(layer, bool):
            raise InvalidInput(f"vitc: layer must be a block index, got {layer!r}")
        resolved = int(layer) + self.num_layers if layer < 0 else int(layer)
        if not 0 <= resolved < self.num_layers:
            raise InvalidInput(f"vitc: layer {layer} is not one of the model's {self.num_layers} blocks "
                               f"(0..{self.num_layers - 1}, or negative from the end)")
        return resolved

    def _run(self, fn, x, shape, dtype, *args):
        images = self._images(x)
        out = np.empty((images.shape[0],) + shape, dtype=dtype)
        ctype = ctypes.c_int32 if dtype == np.int32 else ctypes.c_float
        self._call(fn, _ptr(images, ctypes.c_float), images.shape[0], *args, _ptr(out, ctype))
        return out

    def logits(self, x):
        """N x classes float32 logits (a headless model: its features), as
        vit classify --all-classes --logits."""
        return self._run(_LIB.vit_ffi_logits, x, (self._outputs,), np.float32, 0)

    def probabilities(self, x):
        """N x classes float32 softmax probabilities, as vit classify's scores."""
        return self._run(_LIB.vit_ffi_logits, x, (self._outputs,), np.float32, 1)

    def classify(self, x, top_k=5):
        """The top_k classes of each image, most likely first (ties: the lower
        index): a list per image of {"label", "score", "index"} dicts, as vit
        classify and vit serve give them."""
        if self.num_classes == 0:
            raise InvalidInput(f"vitc: {self.path} has no classification head (it outputs features)")
        if not isinstance(top_k, int) or top_k < 1:
            raise InvalidInput(f"vitc: top_k must be a positive whole number, got {top_k!r}")
        probs = self.probabilities(x)
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:top_k]
            results.append([{"label": self.labels[i] if i < len(self.labels) else f"class {i}",
                             "score": float(row[i]), "index": int(i)} for i in order])
        return results

    def features(self, x, pool="model", l2=False, layer=None):
        """Features as vit features --pool POOL [--l2]: the last block's
        tokens through the final norm, pooled: "model" (what the head reads:
        N x pooled), "cls" or "mean" (N x hidden), "none" (every token,
        N x tokens x hidden). pool=None: the raw residual stream after block
        `layer` (default the last; "embed": the encoder input), N x tokens x
        hidden, as vit features [--layer L]."""
        if pool is None:
            layer = self._layer(-1 if layer is None else layer, allow_embed=True)
            return self._run(_LIB.vit_ffi_features, x, (self.num_tokens, self.hidden_size),
                             np.float32, -1, layer, int(bool(l2)))
        if pool not in _POOLS:
            raise InvalidInput(f"vitc: pool expects model, cls, mean, none or None, got {pool!r}")
        if layer is not None:
            raise InvalidInput("vitc: pool works on the last block's tokens; layer goes with pool=None")
        shape = {"model": (self._pooled,), "cls": (self.hidden_size,), "mean": (self.hidden_size,),
                 "none": (self.num_tokens, self.hidden_size)}[pool]
        return self._run(_LIB.vit_ffi_features, x, shape, np.float32, _POOLS[pool],
                         self.num_layers - 1, int(bool(l2)))

    def attention(self, x, layer=-1, head=None):
        """The class token's attention over the patches in block `layer`, as
        vit attention --npy: N x grid_h x grid_w; head None averages the
        heads, an int picks one, "all" gives every head and then their mean
        (N x (heads + 1) x grid_h x grid_w, as --grid). A model without a
        class token: the mean of the patch tokens' rows."""
        layer = self._layer(layer)
        if head == "all":
            return self._run(_LIB.vit_ffi_attention, x, (self.num_heads + 1,) + self.grid,
                             np.float32, layer, -2)
        if head is None:
            head = -1
        elif not isinstance(head, (int, np.integer)) or not 0 <= head < self.num_heads:
            raise InvalidInput(f"vitc: head must be None, \"all\" or 0..{self.num_heads - 1}, got {head!r}")
        return self._run(_LIB.vit_ffi_attention, x, self.grid, np.float32, layer, int(head))

    def rollout(self, x, layer=-1, discard=0.0):
        """Attention rollout (Abnar & Zuidema 2020) through blocks 0..layer,
        the class token's row over the patches, as vit attention --rollout
        --npy [--discard R]: N x grid_h x grid_w."""
        return self._run(_LIB.vit_ffi_rollout, x, self.grid, np.float32, self._layer(layer),
                         float(discard))

    def patch_logits(self, x, layer=-1):
        """The classifier on every patch token after block `layer`, as vit
        patches --npy: N x grid_h x grid_w x classes float32."""
        return self._run(_LIB.vit_ffi_patch_logits, x, self.grid + (self._outputs,), np.float32,
                         self._layer(layer))

    def segment(self, x, clusters=4, seed=0, layer=-1, feature="token"):
        """Unsupervised segmentation as vit segment --npy: the patch tokens
        after block `layer` (feature "key": its attention keys), L2-normalised,
        clustered by k-means (k-means++ from seed): the mask, N x grid_h x
        grid_w int32 cluster ids (0..clusters-1, numbered in raster order of
        first appearance)."""
        if feature not in ("token", "key"):
            raise InvalidInput(f"vitc: feature expects token or key, got {feature!r}")
        if not isinstance(clusters, int) or not isinstance(seed, int):
            raise InvalidInput(f"vitc: clusters and seed are whole numbers, got {clusters!r}, {seed!r}")
        return self._run(_LIB.vit_ffi_segment, x, self.grid, np.int32, clusters, seed,
                         self._layer(layer), int(feature == "key"))

    def overlay(self, image, grid):
        """The picture vit attention draws: a grid_h x grid_w map as a turbo
        heatmap (its min to max) over the image (path or uint8 H x W x 3),
        where the model's crop saw it: an H x W x 3 uint8 array."""
        if not isinstance(image, np.ndarray):
            image = load_image(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InvalidInput(f"vitc: overlay needs a uint8 H x W x 3 image, got {image.dtype} {image.shape}")
        grid = np.ascontiguousarray(grid, dtype=np.float32)
        if grid.shape != self.grid:
            raise InvalidInput(f"vitc: overlay needs a {self.grid[0]} x {self.grid[1]} map, got {grid.shape}")
        image = np.ascontiguousarray(image)
        out = np.empty_like(image)
        self._call(_LIB.vit_ffi_overlay_heatmap, _ptr(image, ctypes.c_uint8), image.shape[1],
                   image.shape[0], _ptr(grid, ctypes.c_float), _ptr(out, ctypes.c_uint8))
        return out
