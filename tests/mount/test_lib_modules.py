"""The simulated kernel's /lib/modules/$(uname -r): served at MNT/lib/modules/<release>/
(fixed files: 0444, true sizes, mmap-able), bound over /lib/modules by `vfakefs run`, where
the unmodified kmod (modinfo, modprobe) and lspci -k's libkmod read it. The host's
/lib/modules (or, where it has none, the directory that would hold it) is left as it was."""
from __future__ import annotations

import errno
import mmap
import os
import re
import sys

import pytest

from tests.clients import client
from tests.conftest import REPO, run
from vfakefs.model.modfiles.tree import module_tree

REL = os.uname().release          # what uname(2) says inside `vfakefs run` too
MODDIR = f"/lib/modules/{REL}"
CAPTURE = REPO / "tests/reference/kernel-6.1/capture-stock-intel_iommu_on.txt"


def in_run(mnt, *cmd):
    return run([sys.executable, "-m", "vfakefs", "run", "--mnt", str(mnt), "--", *cmd], cwd=REPO)


def _kernel_modules(lspci_k: str) -> dict[str, str | None]:
    """{slot: its "Kernel modules:" line's value, or None} of lspci -k output."""
    out: dict[str, str | None] = {}
    slot = None
    for line in lspci_k.splitlines():
        if m := re.match(r"^([0-9a-f]{2}:[0-9a-f]{2}\.[0-7]) ", line):
            slot = m.group(1)
            out[slot] = None
        elif line.startswith("\tKernel modules: "):
            out[slot] = line.split(": ", 1)[1]
    return out


def _reference_lspci_nnk() -> str:
    text = CAPTURE.read_text()
    return text.split("$ lspci -nnk\n", 1)[1].split("[rc=", 1)[0]


def _host_state() -> tuple:
    """What the host has where /lib/modules is: its listing with mtimes, or the listing of
    the directory that would hold it."""
    target = os.path.realpath("/lib/modules")
    where = target if os.path.isdir(target) else os.path.dirname(target)
    return (os.path.lexists("/lib/modules"), where,
            sorted((e.name, e.stat(follow_symlinks=False).st_mtime_ns) for e in os.scandir(where)),
            os.stat(where).st_mtime_ns)


@pytest.fixture(scope="module")
def tree() -> dict[str, bytes]:
    return module_tree(REL)


def test_files_in_the_mount(qemu_mnt, tree):
    base = qemu_mnt.path / "lib/modules"
    assert os.listdir(base) == [REL]
    base = base / REL
    for path in ("modules.dep.bin", "modules.alias.bin", "modules.symbols.bin", "modules.builtin.bin",
                 "modules.builtin.alias.bin", "modules.dep", "modules.alias", "modules.builtin.modinfo",
                 "kernel/drivers/vfio/pci/vfio-pci.ko", "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko"):
        st = os.stat(base / path)
        assert (oct(st.st_mode), st.st_uid, st.st_gid, st.st_size) == ("0o100444", 0, 0, len(tree[path])), path
        assert (base / path).read_bytes() == tree[path]
    assert os.stat(base / "kernel").st_mode == 0o40755
    # libkmod maps the indexes and modules (MAP_PRIVATE); a shared read-only map works too, as
    # on a disk file (a FUSE direct_io file refuses it: ENODEV)
    for flags in (mmap.MAP_PRIVATE, mmap.MAP_SHARED):
        with open(base / "modules.alias.bin", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ,
                                                                    flags=flags) as m:
            assert m[:] == tree["modules.alias.bin"]


def test_the_files_are_read_only(qemu_mnt, tree):
    base = qemu_mnt.path / "lib/modules" / REL
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(PermissionError):
            os.open(base / "modules.dep", flags)
    with pytest.raises(PermissionError):
        os.open(base / "modules.dep.tmp", os.O_CREAT | os.O_WRONLY, 0o644)   # depmod's way of writing
    for op in (lambda: os.unlink(base / "modules.dep"), lambda: os.rename(base / "modules.dep", base / "x"),
               lambda: os.mkdir(base / "extra")):
        with pytest.raises(OSError) as e:
            op()
        assert e.value.errno == errno.EPERM
    assert (base / "modules.dep").read_bytes() == tree["modules.dep"]
    assert sorted(os.listdir(base)) == sorted({p.split("/")[0] for p in tree})
    assert not (base / "modules.dep.tmp").exists() and not (base / "extra").exists()


def test_lspci_k_kernel_modules_are_the_simulated_kernels(qemu_mnt):
    """The reference's "Kernel modules:" lines (e1000, lpc_ich, ahci, i2c_i801, nvme, e1000e,
    virtio_pci; none for bridges and the host bridge), found by lspci's libkmod in the
    simulated /lib/modules: this host has none of its own."""
    before = _host_state()
    r = in_run(qemu_mnt.path, "lspci", "-nnk")
    assert r.returncode == 0, r.stderr
    want = _kernel_modules(_reference_lspci_nnk())
    assert {v for v in want.values() if v} == {"e1000", "lpc_ich", "ahci", "i2c_i801", "nvme", "e1000e",
                                                "virtio_pci"}
    assert _kernel_modules(r.stdout) == want
    assert _host_state() == before


def test_modinfo_and_modprobe_in_vfakefs_run(qemu_mnt):
    before = _host_state()
    script = (f"{client('modinfo')} vfio_pci; echo rc=$?; {client('modinfo')} -F alias e1000e; "
              f"{client('modprobe')} --show-depends vfio_pci; echo rc=$?; "
              f"{client('modprobe')} -n -v igb; echo rc=$?; {client('modinfo')} no_such_module; echo rc=$?; "
              "ls /lib/modules")
    r = in_run(qemu_mnt.path, "sh", "-c", script)
    out = r.stdout.splitlines()
    assert out[:3] == [f"filename:       {MODDIR}/kernel/drivers/vfio/pci/vfio-pci.ko",
                       "license:        GPL v2", "description:    VFIO PCI - User Level meta-driver"]
    assert f"vermagic:       {REL} SMP preempt mod_unload modversions " in out
    assert "depends:        vfio-pci-core,vfio" in out and "alias:          vfio_pci:v*d*sv*sd*bc*sc*i*" in out
    k = out.index("rc=0")
    assert out[k + 1:k + 3] == ["pci:v00008086d000015B8sv*sd*bc*sc*i*", "pci:v00008086d000010D3sv*sd*bc*sc*i*"]
    deps = out[k + 3:out.index("rc=0", k + 1)]
    # modules.dep's order, loaded back to front: each module after what it needs
    assert deps[-1] == f"insmod {MODDIR}/kernel/drivers/vfio/pci/vfio-pci.ko "
    names = [d.rsplit("/", 1)[1].split(".ko")[0] for d in deps]
    assert set(names) >= {"vfio-pci-core", "vfio", "vfio_virqfd", "irqbypass", "vfio-pci"}
    assert names.index("vfio") < names.index("vfio-pci-core") > names.index("irqbypass")
    k = out.index("rc=0", k + 1)
    igb = out[k + 1:out.index("rc=0", k + 1)]
    assert igb[-1] == f"insmod {MODDIR}/kernel/drivers/net/ethernet/intel/igb/igb.ko "
    assert sorted(igb[:-1]) == [f"insmod {MODDIR}/kernel/drivers/dma/dca.ko ",
                                f"insmod {MODDIR}/kernel/drivers/i2c/algos/i2c-algo-bit.ko "]
    assert out[-2:] == ["rc=1", REL]
    assert "modinfo: ERROR: Module no_such_module not found." in r.stderr
    assert _host_state() == before


def test_a_hosts_own_lib_modules_is_hidden_inside_and_kept(qemu_mnt, tmp_path):
    """Where the host has a /lib/modules, `vfakefs run` binds over it: inside, only the
    simulated release; outside, the host's files as they were. This host may have none:
    the test then gives itself one in a mount namespace of its own first."""
    marker = "vfakefs-test-host-release"
    setup = ("import os, sys; from vfakefs import namespace as n; n._check(n._libc.unshare(n.CLONE_NEWNS), 'unshare'); "
             "n._mount(None, '/', None, n.MS_REC | n.MS_PRIVATE); t = os.path.realpath('/lib/modules'); "
             f"os.path.isdir(t) or (n._private_copy(os.path.dirname(t), {str(tmp_path)!r}), os.mkdir(t)); "
             f"os.path.isdir(t + '/{marker}') or n._mount('host-lib-modules', t, 'tmpfs', 0, 'mode=755'); "
             f"os.makedirs(t + '/{marker}', exist_ok=True); "
             "os.execvp('sh', ['sh', '-c', sys.argv[1]])")
    inner = (f"{sys.executable} -m vfakefs run --mnt {qemu_mnt.path} -- sh -c 'ls /lib/modules; "
             "lspci -k | grep -c \"Kernel modules\"'; echo rc=$?; ls /lib/modules")
    before = _host_state()
    r = run([sys.executable, "-c", setup, inner], cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [REL, "8", "rc=0", marker]   # 8 functions with a module
    assert _host_state() == before


def test_the_directory_holding_the_mountpoint_keeps_the_hosts_entries(qemu_mnt):
    """Where the host has no /lib/modules, the namespace's copy of the directory that holds
    it shows the host's entries (the same files: bound back), their times and its own, plus
    modules; the libraries in it still load (the command itself runs from them)."""
    target = os.path.realpath("/lib/modules")
    if os.path.isdir(target):
        pytest.skip("the host has a /lib/modules: it is bound over directly")
    parent = os.path.dirname(target)
    host = sorted(os.listdir(parent))
    # each entry as the namespace sees it: a symlink's target (copied), else the host's file itself
    describe = ("def describe(p):\n"
                "    import os\n"
                "    out = []\n"
                "    for n in sorted(os.listdir(p)):\n"
                "        st = os.lstat(f'{p}/{n}')\n"
                "        out.append(f'{n} -> {os.readlink(f\"{p}/{n}\")}' if os.path.islink(f'{p}/{n}')\n"
                "                   else f'{n} {st.st_dev} {st.st_ino} {st.st_mode:o} {st.st_mtime_ns}')\n"
                "    return out\n")
    script = describe + ("import os, sys; p = sys.argv[1]; st = os.stat(p); "
                         "print(st.st_mtime_ns, oct(st.st_mode), st.st_uid); "
                         "print(*[d for d in describe(p) if not d.startswith('modules ')], sep='\\n')")
    r = in_run(qemu_mnt.path, sys.executable, "-c", script, parent)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    st = os.stat(parent)
    assert lines[0] == f"{st.st_mtime_ns} {oct(st.st_mode)} {st.st_uid}"
    ns: dict = {}
    exec(describe, ns)
    assert lines[1:] == ns["describe"](parent)
    r = in_run(qemu_mnt.path, "ls", parent)
    assert r.stdout.split() == sorted(host + ["modules"])
    assert sorted(os.listdir(parent)) == host and not os.path.lexists("/lib/modules")


def test_the_files_agree_with_the_running_kernel(qemu_mnt):
    """modinfo's srcversion is /sys/module's, and modprobe -n skips what is loaded (vfio_pci
    and its dependencies on the reference machine) but not what is not (pci-stub)."""
    modinfo, modprobe = client("modinfo"), client("modprobe")
    r = in_run(qemu_mnt.path, "sh", "-c", f"{modinfo} -F srcversion vfio_pci; cat /sys/module/vfio_pci/srcversion; "
                                          f"{modprobe} -n -v vfio_pci; echo rc=$?; {modprobe} -n -v pci-stub; "
                                          "echo rc=$?; for d in 02:00.0 00:1f.3; do "
                                          f"{modprobe} --show-depends $(cat /sys/bus/pci/devices/0000:$d/modalias); done")
    out = r.stdout.splitlines()
    assert out[0] == out[1] and re.fullmatch(r"[0-9A-F]{23}", out[0])
    assert out[2:5] == ["rc=0", f"insmod {MODDIR}/kernel/drivers/pci/pci-stub.ko ", "rc=0"]
    # what udev's kmod builtin does with a device's MODALIAS: the id tables' aliases match
    assert out[5:] == [f"insmod {MODDIR}/kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko ",
                       f"insmod {MODDIR}/kernel/drivers/i2c/i2c-smbus.ko ",
                       f"insmod {MODDIR}/kernel/drivers/i2c/busses/i2c-i801.ko "]


def test_modprobe_loads_and_unloads_from_the_simulated_tree(mount_preset):
    """modprobe resolves igb's dependencies in modules.dep and hands each .ko of the
    mount to finit_module (answered by the system-call adapter), then modprobe -r
    unloads the lot."""
    mnt = mount_preset("qemu-ref")
    modprobe, lsmod = client("modprobe"), client("lsmod")
    r = in_run(mnt.path, "sh", "-c", f"{modprobe} -v igb; echo rc=$?; {lsmod}; {modprobe} -r -v igb; echo rc=$?; "
                                     f"{lsmod} | grep -cE '^(igb|dca|i2c_algo_bit) '")
    out = r.stdout.splitlines()
    base = f"insmod {MODDIR}/kernel/drivers"
    assert out[:4] == [f"{base}/dma/dca.ko ", f"{base}/i2c/algos/i2c-algo-bit.ko ",
                       f"{base}/net/ethernet/intel/igb/igb.ko ", "rc=0"], r.stderr
    loaded = {line.split()[0]: line.split()[1:] for line in out[4:] if not line.startswith("rmmod")}
    assert loaded["igb"] == ["286720", "0"] and loaded["dca"] == ["16384", "1", "igb"]
    assert loaded["i2c_algo_bit"] == ["16384", "1", "igb"]
    assert out[-5:] == ["rmmod igb", "rmmod dca", "rmmod i2c_algo_bit", "rc=0", "0"]
