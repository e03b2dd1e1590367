#!/usr/bin/python3
"""One image, from command start to printed labels, in PyTorch.

usage: bench/oneshot_torch.py MODEL_DIR IMAGE [--threads N]
       bench/oneshot_torch.py MODEL_DIR IMAGE --save-input FILE.npy

Time it as a whole process (e.g. /usr/bin/time or hyperfine). It includes:
python start-up and `import torch` / torchvision / PIL, reading
MODEL_DIR/model.safetensors into RefViT (tests/torch_vit.py; heads/eps from
config.json), opening and decoding IMAGE with PIL, preprocessing with
torchvision transforms as the checkpoint's library does, one forward pass, and
printing the top-5 "probability label (index)" lines.

Preprocessing: preprocessor_config.json (Hugging Face: resize to size x size
when size is an integer or {height,width}, shortest_edge otherwise, PIL resample
code, centre crop, rescale, normalize) if present, else timm's pretrained_cfg
(Resize(floor(S / crop_pct)) shorter side, CenterCrop(S), ToTensor, Normalize),
else the DeiT default (256 bicubic, crop 224, ImageNet mean/std).

--save-input writes the preprocessed [1, 3, S, S] float32 tensor as .npy and
exits without running the model: bench/oneshot_ort.mjs reads that file, so its
timing EXCLUDES image decoding and preprocessing (and here, with
--save-input, nothing is timed).

Exit 3 when the model or image is missing (e.g. ../shared absent).
"""

import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def build_transform(model_dir, size):
    from PIL import Image
    from torchvision import transforms as T
    from torchvision.transforms import InterpolationMode as IM

    pil_to_tv = {0: IM.NEAREST, 2: IM.BILINEAR, 3: IM.BICUBIC, 1: IM.LANCZOS,
                 4: IM.BOX, 5: IM.HAMMING}
    pp = os.path.join(model_dir, "preprocessor_config.json")
    if os.path.isfile(pp):  # Hugging Face image processor
        with open(pp) as f:
            c = json.load(f)
        steps = []
        interp = pil_to_tv.get(c.get("resample", Image.BICUBIC), IM.BICUBIC)
        if c.get("do_resize", True):
            s = c.get("size", size)
            if isinstance(s, int):
                s = (s, s)  # legacy plain int: a square
            elif "height" in s:
                s = (s["height"], s["width"])
            else:
                s = s["shortest_edge"]
            steps.append(T.Resize(s, interpolation=interp))
        if c.get("do_center_crop", False):
            cs = c.get("crop_size", size)
            steps.append(T.CenterCrop(cs if isinstance(cs, int) else (cs["height"], cs["width"])))
        steps.append(T.PILToTensor())
        scale = c.get("rescale_factor", 1 / 255) if c.get("do_rescale", True) else 1.0
        steps.append(T.Lambda(lambda t: t.float() * scale))
        if c.get("do_normalize", True):
            steps.append(T.Normalize(c.get("image_mean", IMAGENET_MEAN), c.get("image_std", IMAGENET_STD)))
        return T.Compose(steps)
    crop_pct, mean, std, interp = 0.875, IMAGENET_MEAN, IMAGENET_STD, IM.BICUBIC
    cj = os.path.join(model_dir, "config.json")
    if os.path.isfile(cj):
        with open(cj) as f:
            pc = json.load(f).get("pretrained_cfg") or {}
        crop_pct = pc.get("crop_pct", crop_pct)
        mean, std = pc.get("mean", mean), pc.get("std", std)
        interp = {"bilinear": IM.BILINEAR, "bicubic": IM.BICUBIC}.get(pc.get("interpolation"), interp)
    return T.Compose([
        T.Resize(math.floor(size / crop_pct), interpolation=interp),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def labels_for(model_dir, n):
    cj = os.path.join(model_dir, "config.json")
    if os.path.isfile(cj):
        with open(cj) as f:
            id2 = json.load(f).get("id2label")
        if id2 and len(id2) == n:
            return [id2[str(i)] for i in range(n)]
    p = os.path.join(HERE, "..", "weights", "imagenet1k_labels.txt")
    if n == 1000 and os.path.isfile(p):
        with open(p) as f:
            return [ln.rstrip("\n") for ln in f]
    return [str(i) for i in range(n)]


def main():
    ap = argparse.ArgumentParser(description="one image -> top-5 labels, in PyTorch")
    ap.add_argument("model_dir")
    ap.add_argument("image")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--save-input", metavar="FILE.npy")
    a = ap.parse_args()
    st = os.path.join(a.model_dir, "model.safetensors")
    for p in (st, a.image):
        if not os.path.isfile(p):
            print(f"oneshot_torch: {p} not found (../shared absent?)", file=sys.stderr)
            return 3
    try:
        import torch
        from PIL import Image
    except ImportError as e:
        print(f"oneshot_torch: PyTorch/PIL not installed ({e})", file=sys.stderr)
        return 3
    torch.set_num_threads(a.threads)

    if a.save_input:
        from torch_vit import load_safetensors
        sd, _ = load_safetensors(st)
        pos = sd.get("pos_embed", sd.get("vit.embeddings.position_embeddings",
                                         sd.get("deit.embeddings.position_embeddings")))
        pw = [v for k, v in sd.items() if k.endswith(("patch_embed.proj.weight",
                                                       "patch_embeddings.projection.weight"))][0]
        npre = 2 if any(k.endswith(("dist_token", "distillation_token")) for k in sd) else 1
        size = int(round(math.sqrt(pos.shape[1] - npre))) * pw.shape[-1]
    else:
        from peer_torch import load_model
        model = load_model(a.model_dir)
        size = model.img_size

    with Image.open(a.image) as im:
        img = im.convert("RGB")
    x = build_transform(a.model_dir, size)(img).unsqueeze(0).contiguous()

    if a.save_input:
        import numpy as np
        np.save(a.save_input, x.numpy().astype(np.float32))
        print(f"oneshot_torch: wrote {a.save_input} {list(x.shape)}", file=sys.stderr)
        return 0

    with torch.inference_mode():
        logits = model(x)[0]
    prob = logits.softmax(-1)
    top = prob.topk(5)
    names = labels_for(a.model_dir, logits.shape[0])
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{100 * p:7.2f}%  {names[i]} ({i})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
