"""`vfakefs draw`: the PCI tree of a mounted machine as Graphviz DOT, read from the mount's
files only (MNT/sys/bus/pci/devices, MNT/dev/vfio), so it draws any mount, also one another
process made, and a real /sys-like tree. IOMMU groups are clusters (cluster_group_N) inside
NUMA node clusters (cluster_numa_N), bridges sit above their children, VFs hang under their PF,
groups bound to vfio-pci (/dev/vfio/N exists) are filled, and each port shows its ACS control.

The text is stable: the same mount gives the same DOT, byte for byte (everything is sorted)."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FORMATS = ("svg", "png", "dot")
PCI_EXT_CAP_ID_ACS = 0x0D           # PCIe base spec 7.7.8; include/uapi/linux/pci_regs.h
# ACS Control Register bits (pci_regs.h PCI_ACS_*), lspci's short names
ACS_BITS = (("SV", 0x01), ("TB", 0x02), ("RR", 0x04), ("CR", 0x08), ("UF", 0x10), ("EC", 0x20),
            ("DT", 0x40))
VFIO_FILL = "#ffd7d7"               # a group bound to vfio-pci: its /dev/vfio/N exists
GROUP_FILL = "#eef3ff"


class DrawError(Exception):
    """What the CLI prints on one line (a missing mount, no PCI tree, dot failing)."""


@dataclass
class Function:
    bdf: str
    parent: str                      # the bridge above it (a bdf), or the root bus (pci0000:00)
    cls: int
    vendor: str = ""
    device: str = ""
    driver: str | None = None
    group: str | None = None
    numa: int = -1
    physfn: str | None = None        # a VF's PF
    netdevs: list[str] = field(default_factory=list)
    acs: str | None = None           # None: no ACS capability; else the enabled control bits
    sriov: str | None = None         # a PF's "numvfs/totalvfs"

    @property
    def bridge(self) -> bool:
        return self.cls >> 8 == 0x0604


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def _acs(config: bytes) -> str | None:
    """The ACS Control bits of the extended capability list (walked from 0x100 as
    pci_find_ext_capability does), or None without the capability or extended space."""
    pos, seen = 0x100, set()
    while 0x100 <= pos <= len(config) - 8 and pos not in seen:
        seen.add(pos)
        header = int.from_bytes(config[pos:pos + 4], "little")
        if header in (0, 0xFFFFFFFF):
            return None
        if header & 0xFFFF == PCI_EXT_CAP_ID_ACS:
            ctrl = int.from_bytes(config[pos + 6:pos + 8], "little")
            on = [name for name, bit in ACS_BITS if ctrl & bit]
            return " ".join(on) if on else "off"
        pos = (header >> 20) & 0xFFC
    return None


def scan(mnt: Path) -> tuple[dict[str, Function], set[str]]:
    """The functions under MNT/sys/bus/pci/devices and the groups with a /dev/vfio/N node."""
    devices = mnt / "sys/bus/pci/devices"
    if not devices.is_dir():
        raise DrawError(f"{mnt}: no PCI tree ({devices} is missing; is it mounted?)")
    funcs: dict[str, Function] = {}
    for bdf in sorted(os.listdir(devices)):
        d = devices / bdf
        parent = Path(os.readlink(d)).parent.name        # ../../../devices/pci0000:00/<bridge>/<bdf>
        cls = int(_read(d / "class") or "0", 16)
        f = Function(bdf, parent, cls, _read(d / "vendor") or "", _read(d / "device") or "")
        if os.path.islink(d / "driver"):
            f.driver = Path(os.readlink(d / "driver")).name
        if os.path.islink(d / "iommu_group"):
            f.group = Path(os.readlink(d / "iommu_group")).name
        try:
            f.numa = int(_read(d / "numa_node") or "-1")
        except ValueError:
            pass
        total = _read(d / "sriov_totalvfs")
        if total is not None:
            f.sriov = f"{_read(d / 'sriov_numvfs') or '0'}/{total}"
        if os.path.islink(d / "physfn"):
            f.physfn = Path(os.readlink(d / "physfn")).name
        try:
            f.netdevs = sorted(os.listdir(d / "net"))
        except OSError:
            pass
        try:
            with open(d / "config", "rb") as c:
                f.acs = _acs(c.read(4096))
        except OSError:
            pass
        funcs[bdf] = f
    vfio = mnt / "dev/vfio"
    claimable = {n for n in (os.listdir(vfio) if vfio.is_dir() else []) if n.isdigit()}
    return funcs, claimable


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _group_key(g: str) -> tuple[int, str]:
    return (int(g), g) if g.isdigit() else (1 << 30, g)


def _label(f: Function) -> str:
    lines = [f.bdf, f"{f.vendor.removeprefix('0x')}:{f.device.removeprefix('0x')} [{f.cls >> 8:04x}]",
             f.driver or "(no driver)"]
    if f.netdevs:
        lines.append(" ".join(f.netdevs))
    if f.sriov is not None:
        lines.append(f"SR-IOV: {f.sriov} VFs")
    if f.acs is not None:
        lines.append(f"ACS: {f.acs}")
    elif f.bridge:
        lines.append("ACS: none")
    return "\\n".join(_q(x)[1:-1] for x in lines)


def _node(f: Function, indent: str) -> str:
    attrs = ['label="' + _label(f) + '"']
    if f.bridge:
        attrs.append("shape=box, style=rounded")
    elif f.physfn:
        attrs.append("shape=ellipse, style=dashed")
    else:
        attrs.append("shape=box")
    if f.driver == "vfio-pci":
        attrs.append('color="#c00000", penwidth=2')
    return f"{indent}{_q(f.bdf)} [{', '.join(attrs)}];"


def dot(mnt: Path | str) -> str:
    """The DOT text of the machine mounted at mnt."""
    funcs, claimable = scan(Path(mnt))
    groups: dict[str, list[Function]] = {}
    loose: list[Function] = []
    for f in funcs.values():
        (groups.setdefault(f.group, []) if f.group is not None else loose).append(f)
    # a group sits in its NUMA node's cluster when all its functions share the node
    by_numa: dict[int | None, list[tuple[str | None, list[Function]]]] = {}
    for g in sorted(groups, key=_group_key):
        nodes = {f.numa for f in groups[g]}
        numa = nodes.pop() if len(nodes) == 1 else None
        by_numa.setdefault(numa if numa is not None and numa >= 0 else None, []).append((g, groups[g]))
    for f in loose:
        by_numa.setdefault(f.numa if f.numa >= 0 else None, []).append((None, [f]))

    out = ["digraph vfakefs {", "  rankdir=TB;", "  compound=true;", '  graph [fontname="sans-serif"];',
           '  node [fontname="monospace", fontsize=10];', '  edge [arrowsize=0.6];']
    roots = sorted({f.parent for f in funcs.values() if f.parent not in funcs})
    for r in roots:
        out.append(f"  {_q(r)} [label={_q(r)}, shape=house];")

    def emit(members: list[tuple[str | None, list[Function]]], indent: str) -> None:
        for g, fs in members:
            if g is None:
                out.extend(_node(f, indent) for f in sorted(fs, key=lambda f: f.bdf))
                continue
            fill = VFIO_FILL if g in claimable else GROUP_FILL
            tag = " (vfio)" if g in claimable else ""
            out.append(f"{indent}subgraph cluster_group_{g} {{")
            out.append(f"{indent}  label={_q(f'IOMMU group {g}{tag}')}; style=filled; fillcolor={_q(fill)};")
            out.extend(_node(f, indent + "  ") for f in sorted(fs, key=lambda f: f.bdf))
            out.append(f"{indent}}}")

    for numa in sorted(by_numa, key=lambda n: (n is None, n if n is not None else 0)):
        if numa is None:
            emit(by_numa[numa], "  ")
            continue
        out.append(f"  subgraph cluster_numa_{numa} {{")
        out.append(f'    label={_q(f"NUMA node {numa}")}; style=dashed;')
        emit(by_numa[numa], "    ")
        out.append("  }")
    for f in sorted(funcs.values(), key=lambda f: f.bdf):
        if f.physfn is not None and f.physfn in funcs:     # a VF hangs under its PF
            out.append(f"  {_q(f.physfn)} -> {_q(f.bdf)} [style=dashed, label=\"VF\"];")
        else:
            out.append(f"  {_q(f.parent)} -> {_q(f.bdf)};")
    out.append("}")
    return "\n".join(out) + "\n"


def render(mnt: Path | str, output: Path | str) -> None:
    """Write the picture to output; its extension picks the format (.dot: the text itself)."""
    output = Path(output)
    fmt = output.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ValueError(f"{output}: unknown format (use .svg, .png or .dot)")
    text = dot(mnt)
    if fmt == "dot":
        output.write_text(text)
        return
    exe = shutil.which("dot")
    if exe is None:
        raise DrawError("Graphviz's `dot` is not installed (apt-get install graphviz), or write .dot")
    r = subprocess.run([exe, f"-T{fmt}", "-o", str(output)], input=text.encode(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise DrawError(f"dot -T{fmt} failed: {r.stderr.decode(errors='replace').strip()}")
