# Two user-facing targets: `make demo` and `make test`. Both create the virtual
# environment on first use and reuse it afterwards.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
# Reinstall only when the dependency list changes: the stamp holds pyproject's hash.
STAMP := $(VENV)/.posekit-installed

.PHONY: demo test venv

demo: venv
	$(VENV)/bin/posekit demo

test: venv
	@bash tests/install_browser.sh
	$(PY) -m pytest

venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@want="$$(sha256sum pyproject.toml | cut -d' ' -f1) $$(pwd)"; \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$want" ]; then \
		echo "installing posekit and its dependencies into $(VENV) (first run: several minutes)"; \
		$(PY) -m pip install --disable-pip-version-check -q -e '.[dev]' && echo "$$want" > $(STAMP); \
	fi
