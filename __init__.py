"""dvsa: Deep Visual-Semantic Alignments for Generating Image Descriptions (Karpathy & Fei-Fei, CVPR 2015).

Installed as one package: `dvsa.data` (records, readers, vocabulary, feature store, synthetic scenes),
`dvsa.align` (regions, the alignment model, MRF snippets, grounding), `dvsa.generate` (the multimodal RNN,
decoding, metrics, dense captions, the pipeline) and `dvsa.scripts` (the `dvsa` command's thin entry points).

The Python API (README "Python API"):

    import dvsa
    cap = dvsa.Captioner.load("runs/demo")        # cap.caption(images), cap.dense(images)
    al = dvsa.Aligner.load("runs/demo")           # al.align(image, sentence), al.score(images, sentences)
    idx = dvsa.Index.build(al, ["a.jpg", ...])    # idx.save(path), dvsa.Index.load(path), idx.search(sentence, k)

Faults are `dvsa.DvsaError` subclasses (`dvsa.data.errors`).
"""
__version__ = "0.1.0"

from dvsa.align.aligner import Aligner
from dvsa.align.index import Index
from dvsa.data.errors import CheckpointError, DataError, DvsaError, UsageError
from dvsa.data.images import ImageInputError, TooManyPixels
from dvsa.generate.captioner import Captioner

__all__ = ["Aligner", "Captioner", "CheckpointError", "DataError", "DvsaError", "ImageInputError", "Index",
           "TooManyPixels", "UsageError", "__version__"]
