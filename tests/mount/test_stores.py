"""Every writable attribute answers bad input as its kernel store does, and a failed
write changes nothing (issue 8, section 2). Through a real mount: os.write() for the
errno, bash for the user's view.

Sources: drivers/pci/pci-sysfs.c (every PCI store maps a kstrto* failure, ERANGE
included, to EINVAL), drivers/pci/pci.c (reset_method_store), drivers/pci/iov.c,
drivers/pci/pcie/aspm.c (kstrtobool), drivers/base/power/sysfs.c (sysfs_streq; EIO
without autosuspend), net/core/net-sysfs.c (netdev_store: kstrtoul's errno passes
through), drivers/iommu/intel/debugfs.c (kstrtoint), lib/kstrtox.c.
"""
from __future__ import annotations

import errno
import os

import pytest

from tests.conftest import run, sh

X540 = "sys/bus/pci/devices/0000:03:00.0"
BRIDGE = "sys/bus/pci/devices/0000:00:1c.0"
GPU = "sys/bus/pci/devices/0000:01:00.0"          # has a 512K ROM BAR
ETH = "sys/class/net/eth0"
LATENCY = "sys/kernel/debug/iommu/intel/dmar_perf_latency"

TWO_64 = b"18446744073709551616"
INPUTS = {"2^64": TWO_64, "2^64\\n": TWO_64 + b"\n", "-+1": b"-+1", "' 1'": b" 1", "garbage": b"garbage",
          "1x": b"1x", "empty line": b"\n"}

EINVAL, ERANGE, EIO = errno.EINVAL, errno.ERANGE, errno.EIO
ALL_EINVAL = dict.fromkeys(INPUTS, EINVAL)
# kstrtobool: the first character decides, so "18446744073709551616" is "1"
BOOL = {**ALL_EINVAL, "2^64": None, "2^64\\n": None, "1x": None}
# netdev_store: kstrtoul's own errno
NETDEV = {**ALL_EINVAL, "2^64": ERANGE, "2^64\\n": ERANGE}

TABLE = [
    (f"{X540}/remove", ALL_EINVAL),
    (f"{X540}/rescan", ALL_EINVAL),
    (f"{X540}/broken_parity_status", ALL_EINVAL),
    (f"{X540}/msi_bus", ALL_EINVAL),
    (f"{X540}/d3cold_allowed", ALL_EINVAL),
    (f"{X540}/enable", ALL_EINVAL),
    (f"{X540}/reset", ALL_EINVAL),
    (f"{X540}/numa_node", ALL_EINVAL),
    (f"{X540}/sriov_numvfs", ALL_EINVAL),
    (f"{X540}/sriov_drivers_autoprobe", BOOL),
    (f"{X540}/reset_method", {**ALL_EINVAL, "empty line": None}),   # "\n" disables all: checked below
    (f"{X540}/uevent", ALL_EINVAL),
    (f"{X540}/power/async", ALL_EINVAL),
    (f"{X540}/power/control", ALL_EINVAL),
    (f"{X540}/power/autosuspend_delay_ms", dict.fromkeys(INPUTS, EIO)),
    (f"{X540}/link/l0s_aspm", BOOL),
    (f"{BRIDGE}/reset_subordinate", ALL_EINVAL),
    ("sys/bus/pci/rescan", ALL_EINVAL),
    (f"{ETH}/mtu", NETDEV),
    (f"{ETH}/carrier", NETDEV),
    (f"{ETH}/flags", NETDEV),
    (f"{ETH}/tx_queue_len", NETDEV),
    (LATENCY, ALL_EINVAL),
]
CASES = [(path, name, want) for path, table in TABLE for name, want in table.items() if want is not None]


def write(path, data: bytes, offset: int | None = None) -> int:
    """One write(2); the errno, or 0 on success."""
    fd = os.open(path, os.O_WRONLY)
    try:
        if offset is None:
            os.write(fd, data)
        else:
            os.pwrite(fd, data, offset)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def state(mnt, path: str) -> dict:
    """Every readable file in the attribute's directory (its device's state), and the
    number of kernel log lines; a clock is left out."""
    d = os.path.dirname(mnt.path / path)
    out = {}
    # the debugfs unit directory holds live hardware registers: the file itself there
    names = [os.path.basename(path)] if "/debug/" in path else sorted(os.listdir(d))
    for name in names:
        p = os.path.join(d, name)
        if name == "runtime_active_time" or os.path.islink(p) or not os.path.isfile(p):
            continue
        try:
            with open(p, "rb") as f:
                out[name] = f.read()
        except OSError as e:
            out[name] = e.errno
    return out


@pytest.mark.parametrize("path, name, want", CASES, ids=[f"{p.split('/')[-1]}-{n}" for p, n, _ in CASES])
def test_bad_input_gets_the_kernels_errno_and_changes_nothing(seed_mnt, path, name, want):
    before = state(seed_mnt, path)
    assert write(seed_mnt.path / path, INPUTS[name]) == want
    assert state(seed_mnt, path) == before


# --- the NUL rule: a store's buffer is a C string ---------------------------------------------------
def test_a_nul_ends_the_number(mount_preset):
    m = mount_preset("seed-vtd")
    assert write(m.path / X540 / "sriov_numvfs", b"2\0junk") == 0
    assert (m.path / X540 / "sriov_numvfs").read_text() == "2\n"
    assert write(m.path / X540 / "sriov_numvfs", b"0\0junk") == 0
    assert (m.path / X540 / "sriov_numvfs").read_text() == "0\n"
    assert write(m.path / X540 / "broken_parity_status", b"1\0\n") == 0
    assert (m.path / X540 / "broken_parity_status").read_text() == "1\n"
    assert write(m.path / X540 / "power/async", b"disabled\0x") == 0
    assert (m.path / X540 / "power/async").read_text() == "disabled\n"


def test_bash_sees_the_issues_inputs(mount_preset):
    m = mount_preset("seed-vtd")
    r = sh(f"echo 18446744073709551616 > {X540}/enable", cwd=m.path)
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    r = sh(f"printf '0\\0junk' > {X540}/sriov_numvfs", cwd=m.path)
    assert r.returncode == 0, r.stderr
    r = sh(f"echo -+1 > {X540}/numa_node", cwd=m.path)
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    r = sh(f"echo ' 1' > {LATENCY}", cwd=m.path)
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert (m.path / X540 / "numa_node").read_text() == "1\n"


def test_vf_msix_count_rejects_2_64_with_einval(mount_preset):
    m = mount_preset("seed-vtd")
    assert write(m.path / X540 / "sriov_numvfs", b"1") == 0
    vf = m.path / X540 / "virtfn0" / "sriov_vf_msix_count"
    for data in (TWO_64, b"-1", b"garbage", b" 1", b"-+1"):
        assert write(vf, data) == errno.EINVAL, data


# --- config: past the end is EFBIG (sysfs_kf_bin_write) ------------------------------------------------
def test_config_write_past_the_end_is_efbig(mount_preset):
    m = mount_preset("seed-vtd")
    cfg = m.path / X540 / "config"
    before = cfg.read_bytes()
    assert write(cfg, b"\xff", 4096) == errno.EFBIG
    assert write(cfg, b"\xff", 5000) == errno.EFBIG
    assert cfg.read_bytes() == before
    r = sh(f"printf '\\x00' | dd of={X540}/config bs=1 seek=4096 conv=notrunc status=none", cwd=m.path)
    assert r.returncode != 0 and "File too large" in r.stderr


def test_clearing_the_capabilities_pointer_leaves_every_attribute_readable(mount_preset):
    m = mount_preset("seed-vtd")
    r = sh(f"printf '\\x00' | dd of={X540}/config bs=1 seek=52 conv=notrunc status=none", cwd=m.path)
    assert r.returncode == 0, r.stderr
    assert (m.path / X540 / "config").read_bytes()[52] == 0
    for attr in ("current_link_speed", "current_link_width", "max_link_speed", "max_link_width"):
        r = run(["cat", f"{X540}/{attr}"], cwd=m.path)
        assert r.returncode == 0 and r.stdout.strip(), (attr, r.stderr)
    # the only read errors left are the kernel's own: no autosuspend, mmap-only BARs, write-only files
    r = sh(f"grep -r . {X540}/ 2>&1 >/dev/null | grep -v -e autosuspend_delay_ms -e '/resource[0-9]:' -e 'Permission denied' || true",
           cwd=m.path)
    assert r.stdout == ""


# --- reset_method (drivers/pci/pci.c) -----------------------------------------------------------------
def test_reset_method_store(mount_preset):
    m = mount_preset("seed-vtd")
    f = m.path / X540 / "reset_method"
    default = f.read_text()
    assert default == "flr bus\n"
    assert write(f, b"bus flr\n") == 0
    assert f.read_text() == "bus flr\n"                        # the order given is the priority
    assert write(f, b"flr") == 0 and f.read_text() == "flr\n"
    for bad in (b"nosuch", b"flr nosuch", b"acpi", b"flr,bus", b"flr flr flr flr flr flr flr flr"):
        assert write(f, bad) == errno.EINVAL, bad               # unknown, unsupported, too many
        assert f.read_text() == "flr\n"
    assert write(f, b"default\n") == 0 and f.read_text() == default
    r = sh(f"echo flr > {X540}/reset_method", cwd=m.path)       # the issue's command
    assert r.returncode == 0, r.stderr
    assert write(f, b"\n") == 0
    assert f.read_text() == ""                                 # every method disabled: the file stays
    assert write(m.path / X540 / "reset", b"1") == errno.ENOTTY
    assert write(f, b"default") == 0 and f.read_text() == default
    assert write(m.path / X540 / "reset", b"1") == 0


def test_reset_method_logs_like_the_kernel(mount_preset):
    m = mount_preset("seed-vtd")
    f = m.path / X540 / "reset_method"
    write(f, b"nosuch")
    write(f, b"acpi")
    write(f, b"")
    write(f, b"\n")
    text = (m.path / "sys/kernel/debug/vfakefs/dmesg").read_text()
    assert "ixgbe 0000:03:00.0: Invalid reset method 'nosuch'" in text
    assert "ixgbe 0000:03:00.0: Unsupported reset method 'acpi'" in text
    assert "ixgbe 0000:03:00.0: All device reset methods disabled by user" in text


# --- rom (pci_read_rom / pci_write_rom) -----------------------------------------------------------------
def test_rom_reads_after_echo_1(mount_preset):
    m = mount_preset("seed-vtd")
    rom = m.path / GPU / "rom"
    assert oct(os.stat(rom).st_mode & 0o777) == "0o600"
    r = run(["cat", f"{GPU}/rom"], cwd=m.path)
    assert r.returncode != 0 and "Invalid argument" in r.stderr      # not enabled yet
    r = sh(f"echo 1 > {GPU}/rom && cat {GPU}/rom | head -c 2 | od -An -tx1", cwd=m.path)
    assert r.returncode == 0 and r.stdout.split() == ["55", "aa"], r.stderr
    image = rom.read_bytes()
    assert len(image) == 512 << 10 and sum(image) % 256 == 0
    pcir = int.from_bytes(image[0x18:0x1A], "little")
    assert image[pcir:pcir + 4] == b"PCIR"
    assert image[pcir + 4:pcir + 8] == bytes.fromhex((m.path / GPU / "vendor").read_text()[2:6])[::-1] + \
        bytes.fromhex((m.path / GPU / "device").read_text()[2:6])[::-1]
    assert write(rom, b"0\n") == 0                                     # exactly "0" + one byte disables
    assert run(["cat", f"{GPU}/rom"], cwd=m.path).returncode != 0
    assert write(rom, b"0") == 0                                       # "0" alone enables (count != 2)
    assert len(rom.read_bytes()) == 512 << 10
    assert write(rom, b"x", 512 << 10) == errno.EFBIG


# --- the net stores: parse, errno, effect ------------------------------------------------------------------
def test_mtu_follows_dev_set_mtu(mount_preset):
    m = mount_preset("seed-vtd")
    mtu = m.path / ETH / "mtu"
    drv = os.path.basename(os.readlink(m.path / ETH / "device/driver"))
    assert mtu.read_text() == "1500\n"
    assert sh(f"echo 9000 > {ETH}/mtu", cwd=m.path).returncode == 0
    assert mtu.read_text() == "9000\n"
    top = {"ixgbe": 9710, "igb": 9216, "e1000e": 9212}[drv]
    assert write(mtu, str(top).encode()) == 0 and mtu.read_text() == f"{top}\n"
    for bad in (str(top + 1).encode(), b"67", b"0", b"4294967295"):
        assert write(mtu, bad) == errno.EINVAL, bad
        assert mtu.read_text() == f"{top}\n"
    assert write(mtu, str((1 << 32) + 1500).encode()) == 0        # (int) cast: 1500
    assert mtu.read_text() == "1500\n"


def test_flags_carrier_tx_queue_len(mount_preset):
    m = mount_preset("seed-vtd")
    nd = m.path / ETH
    assert (nd / "flags").read_text() == "0x1003\n"
    assert write(nd / "carrier", b"1") == errno.EOPNOTSUPP        # no ndo_change_carrier
    assert write(nd / "flags", b"0x1103") == 0                     # promiscuous
    assert (nd / "flags").read_text() == "0x1103\n"
    assert write(nd / "flags", b"0x1002") == 0                     # down
    assert (nd / "operstate").read_text() == "down\n"
    r = run(["cat", f"{ETH}/carrier"], cwd=m.path)
    assert r.returncode != 0 and "Invalid argument" in r.stderr
    assert write(nd / "carrier", b"1") == errno.EINVAL              # change_carrier: not running
    assert write(nd / "flags", b"0x1003") == 0
    assert (nd / "operstate").read_text() == "up\n" and (nd / "carrier").read_text() == "1\n"
    assert write(nd / "tx_queue_len", b"4294967296") == errno.ERANGE
    assert write(nd / "tx_queue_len", b"500") == 0 and (nd / "tx_queue_len").read_text() == "500\n"


# --- power/ and link/ -----------------------------------------------------------------------------------
def test_power_and_aspm_stores(mount_preset):
    m = mount_preset("seed-vtd")
    p = m.path / X540 / "power"
    assert write(p / "async", b"disabled\n") == 0 and (p / "async").read_text() == "disabled\n"
    assert write(p / "async", b"enabled") == 0 and (p / "async").read_text() == "enabled\n"
    assert write(p / "control", b"auto\n") == 0
    assert (p / "control").read_text() == "auto\n" and (p / "runtime_enabled").read_text() == "enabled\n"
    assert write(p / "control", b"on") == 0 and (p / "control").read_text() == "on\n"
    assert write(p / "autosuspend_delay_ms", b"100") == errno.EIO
    aspm = m.path / X540 / "link/l0s_aspm"
    assert write(aspm, b"1") == 0 and write(aspm, b"n") == 0
    assert aspm.read_text() == "0\n"                               # the default policy enables nothing more
