# The two set-up commands of the README. Both create .venv if missing and install everything first.
.PHONY: quickstart test lint docs

quickstart:
	bash scripts/setup.sh
	.venv/bin/embedforge run jobs/quickstart.yaml

test:
	bash scripts/setup.sh
	.venv/bin/python -P -m pytest -q

lint:
	.venv/bin/ruff check .

docs:
	NO_MKDOCS_2_WARNING=1 .venv/bin/python -P -m mkdocs build --strict
