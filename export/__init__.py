"""Compress, export and calibrate trained models into self-describing bundles for the edge."""
