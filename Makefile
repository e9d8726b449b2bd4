# The two set-up commands of the README. Both create .venv if missing and install everything first.
.PHONY: quickstart test lint

quickstart:
	bash scripts/setup.sh
	.venv/bin/embedforge run jobs/quickstart.yaml

test:
	bash scripts/setup.sh
	.venv/bin/python -P -m pytest -q

lint:
	.venv/bin/ruff check .
