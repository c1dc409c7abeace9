"""`RegionConfig`: the one home of the region encoder's defaults (CLI flags override it).

Fields split in two groups: those that define the features (written into the feature store's meta, so a store
is only ever resumed or reproduced with the same recipe) and run-time ones (device, workers, batch size ...)
that change speed but not the numbers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

BACKENDS = ("rcnn", "frcnn", "given", "detectron2")
BACKBONES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet50", "vgg16")
POOLINGS = ("warp", "roialign")

# Run-time fields: they do not change the features and stay out of the store's meta.
RUNTIME_FIELDS = ("device", "workers", "cnn_place", "threads", "batch_size", "crop_batch", "part_size",
                  "channels_last", "amp", "max_pixels", "progress")
OBJECTNESS = ("learned", "entropy", "maxprob")
# Recipe fields added later, with the value that older stores were made with: left out of recipe() at that
# value, and filled in with it by from_dict when a store's recipe lacks them (so old stores rebuild as made).
LATE_FIELDS = {"score_pooling": "roialign", "grid_levels": 0, "grid_min_frac": 0.08, "grid_step": 0.4,
               "grid_max_ratio": 4.0, "box_head": "", "box_refine": 0, "box_refine_top": 0}
# The box recipe before issue 16 (selective search at 96 px, entropy ranking, no grid): `dvsa bench boxes`
# measures it beside the defaults ("old" vs "new").
PREVIOUS_RECIPE = {"ss_size": 96, "objectness": "entropy", "grid_levels": 0, "nms_iou": 0.4, "max_proposals": 1000}


@dataclass
class RegionConfig:
    # --- boxes -------------------------------------------------------------------------------------------
    backend: str = "rcnn"  # rcnn (selective search + CNN objectness + NMS) | frcnn | given | detectron2
    max_boxes: int = 19  # detections kept per image; the whole image is added as row 0 (so R <= max_boxes + 1)
    min_box_px: float = 8.0  # a box is kept when both sides >= max(min_box_px, min_box_frac * shorter image side)
    min_box_frac: float = 0.05
    max_whole_iou: float = 0.85  # proposals this close to the whole image duplicate row 0 and are dropped
    nms_iou: float = 0.4  # class-agnostic NMS among proposals, after sorting by objectness (free slots refilled)
    # selective search (rcnn backend)
    ss_size: int = 96  # selective search runs on the image scaled so that its longer side is ss_size px
    ss_mode: str = "fast"  # fast (OpenCV's fast mode) | single (one strategy, ~3x faster, fewer proposals)
    max_proposals: int = 1000  # selective-search boxes scored per image (after de-duplication and the size filter)
    # a fixed grid of candidate boxes added to selective search when the learned head scores them
    # (proposals.grid_boxes; 0 = none): grid_levels sides from grid_min_frac to 1 of the image side, every width x
    # height pair up to grid_max_ratio, slid in steps of grid_step x the side (3,155 boxes). Chosen on 250
    # held-out Flickr8k train photos (`dvsa bench boxes`): kept-box recall 55.7% vs 54.6% for the denser 8 / 0.4 /
    # 4.0 (6,613 boxes, twice the scoring time) and 53.2% for 6 / 0.5 / 4.0 from 0.1 (2,033 boxes)
    grid_levels: int = 7
    grid_min_frac: float = 0.08
    grid_step: float = 0.5
    grid_max_ratio: float = 3.0
    # learned: the package's box-quality head of the backbone (boxhead.py, fitted on Flickr8k train Entities
    # boxes by fit_boxhead.py; backbones without one, or pretrained=False, fall back to entropy) | entropy:
    # 1 - H(p)/log(C) of the ImageNet head | maxprob: max softmax probability
    objectness: str = "learned"
    # the box head file that objectness "learned" ranks with (one written by fit_boxhead.py for this backbone);
    # "" = the package's (boxhead.shipped_head_path). The store's meta records the file's digest either way
    box_head: str = ""
    # steps of the box head's box regression (a head fitted with it): each step moves every proposal by the
    # offsets the head predicts to the object it overlaps, then the moved boxes are ranked; 0 = as proposed. On the
    # held-out train photos 3 steps kept 66.6% of their Entities boxes (2: 66.2%, 1: 64.9%), but the default
    # pipeline's aligner on them reached an R@K sum of 296.5 against 301.5 with 2 (docs/experiments.md)
    box_refine: int = 2
    box_refine_top: int = 1000  # only each image's best-scored box_refine_top proposals move (0 = all of them)
    # how proposals are pooled for the objectness score: roialign (on the one whole-image pass: cheap, but a
    # 7x7 map at 224 px blurs small objects) | warp (R-CNN: every proposal cropped, warped to warp_size and run
    # through the CNN; with pooling="warp" the kept boxes reuse those features). On 400 synthetic scenes
    # (ss_mode fast, 82 proposals per image) the 19 kept boxes hold 89.7% of the 1,027 objects at IoU 0.5 with
    # roialign, 91.4% with warp (`dvsa bench features --recall synthetic:ROOT --recall-n 400`); warp costs one
    # CNN pass per proposal (max_proposals bounds it).
    score_pooling: str = "roialign"
    # frcnn backend
    frcnn_model: str = "fasterrcnn_resnet50_fpn_v2"  # or fasterrcnn_resnet50_fpn
    frcnn_pretrained: bool = True  # COCO weights through torchvision's weights API (needs download or cache)
    frcnn_min_score: float = 0.05
    frcnn_min_size: int = 800  # the detector resizes images to this shorter side (torchvision's default)
    # detectron2 backend
    detectron2_config: str = "COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml"
    detectron2_weights: str = ""  # a local .pkl/.pth; empty = the model zoo URL of detectron2_config
    # --- features ----------------------------------------------------------------------------------------
    # efficientnet_lite0 / 1 / 2 (offline ImageNet weights) | resnet50 | vgg16. Only Lite0 has a shipped box head:
    # the others rank by entropy unless box_head names one fitted for them (fit_boxhead --backbone). Lite2 with its
    # head on Flickr8k's held-out train photos: kept-box recall 65.3% against 65.9, the aligner's R@K sum 297.4
    # against 306.4, 9 more minutes (docs/experiments.md)
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True  # False = untrained weights (tests); True and unavailable = a clear error
    # warp (R-CNN: one CNN pass per box) | roialign (Fast R-CNN: one pass per image, ~3x cheaper). On synthetic
    # scenes, linear probes on ground-truth boxes read colour / shape from warp features at 76-80% / 98-100%,
    # from roialign features (a 7x7 map at 224 px) at 58% / 80%: warp is the default.
    pooling: str = "warp"
    image_size: int = 224  # the whole image is warped to image_size x image_size for the per-image pass
    warp_size: int = 96  # each box is warped to warp_size x warp_size (pooling="warp"); 96 keeps a 2-core CPU
    #                      within ~0.2 CPU-s per image; use 224 on a GPU
    max_side: int = 640  # boxes are cropped from a copy of the image no larger than this (pooling="warp")
    dtype: str = "float32"  # float32 | float16 (storage dtype of the feature store)
    # --- run time (not part of the features) -------------------------------------------------------------
    device: str = "cpu"  # cpu | cuda | cuda:N
    # DataLoader worker processes; -1 = one per core on the CPU, cores - 1 beside a GPU; 0 = all in this process
    workers: int = -1
    # where the CNN runs: "workers" (each worker decodes, proposes and encodes its own batches with one thread,
    # the main process only writes: no threads wait on each other) | "main" (workers decode + propose, the CNN
    # runs in the main process on cfg.device) | "auto" (workers on the CPU with >= 2 workers, main otherwise).
    # Flickr8k on the 2 CPU cores (`dvsa bench features --n 200`, one run): 2 workers with the CNN 11.9 images/s,
    # 1 worker + the CNN on 2 threads in the main process 8.2; the whole 7,000 images 9.97 images/s (11.7 min)
    cnn_place: str = "auto"
    # torch threads of the CNN: in the main process, 0 = cores - (workers - 1) (extract.cnn_threads); with the CNN
    # in the workers, per worker, 0 = 1
    threads: int = 0
    batch_size: int = 16  # images per CNN pass
    # warped crops per CNN pass (pooling or score_pooling "warp"); 0 = 32 on the CPU (EfficientNet-Lite0 at 96 px
    # on the 2-core CPU, median of 8 rounds: 2.6 ms per crop at 32, 3.6 at 64, 2.9 at 16), 256 on a GPU
    crop_batch: int = 0
    part_size: int = 256  # images per committed part of the feature store
    channels_last: bool = True  # NHWC tensors: ~2x faster convolutions on the CPU (oneDNN)
    amp: bool = False  # autocast to float16 on CUDA
    # images with more pixels than this (read from the header, before any pixel is decoded) go to failed.jsonl
    # as "too large": decompression bombs. The default is PIL's own limit, Image.MAX_IMAGE_PIXELS
    max_pixels: int = 89_478_485
    progress: bool = True

    def __post_init__(self):
        for name, allowed in (("backend", BACKENDS), ("backbone", BACKBONES), ("pooling", POOLINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"RegionConfig.{name}={getattr(self, name)!r}; choose one of {', '.join(allowed)}")
        if self.score_pooling not in POOLINGS:
            raise ValueError(f"RegionConfig.score_pooling={self.score_pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.cnn_place not in ("auto", "main", "workers"):
            raise ValueError(f"RegionConfig.cnn_place={self.cnn_place!r}; choose auto, main or workers")
        if self.ss_mode not in ("fast", "single"):
            raise ValueError(f"RegionConfig.ss_mode={self.ss_mode!r}; choose fast or single")
        if self.objectness not in OBJECTNESS:
            raise ValueError(f"RegionConfig.objectness={self.objectness!r}; choose one of {', '.join(OBJECTNESS)}")
        if self.dtype not in ("float32", "float16"):
            raise ValueError(f"RegionConfig.dtype={self.dtype!r}; choose float32 or float16")
        if self.max_boxes < 0:
            raise ValueError("RegionConfig.max_boxes must be >= 0")

    def recipe(self) -> dict:
        """The fields that define the features (JSON), i.e. everything but the run-time fields.

        Fields added after stores were first written are left out at their default value, so those stores
        (whose meta lacks them) still resume and match: `LATE_FIELDS`.
        """
        return {k: v for k, v in asdict(self).items()
                if k not in RUNTIME_FIELDS and not (k in LATE_FIELDS and v == LATE_FIELDS[k])}

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "RegionConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown RegionConfig fields {unknown}")
        return cls(**{**LATE_FIELDS, **d, **overrides})
