# Everything a fresh machine needs is set up by these targets: `make demo`, `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin

# The image `make image` builds and the manifests name (flannel_alivpc.installer.manifests.DEFAULT_IMAGE);
# for your own registry: make image push IMAGE=registry.example.com/team/flannel-alivpc:$(VERSION)
VERSION := $(shell sed -n 's/^version = //p' setup.cfg)
IMAGE ?= registry.cn-hangzhou.aliyuncs.com/flannel-alivpc/flannel-alivpc:$(VERSION)

.PHONY: test demo lint install manifests system-deps image push

$(VENV)/.installed: setup.cfg setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

lint: $(VENV)/.installed
	$(BIN)/ruff check flannel_alivpc tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# The kernel tools the root-only tests drive (network namespaces, VXLAN, iptables).
# Installed from Debian's packages when running as root and missing; without root those
# tests skip themselves.
system-deps:
	@if [ "$$(id -u)" = 0 ] && ! { command -v ip && command -v iptables; } >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 iptables >/dev/null; \
	fi

test: lint system-deps
	env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY $(BIN)/pytest -q $(PYTEST_ARGS)

demo: $(VENV)/.installed
	env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY $(BIN)/flannel-alivpc demo

# manifests/ (and the RAM policy, derived from the API calls in the code) from flannel_alivpc.installer.manifests.
# With another image, into another directory: .venv/bin/python -m flannel_alivpc.installer.manifests --image REF DIR
manifests: $(VENV)/.installed
	env -u FLANNEL_ALIVPC_IMAGE $(BIN)/python -m flannel_alivpc.installer.manifests manifests

image:
	docker build --build-arg VERSION=$(VERSION) --tag $(IMAGE) .

push:
	docker push $(IMAGE)

# the Dockerfile's pinned dependencies: the versions installed in $(VENV)
requirements.lock: setup.cfg $(VENV)/.installed
	$(BIN)/python tools/lock_requirements.py > $@
