"""`vfakefs record`: a machine's sysfs (the host's /sys, read only, or a mount's MNT/sys) as a
topology file that `vfakefs mount --topology FILE` mounts, as umockdev-record does for udev
devices. reader.py reads the files, writer.py turns each fact into topology fields; this module
puts the machine together, writes the text, and checks it: the text must load (topology.parse)
and boot, and the IOMMU groups the model forms from it are compared with the recorded ones.
What could not be represented is listed in `Recording.notes` (the file's opening comments and
the CLI's stderr)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from vfakefs.model import topology
from vfakefs.model.errors import TopologyError
from vfakefs.model.pci import config as C
from vfakefs.model.topology_fields import RESET_METHODS, check_bars, check_rom
from vfakefs.record import dmar, reader, writer
from vfakefs.record.text import text_of
from vfakefs.record.reader import RecordError

__all__ = ["Recording", "RecordError", "record"]


@dataclass
class Recording:
    text: str                                   # the topology file
    notes: list[str] = field(default_factory=list)   # what was left out or approximated
    devices: int = 0


class _Bad(Exception):
    pass


def _err(where, msg):
    return _Bad(f"{where}: {msg}")


def record(root: str | Path = "/sys", progress=None) -> Recording:
    """Read root (a sysfs) and return the topology text. progress: a progress.Progress-like
    object (update(n, what), done()), or None."""
    root = Path(root)
    names = reader.device_names(root)
    if progress is not None:
        progress.total = len(names)
    notes: list[str] = []
    facts = []
    for i, name in enumerate(names):
        facts.append(reader.read_function(root, name))
        if progress is not None:
            progress.update(i + 1, name)
    if progress is not None:
        progress.done(f"{len(names)} functions read")
    by_bdf = {f["bdf"]: f for f in facts}
    machine = _machine(root, notes)
    devices = []
    for f in facts:
        if f["physfn"]:
            continue                                # a VF: sriov_numvfs makes it, not the topology
        if not f["parent"] and f["bdf"][5:7] != "00":
            machine["root_buses"].add(f["bdf"][:7])  # its own host bridge: pci<domain>:<bus>
        devices.append(_device(f, by_bdf, machine, notes))
    vfs = [f["bdf"] for f in facts if f["physfn"]]
    if vfs:
        notes.append(f"{len(vfs)} VF(s) were enabled: recorded as their PFs' SR-IOV capability, with "
                     "sriov_numvfs 0 at mount (write sriov_numvfs to make them)")
    text = text_of(root, machine, devices, notes)
    rec = Recording(text, notes, len(devices))
    _verify(rec, machine["groups"])
    return rec


def _machine(root: Path, notes: list[str]) -> dict:
    """What the machine has beside its PCI functions: kernel, CPUs, drivers, IOMMU, slots, NUMA."""
    m: dict = {}
    proc = root.parent / "proc"
    m["cmdline"] = reader.read_text(proc / "cmdline")
    release = os.uname().release if root.resolve() == Path("/sys") else reader.read_text(
        proc / "sys/kernel/osrelease")
    if release is None:
        notes.append("kernel release unknown (no ../proc/sys/kernel/osrelease beside the sysfs): "
                     "shown with the 6.12 ABI profile")
    m["kernel"] = writer.kernel_profile(release, notes)
    m["cpus"] = reader.cpu_count(root)
    m["drivers"] = sorted(n for n in reader.listdir(root / "bus/pci/drivers") if "/" not in n)
    unknown = [d for d in m["drivers"] if not writer.known_driver(d)]
    if unknown:
        notes.append(f"drivers vfakefs does not know, registered by name only (no id table, no probe "
                     f"behaviour): {', '.join(unknown)}")
    units = reader.read_iommu_units(root)
    intel = [u for u in units if u["intel"]]
    m["groups"] = reader.read_groups(root)
    m["iommu"] = None
    if intel:
        u = intel[0]
        m["iommu"] = {k: v for k, v in (("cap", u["cap"]), ("ecap", u["ecap"]), ("reg_base", u["address"]),
                                        ("version", u["version"])) if v is not None}
        if u["ecap"] is not None:
            m["iommu"]["interrupt_remapping"] = bool(u["ecap"] & writer.ECAP_IR)
            m["iommu"]["x2apic"] = bool(u["ecap"] & writer.ECAP_EIM)
        if len(intel) > 1:
            notes.append(f"{len(intel)} VT-d units ({', '.join(u['name'] for u in intel)}): recorded as one, "
                         f"{u['name']}'s registers, covering every device")
    other = [u["name"] for u in units if not u["intel"]]
    if other:
        notes.append(f"IOMMU units vfakefs does not model (only Intel VT-d): {', '.join(other)}")
    if m["groups"] and not intel:
        notes.append(f"{len(m['groups'])} IOMMU groups without a VT-d unit: left out (no IOMMU at mount)")
    m["iommu_on"] = bool(intel and m["groups"])
    m["dmar"] = None
    table = root / "firmware/acpi/tables/DMAR"
    if intel:
        try:
            m["dmar"] = dmar.parse(table.read_bytes())
        except OSError as e:
            notes.append(f"{table}: {e.strerror}: the firmware's DMAR table is vfakefs's default (no ATSR)")
        except ValueError as e:
            notes.append(f"{table}: {e}: the firmware's DMAR table is vfakefs's default (no ATSR)")
    m["slots"] = reader.read_slots(root)
    m["root_buses"] = set()
    m["numa"] = reader.read_numa(root)
    return m


def _device(f: dict, by_bdf: dict, machine: dict, notes: list[str]) -> dict:
    """One [[device]] table from one function's facts."""
    bdf = f["bdf"]
    d: dict = {"bdf": bdf}
    if f["parent"]:
        d["parent"] = f["parent"]
    raw = f["config"]
    if raw is None:
        notes.append(f"{bdf}: config unreadable ({f['config_error']}): vfakefs builds it from the ids")
    elif len(raw) < 256:
        notes.append(f"{bdf}: only {len(raw)} bytes of config readable (not root): vfakefs builds the rest")
        raw = None
    cfg = C.ConfigSpace(4096, raw or b"")
    if raw is not None:
        d["kind"] = writer.kind_of(f, cfg, notes)
        writer.unknown_caps(f, cfg, notes)
        if len(raw) == 256 and cfg.find_cap(C.CAP_PCIE) is not None:
            notes.append(f"{bdf}: a PCIe function with 256 bytes of config (no extended config access): "
                         "vfakefs shows 4096, zero past 256")
        if not (machine["dmar"] or {}).get("atsr"):
            writer.ats_note(f, cfg, notes)
    else:
        cls = (f.get("class") or 0) >> 8
        d["kind"] = ("host_bridge" if cls == 0x0600 else
                     ("downstream_port" if f["parent"] else "root_port") if cls == 0x0604 else
                     "endpoint" if f["parent"] else "pci_endpoint")
    bridge = d["kind"].endswith("_port") or d["kind"] == "pcie_pci_bridge"
    for key in ("vendor", "device", "class"):
        value = f[key]
        if value is None and raw is not None:
            value = {"vendor": cfg.r16(0), "device": cfg.r16(2), "class": cfg.r32(8) >> 8}[key]
        if value is None:
            raise RecordError(f"{bdf}: no {key} (neither the {key} file nor config readable)")
        d[key] = value
    for key in ("revision", "subsystem_vendor", "subsystem_device"):
        if f[key] is not None:
            d[key] = f[key]
    if raw is not None:
        if cfg.r8(0x0E) & 0x80:
            d["multifunction"] = True
        if bridge:
            sec, sub = cfg.r8(0x19), cfg.r8(0x1A)
            if sec > int(bdf[5:7], 16) and sub >= sec:
                d["secondary_bus"], d["subordinate_bus"] = sec, sub
    if f["irq"]:
        d["irq"] = f["irq"]
    if f["driver"]:
        d["driver"] = f["driver"]
        if not writer.known_driver(f["driver"]):
            notes.append(f"{bdf}: driver {f['driver']} is not in vfakefs's catalogue: bound by name only")
    elif bridge:
        d["driver"] = ""                             # a port no pcieport bound
    nets = f["netdevs"]
    if nets and f["driver"]:
        d["netdev"] = [n["name"] for n in nets]
        if nets[0]["address"] and len(nets[0]["address"]) == 17:
            d["mac"] = nets[0]["address"]
        machine.setdefault("mtu", {}).update({n["name"]: n["mtu"] for n in nets if n["mtu"]})
    elif nets:
        notes.append(f"{bdf}: netdevs {', '.join(n['name'] for n in nets)} without a bound driver: left out")
    _resources(f, d, bridge, notes)
    if raw is not None:
        d["config"] = raw
    if f["sriov_totalvfs"]:
        _sriov(f, d, by_bdf, cfg, raw, notes)
    if f["iommu_group"] is not None and machine["iommu_on"]:
        d["iommu_group"] = f["iommu_group"]
    if f["numa_node"] is not None and f["numa_node"] >= 0 and len(machine["numa"]) > 1:
        d["numa_node"] = f["numa_node"]
    kinds = set(f["msi_irqs"].values())
    if kinds and kinds <= {"msi", "msix"}:
        d["msi_irqs"] = {"irqs": sorted(f["msi_irqs"]), "kind": "msix" if "msix" in kinds else "msi"}
    methods = f["reset_method"] or []
    if set(methods) - RESET_METHODS:
        notes.append(f"{bdf}: reset methods vfakefs does not know, left out: "
                     f"{', '.join(x for x in methods if x not in RESET_METHODS)}")
    d["reset_methods"] = [x for x in methods if x in RESET_METHODS]
    if f["dma_mask_bits"] is not None and 12 <= f["dma_mask_bits"] <= 64:
        d["dma_mask_bits"] = f["dma_mask_bits"]
    if f["firmware_node"]:
        d["firmware_node"] = f["firmware_node"]
    slot = machine["slots"].get(bdf[:10])
    if slot is not None and "/" not in slot:
        d["slot"] = slot
    return d


def _resources(f: dict, d: dict, bridge: bool, notes: list[str]) -> None:
    res = f["resource"]
    bars = [b for i, r in enumerate(res[:2 if bridge else 6]) if (b := writer.bar(i, *r))]
    if bars:
        try:
            check_bars(_err, "bars", [dict(b) for b in bars], 2 if bridge else 6)
            d["bars"] = bars
        except _Bad as e:
            notes.append(f"{f['bdf']}: BARs not representable ({e}): left to vfakefs")
    if len(res) > 6 and res[6][2] and res[6][1] > res[6][0]:
        start, end = res[6][0], res[6][1]
        rom = {"size": end - start + 1}
        if start and end < 1 << 32:
            rom["address"] = start
        try:
            check_rom(_err, "rom", dict(rom))
            d["rom"] = rom
        except _Bad as e:
            notes.append(f"{f['bdf']}: expansion ROM not representable ({e}): left out")


def _sriov(f: dict, d: dict, by_bdf: dict, cfg, raw, notes: list[str]) -> None:
    bdf = f["bdf"]
    pos = cfg.find_ext_cap(C.EXT_SRIOV) if raw is not None else None
    if raw is not None and pos is None:
        notes.append(f"{bdf}: sriov_totalvfs {f['sriov_totalvfs']} but the readable config has no SR-IOV "
                     "capability: SR-IOV left out")
        return
    if pos is None and None in (f["sriov_offset"], f["sriov_stride"], f["sriov_vf_device"]):
        notes.append(f"{bdf}: SR-IOV attributes missing and config unreadable: SR-IOV left out")
        return
    sr = {"total_vfs": f["sriov_totalvfs"],
          "offset": f["sriov_offset"] if f["sriov_offset"] is not None else cfg.r16(pos + C.SRIOV_VF_OFFSET),
          "stride": f["sriov_stride"] if f["sriov_stride"] is not None else cfg.r16(pos + C.SRIOV_VF_STRIDE),
          "vf_device": f["sriov_vf_device"] if f["sriov_vf_device"] is not None else cfg.r16(pos + C.SRIOV_VF_DID)}
    if not sr["offset"] or not sr["stride"] and sr["total_vfs"] > 1:
        notes.append(f"{bdf}: SR-IOV offset/stride 0: SR-IOV left out")
        return
    sr["stride"] = sr["stride"] or 1
    vf_bars = [b for i, r in enumerate(f["resource"][7:13]) if (b := writer.bar(i, *r, copies=sr["total_vfs"]))]
    if vf_bars:
        try:
            check_bars(_err, "vf_bars", [dict(b) for b in vf_bars], 6, copies=sr["total_vfs"])
            sr["vf_bars"] = vf_bars
        except _Bad as e:
            notes.append(f"{bdf}: VF BARs not representable ({e}): vfakefs's default VF BAR")
    if f["vfs"]:
        first = by_bdf.get(f["vfs"][0][1])          # VF 0
        if first is not None:
            if first["driver"]:
                sr["vf_driver"] = first["driver"]
            if first["config"] is not None and len(first["config"]) >= 256:
                sr["vf_config"] = first["config"]
        if raw is not None and pos is not None:
            # the boot state: VF Enable, VF MSE and NumVFs clear (sriov_numvfs 0 at mount)
            ctrl = cfg.r16(pos + C.SRIOV_CTRL) & ~(C.SRIOV_CTRL_VFE | C.SRIOV_CTRL_MSE)
            b = bytearray(raw)
            b[pos + C.SRIOV_CTRL:pos + C.SRIOV_CTRL + 2] = ctrl.to_bytes(2, "little")
            b[pos + C.SRIOV_NUM_VF:pos + C.SRIOV_NUM_VF + 2] = b"\0\0"
            d["config"] = bytes(b)
    else:
        notes.append(f"{bdf}: no VFs were enabled when recorded: its VFs' config spaces will be vfakefs's, "
                     "built from the PF's SR-IOV capability")
    d["sriov"] = sr


def _verify(rec: Recording, groups: dict[int, dict]) -> None:
    """The text loads and boots; the groups the model forms are the recorded ones."""
    try:
        machine = topology.from_text(rec.text, "<recording>")
    except TopologyError as e:
        raise RecordError(f"the recording does not load: {e}") from None
    if machine.groups is None or not groups:
        return
    want = {g: tuple(v["devices"]) for g, v in groups.items()
            if all(str(b) in {str(f.bdf) for f in machine.functions} for b in v["devices"])}
    have = {g.id: tuple(sorted(str(f.bdf) for f in g.devices)) for g in machine.groups.by_id.values()}
    diff = sorted(g for g in set(want) | set(have) if want.get(g) != have.get(g))
    types = sorted({(v["type"], machine.groups.by_id[g].default_domain or "unknown") for g, v in groups.items()
                    if g in machine.groups.by_id and v["type"]
                    and v["type"] != (machine.groups.by_id[g].default_domain or "unknown")})
    if types:
        diff_types = ", ".join(f"{a} recorded, {b} at mount" for a, b in types)
        _note(rec, f"IOMMU group types differ (the recorded command line decides them at mount): {diff_types}")
    if diff:
        _note(rec, "IOMMU groups differ from the recording (the model's ACS and alias rules group them otherwise): "
              + "; ".join(f"group {g}: recorded {list(want.get(g, ()))}, mounted {list(have.get(g, ()))}"
                          for g in diff[:8]))


def _note(rec: Recording, note: str) -> None:
    """A note found after the text was written: added to both."""
    rec.notes.append(note)
    head = "# Approximated or left out:\n"
    rec.text = rec.text.replace(head, f"{head}#   - {note}\n", 1) if head in rec.text else \
        rec.text.replace("\n\nname = ", f"\n{head}#   - {note}\n\nname = ", 1)
