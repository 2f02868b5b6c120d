"""The capture parser and the replay's rewriting, on the real captures; no mount."""

from __future__ import annotations

import subprocess
import sys

import pytest

from . import capture, replay

REF = capture.REFERENCE_DIR
ALL_CAPTURES = sorted(REF.glob("capture-*.txt"))

STOCK_SECTIONS = [
    "system",
    "lspci",
    "sysfs bus/pci layout",
    "device dump: 0000:02:00.0",
    "device dump: 0000:01:00.0",
    "IOMMU",
    "IOMMU debugfs",
    "class/net, class/nvme, /dev",
    "SR-IOV on PF 0000:01:00.0",
    "device dump: 0000:01:00.1",
    "full dmesg",
]


@pytest.fixture(scope="module")
def stock() -> capture.Capture:
    return capture.parse(capture.DEFAULT_CAPTURE)


def test_sections(stock):
    assert stock.names == STOCK_SECTIONS


@pytest.mark.parametrize("path", ALL_CAPTURES, ids=lambda p: p.name)
def test_every_line_understood(path):
    cap = capture.parse(path)
    assert cap.names == STOCK_SECTIONS
    unparsed = [(i.lineno, i.display) for s in cap.sections for i in s.items
                if i.kind == "unparsed"]
    assert unparsed == []


def test_lspci_nn(stock):
    items = [i for i in stock.section("lspci").items if i.display == "lspci -nn"]
    assert len(items) == 1
    it = items[0]
    assert it.kind == "command" and it.rc == 0 and it.lineno == 46
    assert len(it.expected) == 15
    assert it.expected[0].startswith("00:00.0 Host bridge [0600]: Intel Corporation")
    assert it.expected[-1].startswith("06:00.0 Non-Volatile memory controller [0108]")


def test_lspci_vvv_keeps_its_trailing_blank_line(stock):
    it = next(i for i in stock.section("lspci").items if i.display == "lspci -vvv")
    assert it.expected[-1] == "" and it.rc == 0


def test_generated_blocks(stock):
    dump = stock.section("device dump: 0000:02:00.0").items
    by_display = {i.display: i for i in dump}
    cls = by_display["== class (-r--r--r--):"]
    assert cls.kind == "attr" and cls.expected == ["== class (-r--r--r--):", "0x020000"]
    assert cls.rc == 0 and "/sys/bus/pci/devices/0000:02:00.0/class" in cls.script
    remove = by_display["== remove (--w--w----): not readable (write-only)"]
    assert remove.rc == 1 and remove.expected[1] == (
        "cat: '/sys/bus/pci/devices/0000:02:00.0/remove': Permission denied")
    link = by_display["LINK lrwxrwxrwx driver -> ../../../../bus/pci/drivers/e1000e"]
    assert link.kind == "link"
    stat = by_display["-rw------- 131072 /sys/bus/pci/devices/0000:02:00.0/resource0"]
    assert stat.kind == "stat"
    power = by_display["== power/runtime_active_time (-r--r--r--): 32828|"]
    assert power.kind == "attr-line" and power.volatile
    assert "/sys/bus/pci/devices/0000:02:00.0/power/runtime_active_time" in power.script
    rl = by_display["readlink /sys/bus/pci/devices/0000:02:00.0/iommu_group"]
    assert rl.kind == "readlink" and rl.rc is None
    assert rl.expected == ["../../../../kernel/iommu_groups/7",
                           "  (readlink -f: /sys/kernel/iommu_groups/7)"]
    assert by_display["(no physfn link)"].kind == "no-link"
    raws = [i for i in dump if i.kind == "raw-read"]
    assert [i.script.split()[:2] for i in raws] == [
        ["sysfsio", "rawread"], ["sysfsio", "asuser"], ["sysfsio", "rawread"]]
    assert raws[1].expected[-1] == "total=64" and raws[1].rc is None
    assert raws[2].rc == 1 and raws[2].script.endswith("resource0 16")


def test_every_device_table(stock):
    (it,) = [i for i in stock.section("sysfs bus/pci layout").items if i.kind == "every-device"]
    assert len(it.expected) == 15
    assert it.expected[9] == "0000:02:00.0 0x8086 0x10d3 0x020000 0x8086 0x0000 0x00 driver=e1000e group=7"


def test_bridge_links_resolve_against_the_bridge(stock):
    items = stock.section("device dump: 0000:01:00.0").items
    it = next(i for i in items if i.display == "LINK driver -> ../../../bus/pci/drivers/pcieport")
    assert "/sys/bus/pci/devices/0000:00:02.0/driver" in it.script
    bus = next(i for i in items if i.kind == "bus-numbers")
    assert "/sys/bus/pci/devices/0000:00:02.0/secondary_bus_number" in bus.script


def test_writes_and_state(stock):
    sriov = stock.section("SR-IOV on PF 0000:01:00.0").items
    writes = [i for i in sriov if i.kind == "write"]
    assert [w.display for w in writes] == [
        "echo '0' > /sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe",
        "echo '2' > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs"]
    assert writes[1].shell == "bash" and len(writes[1].kmsg) == 4
    assert not writes[0].after_write and writes[1].after_write
    first = sriov.index(writes[0])
    assert all(not i.after_write for i in sriov[:first + 1])
    assert all(i.after_write for i in sriov[first + 1:])
    vf = stock.section("device dump: 0000:01:00.1").items
    busy = [i for i in vf if i.kind == "write" and "(busybox sh)" not in i.display
            and i.shell == "busybox sh"]
    assert busy and busy[0].script.startswith("busybox sh -c ")
    sysfsio_w = next(i for i in vf if i.display.startswith("sysfsio write "))
    assert sysfsio_w.kind == "write" and sysfsio_w.expected[1].startswith("write(3, ")


def test_default_selection(stock):
    names = replay.select(stock)
    assert "system" not in names and "IOMMU debugfs" not in names and "full dmesg" not in names
    counts = {n: sum(1 for i in stock.section(n).items
                     if i.readonly and not i.after_write and i.replayable) for n in names}
    assert counts["device dump: 0000:01:00.1"] == 0
    assert all(v > 0 for n, v in counts.items() if n != "device dump: 0000:01:00.1")


def test_rewrite():
    m = "/tmp/x/mnt"
    assert replay.rewrite("cat /sys/bus/pci/x", m) == "cat /tmp/x/mnt/sys/bus/pci/x"
    assert replay.rewrite("ls -la /dev/vfio/", m) == "ls -la /tmp/x/mnt/dev/vfio/"
    assert replay.rewrite("lspci -nn -s 0000:01:00.0", m) == (
        "lspci -A linux-sysfs -O sysfs.path=/tmp/x/mnt/sys/bus/pci -O hwdb.disable=1 "
        f"-i {capture.PCI_IDS} -nn -s 0000:01:00.0")
    assert replay.rewrite("ls /sys/bus/pci/devices/", m) == "ls -C /tmp/x/mnt/sys/bus/pci/devices/"
    assert replay.rewrite("ls -la /sys/a/ | grep -e virtfn", m) == (
        "ls -la /tmp/x/mnt/sys/a/ | grep -e virtfn")
    assert replay.rewrite("stat -c '%A' '/sys/a:b'", m) == "stat -c '%A' '/tmp/x/mnt/sys/a:b'"
    assert replay.rewrite("echo x 2>/dev/null", m) == "echo x 2>/dev/null"
    with pytest.raises(ValueError):
        replay.rewrite("cat /sys/a", "/tmp/with space")


def test_normalise():
    item = capture.Item("s", 1, "command", "ls -la", "", [])
    assert replay.normalise(
        ["drwxr-xr-x  5 root root    0 Nov 24 19:04 .",
         "crw-------  1 root root  10, 125 Jan  5  2025 cpu_dma_latency",
         "[    1.736599] pci 0000:00:00.0: Adding to iommu group 0",
         "\tKernel modules: e1000"], item) == [
        "drwxr-xr-x  5 root root    0 <date> .",
        "crw-------  1 root root  10, 125 <date> cpu_dma_latency",
        "[<time>] pci 0000:00:00.0: Adding to iommu group 0"]
    vol = capture.Item("s", 1, "attr-line", "", "", [], volatile=True)
    assert replay.normalise(["== power/runtime_active_time (-r--r--r--): 32828|"], vol) == [
        "== power/runtime_active_time (-r--r--r--): <ms>|"]


def _sysfsio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(replay.SYSFSIO), *args],
                          capture_output=True, text=True, timeout=30)


def test_sysfsio_rawread_and_write(tmp_path):
    f = tmp_path / "config"
    f.write_bytes(bytes(64))
    p = _sysfsio("rawread", str(f), "4096")
    lines = p.stdout.splitlines()
    # a short read is counted but not printed, as the C helper did
    assert lines[1:] == ["read(3, buf, 4096) = 0", "total=64"] and p.returncode == 0
    assert lines[0] == f'open("{f}", O_RDONLY) = 3'
    p = _sysfsio("write", str(f), "3\\n")
    assert p.stdout.splitlines()[1:] == ['write(3, "3\\n", 2) = 2', "close(3) = 0"]
    assert f.read_bytes()[:3] == b"3\n\0"  # O_WRONLY, no O_TRUNC: as on sysfs
    p = _sysfsio("rawread", str(tmp_path / "missing"), "16")
    assert p.stdout.splitlines()[0].endswith("= -1 ENOENT (No such file or directory)")
    assert p.returncode == 1


def test_replay_on_a_plain_tree(tmp_path):
    """The replay's mechanics against a hand-made tree (not a mount)."""
    root = tmp_path / "mnt"
    (root / "sys/bus/pci/slots/0").mkdir(parents=True)
    (root / "sys/bus/pci/drivers_autoprobe").write_text("1\n")
    (root / "sys/bus/pci/slots/0/adapter").write_text("1\n")
    rep = replay.replay(root, capture.DEFAULT_CAPTURE, ["sysfs bus/pci layout"])
    s = rep.section("sysfs bus/pci layout")
    assert s.total == 47
    assert s.find("cat /sys/bus/pci/drivers_autoprobe").matched
    assert s.find("== /sys/bus/pci/slots/0/adapter: 1").matched
    miss = s.find("cat /sys/bus/pci/resource_alignment")
    assert not miss.matched
    assert miss.actual == ["cat: /sys/bus/pci/resource_alignment: No such file or directory",
                           "[rc=1]"]
    assert "sysfs bus/pci layout" in rep.format()


def test_write_items_run_as_the_capture_ran_them(tmp_path):
    """bash -c with nothing before the command (bash's `line 1`), busybox sh
    -c without bash in between, and sysfsio through the exported function."""
    root = tmp_path / "mnt"
    (root / "sys/d").mkdir(parents=True)
    (root / "sys/f").write_text("0\n")
    w = capture.Item("s", 1, "write", "echo '1' > /sys/d", "echo '1' > /sys/d",
                     ["bash: line 1: /sys/d: Is a directory"], rc=1, shell="bash")
    r = replay.run_item(w, str(root))
    assert r.matched, r.diff()
    bb = capture.Item("s", 1, "write", "echo '1' > /sys/f",
                      "busybox sh -c 'echo '\\''1'\\'' > /sys/f'", [], rc=0,
                      shell="busybox sh")
    argv = replay.argv_for(bb, replay.rewrite(bb.script, str(root)))
    assert argv == ["busybox", "sh", "-c", f"echo '1' > {root}/sys/f"]
    s = capture.Item("s", 1, "write", "", "sysfsio write /sys/f '2\\n'",
                     ['open("/sys/f", O_WRONLY) = 3', 'write(3, "2\\n", 2) = 2',
                      "close(3) = 0"], rc=0, shell="bash")
    r = replay.run_item(s, str(root))
    assert r.matched, r.diff()
    assert (root / "sys/f").read_text() == "2\n"


def test_kmsg_compared_only_with_dev_kmsg(tmp_path):
    root = tmp_path / "mnt"
    (root / "sys").mkdir(parents=True)
    item = capture.Item("s", 1, "write", "", "true", [], rc=0, shell="bash",
                        kmsg=["[   66.762225] pci 0000:01:00.1: Adding to iommu group 11"])
    r = replay.run_item(item, str(root))
    assert r.matched and r.kmsg == "not compared"
    (root / "dev").mkdir()
    kmsg = root / "dev/kmsg"
    kmsg.write_text("6,1,1000,-;old record\n")
    reader = replay.KmsgReader(str(kmsg))
    try:
        item.script = ("printf '6,2,66762225,-;pci 0000:01:00.1: Adding to iommu group 11\\n'"
                       " >> /dev/kmsg")
        r = replay.run_item(item, str(root), kmsg=reader)
        assert r.kmsg == "compared" and r.matched, r.diff()
        assert r.actual[-1] == "[kmsg] [<time>] pci 0000:01:00.1: Adding to iommu group 11"
        r = replay.run_item(item, str(root), kmsg=reader)  # the same again
        assert r.matched  # each item sees only the records written while it ran
        item.script = "true"
        r = replay.run_item(item, str(root), kmsg=reader)
        assert not r.matched and r.kmsg == "compared"
    finally:
        reader.close()
