"""Fine-tuning: training data, losses, arguments, callbacks, adapters, model cards."""
