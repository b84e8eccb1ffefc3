"""Dataset readers of the trainer: human seed pairs, prompt pools, and image decoding.

- `seed_pairs.read_seed_pairs` / `iter_seed_pairs`: JSONL or Parquet (prompt, winner, loser)
  and Pick-a-Pic v2 Parquet (caption, jpg_0, jpg_1, label_0) -> `SeedPair`s of encoded images.
- `prompts.read_prompts`: text (one per line), JSONL or a Parquet column -> prompts.
- `images.decode_image` / `image_to_tensor`: bytes -> RGB image -> `[3, H, W]` in [-1, 1].
- `errors.DataError`: every bad input, naming the file, row and column and how to fix it.

Local paths are read with pathlib; `s3://` URIs go through the storage interface
(`sail_api.storage.open_store`, or an `open_store` argument), so there is one storage path.
Nothing here encodes latents or knows about models; heavy imports (pyarrow, torch) happen
inside the functions that need them.
"""

from sail_trainer.data.errors import DataError

__all__ = ["DataError"]
