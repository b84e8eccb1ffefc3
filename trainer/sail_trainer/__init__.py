"""The SAIL data plane: `sail-trainer <phase>` runs one phase of one iteration of a run.

Subpackages: `math` (pure SAIL formulas), `data` (seed pairs, prompts, images), `models`
(diffusers components, sampling, checkpoints), `phases` (mixup, generate, annotate, train and
their shared driver), `toy` (a tiny world for demos and benchmarks). Importing this package
imports neither torch nor diffusers; phases import them when they run. See docs/trainer.md.
"""
