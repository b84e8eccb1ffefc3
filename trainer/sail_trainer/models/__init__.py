"""Diffusers pipelines as separate components: locate, load, encode text, sample, save.

- `source`: turn a model URI (local folder, s3:// folder, hub id) into a local folder (cached).
- `components`: load UNet/VAE/text encoders/tokenizers/scheduler of the SD1.5 or SDXL layout.
- `text`: prompt embeddings (and SDXL pooled embeddings), computed once per prompt.
- `sampling`: the sampling loop (batched CFG) on a UNet + scheduler; no pipeline object.
- `checkpoint`: write a full diffusers pipeline folder with a new UNet.

torch/diffusers are imported inside functions or in these submodules only, never here.
"""
