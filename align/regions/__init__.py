"""Regions for stage 1 (eq. 1): boxes per image (R-CNN proposals, detectors or given boxes) and CNN features.

    from dvsa.align.regions import RegionConfig, RegionEncoder, extract_features
    store = extract_features(records, "features/flickr8k", RegionConfig())   # resumable FeatureStore
    enc = RegionEncoder.from_meta(store.meta)                                # same recipe for new images
    boxes, regions, image_feature = enc.encode(pil_image)                    # row 0 = whole image

Files: config.py (RegionConfig), backbones.py (CNNs), proposals.py (box sources, grid, NMS), boxhead.py (the
learned box-quality scorer and its file; weights/ holds the shipped one), fit_boxhead.py (how that file is
fitted on Flickr8k train boxes), images.py (robust loading), encoder.py (RegionEncoder), extract.py (batched,
resumable extraction), recall.py (box recall by object size), boxbench.py (``dvsa bench boxes``),
distributed.py (torchrun sharding), bottomup.py (import of precomputed bottom-up-attention TSV features).
"""
from .config import RegionConfig
from .encoder import RegionEncoder
from .extract import extract_features

__all__ = ["RegionConfig", "RegionEncoder", "extract_features"]
