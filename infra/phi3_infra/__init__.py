"""Pulumi program for one per-region Phi-3 fine-tuning environment on Azure AI Foundry."""
