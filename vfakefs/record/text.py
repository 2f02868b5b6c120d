"""The recording as topology text (TOML written by hand: plain values, inline tables for
BARs, a [device.sriov] table after its device, config dumps as multi-line strings)."""
from __future__ import annotations

import json
from pathlib import Path

from vfakefs.record import writer


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if v < 256 or v < 0 else hex(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


HEX_KEYS = {"vendor", "device", "class", "revision", "subsystem_vendor", "subsystem_device", "vf_device"}


def _field(key: str, v) -> str:
    if key in HEX_KEYS:
        return f"{key} = {v:#0{6 if key != 'class' else 8}x}" if key != "revision" else f"{key} = {v:#04x}"
    if isinstance(v, bytes):
        return f'{key} = """\n{writer.hexdump(v)}\n"""'
    return f"{key} = {_value(v)}"


def text_of(root: Path, m: dict, devices: list[dict], notes: list[str]) -> str:
    """The topology file: the opening comments (what was read, the config sizes, the notes),
    the machine's tables, then each [[device]] with its [device.sriov] and config dump."""
    sizes = sorted({len(d["config"]) for d in devices if "config" in d})
    lines = ['name = "recorded"',
             f'description = {json.dumps(f"recorded by vfakefs record from {root}")}',
             f'kernel = "{m["kernel"]}"',
             f'cmdline = {json.dumps(writer.cmdline_for(m["cmdline"], m["iommu_on"]))}']
    if m["cpus"]:
        lines.append(f"cpus = {min(m['cpus'], 512)}")
    lines.append(f"drivers = {_value(m['drivers'])}")
    if m["root_buses"]:
        lines.append(f"root_buses = {_value(sorted(m['root_buses']))}")
    if m["iommu"] is not None:
        lines += ["", "[iommu]", 'type = "intel"'] + [f"{k} = {_value(v)}" for k, v in m["iommu"].items()]
    else:
        lines += ["", "[iommu]", 'type = "none"']
    if m["dmar"] is not None:
        ports = {d["bdf"] for d in devices if d["kind"] == "root_port"}
        for a in m["dmar"]["atsr"]:
            gone = [p for p in a["ports"] if p not in ports]
            if gone:
                notes.append(f"DMAR ATSR ports that are not recorded root ports, left out: {', '.join(gone)}")
            a["ports"] = [p for p in a["ports"] if p in ports]
        lines += ["", "[acpi.dmar]"] + [f"{k} = {_value(v)}" for k, v in m["dmar"].items() if k != "atsr"]
        lines.append("atsr = [" + ", ".join(_value(a) for a in m["dmar"]["atsr"]) + "]")
    nodes = m["numa"]
    if len(nodes) > 1 and all(n["cpus"] and n["memory"] for n in nodes):
        for n in nodes:
            lines += ["", "[[numa_node]]", f"cpus = {json.dumps(n['cpus'])}",
                      f"memory = {n['memory'] // 4096 * 4096}"]
            if n["distance"]:
                lines.append(f"distance = {_value(n['distance'])}")
    elif len(nodes) > 1:
        notes.append("NUMA nodes without CPUs or memory: nodes left out")
    for name, mtu in sorted(m.get("mtu", {}).items()):
        if mtu != 1500 and 68 <= mtu <= 65535:
            lines += ["", f"[net.{name}]", f"mtu = {mtu}"]
    order = ["bdf", "parent", "kind", "vendor", "device", "class", "revision", "subsystem_vendor",
             "subsystem_device", "multifunction", "secondary_bus", "subordinate_bus", "irq", "driver", "netdev",
             "mac", "bars", "rom", "iommu_group", "numa_node", "msi_irqs", "reset_methods", "dma_mask_bits",
             "firmware_node", "slot", "config"]
    for d in devices:
        lines += ["", "[[device]]"]
        lines += [_field(k, d[k]) for k in order if k in d]
        if "sriov" in d:                        # [device.sriov]: the table of the device above
            lines += ["", "[device.sriov]"] + [_field(k, v) for k, v in d["sriov"].items()]
    head = ["# A machine recorded by `vfakefs record` (data of that one machine, not computed):",
            f"# read from {root}; config spaces are {' / '.join(map(str, sizes)) or 'no'} bytes "
            f"(4096 when read as root on PCIe, 256 for conventional PCI or as read), inline hexdump -C dumps."]
    if notes:
        head.append("# Approximated or left out:")
        head += [f"#   - {n}" for n in notes]
    return "\n".join(head + [""] + lines) + "\n"
