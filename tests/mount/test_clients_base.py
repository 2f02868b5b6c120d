"""Base tools at the real paths inside `vfakefs run`: lspci (-k, -nn, -tv), util-linux dmesg, a
statically linked program (no dynamic loader: the system-call trap and the bind mounts hold
for it too), a machine without an IOMMU, and firmware_node links below the switch. The host
stays as it was (tests/host_state.py)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, lspci_argv, run
from tests.fidelity.capture import LSPCI_NAMES
from tests.host_state import host_unchanged  # noqa: F401  (module fixture: the host is left alone)

GCC = shutil.which("gcc")


def in_run(mnt, *cmd):
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", *cmd], cwd=REPO)


# --- lspci ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("flags", [("-nn",), ("-tv",), ("-tvnn",), ("-D",)])
def test_lspci_at_the_real_path_is_the_simulated_bus(qemu_mnt, flags):
    inside = in_run(qemu_mnt.path, "lspci", *LSPCI_NAMES, *flags)
    outside = run(lspci_argv(f"sysfs.path={qemu_mnt.path}/sys/bus/pci", *flags))
    assert inside.returncode == outside.returncode == 0, inside.stderr
    assert inside.stdout == outside.stdout and inside.stdout
    if flags == ("-tv",):
        assert "-04.0-[03-06]----00.0-[04-06]--+-00.0-[05]----00.0" in inside.stdout   # the switch


def test_lspci_k_names_the_bound_drivers(qemu_mnt):
    r = in_run(qemu_mnt.path, "lspci", *LSPCI_NAMES, "-D", "-k")
    assert r.returncode == 0
    drivers = dict(re.findall(r"^(\S+) .*\n(?:\t.*\n)*?\tKernel driver in use: (\S+)", r.stdout, re.M))
    devices = qemu_mnt.path / "sys/bus/pci/devices"
    want = {d: os.path.basename(os.readlink(devices / d / "driver"))
            for d in os.listdir(devices) if (devices / d / "driver").is_symlink()}
    assert drivers == want and drivers["0000:02:00.0"] == "e1000e"


def test_lspci_k_kernel_modules_come_from_the_simulated_kernel(qemu_mnt):
    r = in_run(qemu_mnt.path, "lspci", *LSPCI_NAMES, "-k", "-s", "02:00.0")
    assert r.stderr == ""
    assert "\tKernel modules: e1000e" in r.stdout.splitlines()


# --- dmesg ------------------------------------------------------------------------------------------
def test_dmesg_at_the_real_path_is_the_simulated_log(qemu_mnt):
    r = in_run(qemu_mnt.path, "dmesg")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[    0.000000] Linux version 6.1.0-56-amd64 ")
    assert "pci 0000:02:00.0: [8086:10d3] type 00 class 0x020000" in r.stdout
    assert qemu_mnt.read(qemu_mnt.path / "sys/kernel/debug/vfakefs/dmesg") == r.stdout


# --- a static binary --------------------------------------------------------------------------------
STATIC_C = r"""
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/vfs.h>
#include <unistd.h>

int main(void) {
    struct statfs s;
    char buf[4096];
    int n = 0, fd;
    if (statfs("/sys", &s)) { perror("statfs"); return 1; }
    printf("magic %#lx\n", (unsigned long)s.f_type);
    DIR *d = opendir("/sys/bus/pci/devices");
    if (!d) { perror("opendir"); return 1; }
    for (struct dirent *e; (e = readdir(d)); ) n += e->d_name[0] != '.';
    closedir(d);
    printf("devices %d\n", n);
    fd = open("/sys/bus/pci/devices/0000:02:00.0/vendor", O_RDONLY);
    n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("vendor %s", buf);
    n = readlink("/sys/bus/pci/devices/0000:02:00.0/driver", buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("driver %s\n", buf);
    fd = open("/dev/kmsg", O_RDONLY | O_NONBLOCK);
    n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    printf("kmsg %s", buf);
    return 0;
}
"""


def has_interpreter(path: Path) -> bool:
    """A PT_INTERP program header: the binary would be started by the dynamic loader."""
    elf = path.read_bytes()
    phoff, phentsize, phnum = (int.from_bytes(elf[0x20:0x28], "little"),
                               int.from_bytes(elf[0x36:0x38], "little"), int.from_bytes(elf[0x38:0x3A], "little"))
    return any(int.from_bytes(elf[phoff + i * phentsize:phoff + i * phentsize + 4], "little") == 3
               for i in range(phnum))


@pytest.fixture(scope="module")
def static_prog(tmp_path_factory) -> Path:
    if GCC is None:
        pytest.skip("gcc is not installed")
    d = tmp_path_factory.mktemp("static")
    (d / "sysread.c").write_text(STATIC_C)
    r = subprocess.run([GCC, "-O2", "-Wall", "-static", "-o", str(d / "sysread"), str(d / "sysread.c")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not has_interpreter(d / "sysread")
    return d / "sysread"


def test_a_static_binary_sees_the_simulated_sys_and_kmsg(qemu_mnt, static_prog):
    r = in_run(qemu_mnt.path, str(static_prog))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    n = len(os.listdir(qemu_mnt.path / "sys/bus/pci/devices"))
    assert lines[:4] == ["magic 0x62656572", f"devices {n}", "vendor 0x8086",
                         "driver ../../../../bus/pci/drivers/e1000e"]
    assert re.match(r"^kmsg 5,0,0,-;Linux version 6\.1\.0-56-amd64 ", lines[4]), lines[4]


# --- no IOMMU -----------------------------------------------------------------------------------------
def test_a_machine_without_an_iommu_has_an_empty_iommu_groups(mount_preset, tmp_path):
    src = (REPO / "vfakefs/presets/seed-vtd.toml").read_text()
    topo = tmp_path / "no-iommu.toml"
    topo.write_text(re.sub(r'(?m)^cmdline = ".*"$', 'cmdline = "quiet intel_iommu=off"', src))
    m = mount_preset(str(topo))
    r = in_run(m.path, "bash", "-c", "ls -a /sys/kernel/iommu_groups/; ls /sys/class/iommu/ | wc -l; "
                                     "ls /sys/kernel/iommu_groups/*/")
    assert r.returncode == 2                                          # as the reference's `ls` of */
    assert r.stdout.splitlines() == [".", "..", "0"]
    assert "cannot access '/sys/kernel/iommu_groups/*/': No such file or directory" in r.stderr


# --- firmware_node below the switch -------------------------------------------------------------
def test_functions_below_the_switch_have_their_acpi_companion(qemu_mnt):
    r = in_run(qemu_mnt.path, "bash", "-c",
               "readlink /sys/bus/pci/devices/0000:05:00.0/firmware_node; "
               "readlink -e /sys/bus/pci/devices/0000:06:00.0/firmware_node; "
               "readlink /sys/bus/pci/devices/0000:04:01.0/firmware_node; "
               "readlink /sys/devices/pci0000:00/firmware_node")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "../../../../../LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00/device:05/device:06/device:07/device:08",
        "/sys/devices/LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00/device:05/device:06/device:09/device:0a",
        "../../../../LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00/device:05/device:06/device:09",   # as the reference
        "../LNXSYSTM:00/LNXSYBUS:00/PNP0A08:00"]                                           # the host bridge's


# --- syslog(2): busybox dmesg, dmesg -S ---------------------------------------------------------
needs_busybox = pytest.mark.skipif(not shutil.which("busybox"), reason="busybox needed")


@needs_busybox
def test_busybox_dmesg_reads_the_simulated_log_through_syslog(qemu_mnt):
    """busybox dmesg calls klogctl (syslog(2)), not /dev/kmsg: the adapter answers it from the
    simulated log, never the host's."""
    want = qemu_mnt.read(qemu_mnt.path / "sys/kernel/debug/vfakefs/dmesg")
    r = in_run(qemu_mnt.path, "busybox", "dmesg")
    assert r.returncode == 0, r.stderr
    assert r.stdout == want and r.stdout.startswith("[    0.000000] Linux version 6.1.0-56-amd64 ")
    r = in_run(qemu_mnt.path, "busybox", "dmesg", "-r")
    assert r.stdout.splitlines()[0].startswith("<5>[    0.000000] Linux version 6.1.0-56-amd64 ")
    r = in_run(qemu_mnt.path, "dmesg", "-S")                # util-linux, forced to syslog(2)
    assert r.returncode == 0 and r.stdout == want


@needs_busybox
def test_syslog_clear_needs_privilege_and_then_empties_read_all(mount_preset):
    m = mount_preset("qemu-ref")
    r = in_run(m.path, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
               "--bounding-set=-all", "busybox", "dmesg", "-c")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    r = in_run(m.path, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "busybox", "dmesg")
    assert r.returncode == 0 and r.stdout.startswith("[    0.000000] Linux version")   # READ_ALL: anyone
    r = in_run(m.path, "busybox", "dmesg", "-c")              # prints, then clears
    assert r.returncode == 0 and r.stdout.startswith("[    0.000000] Linux version")
    r = in_run(m.path, "bash", "-c", "busybox dmesg; echo 1 > /sys/bus/pci/rescan; "
                                     "echo hello > /dev/kmsg; busybox dmesg")
    assert r.returncode == 0 and r.stdout.endswith("] hello\n") and "Linux version" not in r.stdout
    assert "Linux version" in m.read(m.path / "sys/kernel/debug/vfakefs/dmesg")    # /dev/kmsg keeps it
