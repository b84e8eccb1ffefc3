"""The toy world: a procedural text-to-image domain in which alignment can be measured.

No real text-to-image weights can be downloaded in the project's test environment, so the
project ships its own small world: procedural images of coloured shapes with captions
(`domain`), a tiny Stable-Diffusion-1.5-layout pipeline trained on it (`pipeline`),
hidden-preference oracles and a noisy Bradley-Terry labeller (`oracles`), labelled seed
pairs in the trainer's input format (`pairs`), and fidelity/diversity evaluators
(`evaluate`). `cli.main` is the `sail-trainer toy ...` entry point. See docs/toy-world.md.
"""
