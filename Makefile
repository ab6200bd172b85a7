# User-facing targets: `make demo` and `make test`. Both create the virtual environment on first use
# and reuse it afterwards, with the exact versions of requirements/constraints.txt (docs/install.md).
# Maintainers: `make test-latest` tests the newest releases on purpose; `make lock` records a venv's versions.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
# A fresh venv with the newest releases of every dependency, no constraints: drift is seen here first.
LATEST_VENV ?= .venv-latest
# Reinstall only when what is installed changes: the stamp holds the hashes of pyproject and the constraints.
STAMP := $(VENV)/.posekit-installed
PIP_INSTALL := -m pip install --disable-pip-version-check -q

.PHONY: demo test venv test-latest lock

demo: venv
	$(VENV)/bin/posekit demo

test: venv
	@bash tests/install_browser.sh
	$(PY) -m pytest

venv:
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "make: error: '$(PYTHON) -m venv $(VENV)' failed" >&2; exit 1; }
	@want="$$(sha256sum pyproject.toml $(CONSTRAINTS) | cut -d' ' -f1 | tr '\n' ' ')$$(pwd)"; \
	if [ "$$(cat $(STAMP) 2>/dev/null)" != "$$want" ]; then \
		echo "installing posekit and its dependencies into $(VENV) (first run: several minutes)"; \
		$(PY) $(PIP_INSTALL) -c $(CONSTRAINTS) -e '.[dev]' \
			|| { echo "make: error: installing posekit into $(VENV) failed (pip's reason above)" >&2; exit 1; }; \
		echo "$$want" > $(STAMP); \
	fi

test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python $(PIP_INSTALL) --upgrade -e '.[dev]' \
		|| { echo "make: error: installing the newest releases into $(LATEST_VENV) failed" >&2; exit 1; }
	@bash tests/install_browser.sh
	$(LATEST_VENV)/bin/python -m pytest

# Pin every package of $(VENV) (all transitive dependencies, posekit itself left out); after a green
# `make test-latest`, `make lock VENV=$(LATEST_VENV)` adopts the newest releases.
lock:
	@test -x $(PY) || { echo "make: error: no venv at $(VENV) to lock (run make venv or make test-latest first)" >&2; exit 1; }
	@{ echo "# Exact versions for 'pip install -c $(CONSTRAINTS)', written by 'make lock' from a venv"; \
	   echo "# with $$($(PY) -V). Regenerate: make test-latest && make lock VENV=$(LATEST_VENV)"; \
	   $(PY) -m pip freeze --disable-pip-version-check --exclude-editable \
	   | grep -v -i '^posekit==' | sed -E 's/\+[^ ;]*//'; } > $(CONSTRAINTS).part
	@mv $(CONSTRAINTS).part $(CONSTRAINTS)
	@echo "wrote $(CONSTRAINTS) ($$(grep -c '==' $(CONSTRAINTS)) pins from $(VENV))"
