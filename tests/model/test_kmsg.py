"""The kernel log's records: /dev/kmsg's format, levels and facilities, writes as
devkmsg_write parses them, the ring buffer, and the boot lines of the presets."""
from __future__ import annotations

import errno
import re
from pathlib import Path

import pytest

from vfakefs.model import boot, topology
from vfakefs.model.errors import SysfsError
from vfakefs.model.kmsg import (KERN_ERR, KERN_INFO, KERN_NOTICE, KERN_WARNING, LOG_USER, KernelLog,
                                PRINTKRB_RECORD_MAX, Record)
from tests.fidelity.capture import REFERENCE_DIR

REFERENCE = REFERENCE_DIR
KMSG_RE = re.compile(r"^(\d+),(\d+),(\d+),([-c]);(.*)\n$", re.S)
GREP = re.compile(r"iommu|dmar|DMAR-IR", re.I)


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_record_format_is_dev_kmsg():
    r = Record(KERN_WARNING, 42, 1_234_567, "ixgbe 0000:03:00.0: 4 VFs already enabled. Disable before enabling 8 VFs")
    assert r.kmsg() == "4,42,1234567,-;ixgbe 0000:03:00.0: 4 VFs already enabled. Disable before enabling 8 VFs\n"
    assert r.dmesg() == "[    1.234567] ixgbe 0000:03:00.0: 4 VFs already enabled. Disable before enabling 8 VFs\n"
    assert Record(KERN_ERR, 0, 0, "x", LOG_USER).kmsg() == "11,0,0,-;x\n"   # prio = facility << 3 | level


def test_non_printable_bytes_are_escaped():
    r = Record(KERN_INFO, 0, 5, "a\nb\\c\x7f\xe9")
    assert r.kmsg() == "6,0,5,-;a\\x0ab\\x5cc\\x7f\\xe9\n"
    assert r.kmsg_bytes().isascii()


def test_sequence_numbers_and_timestamps_increase():
    clock = Clock()
    log = KernelLog(clock)
    log.boot("one", at=0)
    log.boot("two")
    log.log("three")
    log.log("four")   # same clock: still one microsecond later
    assert [r.seq for r in log.records] == [0, 1, 2, 3]
    us = [r.usec for r in log.records]
    assert us == sorted(us) and len(set(us)) == 4
    for r in log.records:
        m = KMSG_RE.match(r.kmsg())
        assert m and int(m[2]) == r.seq and int(m[3]) == r.usec


@pytest.mark.parametrize("data, prio, text", [
    (b"hello\n", 1 << 3 | KERN_WARNING, "hello"),         # no prefix: LOG_USER, default loglevel
    (b"<3>disk on fire\n", 1 << 3 | KERN_ERR, "disk on fire"),  # <N>: level, facility stays user
    (b"<14>user info", 14, "user info"),                  # facility 1, level 6
    (b"<30>daemon", 30, "daemon"),                        # facility 3 (daemon), level 6
    (b"<>empty", 1 << 3, "empty"),                        # simple_strtoul("") is 0
    (b"<3 x", 1 << 3 | KERN_WARNING, "<3 x"),             # no '>': not a prefix
    (b"two\nlines\n", 12, "two\nlines"),                  # one record; only the last newline goes
])
def test_user_write(data, prio, text):
    log = KernelLog(Clock())
    assert log.user_write(data) == len(data)
    r = log.records[-1]
    assert (r.prio, r.text) == (prio, text)


def test_user_write_too_long_is_einval():
    log = KernelLog(Clock())
    with pytest.raises(SysfsError) as e:
        log.user_write(b"x" * (PRINTKRB_RECORD_MAX + 1))
    assert e.value.errno == errno.EINVAL and not log.records
    log.user_write(b"x" * PRINTKRB_RECORD_MAX)


def test_listeners_see_each_new_record():
    log = KernelLog(Clock())
    seen = []
    stop = log.subscribe(seen.append)
    log.log("a")
    log.user_write(b"<4>b")
    stop()
    log.log("c")
    assert [r.text for r in seen] == ["a", "b"]


def test_stream_offsets():
    log = KernelLog(Clock())
    for t in ("a", "bb", "ccc"):
        log.log(t)
    lens = [len(r.kmsg_bytes()) for r in log.records]
    assert log.stream_end == sum(lens)
    assert log.seq_at(0) == 0 and log.seq_at(lens[0]) == 1 and log.seq_at(lens[0] + 1) == 2
    assert log.seq_at(log.stream_end) == log.next_seq == 3


def test_ring_buffer_drops_the_oldest():
    log = KernelLog(Clock(), capacity=1000)
    for i in range(100):
        log.log("%03d" % i + "x" * 46)   # 50 bytes each
    assert log.next_seq == 100
    assert 0 < log.first_seq < 100 and log.records[0].seq == log.first_seq
    assert sum(len(r.text) for r in log.records) <= 1000
    assert log.get(log.first_seq - 1) is None and log.get(99).text.startswith("099")
    assert log.seq_at(0) == log.first_seq   # offsets before the buffer: its first record


# --- boot lines ----------------------------------------------------------------------------
def reference_lines(name: str) -> list[str]:
    out = []
    for line in (REFERENCE / name).read_text().splitlines():
        text = re.sub(r"^\[\s*\d+\.\d+\] ", "", line)
        if GREP.search(text):
            out.append(text)
    return out


def test_qemu_ref_boot_matches_the_reference_grep():
    """`dmesg | grep -i -e iommu -e dmar -e DMAR-IR` of the reference boot, in order
    (what a boot prints after the VT-d banner comes from late_boot_log())."""
    m = topology.load("qemu-ref")
    if not any(r.text.startswith("AMD-Vi:") for r in m.kmsg.records):
        boot.late_boot_log(m)
    mine = [r.text for r in m.kmsg.records if GREP.search(r.text)]
    assert mine == reference_lines("boot-stock-intel_iommu_on.log")
    assert "iommu: Default domain type: Translated " in mine   # 6.1's trailing spaces
    usec = [r.usec for r in m.kmsg.records]
    assert all(a < b for a, b in zip(usec, usec[1:]))


def test_qemu_ref_levels():
    m = topology.load("qemu-ref")
    level = {r.text: r.level for r in m.kmsg.records}
    assert level["DMAR: IOMMU enabled"] == KERN_INFO
    assert level["DMAR: VT-d Scalable Mode not enabled, no PASID allocation"] == KERN_WARNING
    assert level["Kernel command line: " + m.cmdline] == KERN_NOTICE
    assert all(r.facility == 0 for r in m.kmsg.records)


def test_seed_vtd_boot_is_a_6_12_x2apic_host():
    m = topology.load("seed-vtd")
    lines = [r.text for r in m.kmsg.records]
    assert "DMAR: IOMMU enabled" in lines                      # intel_iommu=on is on its command line
    assert "DMAR-IR: Enabled IRQ remapping in x2apic mode" in lines
    assert lines.index("DMAR-IR: Queued invalidation will be enabled to support x2apic and Intr-remapping.") \
        < lines.index("DMAR-IR: Enabled IRQ remapping in x2apic mode")
    assert "iommu: Default domain type: Translated" in lines   # no trailing space after 6.5
    assert not any("batching disallowed" in t or "Scalable Mode" in t for t in lines)   # no caching mode
    assert lines.index("DMAR: dmar0: Using Queued invalidation") < lines.index(
        "DMAR: Intel(R) Virtualization Technology for Directed I/O")


def test_no_iommu_enabled_line_without_intel_iommu_on(tmp_path):
    """KERNEL-FACTS §8: `DMAR: IOMMU enabled` only with intel_iommu=on; =off prints disabled."""
    src = (Path(topology.__file__).parent.parent / "presets/seed-vtd.toml").read_text()
    for cmdline, want, iommu in (("quiet", None, True), ("quiet intel_iommu=off", "DMAR: IOMMU disabled", False)):
        t = tmp_path / f"t{len(cmdline)}.toml"
        t.write_text(re.sub(r'(?m)^cmdline = ".*"$', f'cmdline = "{cmdline}"', src))
        m = topology.load(str(t))
        lines = [r.text for r in m.kmsg.records]
        assert "DMAR: IOMMU enabled" not in lines
        if want:
            assert want in lines
        assert ("DMAR: dmar0: Using Queued invalidation" in lines) == iommu == m.iommu_on
        # interrupt remapping parses the DMAR table either way
        assert "DMAR-IR: Enabled IRQ remapping in x2apic mode" in lines


def test_qemu_ref_with_iommu_pt_matches_its_reference_boot():
    from importlib import resources
    base = Path(str(resources.files("vfakefs.presets")))
    text = (base / "qemu-ref.toml").read_text()
    text = re.sub(r'(?m)^cmdline = "(.*)"$', r'cmdline = "\1 iommu=pt"', text)
    m = topology.from_text(text, "qemu-ref-pt", base)
    if not any(r.text.startswith("AMD-Vi:") for r in m.kmsg.records):
        boot.late_boot_log(m)
    mine = [r.text for r in m.kmsg.records if GREP.search(r.text)]
    assert mine == reference_lines("boot-stock-intel_iommu_on-pt.log")
    assert "iommu: Default domain type: Passthrough (set via kernel command line)" in mine


@pytest.mark.parametrize("text", ["pci 0000:03:10.0: Adding to iommu group 5", "", "back\\slash", "tab\there",
                                  "caf\xe9", "nul\x00", "del\x7f", "\u20ac uro"])
def test_a_records_length_in_the_stream_is_that_of_its_kmsg_bytes(text):
    """The stream offsets (seq_at) add up each record's /dev/kmsg bytes, counted without
    making them where nothing needs escaping."""
    from vfakefs.model.kmsg import Record
    r = Record(6, 12345, 6789012, text)
    assert r.kmsg_len() == len(r.kmsg_bytes())


def test_stream_offsets_count_each_records_escaped_bytes():
    """The log counts each record's /dev/kmsg length as it appends it (not through the
    Record): escaped texts, user writes with a facility, and ten-digit sequence numbers
    and timestamps move the offsets by exactly their bytes."""
    log = KernelLog(Clock())
    log.next_seq = 999_999_998                    # sequence numbers that grow a digit on the way
    log.boot("boot one", at=99_800)               # and timestamps: 99800, 100117, 100434 ...
    log.boot("boot two")
    log.boot("boot three", at=9_999_999)
    log.boot("boot four")
    for t in ("tab\there", "caf\xe9", "back\\slash", "\u20ac uro", "plain"):
        log.log(t)
    log.user_write(b"<14>nul\x00 and del\x7f\n")
    lens = [len(r.kmsg_bytes()) for r in log.records]
    assert log.stream_end == sum(lens)
    starts = [sum(lens[:i]) for i in range(len(lens))]
    assert [log.seq_at(s) for s in starts] == [r.seq for r in log.records]
    assert [log.seq_at(s + 1) for s in starts] == [r.seq + 1 for r in log.records]


def test_stream_offsets_counted_when_looked_at_survive_overwrites_and_interleaving():
    """Offsets are counted when stream_end or seq_at asks, not at each printk: records the
    ring buffer overwrote before anyone looked still count in the stream, and looks between
    appends see the same offsets as one look at the end."""
    log = KernelLog(Clock(), capacity=600)
    seen = []
    log.subscribe(seen.append)                    # every record since boot, dropped or not
    for i in range(200):
        log.log(f"line {i} " + ("caf\xe9" if i % 7 == 0 else "x" * (i % 13)))
        if i in (3, 4, 150):
            assert log.stream_end == sum(len(r.kmsg_bytes()) for r in seen)
    assert log.first_seq > 0                      # the buffer did overwrite
    lens = [len(r.kmsg_bytes()) for r in seen]
    assert log.stream_end == sum(lens)
    first = log.first_seq
    starts = [sum(lens[:seq]) for seq in range(first, log.next_seq)]
    assert [log.seq_at(off) for off in starts] == list(range(first, log.next_seq))
    assert log.seq_at(starts[0] - 1) == first and log.seq_at(log.stream_end) == log.next_seq
