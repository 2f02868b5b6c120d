"""The command line: presets, mounting, refusing a second mount, surviving a
killed daemon, SIGTERM, and one-line errors for bad topology files."""
from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

import pytest

from tests.conftest import (daemon_pid, force_unmount, is_mounted, make_mountpoint, mounted, mounts_at, pidfile,
                            run, vfakefs, wait_exit)
from vfakefs.fuse.state import sock_path

VENDOR = "sys/bus/pci/devices/0000:03:00.0/vendor"


def _ok(r):
    assert r.returncode == 0, f"{r.args}: rc={r.returncode} stderr={r.stderr!r}"
    return r.stdout


def test_presets_lists_the_built_in_topologies():
    out = _ok(vfakefs("presets"))
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "seed-vtd" in names and "qemu-ref" in names
    seed = next(line for line in out.splitlines() if line.startswith("seed-vtd"))
    assert "X540" in seed   # with its description


def test_mount_returns_when_ready_and_umount_removes_it(tmp_path):
    mnt = make_mountpoint(tmp_path)
    try:
        _ok(vfakefs("mount", "-t", "seed-vtd", mnt))
        # no waiting: `vfakefs run` finds the daemon's socket (it was bound by a task that
        # had not always run when the mount answered: a loaded run lost the race) ...
        assert stat.S_ISSOCK(os.stat(sock_path(pidfile(mnt))).st_mode)
        # ... and the mount answers as soon as the command has returned
        assert _ok(run(["cat", mnt / VENDOR])) == "0x8086\n"
        assert mounts_at(mnt) == ["fuse.vfakefs"]
        assert pidfile(mnt).is_file()
        _ok(vfakefs("umount", mnt))
        assert not is_mounted(mnt)
        assert _ok(run(["ls", "-A", mnt])) == ""
    finally:
        force_unmount(mnt)


def test_default_topology_is_seed_vtd(tmp_path):
    mnt = make_mountpoint(tmp_path)
    try:
        _ok(vfakefs("mount", mnt))
        assert _ok(run(["readlink", mnt / "sys/bus/pci/devices/0000:01:00.0/iommu_group"])) == \
            "../../../../kernel/iommu_groups/42\n"
    finally:
        force_unmount(mnt)


def test_mounting_over_a_live_mount_fails_clearly(mount_preset):
    m = mount_preset("seed-vtd")
    r = vfakefs("mount", "-t", "qemu-ref", m.path)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(m.path) in lines[0] and "already mounted" in lines[0]
    # the first mount is untouched and still the only one there
    assert mounts_at(m.path) == ["fuse.vfakefs"]
    assert _ok(run(["cat", m.path / VENDOR])) == "0x8086\n"
    assert _ok(run(["ls", m.pci / "devices"])).split()[-1] == "0000:0c:00.0"   # seed-vtd, not qemu-ref


def test_umount_of_something_not_mounted_fails(tmp_path):
    mnt = make_mountpoint(tmp_path)
    r = vfakefs("umount", mnt)
    assert r.returncode != 0 and "not mounted" in r.stderr and "Traceback" not in r.stderr


def test_mount_on_a_missing_directory_fails_clearly(tmp_path):
    r = vfakefs("mount", "-t", "seed-vtd", tmp_path / "nonexistent")
    assert r.returncode != 0
    assert "No such file or directory" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def _processes_with(arg: str) -> list[int]:
    """Processes with arg (a test's own temp path) in their command line."""
    found = []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            if arg.encode() in Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0"):
                found.append(int(p))
        except OSError:
            pass                    # gone meanwhile
    return found


def test_a_daemon_failing_before_ready_is_reported_by_mount(tmp_path):
    """The readiness handshake's other answer: a daemon that fails after the fork, before
    the mount answers (here: its log cannot be made, a directory stands where it goes),
    makes `vfakefs mount` print its error on one line and exit 1; nothing is mounted and
    no daemon is left. (`mount` returns at once on success: its own teardown is skipped.)"""
    mnt = make_mountpoint(tmp_path)
    log = pidfile(mnt).with_suffix(".log")
    log.mkdir(parents=True)
    try:
        r = vfakefs("mount", "-t", "seed-vtd", mnt)
        assert r.returncode == 1, r
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert lines[0].startswith("vfakefs: mount failed: ") and "Is a directory" in lines[0] \
            and str(log) in lines[0], lines
        assert not is_mounted(mnt) and not pidfile(mnt).exists()
        assert _processes_with(str(mnt)) == []                                   # no daemon left
    finally:
        log.rmdir()
        force_unmount(mnt)


def _kill_daemon(mnt: Path) -> None:
    # cache the root's attributes first, as any user of the mount would have
    _ok(run(["ls", mnt]))
    _ok(run(["cat", mnt / VENDOR]))
    pid = daemon_pid(mnt)
    os.kill(pid, signal.SIGKILL)
    wait_exit(pid)


def test_sigkilled_daemon_leaves_transport_endpoint_not_connected(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        _kill_daemon(mnt)
        r = run(["ls", mnt])
        assert r.returncode != 0 and "Transport endpoint is not connected" in r.stderr, r.stderr
        r = run(["cat", mnt / VENDOR])
        assert r.returncode != 0 and "Transport endpoint is not connected" in r.stderr, r.stderr
    assert not is_mounted(mnt)   # and `vfakefs umount` (the fixture's) cleans it up


def test_mounting_again_recovers_after_sigkill(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        _kill_daemon(mnt)
        r = vfakefs("mount", "-t", "seed-vtd", mnt)
        assert r.returncode == 0, r.stderr
        assert mounts_at(mnt) == ["fuse.vfakefs"]
        assert _ok(run(["cat", mnt / VENDOR])) == "0x8086\n"
    assert not is_mounted(mnt)


def test_sigterm_unmounts_cleanly(tmp_path):
    mnt = make_mountpoint(tmp_path)
    with mounted("seed-vtd", mnt):
        _ok(run(["cat", mnt / VENDOR]))
        pid = daemon_pid(mnt)
        os.kill(pid, signal.SIGTERM)
        wait_exit(pid)
        assert not is_mounted(mnt)
        assert _ok(run(["ls", "-A", mnt])) == ""   # the bare directory again, no ENOTCONN


# --- bad topology files ---------------------------------------------------------------------
HOST = '''
[[device]]
bdf = "0000:00:00.0"
kind = "host_bridge"
vendor = 0x8086
device = 0x3e30
class = 0x060000
'''
PORT = '''
[[device]]
bdf = "0000:00:1c.0"
kind = "root_port"
vendor = 0x8086
device = 0xa110
class = 0x060400
'''


def _endpoint(bdf: str, parent: str | None = "0000:00:1c.0", extra: str = "", vendor: str = "0x8086") -> str:
    return f'''
[[device]]
bdf = "{bdf}"
{f'parent = "{parent}"' if parent else ""}
kind = "endpoint"
vendor = {vendor}
device = 0x1528
class = 0x020000
{extra}
'''


BAD = {
    # name: (topology text, strings the one-line error must contain)
    "unknown-key": (HOST + PORT + _endpoint("0000:01:00.0", extra='colour = "red"'),
                    ["0000:01:00.0", "device #3", "unknown key", "colour"]),
    "unknown-top-level-key": ("machine = 1\n" + HOST, ["unknown key", "machine"]),
    "malformed-bdf": (HOST + _endpoint("0000:00:1g.0", parent=None),
                      ["device #2", "bdf", "malformed BDF", "0000:00:1g.0"]),
    "malformed-bdf-device-above-1f": (HOST + _endpoint("0000:00:20.0", parent=None),
                                      ["device #2", "bdf", "0000:00:20.0"]),
    "malformed-bdf-function-8": (HOST + _endpoint("0000:00:02.8", parent=None),
                                 ["device #2", "bdf", "0000:00:02.8"]),
    "duplicate-bdf": (HOST + PORT + PORT, ["device #3", "0000:00:1c.0", "bdf", "duplicate BDF"]),
    "parent-missing": (HOST + _endpoint("0000:01:00.0", parent="0000:00:1d.0"),
                       ["device #2", "0000:01:00.0", "parent", "0000:00:1d.0"]),
    "parent-not-given-off-bus-0": (HOST + PORT + _endpoint("0000:01:00.0", parent=None),
                                   ["device #3", "0000:01:00.0", "parent missing"]),
    "vendor-out-of-range": (HOST + PORT + _endpoint("0000:01:00.0", vendor="0x10000"),
                            ["device #3", "0000:01:00.0", "vendor", "out of range"]),
    "device-id-out-of-range": (HOST.replace("0x3e30", "70000"),
                               ["device #1", "0000:00:00.0", "device", "out of range"]),
    "class-out-of-range": (HOST.replace("0x060000", "0x1000000"),
                           ["device #1", "0000:00:00.0", "class", "out of range"]),
    "negative-revision": (HOST + "revision = -1\n", ["device #1", "0000:00:00.0", "revision", "out of range"]),
    "unknown-kind": (HOST.replace('"host_bridge"', '"gizmo"'), ["device #1", "0000:00:00.0", "kind", "gizmo"]),
    "missing-vendor": (HOST.replace("vendor = 0x8086\n", ""), ["device #1", "0000:00:00.0", "vendor"]),
    "not-toml": ("[[device]\nbdf = 1\n", ["TOML"]),
    "cyclic-parents": (HOST + _endpoint("0000:02:00.0", parent="0000:03:00.0").replace('"endpoint"', '"root_port"')
                       + _endpoint("0000:03:00.0", parent="0000:02:00.0").replace('"endpoint"', '"root_port"'),
                       ["device #2", "0000:02:00.0", "parent", "cannot sit below 0000:03:00.0"]),
    "config-not-a-dump": (HOST + 'config = "/etc/passwd"\n',
                          ["device #1", "0000:00:00.0", "config", "/etc/passwd", "not a hexdump -C or lspci -xxx"]),
    "bars-not-a-list": (HOST + PORT + _endpoint("0000:01:00.0", extra="bars = 1"),
                        ["device #3", "0000:01:00.0", "bars", "not a list"]),
    "secondary-bus-past-ff": (HOST + PORT + "subordinate_bus = 256\n",
                              ["device #2", "0000:00:1c.0", "subordinate_bus", "out of range"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_topology_gives_one_line_error(tmp_path, case):
    text, wanted = BAD[case]
    topo = tmp_path / f"{case}.toml"
    topo.write_text(text)
    mnt = make_mountpoint(tmp_path)
    try:
        r = vfakefs("mount", "-t", topo, mnt)
        assert r.returncode != 0
        assert "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1, r.stderr
        assert lines[0].startswith("vfakefs: ")
        assert str(topo) in lines[0], lines[0]
        for w in wanted:
            assert w in lines[0], (w, lines[0])
        assert r.stdout == ""
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def _one_line_error(tmp_path, topo: Path, wanted: list[str]) -> None:
    mnt = make_mountpoint(tmp_path)
    try:
        r = vfakefs("mount", "-t", topo, mnt)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"vfakefs: {topo}: "), r.stderr
        for w in wanted:
            assert w in lines[0], (w, lines[0])
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def test_non_utf8_topology_gives_one_line_error(tmp_path):
    topo = tmp_path / "latin1.toml"
    topo.write_bytes(HOST.encode() + b'comment = "caf\xe9"\n')
    _one_line_error(tmp_path, topo, ["not UTF-8 text (byte 0xe9 at offset"])


def test_binary_config_dump_gives_one_line_error(tmp_path):
    (tmp_path / "blob").write_bytes(bytes(range(256)))
    topo = tmp_path / "binary-config.toml"
    topo.write_text(HOST + 'config = "blob"\n')
    _one_line_error(tmp_path, topo, ["device #1 (0000:00:00.0).config", "not a text hex dump (byte 0x80"])


def test_vfs_past_bus_ff_mount_and_the_write_is_enomem(tmp_path):
    """total_vfs 65535 at offset 128, stride 2: the port's bus range ends at ff, and
    `echo 65535 > sriov_numvfs` fails at once with ENOMEM and the kernel's line."""
    topo = tmp_path / "wide.toml"
    topo.write_text(HOST + PORT + _endpoint("0000:01:00.0", extra='driver = "ixgbe"\nsriov = { total_vfs = 65535, '
                                            'offset = 128, stride = 2, vf_device = 0x1515, vf_driver = "ixgbevf" }'))
    mnt = make_mountpoint(tmp_path)
    with mounted(str(topo), mnt):
        pf = mnt / "sys/bus/pci/devices/0000:01:00.0"
        assert _ok(run(["cat", mnt / "sys/bus/pci/devices/0000:00:1c.0/subordinate_bus_number"])) == "255\n"
        r = run(["bash", "-c", f"echo 65535 > {pf}/sriov_numvfs"])
        assert r.returncode != 0 and "Cannot allocate memory" in r.stderr, r.stderr
        assert _ok(run(["cat", pf / "sriov_numvfs"])) == "0\n"
        assert _ok(run(["ls", mnt / "sys/bus/pci/devices"])).split() == ["0000:00:00.0", "0000:00:1c.0", "0000:01:00.0"]
        assert "ixgbe 0000:01:00.0: can't enable 65535 VFs (bus 201 out of range of [bus 01-ff])" in \
            _ok(run(["cat", mnt / "sys/kernel/debug/vfakefs/dmesg"]))
        _ok(run(["sh", "-c", f"echo 2 > {pf}/sriov_numvfs && echo 0 > {pf}/sriov_numvfs"]))


def test_unknown_preset_name(tmp_path):
    mnt = make_mountpoint(tmp_path)
    try:
        r = vfakefs("mount", "-t", "no-such-preset", mnt)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "no-such-preset" in lines[0] and "preset" in lines[0]
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def test_good_topology_file_mounts(tmp_path):
    topo = tmp_path / "small.toml"
    topo.write_text(HOST + PORT + _endpoint("0000:01:00.0", extra='driver = "ixgbe"'))
    mnt = make_mountpoint(tmp_path)
    with mounted(str(topo), mnt):
        assert _ok(run(["ls", mnt / "sys/bus/pci/devices"])).split() == \
            ["0000:00:00.0", "0000:00:1c.0", "0000:01:00.0"]
        assert _ok(run(["readlink", mnt / "sys/bus/pci/devices/0000:01:00.0"])) == \
            "../../../devices/pci0000:00/0000:00:1c.0/0000:01:00.0\n"
