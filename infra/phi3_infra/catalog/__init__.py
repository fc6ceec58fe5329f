"""What Azure offers, as tables with their sources: regions, VM sizes and the GPUs behind them."""
