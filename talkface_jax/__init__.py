"""talkface_jax: stochastic talking-face generation (Yadav et al., Interspeech 2020) in JAX/Flax.

``talkface_jax.load(workdir)`` returns the ``inference.Generator`` of a trained workdir:
``load("runs/demo").generate("photo.jpg", "speech.wav", num_samples=4)``.
"""

from talkface_jax.inference import Generator, load

__all__ = ["Generator", "load"]
