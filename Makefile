# The two set-up commands of the README. Both create .venv if missing and install everything first.
.PHONY: quickstart test test-all lint docs

quickstart:
	bash scripts/setup.sh
	.venv/bin/embedforge run jobs/quickstart.yaml

# pytest-xdist: one worker per core, at most 4 (each holds its own models); tests/conftest.py keeps a module's
# tests on one worker and runs the Ray and vLLM modules one after another
test:
	bash scripts/setup.sh
	.venv/bin/python -P -m pytest -q -n auto --maxprocesses 4

# also the long end-to-end runs marked `slow` (kill drill, a job through vLLM, every generate shard on Ray, ...)
test-all:
	bash scripts/setup.sh
	.venv/bin/python -P -m pytest -q -n auto --maxprocesses 4 -m "slow or not slow"

lint:
	.venv/bin/ruff check .

docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/python -P -m mkdocs build --strict
