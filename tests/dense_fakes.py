"""Small fakes for the evaluation tests: a captioner whose caption is a known function of its input, a
region encoder without a CNN, a feature store and a generator checkpoint."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from dvsa.data.features import FeatureStore, FeatureStoreWriter
from dvsa.data.text import END_ID, Vocabulary

N_WORDS = 6
WORDS = [f"w{i}" for i in range(N_WORDS)]


def vocab() -> Vocabulary:
    return Vocabulary(WORDS)  # ids 4.. are w0..w5


class OneWordModel(nn.Module):
    """Implements the generator's decoding contract (`init_state` / `step`).

    The caption of an input x [Din] is the single word w_k, k = argmax x[:N_WORDS], then END:
    step 1 logits = 3 x[:N_WORDS] over w0..w5 (everything else -30), step 2 logits = END 4 (others 0).
    """

    def __init__(self, din: int):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))  # decoders read the device / dtype from the parameters
        self.input_dim, self.V = din, 4 + N_WORDS

    def init_state(self, feats):
        return {"f": feats, "t": torch.zeros(len(feats), dtype=torch.long, device=feats.device)}

    def step(self, prev, state):
        f, t = state["f"], state["t"]
        first = torch.full((len(f), self.V), -30.0, device=f.device)
        first[:, 4:] = 3 * f[:, :N_WORDS]
        later = torch.zeros(len(f), self.V, device=f.device)
        later[:, END_ID] = 4.0
        logits = torch.where((t == 0)[:, None], first, later)
        return F.log_softmax(logits, -1), {"f": f, "t": t + 1}


def expected(x: np.ndarray) -> tuple[str, float]:
    """(caption, logprob incl. END) of OneWordModel for one input row."""
    x = torch.as_tensor(np.asarray(x, np.float32))
    first = torch.full((4 + N_WORDS,), -30.0)
    first[4:] = 3 * x[:N_WORDS]
    k = int(first.argmax())
    later = torch.zeros(4 + N_WORDS)
    later[END_ID] = 4.0
    lp = F.log_softmax(first, -1)[k] + F.log_softmax(later, -1)[END_ID]
    return WORDS[k - 4], float(lp)


@dataclasses.dataclass
class Gen:
    """Stand-in for GenConfig's fields the evaluation reads."""

    input: str = "region"
    max_len: int = 5
    length_norm: float = 0.0
    beam: int = 1


class FakeEncoder:
    """encode(pil, boxes=None): row 0 the whole image, then fixed boxes (or the given ones); features from the
    mean colour of each box, so captions depend on the pixels."""

    dim = 8

    def encode(self, image, boxes=None):
        a = np.asarray(image.convert("RGB"), np.float32) / 255.0
        h, w = a.shape[:2]
        if boxes is None:
            boxes = [[0, 0, w // 2, h // 2], [w // 2, h // 2, w, h]]
        boxes = np.concatenate([[[0, 0, w, h]], np.asarray(boxes, np.float32).reshape(-1, 4)]).astype(np.float32)
        feats = np.zeros((len(boxes), self.dim), np.float32)
        for i, (x1, y1, x2, y2) in enumerate(boxes.astype(int)):
            m = a[y1:y2, x1:x2].reshape(-1, 3).mean(0)
            feats[i, :3] = m
            feats[i, 3:6] = 1 - m
        return boxes, feats, feats[0].copy()


def make_store(path, images: dict) -> FeatureStore:
    """images {id: (boxes [R, 4], feats [R, D], size (w, h))} -> a FeatureStore (image feature = row 0)."""
    d = next(iter(images.values()))[1].shape[1]
    with FeatureStoreWriter(path, {"dim": d, "producer": "test"}) as w:
        for image_id, (boxes, feats, size) in images.items():
            w.add(image_id, boxes, feats, feats[0], size)
    return FeatureStore(path)


def tiny_checkpoint(path, vocab_, feat_dim, features_meta, input_mode="region"):
    """A real (untrained) CaptionModel checkpoint that `generate.train.load_generator` reads."""
    from dvsa.data.checkpoint import save_checkpoint
    from dvsa.generate.model import CaptionModel, GenConfig

    cfg = GenConfig(hidden=8, embed=8, input=input_mode, max_len=6, beam=2, dropout=0.0)
    torch.manual_seed(0)
    m = CaptionModel(cfg, len(vocab_), feat_dim)
    save_checkpoint(path, {"kind": "generate", "config": dataclasses.asdict(cfg), "vocab": vocab_.to_dict(),
                           "model": m.state_dict(), "feat_dim": feat_dim, "features": features_meta})
    return path
