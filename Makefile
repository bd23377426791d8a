# The two README commands. Both install what they need, idempotently.
.PHONY: demo test install stack-up stack-down lock

install:
	@bash scripts/bootstrap.sh

## demo: start the local stack and run the whole pipeline end to end, printing what happened
demo: install
	.venv/bin/insights demo

## test: the whole test suite on the real local stack (what CI runs)
test: install
	.venv/bin/insights stack up
	.venv/bin/python -m pytest

stack-up: install
	.venv/bin/insights stack up

stack-down: install
	.venv/bin/insights stack down

## lock: regenerate requirements.lock from pyproject.toml and install it. Keeps every
## current pin (run it after editing pyproject.toml); `make lock UPGRADE=1` moves to the
## newest versions pyproject.toml allows, `make lock UPGRADE="typer rich"` only those.
lock:
	@bash scripts/bootstrap.sh lock $(UPGRADE)
