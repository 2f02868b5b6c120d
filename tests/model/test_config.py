from pathlib import Path

from hypothesis import given, strategies as st

from vfakefs.model.pci import config as C
from vfakefs.model import topology

PRESETS = Path(__file__).resolve().parents[2] / "vfakefs" / "presets"


def test_hexdump_with_repeat_marker():
    cfg = C.load_dump(PRESETS / "qemu-ref" / "0000:02:00.0.hex", 4096)
    assert cfg.r16(0) == 0x8086 and cfg.r16(2) == 0x10D3
    assert cfg.r16(0x140) == 0x0003  # Device Serial Number extended capability
    # "*" repeats the line above up to the next offset
    assert cfg.read(0x50, 16) == bytes(16) and cfg.read(0x90, 16) == bytes(16)


def test_lspci_xxxx_format_and_capability_walk():
    cfg = C.load_dump(PRESETS / "qemu-ref" / "0000:01:00.0.hex", 4096)
    assert [cid for cid, _ in cfg.caps()] == [C.CAP_MSIX, C.CAP_PCIE, C.CAP_PM]  # 0x40, 0x80, 0x60 as lspci shows
    assert dict((cid, pos) for cid, pos in cfg.ext_caps()) == {C.EXT_ARI: 0x100, C.EXT_SRIOV: 0x120}
    pos = cfg.find_ext_cap(C.EXT_SRIOV)
    assert cfg.r16(pos + C.SRIOV_TOTAL_VF) == 4


def test_generated_config_agrees_with_the_fields():
    m = topology.load("seed-vtd")
    pf = m.by_bdf[next(b for b in m.by_bdf if str(b) == "0000:03:00.0")]
    cfg = pf.config
    assert (cfg.r16(0), cfg.r16(2), cfg.r8(8)) == (0x8086, 0x1528, 0x01)
    assert cfg.r8(9) | cfg.r16(0x0A) << 8 == 0x020000
    assert cfg.r8(0x0E) == 0x80  # multifunction, type 0
    assert pf.sriov.total_vfs == 63 and (pf.sriov.offset, pf.sriov.stride, pf.sriov.vf_device) == (128, 2, 0x1515)
    assert pf.acs_ctrl is not None
    # BAR registers match the resource file
    assert cfg.r32(0x10) & ~0xF == pf.bars[0].start & 0xFFFFFFF0 and cfg.r32(0x14) == pf.bars[0].start >> 32
    conv = next(f for f in m.functions if str(f.bdf) == "0000:00:1f.4")
    assert conv.config.size == 256 and conv.pcie_cap is None


IDS = [C.EXT_AER, C.EXT_ACS, C.EXT_ARI, C.EXT_ATS, C.EXT_SRIOV, 0x1234]


@given(st.lists(st.tuples(st.integers(0, 0x3FF), st.sampled_from(IDS + [None]), st.integers(0, 0xF)), max_size=12),
       st.sampled_from(IDS), st.sampled_from([256, 4096]))
def test_find_ext_cap_is_the_first_the_walk_finds(chain, cap_id, size):
    """find_ext_cap walks the list itself (no generator): the same answer as ext_caps()'s
    first match, loops, all-ones headers (None) and short config spaces included."""
    cfg = C.ConfigSpace(4096)
    pos = 0x100
    for nxt, cid, ver in chain:
        nxt_off = (nxt * 4) & 0xFFC
        cfg.w32(pos, 0xFFFFFFFF if cid is None else cid | ver << 16 | nxt_off << 20)
        if nxt_off < 0x100:
            break
        pos = nxt_off
    cfg = C.ConfigSpace(size, bytes(cfg.bytes))
    assert cfg.find_ext_cap(cap_id) == next((p for c, p in cfg.ext_caps() if c == cap_id), None)


def test_find_ext_cap_stops_at_an_all_ones_header():
    """A header of all ones ends the walk (a device that is gone), though its next pointer
    would lead on to 0xffc."""
    cfg = C.ConfigSpace(4096)
    cfg.w32(0x100, 0xFFFFFFFF)
    cfg.w32(0xFFC, C.EXT_ATS | 1 << 16)
    assert cfg.find_ext_cap(C.EXT_ATS) is None and list(cfg.ext_caps()) == []
