"""Synthetic query generation: backends (vLLM, HF, OpenAI-compatible), prompts, parsing, filters."""
