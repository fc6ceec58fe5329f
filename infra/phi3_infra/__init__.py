"""Pulumi program for one per-region Phi-3 fine-tuning environment on Azure AI Foundry."""

from phi3_infra import legacy_paths

legacy_paths.install()
