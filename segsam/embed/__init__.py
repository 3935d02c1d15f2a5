"""Image-embedding cache: each (slice, encoder weights) is encoded exactly once.

Methods whose image encoder is frozen never run the encoder while training or
evaluating: they read these files. One cache entry per case,
``<cache_dir>/<case>.npy`` (N x 256 x h x w, float16: 64 x 64 for
LiteMedSAM's TinyViT, 16 x 16 for SAM ViT-B at 256) beside
``<cache_dir>/<case>.parquet`` (the N slice images, in row order, with their
original sizes). The folder name carries the encoder tag
(``<weights name>-<sha256[:8]>``), so different weights never share entries.

:mod:`segsam.embed.encode` writes the entries (rule ``embed_images``);
:mod:`segsam.embed.store` reads them for training and evaluation.
"""
