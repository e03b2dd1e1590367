"""Finding and declaring libvitc.so (the flat C API of vit/vit_ffi.h)."""
import ctypes
import os

ABI_VERSION = 1  # VIT_FFI_ABI_VERSION of the vit_ffi.h these declarations follow

_HERE = os.path.dirname(os.path.abspath(__file__))

# Where the library is looked for, in order: $VITC_LIBRARY; inside the
# package (cmake --install puts it there); the build tree beside the
# source tree this package is in (python/vitc -> build/).
_CANDIDATES = [
    os.path.join(_HERE, "libvitc.so"),
    os.path.join(_HERE, "..", "..", "build", "libvitc.so"),
]

_BUILD_HINT = ("build it from the source tree with\n"
               "  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release && "
               "cmake --build build -j2 --target vitc_shared\n"
               "(scripts/setup does that and more), or point VITC_LIBRARY at it")


def _find():
    given = os.environ.get("VITC_LIBRARY")
    if given:
        if not os.path.exists(given):
            raise ImportError(f"vitc: VITC_LIBRARY={given} does not exist; " + _BUILD_HINT)
        return given
    for path in _CANDIDATES:
        if os.path.exists(path):
            return os.path.normpath(path)
    raise ImportError("vitc: the shared library libvitc.so was not found (looked in " +
                      ", ".join(os.path.normpath(p) for p in _CANDIDATES) + "); " + _BUILD_HINT)


_c_float_p = ctypes.POINTER(ctypes.c_float)
_c_u8_p = ctypes.POINTER(ctypes.c_uint8)
_c_i32_p = ctypes.POINTER(ctypes.c_int32)
_msg = (ctypes.c_char_p, ctypes.c_size_t)
_h = ctypes.c_void_p

# name: (return type, argument types)
_SIGNATURES = {
    "vit_ffi_abi_version": (ctypes.c_int, ()),
    "vit_ffi_default_model": (ctypes.c_char_p, ()),
    "vit_ffi_open": (ctypes.c_int, (ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_void_p)) + _msg),
    "vit_ffi_close": (None, (_h,)),
    "vit_ffi_size": (ctypes.c_int, (_h, ctypes.c_char_p)),
    "vit_ffi_label": (ctypes.c_char_p, (_h, ctypes.c_int)),
    "vit_ffi_info_json": (ctypes.c_char_p, (_h,)),
    "vit_ffi_notices": (ctypes.c_char_p, (_h,)),
    "vit_ffi_load_image": (ctypes.c_int, (ctypes.c_char_p, ctypes.POINTER(_c_u8_p),
                                          ctypes.POINTER(ctypes.c_int),
                                          ctypes.POINTER(ctypes.c_int)) + _msg),
    "vit_ffi_free": (None, (ctypes.c_void_p,)),
    "vit_ffi_preprocess_file": (ctypes.c_int, (_h, ctypes.c_char_p, _c_float_p) + _msg),
    "vit_ffi_preprocess_pixels": (ctypes.c_int, (_h, _c_u8_p, ctypes.c_int, ctypes.c_int,
                                                 _c_float_p) + _msg),
    "vit_ffi_logits": (ctypes.c_int, (_h, _c_float_p, ctypes.c_int, ctypes.c_int, _c_float_p) + _msg),
    "vit_ffi_features": (ctypes.c_int, (_h, _c_float_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                        ctypes.c_int, _c_float_p) + _msg),
    "vit_ffi_attention": (ctypes.c_int, (_h, _c_float_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                         _c_float_p) + _msg),
    "vit_ffi_rollout": (ctypes.c_int, (_h, _c_float_p, ctypes.c_int, ctypes.c_int, ctypes.c_float,
                                       _c_float_p) + _msg),
    "vit_ffi_patch_logits": (ctypes.c_int, (_h, _c_float_p, ctypes.c_int, ctypes.c_int,
                                            _c_float_p) + _msg),
    "vit_ffi_segment": (ctypes.c_int, (_h, _c_float_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                       ctypes.c_int, ctypes.c_int, _c_i32_p) + _msg),
    "vit_ffi_overlay_heatmap": (ctypes.c_int, (_h, _c_u8_p, ctypes.c_int, ctypes.c_int, _c_float_p,
                                               _c_u8_p) + _msg),
    "vit_ffi_write_png": (ctypes.c_int, (ctypes.c_char_p, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                         _c_u8_p) + _msg),
}


def load():
    path = _find()
    try:
        # ctypes.CDLL: every call releases the GIL while the C code runs.
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"vitc: cannot load {path}: {e}; " + _BUILD_HINT) from e
    for name, (restype, argtypes) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise ImportError(f"vitc: {path} has no {name}: it is from another version of vitc; "
                              + _BUILD_HINT) from e
        fn.restype, fn.argtypes = restype, list(argtypes)
    version = lib.vit_ffi_abi_version()
    if version != ABI_VERSION:
        raise ImportError(f"vitc: {path} speaks version {version} of the C API, this package "
                          f"{ABI_VERSION}; " + _BUILD_HINT)
    return lib, path
