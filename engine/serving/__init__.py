"""Serving a model directory behind an OpenAI-compatible embeddings endpoint.

``app.create_app(config)`` builds the FastAPI app; ``batcher.DynamicBatcher`` merges concurrent requests into
model batches by a token budget; ``model_dir.check_model_dir`` refuses incomplete or unsafe directories.
"""
