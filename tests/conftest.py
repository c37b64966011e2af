"""Shared pytest set-up: markers and quiet TensorFlow."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config):
  config.addinivalue_line("markers", "slow: takes over ~30 s on 2 CPU cores (still run in CI)")
