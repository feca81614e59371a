"""Measurement: cameo's eyes (identity encoder, attribute probes) and the metrics built on them."""
