"""Phi-3 fine-tuning trainer: ``python -m phi3_trainer --help``."""
