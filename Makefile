# make run: set up everything on a fresh Debian machine and mount the seed machine.
# make test: the same set-up, then the whole test suite.
MNT ?= $(CURDIR)/mnt
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
APT_PKGS := fuse3 libfuse3-dev pkg-config patch pciutils busybox gcc libc6-dev graphviz

.PHONY: run stop test deps venv clients bench clean examples

deps:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# pyfuse3 3.5.0 built from its sdist (hash-pinned in patches/pyfuse3.txt) with
# patches/pyfuse3-3.5.0-vfakefs.patch, as 3.5.0+vfakefs5 (bump it when the patch changes):
# the kernel then caches symlink targets and directory listings for vfakefs, and a request
# costs one trio scheduler pass, not two (the patch's header says how). pyproject.toml
# asks for pyfuse3==3.5.0, which the local version satisfies, so the editable install keeps
# it; vfakefs also runs on stock pyfuse3, without those caches.
PYFUSE3 := pyfuse3-3.5.0
PYFUSE3_VERSION := 3.5.0+vfakefs5
PYFUSE3_SRC := $(VENV)/src

$(VENV)/.installed: pyproject.toml patches/$(PYFUSE3)-vfakefs.patch patches/pyfuse3.txt patches/pyfuse3-build.txt | deps
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	rm -rf $(PYFUSE3_SRC) && mkdir -p $(PYFUSE3_SRC)
	$(PY) -m pip download -q --no-deps --no-binary pyfuse3 --build-constraint patches/pyfuse3-build.txt \
	  --require-hashes -r patches/pyfuse3.txt -d $(PYFUSE3_SRC)
	tar -xzf $(PYFUSE3_SRC)/$(PYFUSE3).tar.gz -C $(PYFUSE3_SRC) --no-same-owner
	patch -d $(PYFUSE3_SRC)/$(PYFUSE3) -p1 --quiet < patches/$(PYFUSE3)-vfakefs.patch
	SETUPTOOLS_SCM_PRETEND_VERSION=$(PYFUSE3_VERSION) $(PY) -m pip install -q --no-deps --force-reinstall \
	  --build-constraint patches/pyfuse3-build.txt $(PYFUSE3_SRC)/$(PYFUSE3)
	$(PY) -m pip install -q -e '.[test]'
	@$(PY) -c 'import pyfuse3; assert hasattr(pyfuse3.FileInfo, "cache_readdir"), "stock pyfuse3 replaced the patched build"'
	touch $@

# byte-compiled here: an editable install has no bytecode, and with PYTHONDONTWRITEBYTECODE
# no import writes it, so every `vfakefs mount` would compile the package anew (a third of its start)
venv: deps $(VENV)/.installed
	@$(PY) -m compileall -q vfakefs >/dev/null

# the client tests' programs (kmod, udevadm, driverctl, dpdk-devbind.py, lstopo), from
# Debian's packages, extracted into .clients/ and never installed (tools/fetch-clients)
clients: deps
	tools/fetch-clients

run: venv
	@mkdir -p $(MNT)
	$(VENV)/bin/vfakefs mount $(MNT)
	@echo
	@echo "vfakefs is mounted at $(MNT). Try:"
	@echo "  cat $(MNT)/sys/class/net/eth0/device/sriov_totalvfs"
	@echo "  lspci -O sysfs.path=$(MNT)/sys/bus/pci -nn"
	@echo "  ls -l $(MNT)/sys/kernel/iommu_groups/42/devices/"
	@echo "Unmount with: make stop"

stop:
	-$(VENV)/bin/vfakefs umount $(MNT)

test: venv clients
	$(PY) -m pytest -q -n auto tests

# mountpoint-examples/*/: each run.sh under `vfakefs run -t`, compared with its expected
# output (tools/run-examples; `tools/run-examples --update NAME` rewrites one)
examples: venv
	PYTHON=$(PY) tools/run-examples

# make bench: every bench/ script pinned to CPU 0, each writing its figures to
# $(BENCH_OUT)/NAME.json; one failing script does not stop the others; then
# bench/summary.py prints one table of every figure beside its baseline and target
# (kept in $(BENCH_OUT)/summary.md for the README)
BENCH_OUT ?= $(CURDIR)/bench/results
BENCH := taskset -c 0 $(PY)
bench: venv
	@mkdir -p $(BENCH_OUT) && rm -f $(BENCH_OUT)/*.json
	-$(BENCH) bench/read_rate.py --json $(BENCH_OUT)/read_rate.json
	-$(BENCH) bench/read_rate.py --cache --json $(BENCH_OUT)/read_rate_cache.json
	-if [ -f bench/mount_ready.py ]; then $(BENCH) bench/mount_ready.py --json $(BENCH_OUT)/mount_ready.json; fi
	-$(BENCH) bench/whole_machine.py --json $(BENCH_OUT)/whole_machine.json
	-$(BENCH) bench/sriov_scale.py --profile never --json $(BENCH_OUT)/sriov_scale.json
	-$(BENCH) bench/translate.py --json $(BENCH_OUT)/translate.json
	-$(BENCH) bench/latency_under_traffic.py --json $(BENCH_OUT)/latency_under_traffic.json
	-$(BENCH) bench/walk_under_writes.py --json $(BENCH_OUT)/walk_under_writes.json
	-$(BENCH) bench/sriov_cycles_memory.py --json $(BENCH_OUT)/sriov_cycles_memory.json
	-$(BENCH) bench/vfio.py --json $(BENCH_OUT)/vfio.json
	-$(BENCH) bench/netns_vfs.py --json $(BENCH_OUT)/netns_vfs.json
	-$(PY) bench/held_write.py --cpu 0 --json $(BENCH_OUT)/held_write.json
	-if command -v valgrind >/dev/null; then $(BENCH) bench/request_cost.py --json $(BENCH_OUT)/request_cost.json; fi
	$(PY) bench/summary.py $(BENCH_OUT) | tee $(BENCH_OUT)/summary.md

clean: stop
	rm -rf $(VENV)
