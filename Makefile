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
# patches/pyfuse3-3.5.0-vfakefs.patch, as 3.5.0+vfakefs1 (bump it when the patch changes):
# the kernel then caches symlink targets and directory listings for vfakefs. pyproject.toml
# asks for pyfuse3==3.5.0, which the local version satisfies, so the editable install keeps
# it; vfakefs also runs on stock pyfuse3, without those caches.
PYFUSE3 := pyfuse3-3.5.0
PYFUSE3_VERSION := 3.5.0+vfakefs1
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

venv: deps $(VENV)/.installed

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

bench: venv
	taskset -c 0 $(PY) bench/read_rate.py
	taskset -c 0 $(PY) bench/sriov_scale.py --profile never
	taskset -c 0 $(PY) bench/translate.py
	taskset -c 0 $(PY) bench/latency_under_traffic.py
	taskset -c 0 $(PY) bench/walk_under_writes.py
	taskset -c 0 $(PY) bench/sriov_cycles_memory.py
	taskset -c 0 $(PY) bench/vfio.py
	taskset -c 0 $(PY) bench/netns_vfs.py
	$(PY) bench/held_write.py --cpu 0

clean: stop
	rm -rf $(VENV)
