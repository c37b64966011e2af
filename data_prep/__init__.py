"""Offline pre-processing: raw GRID/LRW/folder layouts to TFRecord shards. Imports no JAX."""
