"""Vocabulary analysis (token-to-word ratio, fragmented terms) and domain tokenizer training."""
