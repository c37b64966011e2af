"""talkface_jax: stochastic talking-face generation (Yadav et al., Interspeech 2020) in JAX/Flax."""

__version__ = "0.1.0"
