"""Low-level array operations with backend-specific fast paths."""
