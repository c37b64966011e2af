"""talkface_jax: stochastic talking-face generation (Yadav et al., Interspeech 2020) in JAX/Flax.

The pinned versions are the stack this project is tested with (CPU). On GPU/TPU install the
matching accelerator build of jax first, e.g. ``pip install "jax[cuda12]==0.10.2"``.
"""

import setuptools

setuptools.setup(
    name="talkface_jax",
    version="0.1.0",
    description="Stochastic talking-face generation by latent distribution matching, in JAX/Flax",
    packages=setuptools.find_packages(include=["talkface_jax*", "data_prep*", "configs*"]),
    package_data={"data_prep": ["*.npy"]},
    python_requires=">=3.10",
    install_requires=[
        # Model and training.
        "jax==0.10.2",
        "jaxlib==0.10.2",
        "flax==0.12.8",
        "optax==0.2.8",
        "orbax-checkpoint==0.12.8",
        "ml-collections==1.1.0",
        "clu==0.0.12",
        "absl-py>=2.1",
        "numpy>=2.0",
        # Input pipeline (tf.data on the CPU only) and summaries.
        "tensorflow-cpu==2.21.0",
        "tensorflow-datasets==4.9.10",
        "tensorboard==2.21.0",
        # Offline pre-processing, media and metrics.
        "librosa==0.11.0",
        "dlib-bin==20.0.1",
        "face_recognition_models==0.3.0",
        "scikit-image==0.26.0",
        "scipy>=1.11",
        "imageio==2.38.1",
        "imageio-ffmpeg==0.8.1",
        "espeakng-loader==0.2.4",
        "pillow>=10",
        "tqdm>=4.66",
    ],
    extras_require={
        # matplotlib: its sample photo (Grace Hopper) is the second real person of the identity
        # tests (tests/test_data_prep_face.py).
        "test": ["pytest>=8", "pytest-xdist>=3.5", "matplotlib>=3.8"],
        # data_prep.build --runner=beam (DirectRunner locally; Dataflow/Flink/Spark on a cluster).
        "beam": ["apache-beam==2.77.0"],
        # benchmarks/vs_peer.py only: the PyTorch peer of the authors' release. Not needed by the
        # package or its tests; a CPU-only torch build (PyTorch's CPU wheel index) is enough.
        "bench": ["torch>=2.4"],
    },
)
