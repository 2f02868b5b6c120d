"""Who may open what, and what a write does: kernfs's open checks, DAC for
uid 65534, the errnos of operations sysfs refuses, and the kernel's parsing of
stores (a failed store changes nothing). KERNEL-FACTS.md sections 0 and 1."""
from __future__ import annotations

import pytest

from tests.conftest import NOBODY, run, sh

X540 = "sys/bus/pci/devices/0000:03:00.0"
SMBUS = "sys/bus/pci/devices/0000:00:1f.4"    # conventional PCI: 256-byte config


def _ok(r):
    assert r.returncode == 0, f"{r.args}: rc={r.returncode} stderr={r.stderr!r}"
    return r.stdout


def _fails(r, message: str):
    assert r.returncode != 0, f"{r.args} succeeded: {r.stdout!r}"
    assert message in r.stderr, r.stderr


def _write_once(m, rel: str, printf_fmt: str):
    """One write(2) of the whole buffer (bash's printf would split it at newlines)."""
    return sh(f"printf '{printf_fmt}' | dd of={rel} bs=8192 iflag=fullblock status=none", cwd=m.path)


def _read(m, rel: str) -> str:
    return _ok(run(["cat", rel], cwd=m.path))


# --- kernfs open checks, root included ------------------------------------------------------
@pytest.mark.parametrize("attr", ["vendor", "device", "class", "resource", "sriov_totalvfs", "irq"])
def test_writing_a_0444_attr_is_eacces_even_for_root(seed_mnt, attr):
    before = _read(seed_mnt, f"{X540}/{attr}")
    _fails(sh(f"echo 1 > {X540}/{attr}", cwd=seed_mnt.path), "Permission denied")
    assert _read(seed_mnt, f"{X540}/{attr}") == before


def test_opening_a_0444_attr_read_write_is_eacces(seed_mnt):
    _fails(sh(f"exec 3<> {X540}/vendor", cwd=seed_mnt.path), "Permission denied")


@pytest.mark.parametrize("path", ["sys/bus/pci/drivers_probe", f"{X540}/remove", f"{X540}/rescan",
                                  f"{X540}/reset"])
def test_reading_a_write_only_file_is_eacces_even_for_root(seed_mnt, path):
    _fails(run(["cat", path], cwd=seed_mnt.path), "Permission denied")


def test_a_0200_file_can_still_be_written(seed_mnt):
    # drivers_probe looks the name up: unknown -> ENODEV, which proves the open succeeded
    _fails(sh("echo 0000:ff:00.0 > sys/bus/pci/drivers_probe", cwd=seed_mnt.path), "No such device")


# --- uid 65534 --------------------------------------------------------------------------------
def test_nobody_runs_as_65534_and_can_read_0444(seed_mnt):
    assert _ok(run(["id", "-u"], user=NOBODY)) == f"{NOBODY}\n"
    assert _ok(run(["cat", f"{X540}/vendor"], cwd=seed_mnt.path, user=NOBODY)) == "0x8086\n"


@pytest.mark.parametrize("attr", ["broken_parity_status", "driver_override", "numa_node", "msi_bus",
                                  "d3cold_allowed", "sriov_numvfs", "enable"])
def test_nobody_writing_a_0644_attr_is_eacces(seed_mnt, attr):
    before = _read(seed_mnt, f"{X540}/{attr}")
    _fails(sh(f"echo 1 > {X540}/{attr}", cwd=seed_mnt.path, user=NOBODY), "Permission denied")
    assert _read(seed_mnt, f"{X540}/{attr}") == before


@pytest.mark.parametrize("path", ["sys/bus/pci/drivers_probe", f"{X540}/remove"])
def test_nobody_writing_a_root_only_0200_file_is_eacces(seed_mnt, path):
    _fails(sh(f"echo 1 > {path}", cwd=seed_mnt.path, user=NOBODY), "Permission denied")


@pytest.mark.parametrize("dev, root_size", [(X540, 4096), (SMBUS, 256)])
def test_config_read_is_cut_to_64_bytes_for_nobody(seed_mnt, dev, root_size):
    root = run(["cat", f"{dev}/config"], cwd=seed_mnt.path, text=False)
    nobody = run(["cat", f"{dev}/config"], cwd=seed_mnt.path, user=NOBODY, text=False)
    assert root.returncode == 0 and nobody.returncode == 0, (root.stderr, nobody.stderr)
    assert len(root.stdout) == root_size
    assert len(nobody.stdout) == 64
    assert nobody.stdout == root.stdout[:64]
    assert root.stdout[:4] == bytes.fromhex("86 80 28 15" if dev == X540 else "86 80 23 a3")
    # stat still reports the full size to everybody
    assert _ok(run(["stat", "-c", "%s", f"{dev}/config"], cwd=seed_mnt.path, user=NOBODY)) == f"{root_size}\n"


def test_config_read_at_an_offset_past_the_limit_is_eof_for_nobody(seed_mnt):
    r = run(["dd", f"if={X540}/config", "bs=1", "skip=64", "count=16", "status=none"],
            cwd=seed_mnt.path, user=NOBODY, text=False)
    assert r.returncode == 0 and r.stdout == b""
    r = run(["dd", f"if={X540}/config", "bs=1", "skip=256", "count=16", "status=none"],
            cwd=seed_mnt.path, text=False)
    assert r.returncode == 0 and len(r.stdout) == 16


# --- what sysfs refuses ------------------------------------------------------------------------
@pytest.mark.parametrize("script, message", [
    (f"touch {X540}/newfile", "Permission denied"),
    (f": > {X540}/newfile", "Permission denied"),
    (f"mkdir {X540}/newdir", "Operation not permitted"),
    (f"rm -f {X540}/vendor", "Operation not permitted"),
    (f"rmdir {X540}/power", "Operation not permitted"),
    (f"mv {X540}/vendor {X540}/vendor2", "Operation not permitted"),
    (f"ln -s vendor {X540}/mylink", "Operation not permitted"),
    (f"ln {X540}/vendor {X540}/hardlink", "Operation not permitted"),
    (f"mknod {X540}/node p", "Operation not permitted"),
    ("rm -f sys/bus/pci/devices/0000:03:00.0", "Operation not permitted"),
])
def test_changing_the_tree_fails_with_sysfs_errnos(seed_mnt, script, message):
    listing = _ok(run(["ls", "-a", X540], cwd=seed_mnt.path))
    _fails(sh(script, cwd=seed_mnt.path), message)
    assert _ok(run(["ls", "-a", X540], cwd=seed_mnt.path)) == listing
    assert _read(seed_mnt, f"{X540}/vendor") == "0x8086\n"


def test_touching_an_existing_attr_is_allowed(seed_mnt):
    _ok(run(["touch", f"{X540}/vendor"], cwd=seed_mnt.path))


def test_root_may_chmod_an_attr(mount_preset):
    m = mount_preset("seed-vtd")
    _ok(run(["chmod", "0600", f"{X540}/vendor"], cwd=m.path))
    assert _ok(run(["stat", "-c", "%a", f"{X540}/vendor"], cwd=m.path)) == "600\n"


@pytest.mark.parametrize("path", [f"{X540}/nosuch", "sys/bus/pci/devices/0000:ff:00.0",
                                  "sys/kernel/iommu_groups/4242", "sys/class/net/eth9",
                                  "dev/vfio/4242"])
def test_unknown_names_are_enoent(seed_mnt, path):
    _fails(run(["cat", path], cwd=seed_mnt.path), "No such file or directory")
    _fails(run(["stat", path], cwd=seed_mnt.path), "No such file or directory")


# --- stores: good values stick, bad ones are EINVAL and change nothing ------------------------------
@pytest.mark.parametrize("attr, default, good, read_back, bad", [
    ("broken_parity_status", "0\n", "1", "1\n", ["abc", "1x", "-1", ""]),
    ("broken_parity_status", "0\n", "0x10", "1\n", ["0x", "1 2"]),
    ("numa_node", "1\n", "0", "0\n", ["abc", "0x", "-2", "1 ", "2"]),   # the X540 sits on node 1 of 2
    ("msi_bus", "1\n", "0", "0\n", ["abc", "no", "-1"]),
    ("d3cold_allowed", "1\n", "0", "0\n", ["abc", "yes", " 0"]),
])
def test_store_good_value_then_bad_value_is_einval_and_unchanged(mount_preset, attr, default, good,
                                                                  read_back, bad):
    m = mount_preset("seed-vtd")
    path = f"{X540}/{attr}"
    assert _read(m, path) == default
    _ok(sh(f"echo {good} > {path}", cwd=m.path))          # bash opens with O_TRUNC: accepted
    assert _read(m, path) == read_back
    for value in bad:
        if value == "":
            continue   # `echo > f` writes "\n", covered below
        _fails(sh(f"echo '{value}' > {path}", cwd=m.path), "Invalid argument")
        assert _read(m, path) == read_back, value
    _fails(sh(f"echo > {path}", cwd=m.path), "Invalid argument")   # a lone newline
    assert _read(m, path) == read_back


def test_numa_node_out_of_range_is_einval(mount_preset):
    m = mount_preset("seed-vtd")
    for value in ("5", "1024", "-5"):
        _fails(sh(f"echo {value} > {X540}/numa_node", cwd=m.path), "Invalid argument")
    assert _read(m, f"{X540}/numa_node") == "1\n"


def test_store_without_newline_and_with_hex(mount_preset):
    m = mount_preset("seed-vtd")
    _ok(sh(f"printf 1 > {X540}/broken_parity_status", cwd=m.path))
    assert _read(m, f"{X540}/broken_parity_status") == "1\n"
    _ok(sh(f"printf '0x0\\n' > {X540}/broken_parity_status", cwd=m.path))
    assert _read(m, f"{X540}/broken_parity_status") == "0\n"


def test_a_store_on_one_device_leaves_its_sibling_alone(mount_preset):
    m = mount_preset("seed-vtd")
    _ok(sh(f"echo 1 > {X540}/broken_parity_status", cwd=m.path))
    assert _read(m, "sys/bus/pci/devices/0000:03:00.1/broken_parity_status") == "0\n"


def test_driver_override_set_and_clear(mount_preset):
    m = mount_preset("seed-vtd")
    path = f"{X540}/driver_override"
    assert _read(m, path) == "(null)\n"
    _ok(sh(f"echo vfio-pci > {path}", cwd=m.path))
    assert _read(m, path) == "vfio-pci\n"
    _ok(sh(f"echo > {path}", cwd=m.path))                       # an empty line clears it
    assert _read(m, path) == "(null)\n"
    _ok(sh(f"printf pci-stub > {path}", cwd=m.path))            # no newline needed
    assert _read(m, path) == "pci-stub\n"
    _ok(sh(f"printf '\\0' > {path}", cwd=m.path))               # strlen 0: clears it
    assert _read(m, path) == "(null)\n"
    _ok(_write_once(m, path, "vfio-pci\\nrest"))                # stored up to the first newline
    assert _read(m, path) == "vfio-pci\n"
    # writing does not unbind: the driver link stays
    assert _ok(run(["readlink", f"{X540}/driver"], cwd=m.path)) == "../../../../bus/pci/drivers/ixgbe\n"


def test_driver_override_too_long_is_einval(mount_preset):
    m = mount_preset("seed-vtd")
    path = f"{X540}/driver_override"
    _ok(sh(f"echo vfio-pci > {path}", cwd=m.path))
    _fails(sh(f"head -c 4095 /dev/zero | tr '\\0' a | dd of={path} bs=8192 iflag=fullblock status=none",
              cwd=m.path), "Invalid argument")
    assert _read(m, path) == "vfio-pci\n"
    # one byte shorter is accepted
    _ok(sh(f"head -c 4094 /dev/zero | tr '\\0' a | dd of={path} bs=8192 iflag=fullblock status=none", cwd=m.path))
    assert _read(m, path) == "a" * 4094 + "\n"


def test_uevent_write(mount_preset):
    m = mount_preset("seed-vtd")
    _ok(sh(f"echo change > {X540}/uevent", cwd=m.path))
    _fails(sh(f"echo bogus > {X540}/uevent", cwd=m.path), "Invalid argument")
    assert _read(m, f"{X540}/uevent").startswith("DRIVER=ixgbe\n")


def test_empty_write_and_append_are_accepted(mount_preset):
    m = mount_preset("seed-vtd")
    path = f"{X540}/broken_parity_status"
    _ok(sh(f"printf '' > {path}", cwd=m.path))       # open with O_TRUNC, no write(2): no store
    assert _read(m, path) == "0\n"
    _ok(sh(f"echo 1 >> {path}", cwd=m.path))         # O_APPEND: still one store of "1\n"
    assert _read(m, path) == "1\n"


def test_small_reads_at_offsets_slice_the_text(seed_mnt):
    r = run(["dd", f"if={X540}/vendor", "bs=1", "status=none"], cwd=seed_mnt.path)
    assert r.returncode == 0 and r.stdout == "0x8086\n"
    r = run(["dd", f"if={X540}/vendor", "bs=1", "skip=2", "count=4", "status=none"], cwd=seed_mnt.path)
    assert r.returncode == 0 and r.stdout == "8086"


# seq_file (fs/seq_file.c, seq_read_iter): "if request is to read from zero
# offset, reset iterator to first record" -- m->index = 0, m->count = 0 -- so a
# read at offset 0 on a file already read (after lseek(fd, 0, SEEK_SET), or
# pread(fd, n, 0)) runs show() again and sees the current value. This is how
# sysfs pollers re-read a file without reopening it.
REREAD = r'''
import os, sys
path = sys.argv[1]
fd = os.open(path, os.O_RDONLY)
first = os.read(fd, 4096)
with open(path, "w") as f:          # another open: one store of "1\n"
    f.write("1\n")
os.lseek(fd, 0, os.SEEK_SET)
again = os.read(fd, 4096)
print(first.decode().strip(), again.decode().strip(), os.pread(fd, 4096, 0).decode().strip())
'''


def test_read_at_offset_0_on_an_open_fd_sees_the_new_value(mount_preset):
    m = mount_preset("seed-vtd")
    r = run(["python3", "-c", REREAD, f"{X540}/broken_parity_status"], cwd=m.path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "0 1 1\n"
