"""The SAIL maths: small pure functions, tensors in and tensors out (docs/method.md).

Modules (import the one you need; this package imports nothing so that `mixup` and
`schedule` stay usable without torch):

- `denoising`: forward noising `x_t` and the per-sample denoising error `SE` (mean, fp32).
- `dpo`: the Diffusion-DPO loss and its logged quantities.
- `reward`: the implicit reward of self-annotation and the shared (t, eps) draws.
- `selection`: best-vs-worst pair per prompt, optional margin filter.
- `mixup`: the ranked preference mixup plan (pure python/numpy).
- `schedule`: learning-rate multipliers (transformers/diffusers conventions).

Nothing here does I/O, touches global RNG state, or knows about models: phases compute
the errors with their UNets and hand the tensors to these functions.
"""
