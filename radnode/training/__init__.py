"""Building radnode's models: corpus evaluation, calibration and training (not used by the live node)."""
