# Two commands on a fresh machine: `make run` and `make test`. Everything else is what they need.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
APT_PACKAGES := skopeo podman buildah umoci runc containernetworking-plugins uidmap docker-registry openssl busybox-static curl iproute2 iptables libcap2-bin
PYTEST_ARGS ?=

.PHONY: run test setup apt lint unit integration e2e bench clean package checkov

run: setup
	$(PY) -m services.devhost run

test: setup apt lint checkov
	$(PY) -m pytest $(PYTEST_ARGS)

setup: $(VENV)/.installed node_modules/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .  # the `acr` command (services/cli)
	touch $@

node_modules/.installed: package.json package-lock.json patches/*.patch
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# checkov (tests/infra/test_checkov.py) in its own venv: its pins conflict with the app's. ~80 s once.
CHECKOV := checkov==3.3.30
checkov: .local/checkov-venv/.installed-$(CHECKOV)
.local/checkov-venv/.installed-$(CHECKOV):
	$(PYTHON) -m venv --clear .local/checkov-venv
	.local/checkov-venv/bin/pip install --quiet --disable-pip-version-check $(CHECKOV)
	touch $@

# The zip a Function App runs (README: Deploying to Azure); tests/infra/test_package.py indexes it.
package: setup
	$(PY) infra/scripts/package.py --out dist/function-app.zip

# The e2e tests drive real clients; install the ones that are missing (needs root, as CI is).
apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing apt packages:$$missing (run as root or install them)"; exit 1; fi; \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy services function_app.py

unit: setup
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

e2e: setup apt
	$(PY) -m pytest tests/e2e $(PYTEST_ARGS)

# Side by side with CNCF distribution (not part of `make test`); BENCH_ARGS=--quick is the smoke run.
bench: setup apt
	$(PY) -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache dist
