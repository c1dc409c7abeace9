"""`BoxHead`: a small learned box-quality scorer (objectness) on the whole-image feature map, and its file.

Glossary: C feature-map channels, h x w feature-map size, S network input side, K boxes of one image,
H projected channels (cfg.proj), M hidden units (cfg.hidden), G = 6 geometry features.

score(box) = MLP([pool(P fmap, cell) for the bins x bins cells of the box, pool(P fmap, box enlarged by
`context`), geometry(box)]), where P is a linear 1x1 projection C -> H and pool is the exact box mean
(`backbones.box_mean_pool`). Because P is linear
and the mean pool is linear, projecting the map first and pooling after equals pooling the full C-dim feature
and projecting it (the slow twin `score_slow`): thousands of boxes cost a few products with the H-channel map
(`backbones.box_grid_cells`).
The head is fitted to predict the IoU of a box with its best-matching annotated box (`fit_boxhead`), so
higher = more likely to hold a whole object. A head with cfg.regress also predicts, as R-CNN's box regression
does, where that object is: 4 offsets t = ((gx - px) / pw, (gy - py) / ph, log(gw / pw), log(gh / ph)) / DELTA_STD
of the annotated box g from the box p (centres x, y, sides w, h; `encode_deltas` / `decode_deltas`), so that
`BoxHead.refine` can move a proposal onto the object it overlaps (step after step: each step re-reads the map
under the moved box). A head belongs to the backbone (and weights) it was fitted on:
`load_box_head` refuses another one.

File format (torch.save of plain tensors and JSON-able values; `torch.load(weights_only=True)`):
``{"format": FORMAT, "backbone": name, "weights": weights id, "config": {in_dim, proj, hidden, context},
"state_dict": {...}, "fit": {how it was fitted: images, split, seed, ...}}``.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from dvsa.data.checkpoint import read_weights_only
from dvsa.data.errors import CheckpointError
from torch import nn

from .backbones import LITE_WEIGHTS, box_grid_cells, box_mean_pool, cell_edges

FORMAT = "dvsa.boxhead/1"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# the ImageNet weights a head is tied to, per backbone (the identity written in the head's file)
BACKBONE_WEIGHTS = {name: file_id for name, (_, _, file_id) in LITE_WEIGHTS.items()}
# the scale of each regression offset (x, y, log w, log h), as in Fast R-CNN's target normalisation
DELTA_STD = (0.1, 0.1, 0.2, 0.2)
MAX_LOG_SCALE = 4.135  # log(1000 / 16): a side grows at most ~62x in one step (torchvision's BoxCoder clamp)


class BoxHeadMismatch(CheckpointError):
    """A box head file was fitted on another backbone (or other weights) than the one asked for."""


@dataclass
class BoxHeadConfig:
    in_dim: int = 1280  # C, channels of the backbone's feature map
    proj: int = 32  # H, 1x1 projection of the map before pooling
    hidden: int = 64  # M, hidden units of the MLP
    bins: int = 3  # the box is pooled as bins x bins cells (where the object's edges are)
    mid_dim: int = 0  # channels of the backbone's finer map (`Backbone.fmaps`, stride mid_stride); 0 = unused
    mid_stride: int = 16
    context: float = 2.0  # side factor of the enlarged box whose pooled feature is the context input
    regress: bool = False  # also predict the 4 offsets of the overlapped object's box (heads fitted before: False)


def geometry(boxes: torch.Tensor, side: float) -> torch.Tensor:
    """[K, 4] boxes in input pixels of an S x S input -> [K, 6]: x1, y1, x2, y2 / S, log w / S, log h / S."""
    b = boxes / side
    w = (b[:, 2] - b[:, 0]).clamp(min=1e-3)
    h = (b[:, 3] - b[:, 1]).clamp(min=1e-3)
    return torch.cat([b, w.log()[:, None], h.log()[:, None]], 1)


def _centre_size(b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    w, h = (b[:, 2] - b[:, 0]).clamp(min=1e-3), (b[:, 3] - b[:, 1]).clamp(min=1e-3)
    return b[:, 0] + w / 2, b[:, 1] + h / 2, w, h


def encode_deltas(boxes: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[K, 4] boxes p and [K, 4] target boxes g (x1, y1, x2, y2) -> [K, 4] normalised offsets t of g from p."""
    px, py, pw, ph = _centre_size(boxes.float())
    gx, gy, gw, gh = _centre_size(targets.float())
    t = torch.stack([(gx - px) / pw, (gy - py) / ph, (gw / pw).log(), (gh / ph).log()], 1)
    return t / t.new_tensor(DELTA_STD)


def decode_deltas(boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
    """Inverse of `encode_deltas`: [K, 4] boxes p and offsets t -> [K, 4] moved boxes (the log-scales clamped at
    MAX_LOG_SCALE)."""
    d = deltas.float() * deltas.new_tensor(DELTA_STD, dtype=torch.float32)
    px, py, pw, ph = _centre_size(boxes.float())
    x, y = px + d[:, 0] * pw, py + d[:, 1] * ph
    w, h = pw * d[:, 2].clamp(max=MAX_LOG_SCALE).exp(), ph * d[:, 3].clamp(max=MAX_LOG_SCALE).exp()
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], 1)


def cells(boxes: torch.Tensor, bins: int) -> torch.Tensor:
    """[K, 4] -> [K * bins * bins, 4]: each box cut into a bins x bins grid, row-major, box after box."""
    x, y = cell_edges(boxes, bins)  # [K, bins + 1] each
    x1, x2 = x[:, None, :-1].expand(-1, bins, -1), x[:, None, 1:].expand(-1, bins, -1)  # [K, bins(y), bins(x)]
    y1, y2 = y[:, :-1, None].expand(-1, -1, bins), y[:, 1:, None].expand(-1, -1, bins)
    return torch.stack([x1, y1, x2, y2], -1).reshape(-1, 4)


def enlarge(boxes: torch.Tensor, factor: float, side: float) -> torch.Tensor:
    """[K, 4] -> [K, 4]: each box scaled by `factor` about its centre, clipped to the S x S input."""
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * factor / 2
    return torch.cat([c - half, c + half], 1).clamp(0, side)


class BoxHead(nn.Module):
    def __init__(self, cfg: BoxHeadConfig, stride: int = 32):
        super().__init__()
        self.cfg, self.stride = cfg, stride
        self.proj = nn.Linear(cfg.in_dim, cfg.proj)
        self.proj_mid = nn.Linear(cfg.mid_dim, cfg.proj) if cfg.mid_dim else None
        n_in = (cfg.bins * cfg.bins + 1) * cfg.proj * (2 if cfg.mid_dim else 1) + 6
        n_out = 5 if cfg.regress else 1  # the logit, then the 4 offsets
        self.mlp = nn.Sequential(nn.Linear(n_in, cfg.hidden), nn.ReLU(), nn.Linear(cfg.hidden, n_out))

    def _hidden(self, fmap: torch.Tensor, mid: torch.Tensor | None, boxes: list[torch.Tensor],
                side: float) -> torch.Tensor:
        """The MLP's first layer before its ReLU, [sum K, M], without building its [sum K, in] input: the layer is
        linear, so each block of its input (a map's bins² cells, its context, the geometry) meets its own columns
        of the weight, image by image. Each map is projected once; the projection's bias is added after pooling
        (a mean keeps it), so it folds into a constant of the layer."""
        first = self.mlp[0]
        m_, bins, h_ = self.cfg.hidden, self.cfg.bins, self.cfg.proj
        maps = [(fmap, self.proj, self.stride)]
        if self.proj_mid is not None:
            if mid is None:
                raise ValueError("this box head also reads the backbone's finer map: pass mid")
            maps.append((mid, self.proj_mid, self.cfg.mid_stride))
        const, blocks, col = first.bias, [], 0
        for m, proj, stride in maps:
            w_cells = first.weight[:, col:col + bins * bins * h_]  # [M, bins² H], columns (y, x, H)
            w_ctx = first.weight[:, col + bins * bins * h_:col + (bins * bins + 1) * h_]  # [M, H]
            const = const + (w_cells.reshape(m_, bins * bins, h_).sum(1) + w_ctx) @ proj.bias
            w_cells = w_cells.reshape(m_, bins, bins, h_).transpose(2, 3).reshape(m_, -1)  # columns (y, H, x)
            blocks.append((torch.einsum("bchw,kc->bkhw", m.float(), proj.weight), stride, w_cells, w_ctx))
            col += (bins * bins + 1) * h_
        w_geo = first.weight[:, col:]  # [M, 6]
        out = []
        for i, bx in enumerate(boxes):
            acc = torch.addmm(const, geometry(bx, side), w_geo.T)  # [K, M]
            big = enlarge(bx, self.cfg.context, side)
            for p, stride, w_cells, w_ctx in blocks:  # p [B, H, h, w]
                inner = box_grid_cells(p[i], bx, stride, bins).reshape(len(bx), w_cells.shape[1])  # [K, bins² H]
                acc = torch.addmm(acc, inner, w_cells.T)
                acc = torch.addmm(acc, box_grid_cells(p[i], big, stride, 1).reshape(len(bx), h_), w_ctx.T)
            out.append(acc)
        return torch.cat(out)

    def outputs(self, fmap: torch.Tensor, boxes: list[torch.Tensor], side: float,
                mid: torch.Tensor | None = None) -> torch.Tensor:
        """fmap [B, C, h, w] of the S x S input (S = `side`), B x [K_b, 4] boxes in its pixels (and the finer map
        `mid` [B, C', h', w'] when cfg.mid_dim) -> [sum K_b, 1 or 5]: the logit, then the offsets (cfg.regress)."""
        if sum(len(b) for b in boxes) == 0:
            return fmap.new_zeros(0, 5 if self.cfg.regress else 1)
        return self.mlp[2](self.mlp[1](self._hidden(fmap, mid, [b.float() for b in boxes], side)))

    def outputs_concat(self, fmap: torch.Tensor, boxes: list[torch.Tensor], side: float,
                       mid: torch.Tensor | None = None) -> torch.Tensor:
        """`outputs` the earlier way, the benchmark's "old" path and a batched twin: every cell pooled with its
        own weight map (`box_mean_pool` of `cells`), the MLP's whole input concatenated, then the MLP."""
        boxes = [b.float() for b in boxes]
        parts = []
        for m, proj, stride in ((fmap, self.proj, self.stride), (mid, self.proj_mid, self.cfg.mid_stride)):
            if proj is None:
                continue
            p = torch.einsum("bchw,kc->bkhw", m.float(), proj.weight)  # [B, H, h, w]
            inner = box_mean_pool(p, [cells(b, self.cfg.bins) for b in boxes], stride)  # [sum K * bins², H]
            outer = box_mean_pool(p, [enlarge(b, self.cfg.context, side) for b in boxes], stride)  # [sum K, H]
            parts += [(inner + proj.bias).reshape(len(outer), -1), outer + proj.bias]
        return self.mlp(torch.cat(parts + [torch.cat([geometry(b, side) for b in boxes])], 1))

    def logits(self, fmap: torch.Tensor, boxes: list[torch.Tensor], side: float,
               mid: torch.Tensor | None = None) -> torch.Tensor:
        """As `outputs`, the logits only: [sum K_b]."""
        return self.outputs(fmap, boxes, side, mid)[:, 0]

    def refine(self, fmap: torch.Tensor, boxes: list[torch.Tensor], side: float, mid: torch.Tensor | None = None,
               steps: int = 1, top: int = 0) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Iterative box regression: `steps` times, score the boxes and move each by its predicted offsets
        (clipped to the S x S input). Returns ([sum K_b] logits of the boxes the last step moved, B x [K_b, 4]
        moved boxes). `top` > 0: only each image's `top` best-scored boxes (by the first scoring) move, the
        others keep their box and first logit. steps = 0, or a head without cfg.regress: the logits of `boxes`
        and `boxes` themselves."""
        boxes = [b.float() for b in boxes]
        out = self.outputs(fmap, boxes, side, mid)
        logits = out[:, 0].clone()
        if not steps or not self.cfg.regress:
            return logits, boxes
        sizes = [len(b) for b in boxes]
        starts = [sum(sizes[:i]) for i in range(len(sizes))]
        # the moving boxes: rows of the flat [sum K_b] order, per image
        rows = [start + (torch.arange(n, device=logits.device) if not top or n <= top
                         else logits[start:start + n].topk(top).indices.sort().values)
                for start, n in zip(starts, sizes)]
        flat, pick = torch.cat(boxes), torch.cat(rows)
        moving, offsets = flat[pick], out[pick, 1:]
        for step in range(steps):
            if step:
                part = self.outputs(fmap, list(torch.split(moving, [len(r) for r in rows])), side, mid)
                logits[pick], offsets = part[:, 0], part[:, 1:]
            moving = decode_deltas(moving, offsets).clamp(0, side)
        flat = flat.clone()
        flat[pick] = moving
        return logits, list(torch.split(flat, sizes))

    def outputs_slow(self, fmap: torch.Tensor, box: torch.Tensor, side: float,
                     mid: torch.Tensor | None = None) -> torch.Tensor:
        """The slow twin for ONE box [4] of one map [C, h, w] (and `mid` [C', h', w']): pool the full C-dim
        feature of each cell, then project. -> [1 or 5] (the logit, then the offsets)."""
        one = box.float()[None]
        parts = []
        for m, proj, stride in ((fmap, self.proj, self.stride), (mid, self.proj_mid, self.cfg.mid_stride)):
            if proj is None:
                continue
            m = m[None].float()
            feats = [box_mean_pool(m, [c[None]], stride) for c in cells(one, self.cfg.bins)]  # bins² x [1, C]
            ctx = box_mean_pool(m, [enlarge(one, self.cfg.context, side)], stride)  # [1, C]
            parts += [proj(f) for f in feats] + [proj(ctx)]
        x = torch.cat(parts + [geometry(one, side)], 1)
        return self.mlp(x)[0]

    def score_slow(self, fmap: torch.Tensor, box: torch.Tensor, side: float, mid: torch.Tensor | None = None) -> float:
        """The slow twin's logit for one box (see `outputs_slow`)."""
        return float(self.outputs_slow(fmap, box, side, mid)[0])


def save_box_head(head: BoxHead, path: str | Path, backbone: str, weights: str, fit: dict) -> Path:
    """Write a head file (atomically: a partial file never has the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = {"format": FORMAT, "backbone": backbone, "weights": weights, "config": asdict(head.cfg),
            "stride": head.stride, "state_dict": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
            "fit": fit}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_box_head(path: str | Path, backbone: str, weights: str) -> BoxHead:
    """The head in `path`, in eval mode; `BoxHeadMismatch` when it was fitted on another backbone / weights,
    `CheckpointNotFound` (a FileNotFoundError) when there is no such file, `CheckpointError` when it is no
    readable head file."""
    blob = read_weights_only(path, what="box head")
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a box head file ({FORMAT})")
    if blob["backbone"] != backbone or blob["weights"] != weights:
        raise BoxHeadMismatch(
            f"{path}: this box head was fitted on {blob['backbone']} ({blob['weights']}), not on {backbone} "
            f"({weights}); fit one for this backbone (python -m dvsa.align.regions.fit_boxhead) or use "
            "objectness=entropy"
        )
    head = BoxHead(BoxHeadConfig(**blob["config"]), stride=int(blob["stride"]))
    head.load_state_dict(blob["state_dict"])
    return head.eval()


def shipped_head_path(backbone: str) -> Path:
    """Where the package's head of `backbone` lives (it may not exist: only some backbones have one)."""
    return WEIGHTS_DIR / f"boxhead_{backbone}.pt"


def file_id(path: str | Path) -> str:
    """How a store's meta names the head it was ranked with: file name and the first 16 hex of its sha256."""
    path = Path(path)
    return f"{path.name} sha256:{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}"


def has_head(backbone: str, pretrained: bool, box_head: str = "") -> bool:
    """Whether a learned head scores the proposals: a head file given (`RegionConfig.box_head`), or the
    package's for this backbone with its ImageNet weights."""
    return bool(box_head) or has_shipped_head(backbone, pretrained)


def has_shipped_head(backbone: str, pretrained: bool) -> bool:
    """Whether `shipped_box_head` finds a head (without loading it)."""
    return pretrained and backbone in BACKBONE_WEIGHTS and shipped_head_path(backbone).exists()


def shipped_box_head(backbone: str, pretrained: bool) -> BoxHead | None:
    """The package's head for this backbone with its ImageNet weights; None when there is none (untrained
    weights, or a backbone no head was fitted on): the encoder then falls back to the entropy objectness."""
    if not has_shipped_head(backbone, pretrained):
        return None
    return load_box_head(shipped_head_path(backbone), backbone, BACKBONE_WEIGHTS[backbone])
