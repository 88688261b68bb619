# The two commands: `make run` and `make test`. Both set up what they need first (`make deps`).
SHELL := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

# Debian packages the toolkit and its tests use; `deps` installs only the missing ones. The last two
# lines: what the real CernVM-FS client and server tool in ../shared/fixtures/cvmfs-real need to run
# (the interop tests, tests/cvmfs_interop/, check the project against them).
APT_PACKAGES := \
	python3-venv python3-dev gcc pkg-config libvirt-dev \
	qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients ovmf \
	xorriso isolinux syslinux syslinux-common syslinux-utils mtools dosfstools e2fsprogs cpio xz-utils zstd lz4 \
	busybox-static fuse3 libfuse3-3 libdeflate0 ca-certificates \
	umoci skopeo podman gnupg docker-registry \
	createrepo-c rpm dnf dpkg-dev apt-utils \
	hugo chromium chromium-driver nodejs awscli rclone \
	openssh-client openssh-server iproute2 procps \
	dropbear-bin \
	libcurl4 libc-ares2 libleveldb1d libprotobuf-lite32 libsqlite3-0 libpacparser1 libarchive13 libssl3 \
	libuuid1 libcap2 libattr1 \
	shellcheck pipx \
	softhsm2 libengine-pkcs11-openssl \
	ceph-mon ceph-osd radosgw ceph-common \
	nginx squid

.PHONY: all deps apt venv prefetch bytecode run test test-quick fuzz lint shellcheck bench bench-quick clean distclean

all: test

deps: apt venv prefetch bytecode

# The package's bytecode, as `pip install` of the wheel writes it: with PYTHONDONTWRITEBYTECODE set (as in
# CI and many sandboxes) every `cernvm-build` process of the tests and the demo compiled what it imported
# again (~0.1 CPU-s each). compileall writes whatever that variable says, and only what changed.
bytecode: venv
	$(PY) -m compileall -q cernvm_build

# Debian packages for the demo OS and kernels, fetched and verified once so the tests stay offline.
prefetch: venv
	$(PY) -m cernvm_build.prefetch

apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing Debian packages:" $$missing; \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "deps: Debian packages present"; fi

# Re-created only when pyproject.toml changes.
venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,test,bench]'
	@touch $@

run: deps
	$(VENV)/bin/cernvm-build demo

test: deps
	$(PY) -m pytest -q --durations=100 tests

test-quick: deps
	$(PY) -m pytest -q -m "not e2e and not integration" tests

# The parser fuzzers of tests/fuzz with many more examples than `make test` runs (FUZZ_EXAMPLES=N).
FUZZ_EXAMPLES ?= 20000
fuzz: deps
	CERNVM_FUZZ=1 CERNVM_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/fuzz

lint: deps shellcheck
	$(VENV)/bin/ruff check cernvm_build tests bench .ci
	$(VENV)/bin/ruff format --check cernvm_build tests bench .ci
	$(VENV)/bin/mypy

# The μCernVM /init (its init.d fragments fused, as the initrd runs it) and every shipped sh script.
shellcheck: apt venv
	$(PY) .ci/shellcheck.py

# Every benchmark, figures next to their references: bench/results/{results.json,report.html}.
bench: deps
	$(PY) bench/run_all.py

bench-quick: deps
	$(PY) bench/run_all.py --quick

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) cache
