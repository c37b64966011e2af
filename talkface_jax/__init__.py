"""talkface_jax: stochastic talking-face generation (Yadav et al., Interspeech 2020) in JAX/Flax.

``talkface_jax.load(workdir)`` returns the ``inference.Generator`` of a trained workdir:
``load("runs/demo").generate("photo.jpg", "speech.wav", num_samples=4)``.

Importing the package does not import JAX (``Generator`` and ``load`` load it when first
used), so that ``talkface_jax.host_memory`` can set up the C library's allocator before any
thread starts.
"""

__all__ = ["Generator", "load"]


def __getattr__(name):
  if name in __all__:
    from talkface_jax import inference  # pylint: disable=g-import-not-at-top
    return getattr(inference, name)
  raise AttributeError(f"module 'talkface_jax' has no attribute {name!r}")
