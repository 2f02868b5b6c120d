"""Modules under `vfakefs run` with Debian's unmodified kmod (insmod, rmmod, lsmod) and
raw system calls: /proc/modules and /sys/module are the simulated kernel's, the module
calls are answered from its module list with the kernel's errnos, a refused call changes
nothing, and the host's own modules are never touched."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.clients import client
from tests.conftest import NOBODY, REPO, run
from tests.model.test_modules_catalogue import reference_proc_modules

E1000E_DEV = "0000:02:00.0"


def in_run(mnt, *cmd, **kw):
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", *cmd], cwd=REPO, **kw)


def py(mnt, code: str, *pre):
    """A Python program under `vfakefs run` (after `pre`, e.g. setpriv), with SYSCALLS."""
    return in_run(mnt, *pre, sys.executable, "-c", SYSCALLS + textwrap.dedent(code))


SYSCALLS = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
def call(nr, *args):
    rc = libc.syscall(nr, *args)
    return 0 if rc == 0 else ctypes.get_errno()
def delete_module(name, flags=os.O_NONBLOCK):
    return call(176, ctypes.c_char_p(name.encode()), ctypes.c_uint(flags))
def init_module(image, args=""):
    return call(175, ctypes.c_char_p(image), ctypes.c_ulong(len(image)), ctypes.c_char_p(args.encode()))
def finit_module(fd, args="", flags=0):
    return call(313, ctypes.c_int(fd), ctypes.c_char_p(args.encode()), ctypes.c_int(flags))
"""


@pytest.fixture
def qemu(mount_preset):
    return mount_preset("qemu-ref")


@pytest.fixture
def stub_ko(tmp_path) -> Path:
    """A module object as depmod and insmod see one: an ELF relocatable with a .modinfo."""
    src = tmp_path / "pci_stub.c"
    src.write_text('__attribute__((section(".modinfo"), used)) static const char l[] = "license=GPL";\n'
                   '__attribute__((section(".modinfo"), used)) static const char n[] = "name=pci_stub";\n')
    ko = tmp_path / "pci_stub.ko"
    subprocess.run(["gcc", "-c", "-o", str(ko), str(src)], check=True)
    ko.chmod(0o644)
    return ko


def host_modules() -> str | None:
    """The host's /proc/modules (None on a host kernel without modules)."""
    p = Path("/proc/modules")
    return p.read_text() if p.exists() else None


def test_proc_modules_and_lsmod_are_the_reference_kernels(qemu):
    host = host_modules()
    want = "".join(" ".join(r) + "\n" for r in reference_proc_modules())
    r = in_run(qemu.path, "cat", "/proc/modules")
    assert r.returncode == 0, r.stderr
    assert r.stdout == want                                    # read as root: with addresses
    r = in_run(qemu.path, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "cat", "/proc/modules")
    assert r.stdout.splitlines()[0] == "virtio_net 73728 0 - Live 0x0000000000000000"
    r = py(qemu.path, """
        import errno
        try:
            open("/proc/modules", "w")
        except OSError as e:
            print(errno.errorcode[e.errno])
    """)
    assert r.stdout == "EACCES\n", r.stderr
    st = os.stat(qemu.path / "proc/modules")
    assert (oct(st.st_mode & 0o777), st.st_size) == ("0o444", 0)
    r = in_run(qemu.path, client("lsmod"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["Module", "Size", "Used", "by"]
    # (lsmod lists the holders as readdir of holders/ gives them)
    got = [line.split()[:3] + [set(line.split()[3].split(","))] if len(line.split()) > 3 else line.split()
           for line in lines[1:]]
    expect = [[row[0], row[1], row[2]] + ([set(row[3].rstrip(",").split(","))] if row[3] != "-" else [])
              for row in reference_proc_modules()]
    assert got == expect
    assert host_modules() == host


def test_sys_module_directories(qemu):
    sysm = qemu.sys / "module"
    assert qemu.read(sysm / "nvme_core/initstate") == "live\n"
    assert qemu.read(sysm / "nvme_core/refcnt") == "1\n"
    assert qemu.read(sysm / "nvme_core/coresize") == "163840\n"
    assert sorted(os.listdir(sysm / "nvme_core/holders")) == ["nvme"]
    assert os.readlink(sysm / "nvme_core/holders/nvme") == "../../nvme"
    assert sorted(os.listdir(sysm / "vfio/holders")) == ["vfio_iommu_type1", "vfio_pci", "vfio_pci_core"]
    assert qemu.read(sysm / "vfio/version") == "0.3\n"
    assert os.readlink(sysm / "e1000/drivers/pci:e1000") == "../../../bus/pci/drivers/e1000"
    assert qemu.read(sysm / "e1000/parameters/copybreak") == "256\n"
    assert not (sysm / "e1000/parameters/TxDescriptors").exists()          # mode 0: no file
    # built in: a directory for the parameters only, no initstate (kmod: "builtin")
    assert sorted(os.listdir(sysm / "acpiphp")) == ["parameters", "uevent"]
    drivers = qemu.pci / "drivers"
    for builtin in ("pcieport", "serial", "8250_mid", "agpgart-intel", "iosf_mbi_pci"):
        assert not (drivers / builtin / "module").exists(), builtin
    assert os.readlink(drivers / "shpchp/module") == "../../../../module/shpchp"   # built in, with parameters
    assert os.readlink(drivers / "vfio-pci/module") == "../../../../module/vfio_pci"


def test_insmod_lsmod_rmmod_of_pci_stub(qemu, stub_ko):
    host = host_modules()
    (qemu.pci / f"devices/{E1000E_DEV}/driver/unbind").write_text(E1000E_DEV)
    r = in_run(qemu.path, client("insmod"), str(stub_ko), "ids=8086:10d3")
    assert r.returncode == 0, r.stderr
    assert os.readlink(qemu.pci / f"devices/{E1000E_DEV}/driver").endswith("/pci-stub")
    r = in_run(qemu.path, "sh", "-c", f"head -c 1000000 /proc/modules | head -1; {client('lsmod')} | grep -c ^pci_stub")
    assert r.stdout.splitlines()[0].startswith("pci_stub 16384 0 - Live 0x") and r.stdout.splitlines()[1] == "1"
    log = in_run(qemu.path, "sh", "-c", "dmesg | tail -2").stdout
    assert [line.split("] ", 1)[1] for line in log.splitlines()] == [
        "pci-stub: add 8086:10D3 sub=FFFFFFFF:FFFFFFFF cls=00000000/00000000",
        "pci-stub 0000:02:00.0: claimed by stub"], log
    # again: the kernel's EEXIST, nothing changes
    before = qemu.read(qemu.path / "proc/modules")
    r = in_run(qemu.path, client("insmod"), str(stub_ko))
    assert r.returncode == 1 and "File exists" in r.stderr, r.stderr
    assert qemu.read(qemu.path / "proc/modules") == before
    r = in_run(qemu.path, client("rmmod"), "pci_stub")
    assert r.returncode == 0, r.stderr
    assert not (qemu.pci / "drivers/pci-stub").exists() and not (qemu.pci / f"devices/{E1000E_DEV}/driver").exists()
    assert not (qemu.sys / "module/pci_stub").exists()
    r = in_run(qemu.path, client("rmmod"), "pci_stub")
    assert r.returncode == 1 and "is not currently loaded" in r.stderr, r.stderr
    assert host_modules() == host


def test_module_calls_errnos_and_nothing_changes(qemu, stub_ko):
    before = qemu.read(qemu.path / "proc/modules")
    drivers = sorted(os.listdir(qemu.pci / "drivers"))
    r = py(qemu.path, f"""
        import errno
        print(errno.errorcode[delete_module("nvme_core")])      # nvme depends on it
        print(errno.errorcode[delete_module("vfio")])
        print(errno.errorcode[delete_module("pcieport")])       # built in
        print(errno.errorcode[delete_module("no_such")])
        print(errno.errorcode[init_module(b"not an elf object at all, but long enough to be read......")])
        print(errno.errorcode[init_module(open("{stub_ko}", "rb").read()[:40])])
        print(errno.errorcode[call(175, ctypes.c_char_p(b"x" * 64), ctypes.c_ulong(1 << 40), ctypes.c_char_p(b""))])
        print(errno.errorcode[call(175, ctypes.c_void_p(8), ctypes.c_ulong(4096), ctypes.c_char_p(b""))])
        fd = os.open("{stub_ko}", os.O_RDONLY)
        print(errno.errorcode[finit_module(fd, "", 8)])
        print(errno.errorcode[finit_module(999)])
        print(errno.errorcode[finit_module(fd, "ids=" + "1" * 1100)])
        w = os.open("{stub_ko}", os.O_WRONLY)
        print(errno.errorcode[finit_module(w)])
        d = os.open("/", os.O_RDONLY)
        print(errno.errorcode[finit_module(d)])
        print(errno.errorcode[finit_module(os.open("{stub_ko}", os.O_PATH))])
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["EAGAIN", "EAGAIN", "ENOENT", "ENOENT", "ENOEXEC", "ENOEXEC", "ENOMEM", "EFAULT", "EINVAL", "EBADF",
                                "ENOSPC", "EBADF", "EINVAL", "EBADF"]
    assert qemu.read(qemu.path / "proc/modules") == before
    assert sorted(os.listdir(qemu.pci / "drivers")) == drivers
    r = in_run(qemu.path, client("rmmod"), "nvme_core")
    assert r.returncode == 1 and "Module nvme_core is in use by: nvme" in r.stderr, r.stderr
    assert qemu.read(qemu.path / "proc/modules") == before


def test_unprivileged_callers_get_eperm(qemu, stub_ko):
    before = qemu.read(qemu.path / "proc/modules")
    r = py(qemu.path, f"""
        import errno
        print(errno.errorcode[delete_module("e1000")])
        print(errno.errorcode[init_module({stub_ko.read_bytes()!r})])
        print(errno.errorcode[finit_module(os.open("/etc/hostname", os.O_RDONLY))])
    """, "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["EPERM", "EPERM", "EPERM"]
    assert qemu.read(qemu.path / "proc/modules") == before


def test_rmmod_vfio_pci_while_a_device_is_open(mount_preset):
    """vfio's device open holds vfio_pci (try_module_get): rmmod says "in use", the raw call
    EAGAIN; once the program is gone, rmmod unbinds the devices and removes the driver."""
    mnt = mount_preset("seed-vtd")
    for name in ("0000:01:00.0", "0000:01:00.1"):
        dev = mnt.pci / "devices" / name
        if (dev / "driver").exists():
            (dev / "driver/unbind").write_text(name)
        (dev / "driver_override").write_text("vfio-pci")
        (mnt.pci / "drivers_probe").write_text(name)
    r = py(mnt.path, f"""
        import errno, fcntl, struct, subprocess
        c = os.open("/dev/vfio/vfio", os.O_RDWR)
        g = os.open("/dev/vfio/42", os.O_RDWR)
        fcntl.ioctl(g, 0x3B68, struct.pack("<i", c))            # GROUP_SET_CONTAINER
        fcntl.ioctl(c, 0x3B66, 3)                               # SET_IOMMU TYPE1v2
        d = fcntl.ioctl(g, 0x3B6A, b"0000:01:00.0\\0")          # GROUP_GET_DEVICE_FD
        print(open("/sys/module/vfio_pci/refcnt").read().strip())
        print(errno.errorcode[delete_module("vfio_pci")])
        r = subprocess.run(["{client('rmmod')}", "vfio_pci"], capture_output=True, text=True)
        print(r.returncode, r.stderr.strip())
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["1", "EAGAIN", "1 rmmod: ERROR: Module vfio_pci is in use"]
    assert (mnt.pci / "drivers/vfio-pci/0000:01:00.0").exists()
    r = in_run(mnt.path, client("rmmod"), "vfio_pci")
    assert r.returncode == 0, r.stderr
    assert not (mnt.pci / "drivers/vfio-pci").exists()
    assert not (mnt.pci / "devices/0000:01:00.0/driver").exists()
    assert not (mnt.sys / "module/vfio_pci").exists()
    assert mnt.read(mnt.sys / "module/vfio/refcnt") == "2\n"    # vfio_pci_core and type1 remain


def test_e1000_override_on_an_82574l_fails_its_probe(qemu):
    dev = qemu.pci / "devices" / E1000E_DEV
    (dev / "driver/unbind").write_text(E1000E_DEV)
    (dev / "driver_override").write_text("e1000")
    r = run(["bash", "-c", f"echo {E1000E_DEV} > {qemu.pci}/drivers/e1000/bind"])
    assert r.returncode != 0 and "Input/output error" in r.stderr, r.stderr
    assert not (dev / "driver").exists()
    r = in_run(qemu.path, "sh", "-c", "dmesg | tail -2")
    tail = [line.split("] ", 1)[1] for line in r.stdout.splitlines()]
    assert tail == [f"e1000 {E1000E_DEV} (unnamed net_device) (uninitialized): Unknown MAC Type",
                    f"e1000: probe of {E1000E_DEV} failed with error -5"], r.stdout


def test_modprobe_pci_stub_ids_and_modprobe_r(qemu, tmp_path):
    """modprobe against a module tree depmod indexed (here a private one, -d/-S, with the
    pci-stub object alone; the simulated /lib/modules is the namespace's own elsewhere)."""
    host = host_modules()
    rel = "6.1.0-56-amd64"
    kdir = tmp_path / f"root/lib/modules/{rel}/kernel/drivers/pci"
    kdir.mkdir(parents=True)
    src = tmp_path / "s.c"
    src.write_text('__attribute__((section(".modinfo"), used)) static const char l[] = "license=GPL";\n'
                   '__attribute__((section(".modinfo"), used)) static const char n[] = "name=pci_stub";\n'
                   '__attribute__((section(".modinfo"), used)) static const char d[] = "depends=";\n')
    subprocess.run(["gcc", "-c", "-o", str(kdir / "pci-stub.ko"), str(src)], check=True)
    (kdir.parents[2] / "modules.builtin").write_text("kernel/drivers/pci/hotplug/acpiphp.ko\n")
    subprocess.run([client("depmod"), "-b", str(tmp_path / "root"), rel], check=True, capture_output=True)
    modprobe = [client("modprobe"), "-d", str(tmp_path / "root"), "-S", rel]
    (qemu.pci / f"devices/{E1000E_DEV}/driver/unbind").write_text(E1000E_DEV)
    r = in_run(qemu.path, *modprobe, "pci-stub", "ids=8086:10d3")
    assert r.returncode == 0, r.stderr
    assert os.readlink(qemu.pci / f"devices/{E1000E_DEV}/driver").endswith("/pci-stub")
    assert qemu.read(qemu.sys / "module/pci_stub/initstate") == "live\n"
    r = in_run(qemu.path, *modprobe, "pci-stub")                   # loaded: nothing to do
    assert r.returncode == 0, r.stderr
    r = in_run(qemu.path, *modprobe, "-r", "pci-stub")
    assert r.returncode == 0, r.stderr
    r = in_run(qemu.path, *modprobe, "-r", "acpiphp")               # built in: no delete_module at all
    assert r.returncode == 1 and "Module acpiphp is builtin" in r.stderr, r.stderr
    assert (qemu.sys / "module/acpiphp/parameters/disable").exists()
    assert not (qemu.pci / "drivers/pci-stub").exists() and not (qemu.sys / "module/pci_stub").exists()
    assert not (qemu.pci / f"devices/{E1000E_DEV}/driver").exists()
    assert host_modules() == host
