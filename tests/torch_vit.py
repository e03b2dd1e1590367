"""Plain-torch reference Vision Transformer (ViT / DeiT) for vitc's tests.

This is a small, dependency-free re-implementation of the function computed by
timm's ``VisionTransformer`` (class token, optional DeiT distillation token,
absolute position embeddings, pre-norm blocks, final LayerNorm, linear head)
and, equivalently, by Hugging Face transformers' ``ViTForImageClassification``,
``DeiTForImageClassification`` and ``DeiTForImageClassificationWithTeacher``.
Neither timm nor transformers is needed (or available) here.

Semantics (all fp32):
  tokens = Conv2d(3, D, kernel=P, stride=P)(x).flatten(2).transpose(1, 2)
  x      = cat([cls, (dist,) tokens]) + pos_embed        # pos resampled if needed
  block:  x = x + proj(attn(LN1(x)));  x = x + fc2(GELU_erf(fc1(LN2(x))))
  attn:   qkv rows ordered [q; k; v], heads contiguous inside each (timm layout,
          identical to HF's separate query/key/value), softmax(q k^T * dh^-0.5) v
  out:    LN(x); logits = head(x[:, 0]); distilled: (head(x[:,0]) + head_dist(x[:,1])) / 2
          no head: the normed class token x[:, 0].

Position-embedding resampling follows timm's ``resample_abs_pos_embed``: prefix
tokens kept as is, grid reshaped to [1, D, gs, gs], bicubic F.interpolate
(align_corners=False), flattened back. ``antialias`` is a choice here: False
(the default of this module) is plain bicubic (Keys a = -0.75, clamped borders),
as in timm <= 0.6 ``resize_pos_embed`` and HF ``interpolate_pos_encoding``;
timm >= 0.9 calls resample_abs_pos_embed with its default antialias=True, which
in torch is a *different* kernel even when upsampling (PIL-style a = -0.5,
weights renormalised at the borders).

Also: a hand-written safetensors reader/writer (no safetensors package), and
state-dict exporters for the timm and HF key layouts.
"""

import json
import math
import struct
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F

# ---------------------------------------------------------------- safetensors

_ST_DTYPES = {
    "F32": np.float32, "F16": np.float16, "F64": np.float64,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "BOOL": np.bool_,
}
_NP_TO_ST = {np.dtype(v): k for k, v in _ST_DTYPES.items()}


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor/ndarray} as a safetensors file, by hand.

    Tensors are written in the given order, little-endian, contiguous. The
    JSON header is padded with spaces so that 8 + len(header) is a multiple of 8.
    """
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16:
            # numpy has no bfloat16: store the raw 16-bit patterns.
            raw = t.detach().cpu().contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
            header[name] = {"dtype": "BF16", "shape": list(t.shape),
                            "data_offsets": [offset, offset + len(raw)]}
            blobs.append(raw)
            offset += len(raw)
            continue
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().contiguous().numpy()
        a = np.ascontiguousarray(t)
        dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
        a = a.astype(dt, copy=False)
        if a.dtype not in _NP_TO_ST:
            raise ValueError(f"{name}: unsupported dtype {a.dtype}")
        raw = a.tobytes(order="C")
        header[name] = {"dtype": _NP_TO_ST[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    pad = (8 - (8 + len(hjson)) % 8) % 8
    hjson += b" " * pad
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


def load_safetensors(path):
    """Reads a safetensors file by hand. Returns (OrderedDict name->torch tensor, metadata)."""
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(buf)[8 + n:]
    out = OrderedDict()
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        b, e = info["data_offsets"]
        dtype = info["dtype"]
        if dtype == "BF16":
            u16 = np.frombuffer(data[b:e], dtype="<u2").astype(np.uint32) << 16
            arr = u16.view(np.float32)
        else:
            arr = np.frombuffer(data[b:e], dtype=np.dtype(_ST_DTYPES[dtype]).newbyteorder("<"))
        out[name] = torch.from_numpy(arr.copy()).reshape(info["shape"])
    return out, meta


# ---------------------------------------------------------------- pos-embed resampling

def resample_abs_pos_embed(posemb, new_size, old_size=None, num_prefix_tokens=1,
                           interpolation="bicubic", antialias=False):
    """timm.layers.resample_abs_pos_embed: posemb [1, prefix + gh*gw, D] -> new grid."""
    new_h, new_w = new_size
    num_pos = posemb.shape[1]
    num_new = new_h * new_w + num_prefix_tokens
    if num_new == num_pos and (old_size is None or tuple(old_size) == (new_h, new_w)):
        return posemb
    if old_size is None:
        hw = int(math.sqrt(num_pos - num_prefix_tokens))
        old_size = (hw, hw)
    prefix = posemb[:, :num_prefix_tokens] if num_prefix_tokens else None
    grid = posemb[:, num_prefix_tokens:]
    dim = posemb.shape[-1]
    orig_dtype = grid.dtype
    grid = grid.float().reshape(1, old_size[0], old_size[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(new_h, new_w), mode=interpolation,
                         antialias=antialias, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(orig_dtype)
    if prefix is not None:
        grid = torch.cat([prefix, grid], dim=1)
    return grid


# ---------------------------------------------------------------- model

class RefViT(torch.nn.Module):
    """Reference ViT/DeiT. Parameters are held in timm naming (see timm_state_dict)."""

    def __init__(self, embed_dim, depth, num_heads, mlp_dim, patch_size, img_size,
                 num_classes=0, distilled=False, eps=1e-6, in_chans=3, dist_head=True,
                 pos_antialias=False):
        super().__init__()
        D = embed_dim
        self.embed_dim, self.depth, self.num_heads = D, depth, num_heads
        self.mlp_dim, self.patch_size, self.img_size = mlp_dim, patch_size, img_size
        self.num_classes, self.distilled, self.eps = num_classes, distilled, eps
        # dist_head=False: a distilled model whose only head reads token 0
        # (HF DeiTForImageClassification); True: head + head_dist averaged.
        self.dist_head = bool(distilled and dist_head and num_classes)
        # antialias flag for pos-embed resampling (see resample_abs_pos_embed)
        self.pos_antialias = pos_antialias
        self.num_prefix = 2 if distilled else 1
        g = img_size // patch_size
        self.grid = (g, g)
        P = torch.nn.Parameter
        self.patch_w = P(torch.zeros(D, in_chans, patch_size, patch_size))
        self.patch_b = P(torch.zeros(D))
        self.cls_token = P(torch.zeros(1, 1, D))
        self.dist_token = P(torch.zeros(1, 1, D)) if distilled else None
        self.pos_embed = P(torch.zeros(1, self.num_prefix + g * g, D))
        self.blocks = torch.nn.ModuleList()
        for _ in range(depth):
            b = torch.nn.Module()
            b.norm1_w, b.norm1_b = P(torch.ones(D)), P(torch.zeros(D))
            b.qkv_w, b.qkv_b = P(torch.zeros(3 * D, D)), P(torch.zeros(3 * D))
            b.proj_w, b.proj_b = P(torch.zeros(D, D)), P(torch.zeros(D))
            b.norm2_w, b.norm2_b = P(torch.ones(D)), P(torch.zeros(D))
            b.fc1_w, b.fc1_b = P(torch.zeros(mlp_dim, D)), P(torch.zeros(mlp_dim))
            b.fc2_w, b.fc2_b = P(torch.zeros(D, mlp_dim)), P(torch.zeros(D))
            self.blocks.append(b)
        self.norm_w, self.norm_b = P(torch.ones(D)), P(torch.zeros(D))
        if num_classes:
            self.head_w, self.head_b = P(torch.zeros(num_classes, D)), P(torch.zeros(num_classes))
            if self.dist_head:
                self.head_dist_w = P(torch.zeros(num_classes, D))
                self.head_dist_b = P(torch.zeros(num_classes))

    # -- init for synthetic fixtures: deliberately non-trivial values
    @torch.no_grad()
    def random_init(self, gen, token_std=0.5, patch_scale=1.0):
        """token_std: std of cls/dist tokens and pos_embed. patch_scale scales
        the patch projection; small token_std and patch_scale give encoder
        inputs of tiny variance, where the LayerNorm eps becomes visible."""
        def normal(t, std):
            t.copy_(torch.randn(t.shape, generator=gen) * std)

        def unif(t, lo, hi):
            t.copy_(lo + (hi - lo) * torch.rand(t.shape, generator=gen))

        def ln(w, b):
            unif(w, 0.8, 1.2)
            unif(b, -0.1, 0.1)

        def lin(w, b):
            normal(w, 1.0 / math.sqrt(w.shape[1]))
            unif(b, -0.1, 0.1)

        normal(self.patch_w, patch_scale / math.sqrt(self.patch_w[0].numel()))
        unif(self.patch_b, -0.1 * patch_scale, 0.1 * patch_scale)
        normal(self.cls_token, token_std)
        if self.dist_token is not None:
            normal(self.dist_token, token_std)
        normal(self.pos_embed, token_std)
        for b in self.blocks:
            ln(b.norm1_w, b.norm1_b)
            lin(b.qkv_w, b.qkv_b)
            lin(b.proj_w, b.proj_b)
            ln(b.norm2_w, b.norm2_b)
            lin(b.fc1_w, b.fc1_b)
            lin(b.fc2_w, b.fc2_b)
        ln(self.norm_w, self.norm_b)
        if self.num_classes:
            # a little larger than 1/sqrt(D) so logits are O(1..10)
            normal(self.head_w, 2.0 / math.sqrt(self.embed_dim))
            unif(self.head_b, -0.1, 0.1)
            if self.dist_head:
                normal(self.head_dist_w, 2.0 / math.sqrt(self.embed_dim))
                unif(self.head_dist_b, -0.1, 0.1)
        return self

    # -- forward pieces
    def _ln(self, x, w, b):
        return F.layer_norm(x, (self.embed_dim,), w, b, self.eps)

    def _attn(self, blk, x, record=None):
        """record: a list that, when given, receives (probabilities [B, H, T, T],
        keys [B, T, D] with heads side by side) for this block."""
        B, T, D = x.shape
        H = self.num_heads
        dh = D // H
        qkv = F.linear(x, blk.qkv_w, blk.qkv_b)              # [B, T, 3D]
        qkv = qkv.reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4)  # [3, B, H, T, dh]
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = (q * dh ** -0.5) @ k.transpose(-2, -1)            # [B, H, T, T]
        a = a.softmax(dim=-1)
        if record is not None:
            record.append((a, k.transpose(1, 2).reshape(B, T, D)))
        o = (a @ v).transpose(1, 2).reshape(B, T, D)
        return F.linear(o, blk.proj_w, blk.proj_b)

    def _mlp(self, blk, x):
        h = F.linear(x, blk.fc1_w, blk.fc1_b)
        h = F.gelu(h)  # exact erf GELU
        return F.linear(h, blk.fc2_w, blk.fc2_b)

    def embed(self, x):
        """Encoder input: patch tokens with prefix tokens and (resampled) pos embed."""
        B, C, H, W = x.shape
        p = self.patch_size
        t = F.conv2d(x, self.patch_w, self.patch_b, stride=p)  # [B, D, gh, gw]
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        prefix = [self.cls_token.expand(B, -1, -1)]
        if self.dist_token is not None:
            prefix.append(self.dist_token.expand(B, -1, -1))
        t = torch.cat(prefix + [t], dim=1)
        pos = resample_abs_pos_embed(self.pos_embed, (gh, gw), old_size=self.grid,
                                     num_prefix_tokens=self.num_prefix,
                                     antialias=self.pos_antialias)
        return t + pos

    def forward(self, x, return_intermediates=False, return_inside=False):
        """return_inside (with return_intermediates): also "attention" and
        "keys" (one [B, H, T, T] / [B, T, D] per block) and "blocks" (every
        block's output [B, T, D]), for the inspection fixtures."""
        inter = OrderedDict()
        h = self.embed(x)
        inter["embed"] = h
        record = [] if return_inside else None
        blocks = []
        for i, blk in enumerate(self.blocks):
            h = h + self._attn(blk, self._ln(h, blk.norm1_w, blk.norm1_b), record)
            h = h + self._mlp(blk, self._ln(h, blk.norm2_w, blk.norm2_b))
            blocks.append(h)
            if i == 0:
                inter["block0"] = h
        if return_inside:
            inter["attention"] = [a for a, _ in record]
            inter["keys"] = [k for _, k in record]
            inter["blocks"] = blocks
        h = self._ln(h, self.norm_w, self.norm_b)
        inter["final"] = h
        if not self.num_classes:
            out = h[:, 0]
        elif self.dist_head:
            out = (F.linear(h[:, 0], self.head_w, self.head_b)
                   + F.linear(h[:, 1], self.head_dist_w, self.head_dist_b)) / 2
        else:
            out = F.linear(h[:, 0], self.head_w, self.head_b)
        inter["logits"] = out
        return inter if return_intermediates else out

    def forward_features(self, x):
        """timm's forward_features: every token after the final LayerNorm,
        [B, T, D] (what HF ViTModel returns as last_hidden_state)."""
        return self(x, return_intermediates=True)["final"]

    def pre_logits(self, feats, pool):
        """timm's forward_head(feats, pre_logits=True) for global_pool
        'token' (the class token) or 'avg' (the mean of the patch tokens,
        prefix tokens left out; fc_norm off, so the final norm stays before
        the pool); 'none' keeps every token, [B, T, D]."""
        if pool == "token":
            return feats[:, 0]
        if pool == "avg":
            return feats[:, self.num_prefix:].mean(dim=1)
        assert pool == "none", pool
        return feats

    # -- state dicts in hub layouts
    def timm_state_dict(self):
        sd = OrderedDict()
        sd["cls_token"] = self.cls_token
        if self.dist_token is not None:
            sd["dist_token"] = self.dist_token
        sd["pos_embed"] = self.pos_embed
        sd["patch_embed.proj.weight"] = self.patch_w
        sd["patch_embed.proj.bias"] = self.patch_b
        for i, b in enumerate(self.blocks):
            p = f"blocks.{i}."
            sd[p + "norm1.weight"], sd[p + "norm1.bias"] = b.norm1_w, b.norm1_b
            sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = b.qkv_w, b.qkv_b
            sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = b.proj_w, b.proj_b
            sd[p + "norm2.weight"], sd[p + "norm2.bias"] = b.norm2_w, b.norm2_b
            sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = b.fc1_w, b.fc1_b
            sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = b.fc2_w, b.fc2_b
        sd["norm.weight"], sd["norm.bias"] = self.norm_w, self.norm_b
        if self.num_classes:
            sd["head.weight"], sd["head.bias"] = self.head_w, self.head_b
            if self.dist_head:
                sd["head_dist.weight"], sd["head_dist.bias"] = self.head_dist_w, self.head_dist_b
        return OrderedDict((k, v.detach().clone()) for k, v in sd.items())

    def hf_state_dict(self, model_type="vit"):
        """HF layout. model_type 'vit' (ViTForImageClassification, prefix vit.) or
        'deit' (prefix deit., distillation_token). A model with two heads
        (dist_head) gives cls_classifier/distillation_classifier
        (DeiTForImageClassificationWithTeacher), one head gives classifier
        (ViTForImageClassification / DeiTForImageClassification)."""
        D = self.embed_dim
        pre = model_type + "."
        sd = OrderedDict()
        sd[pre + "embeddings.cls_token"] = self.cls_token
        if self.dist_token is not None:
            if model_type != "deit":
                raise ValueError("a distillation token needs the deit layout")
            sd[pre + "embeddings.distillation_token"] = self.dist_token
        sd[pre + "embeddings.position_embeddings"] = self.pos_embed
        sd[pre + "embeddings.patch_embeddings.projection.weight"] = self.patch_w
        sd[pre + "embeddings.patch_embeddings.projection.bias"] = self.patch_b
        for i, b in enumerate(self.blocks):
            p = f"{pre}encoder.layer.{i}."
            sd[p + "layernorm_before.weight"], sd[p + "layernorm_before.bias"] = b.norm1_w, b.norm1_b
            for j, n in enumerate(("query", "key", "value")):
                sd[p + f"attention.attention.{n}.weight"] = b.qkv_w[j * D:(j + 1) * D]
                sd[p + f"attention.attention.{n}.bias"] = b.qkv_b[j * D:(j + 1) * D]
            sd[p + "attention.output.dense.weight"] = b.proj_w
            sd[p + "attention.output.dense.bias"] = b.proj_b
            sd[p + "layernorm_after.weight"], sd[p + "layernorm_after.bias"] = b.norm2_w, b.norm2_b
            sd[p + "intermediate.dense.weight"], sd[p + "intermediate.dense.bias"] = b.fc1_w, b.fc1_b
            sd[p + "output.dense.weight"], sd[p + "output.dense.bias"] = b.fc2_w, b.fc2_b
        sd[pre + "layernorm.weight"], sd[pre + "layernorm.bias"] = self.norm_w, self.norm_b
        if self.num_classes:
            if self.dist_head:
                sd["cls_classifier.weight"], sd["cls_classifier.bias"] = self.head_w, self.head_b
                sd["distillation_classifier.weight"] = self.head_dist_w
                sd["distillation_classifier.bias"] = self.head_dist_b
            else:
                sd["classifier.weight"], sd["classifier.bias"] = self.head_w, self.head_b
        return OrderedDict((k, v.detach().clone().contiguous()) for k, v in sd.items())

    # -- loading real checkpoints
    @classmethod
    def from_state_dict(cls, sd, num_heads=None, eps=None, pos_antialias=False):
        """Builds a RefViT from a timm- or HF-layout state dict (torch tensors).
        num_heads defaults to D // 64 (timm convention); eps to 1e-6 (timm) or
        1e-12 (HF default); the native image size is the one implied by pos_embed."""
        if "patch_embed.proj.weight" in sd:
            layout = "timm"
            g = lambda k: sd[k]
            pw = g("patch_embed.proj.weight")
            depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
            mlp = g("blocks.0.mlp.fc1.weight").shape[0]
            distilled = "dist_token" in sd
            has_head = "head.weight" in sd
        else:
            pre = "deit." if any(k.startswith("deit.") for k in sd) else "vit."
            layout = "hf_" + pre[:-1]
            pw = sd[pre + "embeddings.patch_embeddings.projection.weight"]
            depth = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith(pre + "encoder.layer."))
            mlp = sd[pre + "encoder.layer.0.intermediate.dense.weight"].shape[0]
            distilled = (pre + "embeddings.distillation_token") in sd
            has_head = "classifier.weight" in sd or "cls_classifier.weight" in sd
        D, _, P, _ = pw.shape
        if num_heads is None:
            num_heads = max(1, D // 64)
        if eps is None:
            eps = 1e-6 if layout == "timm" else 1e-12
        npre = 2 if distilled else 1
        pos = sd["pos_embed"] if layout == "timm" else sd[pre + "embeddings.position_embeddings"]
        gs = int(round(math.sqrt(pos.shape[1] - npre)))
        if layout == "timm":
            nc = sd["head.weight"].shape[0] if has_head else 0
        else:
            hk = "cls_classifier.weight" if "cls_classifier.weight" in sd else "classifier.weight"
            nc = sd[hk].shape[0] if has_head else 0
        two_heads = "head_dist.weight" in sd or "distillation_classifier.weight" in sd
        m = cls(D, depth, num_heads, mlp, P, gs * P, num_classes=nc, distilled=distilled, eps=eps,
                dist_head=two_heads, pos_antialias=pos_antialias)
        with torch.no_grad():
            if layout == "timm":
                m.load_timm(sd)
            else:
                m.load_hf(sd, pre)
        m.layout = layout
        return m

    @torch.no_grad()
    def load_timm(self, sd):
        own = self.timm_state_dict().keys()
        params = self._timm_param_map()
        for k in own:
            params[k].copy_(sd[k].float())

    @torch.no_grad()
    def load_hf(self, sd, pre="vit."):
        D = self.embed_dim
        self.cls_token.copy_(sd[pre + "embeddings.cls_token"])
        if self.dist_token is not None:
            self.dist_token.copy_(sd[pre + "embeddings.distillation_token"])
        self.pos_embed.copy_(sd[pre + "embeddings.position_embeddings"])
        self.patch_w.copy_(sd[pre + "embeddings.patch_embeddings.projection.weight"])
        self.patch_b.copy_(sd[pre + "embeddings.patch_embeddings.projection.bias"])
        for i, b in enumerate(self.blocks):
            p = f"{pre}encoder.layer.{i}."
            b.norm1_w.copy_(sd[p + "layernorm_before.weight"])
            b.norm1_b.copy_(sd[p + "layernorm_before.bias"])
            b.qkv_w.copy_(torch.cat([sd[p + f"attention.attention.{n}.weight"]
                                     for n in ("query", "key", "value")], 0))
            b.qkv_b.copy_(torch.cat([sd[p + f"attention.attention.{n}.bias"]
                                     for n in ("query", "key", "value")], 0))
            b.proj_w.copy_(sd[p + "attention.output.dense.weight"])
            b.proj_b.copy_(sd[p + "attention.output.dense.bias"])
            b.norm2_w.copy_(sd[p + "layernorm_after.weight"])
            b.norm2_b.copy_(sd[p + "layernorm_after.bias"])
            b.fc1_w.copy_(sd[p + "intermediate.dense.weight"])
            b.fc1_b.copy_(sd[p + "intermediate.dense.bias"])
            b.fc2_w.copy_(sd[p + "output.dense.weight"])
            b.fc2_b.copy_(sd[p + "output.dense.bias"])
        self.norm_w.copy_(sd[pre + "layernorm.weight"])
        self.norm_b.copy_(sd[pre + "layernorm.bias"])
        if self.num_classes:
            if self.dist_head:
                self.head_w.copy_(sd["cls_classifier.weight"])
                self.head_b.copy_(sd["cls_classifier.bias"])
                self.head_dist_w.copy_(sd["distillation_classifier.weight"])
                self.head_dist_b.copy_(sd["distillation_classifier.bias"])
            else:
                self.head_w.copy_(sd["classifier.weight"])
                self.head_b.copy_(sd["classifier.bias"])
        assert D == self.embed_dim

    def _timm_param_map(self):
        m = OrderedDict()
        m["cls_token"] = self.cls_token
        if self.dist_token is not None:
            m["dist_token"] = self.dist_token
        m["pos_embed"] = self.pos_embed
        m["patch_embed.proj.weight"], m["patch_embed.proj.bias"] = self.patch_w, self.patch_b
        for i, b in enumerate(self.blocks):
            p = f"blocks.{i}."
            for k, v in (("norm1.weight", b.norm1_w), ("norm1.bias", b.norm1_b),
                         ("attn.qkv.weight", b.qkv_w), ("attn.qkv.bias", b.qkv_b),
                         ("attn.proj.weight", b.proj_w), ("attn.proj.bias", b.proj_b),
                         ("norm2.weight", b.norm2_w), ("norm2.bias", b.norm2_b),
                         ("mlp.fc1.weight", b.fc1_w), ("mlp.fc1.bias", b.fc1_b),
                         ("mlp.fc2.weight", b.fc2_w), ("mlp.fc2.bias", b.fc2_b)):
                m[p + k] = v
        m["norm.weight"], m["norm.bias"] = self.norm_w, self.norm_b
        if self.num_classes:
            m["head.weight"], m["head.bias"] = self.head_w, self.head_b
            if self.dist_head:
                m["head_dist.weight"], m["head_dist.bias"] = self.head_dist_w, self.head_dist_b
        return m


# ---------------------------------------------------------------- the wider family (issue 18)

def quick_gelu(x):
    """timm.layers.activations.quick_gelu / OpenAI CLIP's QuickGELU: x * sigmoid(1.702 x)."""
    return x * torch.sigmoid(1.702 * x)


class FamilyViT:
    """Reference for the rest of timm's ``VisionTransformer`` switches and for
    Hugging Face DINOv2 (issue 18). Functional (a dict of tensors in timm
    naming, ``self.p``), fp32, no autograd needed. ``RefViT`` above is left
    untouched; this class covers what it does not.

    style "timm" follows timm/models/vision_transformer.py (VisionTransformer,
    timm >= 1.0):
      __init__: num_prefix_tokens = class_token + reg_tokens;
                pos_embed length = num_patches if no_embed_class
                else num_patches + num_prefix_tokens;
                patch_embed bias = not pre_norm (CLIP towers have no patch bias);
                norm_pre = norm_layer(D) if pre_norm;
                use_fc_norm = global_pool in ('avg','avgmax','max') if fc_norm is None;
                norm = norm_layer(D) if not use_fc_norm, fc_norm = norm_layer(D) if use_fc_norm.
      _pos_embed: to_cat = [cls_token?, reg_token?] (order: cls, reg..., then patches);
                no_embed_class: x = patches + pos_embed, then cat(to_cat + [x]);
                else cat(to_cat + [patches]) + pos_embed.
                Resampling (dynamic_img_size / set_input_size / checkpoint_filter_fn):
                resample_abs_pos_embed(num_prefix_tokens = 0 if no_embed_class
                else num_prefix_tokens), antialias=True by default (timm >= 0.9).
      forward_features: patch_embed, _pos_embed, norm_pre, blocks, norm.
      Block: x = x + ls1(attn(norm1(x))); x = x + ls2(mlp(norm2(x)));
             LayerScale (timm.layers.layer_scale): x * gamma, gamma [D].
      Attention (timm.layers.attention): qkv = Linear(D, 3D, bias=qkv_bias),
             reshape(B,N,3,H,dh).permute(2,0,3,1,4); q, k = q_norm(q), k_norm(k)
             (norm_layer(head_dim), i.e. LayerNorm over dh, per head, same eps as
             the model's norm_layer) BEFORE q * dh^-0.5; softmax(q k^T) v; proj.
      Mlp: fc2(act(fc1(x))), act nn.GELU (erf) or 'quick_gelu'.
      pool (global_pool_nlc): 'token' -> x[:, 0]; 'avg' -> x[:, num_prefix_tokens:].mean(1)
             (register tokens are prefix tokens: left out of the mean).
      forward_head: pool, fc_norm, head.
      LayerNorm eps: timm's default norm_layer is LayerNorm(eps=1e-6); the
      *_clip_* entrypoints pass norm_layer=nn.LayerNorm (eps 1e-5).

    style "dinov2" / "dinov2_reg" follow transformers'
    models/dinov2/modeling_dinov2.py and
    models/dinov2_with_registers/modular_dinov2_with_registers.py:
      Dinov2Embeddings: cat([cls, patches]) + interpolate_pos_encoding(...)
                (position_embeddings [1, 1 + N, D]: the class position is kept,
                the patch grid resized with F.interpolate(size=(h/P, w/P),
                mode='bicubic', align_corners=False) in float32, skipped when
                num_patches == num_positions and height == width;
                Dinov2: antialias=False; Dinov2WithRegisters: antialias=True).
      Dinov2WithRegistersEmbeddings: after the position embedding, the
                register_tokens [1, R, D] are inserted after the class token:
                cat(x[:, :1], registers, x[:, 1:]) (no position for registers).
      Dinov2Layer: h = h + layer_scale1(attention(norm1(h)));
                   h = h + layer_scale2(mlp(norm2(h))); LayerScale: x * lambda1.
      Dinov2Model: layernorm after the encoder (last_hidden_state).
      Dinov2(WithRegisters)ForImageClassification: classifier (Linear(2D, C)) on
                cat([cls, mean(patch tokens)]) where the patch tokens exclude
                the class token and the registers (sequence_output[:, 1 + R:]).
      mask_token [1, D] is only used with bool_masked_pos (pre-training): not
      used at inference.
    """

    def __init__(self, embed_dim, depth, num_heads, mlp_dim, patch_size, img_size,
                 num_classes=0, style="timm", class_token=True, reg_tokens=0,
                 no_embed_class=False, init_values=None, pre_norm=False,
                 global_pool="token", fc_norm=None, act="gelu", qkv_bias=True,
                 qk_norm=False, eps=1e-6, patch_bias=None, pos_antialias=True,
                 in_chans=3):
        assert style in ("timm", "dinov2", "dinov2_reg"), style
        D = embed_dim
        self.style = style
        self.embed_dim, self.depth, self.num_heads = D, depth, num_heads
        self.mlp_dim, self.patch_size, self.img_size = mlp_dim, patch_size, img_size
        self.num_classes, self.in_chans = num_classes, in_chans
        if style != "timm":
            # DINOv2: class token always, LayerScale always (lambda1), final
            # layernorm, position embedding over [cls, patches] only.
            class_token, no_embed_class, pre_norm = True, False, False
            global_pool, fc_norm = "dinov2", False
            init_values = 1.0 if init_values is None else init_values
            reg_tokens = reg_tokens if style == "dinov2_reg" else 0
            pos_antialias = style == "dinov2_reg"
        assert class_token or global_pool != "token"
        self.class_token, self.reg_tokens = class_token, reg_tokens
        self.no_embed_class, self.init_values = no_embed_class, init_values
        self.pre_norm, self.global_pool, self.act = pre_norm, global_pool, act
        self.qkv_bias, self.qk_norm, self.eps = qkv_bias, qk_norm, eps
        self.pos_antialias = pos_antialias
        self.use_fc_norm = (global_pool in ("avg", "avgmax", "max")) if fc_norm is None else bool(fc_norm)
        self.patch_bias = (not pre_norm) if patch_bias is None else patch_bias
        self.num_prefix = int(class_token) + reg_tokens
        g = img_size // patch_size
        self.grid = (g, g)
        N = g * g
        if style == "timm":
            pos_len = N if no_embed_class else N + self.num_prefix
        else:
            pos_len = N + 1
        dh = D // num_heads
        z = torch.zeros
        p = OrderedDict()
        if class_token:
            p["cls_token"] = z(1, 1, D)
        if reg_tokens:
            p["reg_token"] = z(1, reg_tokens, D)
        if style != "timm":
            p["mask_token"] = z(1, D)
        p["pos_embed"] = z(1, pos_len, D)
        p["patch_embed.proj.weight"] = z(D, in_chans, patch_size, patch_size)
        if self.patch_bias:
            p["patch_embed.proj.bias"] = z(D)
        if pre_norm:
            p["norm_pre.weight"], p["norm_pre.bias"] = z(D), z(D)
        for i in range(depth):
            b = f"blocks.{i}."
            p[b + "norm1.weight"], p[b + "norm1.bias"] = z(D), z(D)
            p[b + "attn.qkv.weight"] = z(3 * D, D)
            if qkv_bias:
                p[b + "attn.qkv.bias"] = z(3 * D)
            if qk_norm:
                p[b + "attn.q_norm.weight"], p[b + "attn.q_norm.bias"] = z(dh), z(dh)
                p[b + "attn.k_norm.weight"], p[b + "attn.k_norm.bias"] = z(dh), z(dh)
            p[b + "attn.proj.weight"], p[b + "attn.proj.bias"] = z(D, D), z(D)
            if init_values:
                p[b + "ls1.gamma"] = z(D)
            p[b + "norm2.weight"], p[b + "norm2.bias"] = z(D), z(D)
            p[b + "mlp.fc1.weight"], p[b + "mlp.fc1.bias"] = z(mlp_dim, D), z(mlp_dim)
            p[b + "mlp.fc2.weight"], p[b + "mlp.fc2.bias"] = z(D, mlp_dim), z(D)
            if init_values:
                p[b + "ls2.gamma"] = z(D)
        if not self.use_fc_norm:
            p["norm.weight"], p["norm.bias"] = z(D), z(D)
        else:
            p["fc_norm.weight"], p["fc_norm.bias"] = z(D), z(D)
        if num_classes:
            hin = 2 * D if style != "timm" else D
            p["head.weight"], p["head.bias"] = z(num_classes, hin), z(num_classes)
        self.p = p

    # -- synthetic weights (same spirit as RefViT.random_init)
    @torch.no_grad()
    def random_init(self, gen, token_std=0.5, patch_scale=1.0, gamma=(-0.4, 1.2)):
        def normal(shape, std):
            return torch.randn(shape, generator=gen) * std

        def unif(shape, lo, hi):
            return lo + (hi - lo) * torch.rand(shape, generator=gen)

        for k, t in self.p.items():
            s = t.shape
            if k in ("cls_token", "reg_token", "pos_embed"):
                v = normal(s, token_std)
            elif k == "mask_token":
                v = normal(s, 1.0)  # unused at inference: any value must give the same output
            elif k == "patch_embed.proj.weight":
                v = normal(s, patch_scale / math.sqrt(t[0].numel()))
            elif k == "patch_embed.proj.bias":
                v = unif(s, -0.1 * patch_scale, 0.1 * patch_scale)
            elif k.endswith((".gamma",)):
                v = unif(s, *gamma)
            elif "q_norm" in k or "k_norm" in k:
                v = unif(s, 0.5, 1.5) if k.endswith("weight") else unif(s, -0.2, 0.2)
            elif k.startswith("head."):
                v = normal(s, 2.0 / math.sqrt(s[-1])) if k.endswith("weight") else unif(s, -0.1, 0.1)
            elif k.endswith("weight") and t.dim() == 1:   # LayerNorm weight
                v = unif(s, 0.8, 1.2)
            elif k.endswith("bias") and t.dim() == 1 and not any(
                    x in k for x in ("qkv", "proj", "fc1", "fc2")):  # LayerNorm bias
                v = unif(s, -0.1, 0.1)
            elif k.endswith("weight"):                     # Linear weight
                v = normal(s, 1.0 / math.sqrt(s[1]))
            else:                                          # Linear bias
                v = unif(s, -0.1, 0.1)
            t.copy_(v)
        return self

    # -- forward pieces
    def _ln(self, x, name, dim=None):
        return F.layer_norm(x, (x.shape[-1] if dim is None else dim,),
                            self.p[name + ".weight"], self.p[name + ".bias"], self.eps)

    def _act(self, x):
        if self.act == "gelu":
            return F.gelu(x)          # exact erf GELU (nn.GELU / HF "gelu")
        if self.act == "quick_gelu":
            return quick_gelu(x)
        raise ValueError(self.act)

    def _pos(self, gh, gw):
        """The position embedding for a gh x gw patch grid (see class docstring)."""
        if self.style == "timm":
            npre = 0 if self.no_embed_class else self.num_prefix
        else:
            npre = 1
        return resample_abs_pos_embed(self.p["pos_embed"], (gh, gw), old_size=self.grid,
                                      num_prefix_tokens=npre, antialias=self.pos_antialias)

    def embed(self, x):
        B = x.shape[0]
        p = self.p
        t = F.conv2d(x, p["patch_embed.proj.weight"], p.get("patch_embed.proj.bias"),
                     stride=self.patch_size)
        gh, gw = t.shape[-2:]
        t = t.flatten(2).transpose(1, 2)
        pos = self._pos(gh, gw)
        if self.style == "timm":
            to_cat = []
            if self.class_token:
                to_cat.append(p["cls_token"].expand(B, -1, -1))
            if self.reg_tokens:
                to_cat.append(p["reg_token"].expand(B, -1, -1))
            if self.no_embed_class:
                t = torch.cat(to_cat + [t + pos], dim=1)
            else:
                t = torch.cat(to_cat + [t], dim=1) + pos
        else:
            t = torch.cat([p["cls_token"].expand(B, -1, -1), t], dim=1) + pos
            if self.reg_tokens:
                t = torch.cat([t[:, :1], p["reg_token"].expand(B, -1, -1), t[:, 1:]], dim=1)
        return t

    def _attn(self, i, x, record=None):
        B, T, D = x.shape
        H = self.num_heads
        dh = D // H
        b = f"blocks.{i}.attn."
        qkv = F.linear(x, self.p[b + "qkv.weight"], self.p.get(b + "qkv.bias"))
        q, k, v = qkv.reshape(B, T, 3, H, dh).permute(2, 0, 3, 1, 4).unbind(0)
        if self.qk_norm:
            q = self._ln(q, b + "q_norm")
            k = self._ln(k, b + "k_norm")
        a = ((q * dh ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        if record is not None:
            record.append(a)
        o = (a @ v).transpose(1, 2).reshape(B, T, D)
        return F.linear(o, self.p[b + "proj.weight"], self.p[b + "proj.bias"])

    def _mlp(self, i, x):
        b = f"blocks.{i}.mlp."
        h = self._act(F.linear(x, self.p[b + "fc1.weight"], self.p[b + "fc1.bias"]))
        return F.linear(h, self.p[b + "fc2.weight"], self.p[b + "fc2.bias"])

    def encode(self, x, out=None):
        """The encoder up to the final norm: embed, norm_pre and every block.
        Returns (the last block's output [B,T,D], the attention probabilities
        of every block); out, when given, receives "embed" and "block0"."""
        h = self.embed(x)
        if out is not None:
            out["embed"] = h
        if self.pre_norm:
            h = self._ln(h, "norm_pre")
        rec = []
        for i in range(self.depth):
            b = f"blocks.{i}."
            y = self._attn(i, self._ln(h, b + "norm1"), rec)
            if self.init_values:
                y = y * self.p[b + "ls1.gamma"]
            h = h + y
            y = self._mlp(i, self._ln(h, b + "norm2"))
            if self.init_values:
                y = y * self.p[b + "ls2.gamma"]
            h = h + y
            if i == 0 and out is not None:
                out["block0"] = h
        return h, rec

    def forward(self, x):
        """Differentiable: set requires_grad on entries of self.p (and x) to get
        autograd gradients for a training check. Returns an OrderedDict: embed [B,T,D] (encoder input, before
        norm_pre), block0 [B,T,D], attention (list of [B,H,T,T] per block),
        tokens [B,T,D] (after the final norm; the last block's output when the
        model has fc_norm instead), pooled [B,D'] (timm pre_logits: pool then
        fc_norm; DINOv2: cat[cls, mean(patches)], [B,2D]), logits [B,C]
        (no head: pooled)."""
        out = OrderedDict()
        h, rec = self.encode(x, out)
        out["attention"] = rec
        if not self.use_fc_norm:
            h = self._ln(h, "norm")
        out["tokens"] = h
        if self.global_pool == "token":
            pooled = h[:, 0]
        elif self.global_pool == "avg":
            pooled = h[:, self.num_prefix:].mean(dim=1)
        elif self.global_pool == "dinov2" and not self.num_classes:
            pooled = h[:, 0]  # bare Dinov2Model: pooler_output, the normed class token
        elif self.global_pool == "dinov2":
            pooled = torch.cat([h[:, 0], h[:, 1 + self.reg_tokens:].mean(dim=1)], dim=1)
        else:
            raise ValueError(self.global_pool)
        if self.use_fc_norm:
            pooled = self._ln(pooled, "fc_norm")
        out["pooled"] = pooled
        if self.num_classes:
            out["logits"] = F.linear(pooled, self.p["head.weight"], self.p["head.bias"])
        else:
            out["logits"] = pooled
        return out

    __call__ = forward

    # -- key layouts
    def name_map(self, layout="timm"):
        """OrderedDict internal (timm) name -> file name for a layout:
        'timm', 'hf_dinov2' (Dinov2ForImageClassification: dinov2. prefix),
        'hf_dinov2_model' (Dinov2Model / Dinov2WithRegistersModel: no prefix,
        no classifier), 'hf_dinov2_reg' (Dinov2WithRegistersForImageClassification:
        dinov2_with_registers. prefix). HF q/k/v are the three row blocks of
        timm's fused qkv (weight rows [q; k; v]), see the split in state_dict."""
        m = OrderedDict()
        if layout == "timm":
            for k in self.p:
                m[k] = k
            return m
        assert self.style != "timm", "HF layouts are for the DINOv2 styles"
        pre = {"hf_dinov2": "dinov2.", "hf_dinov2_reg": "dinov2_with_registers.",
               "hf_dinov2_model": ""}[layout]
        e = pre + "embeddings."
        fixed = {"cls_token": e + "cls_token", "mask_token": e + "mask_token",
                 "reg_token": e + "register_tokens", "pos_embed": e + "position_embeddings",
                 "patch_embed.proj.weight": e + "patch_embeddings.projection.weight",
                 "patch_embed.proj.bias": e + "patch_embeddings.projection.bias",
                 "norm.weight": pre + "layernorm.weight", "norm.bias": pre + "layernorm.bias",
                 "head.weight": "classifier.weight", "head.bias": "classifier.bias"}
        blk = {"norm1": "norm1", "attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1",
               "norm2": "norm2", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
               "ls2.gamma": "layer_scale2.lambda1"}
        for k in self.p:
            if k in fixed:
                if k.startswith("head.") and layout == "hf_dinov2_model":
                    continue
                m[k] = fixed[k]
                continue
            parts = k.split(".")
            i, rest = parts[1], ".".join(parts[2:])
            b = f"{pre}encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                m[k] = [b + f"attention.attention.{n}.{parts[-1]}" for n in ("query", "key", "value")]
                continue
            for src, dst in blk.items():
                if rest == src or rest.startswith(src + "."):
                    m[k] = b + dst + rest[len(src):]
                    break
            else:
                raise KeyError(k)
        return m

    def state_dict(self, layout="timm"):
        D = self.embed_dim
        sd = OrderedDict()
        for k, dst in self.name_map(layout).items():
            t = self.p[k]
            if isinstance(dst, list):
                for j, n in enumerate(dst):
                    sd[n] = t[j * D:(j + 1) * D].clone().contiguous()
            else:
                sd[dst] = t.clone().contiguous()
        return sd

    @torch.no_grad()
    def load(self, sd, layout="timm"):
        """Inverse of state_dict: fills self.p from a file's tensors (exact names)."""
        used = set()
        for k, dst in self.name_map(layout).items():
            if isinstance(dst, list):
                self.p[k].copy_(torch.cat([sd[n].float() for n in dst], 0))
                used.update(dst)
            else:
                self.p[k].copy_(sd[dst].float().reshape(self.p[k].shape))
                used.add(dst)
        extra = set(sd) - used
        assert not extra, f"unused tensors {sorted(extra)}"
        return self


def _independent_family_forward(m, x):
    """A second, deliberately different float64 formulation of FamilyViT
    (per-image, per-token and per-head loops, hand-written LayerNorm, GELU,
    QuickGELU and conv-as-matmul; q/k/v as separate slices; the sequence built
    token by token). Position-embedding resampling reuses
    resample_abs_pos_embed (checked elsewhere). Returns (tokens, pooled, logits,
    attn0)."""
    D, H, P = m.embed_dim, m.num_heads, m.patch_size
    dh = D // H
    p = {k: v.double() for k, v in m.p.items()}
    x = x.double()
    B, C, Hh, Ww = x.shape
    gh, gw = Hh // P, Ww // P

    def ln(t, w, b):
        mu = sum(t[..., j] for j in range(t.shape[-1])) / t.shape[-1]
        var = sum((t[..., j] - mu) ** 2 for j in range(t.shape[-1])) / t.shape[-1]
        return (t - mu[..., None]) / torch.sqrt(var[..., None] + m.eps) * w + b

    def act(f):
        if m.act == "gelu":
            return 0.5 * f * (1 + torch.erf(f / math.sqrt(2)))
        return f / (1 + torch.exp(-1.702 * f))

    Wp = p["patch_embed.proj.weight"].reshape(D, -1)
    bp = p.get("patch_embed.proj.bias", torch.zeros(D, dtype=torch.float64))
    if m.style == "timm":
        npre_pos = 0 if m.no_embed_class else m.num_prefix
    else:
        npre_pos = 1
    pos = resample_abs_pos_embed(p["pos_embed"], (gh, gw), old_size=m.grid,
                                 num_prefix_tokens=npre_pos, antialias=m.pos_antialias)[0]
    toks_all, pooled_all, logits_all, attn0_all = [], [], [], []
    for bi in range(B):
        patches = []
        for r in range(gh):
            for c in range(gw):
                patch = x[bi, :, r * P:(r + 1) * P, c * P:(c + 1) * P].reshape(-1)
                patches.append(Wp @ patch + bp)
        seq = []
        if m.style == "timm":
            pre = []
            if m.class_token:
                pre.append(p["cls_token"][0, 0])
            for j in range(m.reg_tokens):
                pre.append(p["reg_token"][0, j])
            if m.no_embed_class:
                seq = pre + [patches[n] + pos[n] for n in range(len(patches))]
            else:
                allt = pre + patches
                seq = [allt[n] + pos[n] for n in range(len(allt))]
        else:
            seq = [p["cls_token"][0, 0] + pos[0]]
            seq += [p["reg_token"][0, j] for j in range(m.reg_tokens)]
            seq += [patches[n] + pos[1 + n] for n in range(len(patches))]
        h = torch.stack(seq)                                     # [T, D]
        if m.pre_norm:
            h = ln(h, p["norm_pre.weight"], p["norm_pre.bias"])
        for i in range(m.depth):
            b = f"blocks.{i}."
            y = ln(h, p[b + "norm1.weight"], p[b + "norm1.bias"])
            Wq = p[b + "attn.qkv.weight"]
            bq = p.get(b + "attn.qkv.bias", torch.zeros(3 * D, dtype=torch.float64))
            q = y @ Wq[:D].t() + bq[:D]
            k = y @ Wq[D:2 * D].t() + bq[D:2 * D]
            v = y @ Wq[2 * D:].t() + bq[2 * D:]
            heads = []
            probs = []
            for hd in range(H):
                s = slice(hd * dh, (hd + 1) * dh)
                qh, kh = q[:, s], k[:, s]
                if m.qk_norm:
                    qh = ln(qh, p[b + "attn.q_norm.weight"], p[b + "attn.q_norm.bias"])
                    kh = ln(kh, p[b + "attn.k_norm.weight"], p[b + "attn.k_norm.bias"])
                sc = (qh @ kh.t()) / math.sqrt(dh)
                sc = torch.exp(sc - sc.max(-1, keepdim=True).values)
                sc = sc / sc.sum(-1, keepdim=True)
                probs.append(sc)
                heads.append(sc @ v[:, s])
            if i == 0:
                attn0_all.append(torch.stack(probs))
            o = torch.cat(heads, -1) @ p[b + "attn.proj.weight"].t() + p[b + "attn.proj.bias"]
            if m.init_values:
                o = o * p[b + "ls1.gamma"]
            h = h + o
            y = ln(h, p[b + "norm2.weight"], p[b + "norm2.bias"])
            f = act(y @ p[b + "mlp.fc1.weight"].t() + p[b + "mlp.fc1.bias"])
            f = f @ p[b + "mlp.fc2.weight"].t() + p[b + "mlp.fc2.bias"]
            if m.init_values:
                f = f * p[b + "ls2.gamma"]
            h = h + f
        if not m.use_fc_norm:
            h = ln(h, p["norm.weight"], p["norm.bias"])
        T = h.shape[0]
        if m.global_pool == "token":
            pooled = h[0]
        elif m.global_pool == "avg":
            pooled = sum(h[t] for t in range(m.num_prefix, T)) / (T - m.num_prefix)
        elif not m.num_classes:
            pooled = h[0]
        else:
            first = 1 + m.reg_tokens
            pooled = torch.cat([h[0], sum(h[t] for t in range(first, T)) / (T - first)])
        if m.use_fc_norm:
            pooled = ln(pooled, p["fc_norm.weight"], p["fc_norm.bias"])
        logits = pooled @ p["head.weight"].t() + p["head.bias"] if m.num_classes else pooled
        toks_all.append(h)
        pooled_all.append(pooled)
        logits_all.append(logits)
    return (torch.stack(toks_all), torch.stack(pooled_all), torch.stack(logits_all),
            torch.stack(attn0_all))


# ---------------------------------------------------------------- self-check

def _independent_forward(model, x):
    """A second, deliberately different formulation (per-head loops, manual
    LayerNorm/GELU/conv-as-matmul, explicit separate q/k/v), used only to
    cross-check RefViT.forward in the self-test."""
    m = model
    D, H, P = m.embed_dim, m.num_heads, m.patch_size
    dh = D // H
    B, C, Hh, Ww = x.shape
    x = x.double()

    def ln(t, w, b):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + m.eps) * w.double() + b.double()

    gh, gw = Hh // P, Ww // P
    patches = x.reshape(B, C, gh, P, gw, P).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * P * P)
    tok = patches @ m.patch_w.double().reshape(D, -1).t() + m.patch_b.double()
    pre = [m.cls_token.double().expand(B, 1, D)]
    if m.dist_token is not None:
        pre.append(m.dist_token.double().expand(B, 1, D))
    pos = resample_abs_pos_embed(m.pos_embed.double(), (gh, gw), old_size=m.grid,
                                 num_prefix_tokens=m.num_prefix, antialias=m.pos_antialias)
    h = torch.cat(pre + [tok], 1) + pos
    for blk in m.blocks:
        y = ln(h, blk.norm1_w, blk.norm1_b)
        W, bq = blk.qkv_w.double(), blk.qkv_b.double()
        q = y @ W[:D].t() + bq[:D]
        k = y @ W[D:2 * D].t() + bq[D:2 * D]
        v = y @ W[2 * D:].t() + bq[2 * D:]
        outs = []
        for hd in range(H):
            s = slice(hd * dh, (hd + 1) * dh)
            sc = q[..., s] @ k[..., s].transpose(1, 2) / math.sqrt(dh)
            sc = torch.exp(sc - sc.max(-1, keepdim=True).values)
            sc = sc / sc.sum(-1, keepdim=True)
            outs.append(sc @ v[..., s])
        o = torch.cat(outs, -1)
        h = h + o @ blk.proj_w.double().t() + blk.proj_b.double()
        y = ln(h, blk.norm2_w, blk.norm2_b)
        f = y @ blk.fc1_w.double().t() + blk.fc1_b.double()
        f = 0.5 * f * (1 + torch.erf(f / math.sqrt(2)))
        h = h + f @ blk.fc2_w.double().t() + blk.fc2_b.double()
    h = ln(h, m.norm_w, m.norm_b)
    if not m.num_classes:
        return h[:, 0]
    out = h[:, 0] @ m.head_w.double().t() + m.head_b.double()
    if m.dist_head:
        out = (out + h[:, 1] @ m.head_dist_w.double().t() + m.head_dist_b.double()) / 2
    return out


if __name__ == "__main__":
    import os
    import tempfile
    g = torch.Generator().manual_seed(0)
    for kw in (dict(embed_dim=48, depth=2, num_heads=3, mlp_dim=96, patch_size=8, img_size=32,
                    num_classes=5),
               dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=3, distilled=True),
               dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=4, img_size=16,
                    num_classes=3, distilled=True, dist_head=False),
               dict(embed_dim=32, depth=1, num_heads=1, mlp_dim=64, patch_size=8, img_size=16,
                    num_classes=0, pos_antialias=True)):
        m = RefViT(**kw).random_init(g)
        for S in (kw["img_size"], kw["img_size"] + 2 * kw["patch_size"]):
            x = torch.randn(2, 3, S, S, generator=g)
            with torch.no_grad():
                a = m(x).double()
                b = _independent_forward(m, x)
            err = (a - b).abs().max().item()
            print(f"self-check {kw['embed_dim']}d S={S}: max |ref - independent| = {err:.2e}")
            assert err < 1e-4
        # layout round trips
        with tempfile.TemporaryDirectory() as d:
            for lay in ("timm", "hf"):
                sd = m.timm_state_dict() if lay == "timm" else m.hf_state_dict(
                    "deit" if m.distilled else "vit")
                p = os.path.join(d, "m.safetensors")
                save_safetensors(p, sd, {"format": "pt"})
                sd2, meta = load_safetensors(p)
                assert meta == {"format": "pt"}
                m2 = RefViT.from_state_dict(sd2, num_heads=m.num_heads, eps=m.eps,
                                            pos_antialias=m.pos_antialias)
                with torch.no_grad():
                    assert torch.equal(m2(x), m(x)), lay
    # FamilyViT (issue 18): every switch against the float64 loop formulation,
    # at the native size and resampled, and the key layouts round trip.
    for kw, layouts in ((dict(init_values=1e-6, no_embed_class=True), ("timm",)),
                        (dict(pre_norm=True, act="quick_gelu", eps=1e-5), ("timm",)),
                        (dict(reg_tokens=4, class_token=False, global_pool="avg",
                              no_embed_class=True, init_values=1e-5), ("timm",)),
                        (dict(class_token=False, global_pool="avg", fc_norm=False), ("timm",)),
                        (dict(reg_tokens=2), ("timm",)),
                        (dict(qk_norm=True, qkv_bias=False), ("timm",)),
                        (dict(style="dinov2"), ("timm", "hf_dinov2", "hf_dinov2_model")),
                        (dict(style="dinov2_reg", reg_tokens=4), ("timm", "hf_dinov2_reg"))):
        m = FamilyViT(32, 2, 2, 64, 4, 16, num_classes=3, **kw).random_init(g)
        for S in (16, 24):
            x = torch.randn(2, 3, S, S, generator=g)
            r = m(x)
            t64, p64, l64, a64 = _independent_family_forward(m, x)
            err = max((r["tokens"].double() - t64).abs().max().item(),
                      (r["logits"].double() - l64).abs().max().item(),
                      (r["attention"][0].double() - a64).abs().max().item())
            print(f"family {kw} S={S}: max |ref - independent| = {err:.2e}")
            assert err < 1e-4
        for lay in layouts:
            nc = 0 if lay == "hf_dinov2_model" else 3
            m2 = FamilyViT(32, 2, 2, 64, 4, 16, num_classes=nc, **kw)
            sd = m.state_dict(lay)
            m2.load(sd, lay)
            if nc:
                assert torch.equal(m2(x)["logits"], r["logits"]), lay
            else:
                assert torch.equal(m2(x)["tokens"], r["tokens"]), lay
    print("ok")
