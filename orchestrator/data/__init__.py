"""Datasets of human-rated texts: records and their criteria, finding files, reading and validating rows, loading by
kind, and splitting."""
