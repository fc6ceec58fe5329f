"""One router per API: OpenAI (``openai``), Azure ML scoring (``azureml``), probes and metrics."""
