# The two set-up commands of the README: `make up` (the main job) and `make test`.
# Both install everything they need on a fresh Debian machine (apt needs root).
# kubectl (for `kubectl kustomize` in the k8s test) comes from Debian's kubernetes-client only
# when no newer kubectl is already on the machine.

PYTHON ?= python3
APT_PACKAGES := redis-server redis-tools prometheus prometheus-alertmanager chromium chromium-driver
STAMP := .install.stamp

.PHONY: install up test test-fast lint clean

$(STAMP): pyproject.toml setup.py $(wildcard proto/featurewatch/v1/*.proto)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $(APT_PACKAGES) >/dev/null; \
	  command -v kubectl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends kubernetes-client >/dev/null; \
	else echo "not root: assuming $(APT_PACKAGES) are installed"; fi
	# The torch pin selects the local CPU wheel; an unpinned install pulls CUDA builds.
	$(PYTHON) -m pip install -q torch==2.13.0
	$(PYTHON) -m pip install -q -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

up: install
	featurewatch up

test: install
	$(PYTHON) -m pytest -q -ra

test-fast: install
	$(PYTHON) -m pytest -q tests/unit

lint: install
	ruff check .

clean:
	rm -rf artifacts $(STAMP) featurewatch/v1 *.egg-info
