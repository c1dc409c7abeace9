"""dvsa: Deep Visual-Semantic Alignments for Generating Image Descriptions (Karpathy & Fei-Fei, CVPR 2015).

Installed as one package: `dvsa.data` (records, readers, vocabulary, feature store, synthetic scenes),
`dvsa.align` (regions, the alignment model, MRF snippets, grounding), `dvsa.generate` (the multimodal RNN,
decoding, metrics, dense captions, the pipeline) and `dvsa.scripts` (the `dvsa` command's thin entry points).
"""
__version__ = "0.1.0"
