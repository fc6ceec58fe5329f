"""OpenAI-compatible server for fine-tuned Phi-3 models (``python -m phi3_server``)."""
