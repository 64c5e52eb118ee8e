"""Training features (not imported by the encode/decode path)."""
