"""Topology files (TOML) -> a checked description of a machine (Topology).

Loading is one of three plain steps: `parse()` reads and checks a file (every
mistake a TopologyError naming file, device and field, read before anything is
built); `bringup.boot()` builds a fresh Machine from the description and boots
it; a reset boots a fresh Machine from the same description (host.Host).
`load()` does the first two, for callers that want a Machine.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vfakefs.model import bringup
from vfakefs.model.base import modules as module_catalogue
from vfakefs.model.base.drivers import catalogue
from vfakefs.model import firmware, topology_tree, userfile
from vfakefs.model.boot import BOOT_STAGES, DMAR_KEYS
from vfakefs.model.errors import TopologyError
from vfakefs.model.locality import Locality
from vfakefs.model.locality_fields import check_locality
from vfakefs.model.machine import Machine
from vfakefs.model.net import check_net_config, dev_valid_name
from vfakefs.model.nvme import NVME_KEYS
from vfakefs.model.pci import config as C
from vfakefs.model.pci import dump
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import KINDS
from vfakefs.model.profile import PROFILES
from vfakefs.model.topology_fields import (DEVICE_KEYS, DEVICE_TYPES, IOMMU_TYPES, SRIOV_TYPES, TOP_TYPES,
                                           check_bars, check_fields, check_link, check_msi_irqs, check_rom)


@dataclass(frozen=True, eq=False)
class Topology:
    """A checked topology: what boot() builds a Machine from, as often as asked."""
    source: str                 # the file (or preset) it came from, for messages
    data: dict                  # the top-level tables, checked
    specs: tuple                # one dict per [[device]], checked, parents as Bdf, dumps read,
    #                             bus ranges ("bus_range": (secondary, subordinate)) worked out
    order: tuple                # the specs in device_add order: a bus's devices by devfn, then each bridge's bus
    locality: Locality | None = None    # sockets, cores, caches, NUMA nodes (locality_fields.py)


def presets() -> dict[str, str]:
    """Preset name -> its one-line description."""
    out = {}
    for entry in sorted(resources.files("vfakefs.presets").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text())
            out[entry.name[:-5]] = data.get("description", "")
    return out


def parse(name_or_path: str) -> Topology:
    """A preset name (see `vfakefs presets`) or a path to a TOML file, checked."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        preset = resources.files("vfakefs.presets") / f"{name_or_path}.toml"
        if not preset.is_file():
            raise TopologyError(name_or_path, "", "no such preset or file (see `vfakefs presets`)")
        return parse_bytes(preset.read_bytes(), f"preset {name_or_path}", Path(str(preset)).parent)
    try:
        data = userfile.read_bytes(path)
    except OSError as e:
        raise TopologyError(str(path), "", e.strerror or str(e)) from None
    return parse_bytes(data, str(path), path.parent)


def parse_bytes(data: bytes, source: str, base: Path) -> Topology:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TopologyError(source, "", f"not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start})") from None
    return parse_text(text, source, base)


def parse_text(text: str, source: str = "<topology>", base: Path | None = None) -> Topology:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(source, "", f"not valid TOML: {e}") from None
    return _Checker(data, source, base or Path(".")).topology()


def load(name_or_path: str) -> Machine:
    """parse() then boot: a fresh, booted Machine."""
    return bringup.boot(parse(name_or_path))


def from_text(text: str, source: str = "<topology>", base: Path | None = None) -> Machine:
    return bringup.boot(parse_text(text, source, base))


class _Checker:
    def __init__(self, data: dict, source: str, base: Path):
        self.data, self.source, self.base = data, source, base

    def err(self, where: str, msg: str) -> TopologyError:
        return TopologyError(self.source, where, msg)

    def topology(self) -> Topology:
        d = self.data
        check_fields(self.err, "", d, TOP_TYPES)
        kernel = str(d.get("kernel", "6.12"))
        if kernel not in PROFILES:
            raise self.err("kernel", f"unsupported kernel {kernel!r} (supported: {', '.join(PROFILES)})")
        iommu = d.get("iommu", {"type": "intel"})
        check_fields(self.err, "iommu", iommu, IOMMU_TYPES)
        if iommu.get("type", "intel") not in ("intel", "none"):
            raise self.err("iommu.type", f"{iommu.get('type')!r} is not one of intel, none")
        if len(iommu.get("version", (1, 0))) != 2:
            raise self.err("iommu.version", "expected [major, minor]")
        known = set(catalogue()) | set(d.get("drivers", []))
        specs = self.device_specs(d.get("device", []), known)
        order = topology_tree.tree(self.err, d.get("root_buses", []), specs)
        topology_tree.vf_routing_ids(self.err, specs)
        locality = check_locality(self.err, d, specs, order)
        self.declared(d, specs)
        return Topology(self.source, d, tuple(specs), tuple(order), locality)

    def declared(self, d: dict, specs: list[dict]) -> None:
        """What the topology declares beyond the PCI tree: `[acpi.dmar]` (the firmware's DMAR
        table, boot.py), `[recorded]` (facts of one real boot the model does not compute:
        `irq` probe order and vectors, `boot_clock` stage times), and per function its own
        identity: `mac` (the permanent address) and `nvme` (Identify strings)."""
        acpi = d.get("acpi", {})
        if set(acpi) - {"dmar"}:
            raise self.err("acpi", "must be a table with only `dmar`")
        dmar = acpi.get("dmar", {})
        bad = set(dmar) - DMAR_KEYS if isinstance(dmar, dict) else {"(not a table)"}
        if bad:
            raise self.err("acpi.dmar", f"unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(DMAR_KEYS))})")
        for key, value in dmar.items():
            want = {"oem_id": str, "oem_table_id": str, "creator_id": str, "hpet": bool, "atsr": list}.get(key, int)
            if not isinstance(value, want) or (want is int and (isinstance(value, bool) or not 0 <= value < 2**64)):
                raise self.err(f"acpi.dmar.{key}", f"{value!r} is not a valid {want.__name__}")
            if key == "atsr" and not all(isinstance(a, dict) and set(a) <= {"flags", "ports"}
                                         and isinstance(a.get("flags", 0), int) and not isinstance(a.get("flags", 0), bool)
                                         and 0 <= a.get("flags", 0) <= 0xFF
                                         and isinstance(a.get("ports", []), list)
                                         and all(isinstance(p, str) for p in a.get("ports", [])) for a in value):
                raise self.err("acpi.dmar.atsr", "each ATSR is a table { flags = N, ports = [\"<root port bdf>\", ...] }")
            ports = {str(s["bdf"]) for s in specs if s["kind"] == "root_port"}
            for a in value if key == "atsr" else ():
                bad = [p for p in a.get("ports", []) if p not in ports]
                if bad:
                    raise self.err("acpi.dmar.atsr.ports", f"{bad[0]!r} is not a root port of this topology")
        for name, cfg in d.get("net", {}).items():
            self.net(name, cfg)
        firmware.check(self.err, d.get("firmware", {}), {str(s["bdf"]) for s in specs})
        rec = d.get("recorded", {})
        if set(rec) - {"irq", "boot_clock", "modules"}:
            raise self.err("recorded", "must be a table of `irq`, `boot_clock` and `modules`")
        self.recorded_modules(rec.get("modules", {}))
        for stage, usec in rec.get("boot_clock", {}).items():
            if stage not in BOOT_STAGES or not isinstance(usec, int) or usec < 0:
                raise self.err(f"recorded.boot_clock.{stage}",
                               f"a stage ({', '.join(BOOT_STAGES)}) = microseconds since boot")
        irq = rec.get("irq", {})
        if set(irq) - {"probe_order", "vectors"}:
            raise self.err("recorded.irq", "only `probe_order` and `vectors`")
        nr_cpus = int(d.get("cpus", 2))
        for v in irq.get("vectors", []):
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) for x in v)
                    and 0 <= v[1] <= 0xFF and 0 <= v[2] < nr_cpus):
                raise self.err("recorded.irq.vectors", f"{v!r} is not [IRTE index, vector, cpu < {nr_cpus}]")
        for s in specs:
            nv = s.get("nvme")
            if nv is not None and (not isinstance(nv, dict) or set(nv) - NVME_KEYS or not all(
                    isinstance(x, str) and x.isascii() for x in nv.values())):
                raise self.err(f"{s['where']}.nvme", f"a table of ASCII strings: {', '.join(sorted(NVME_KEYS))}")

    def recorded_modules(self, rec: dict) -> None:
        """`[recorded.modules] loaded = [[name, address], ...]`: loadable modules of the
        catalogue, oldest first, each after the modules it depends on."""
        if set(rec) - {"loaded"}:
            raise self.err("recorded.modules", "only `loaded`")
        seen: set = set()
        for v in rec.get("loaded", []):
            if not (isinstance(v, list) and len(v) == 2 and isinstance(v[0], str) and isinstance(v[1], int)):
                raise self.err("recorded.modules.loaded", f"{v!r} is not [name, address]")
            info = module_catalogue.modules().get(v[0])
            if info is None or info.builtin or v[0] in seen:
                raise self.err("recorded.modules.loaded", f"{v[0]!r} is not a loadable module (or listed twice)")
            missing = [d for d in info.depends if d not in seen]
            if missing:
                raise self.err("recorded.modules.loaded", f"{v[0]!r} is loaded before {missing[0]!r}, which it needs")
            seen.add(v[0])

    def net(self, name: str, cfg) -> None:
        """`[net.<name>]`: the network configuration of the interface called name, applied
        whenever an interface of that name registers (a VF's too), as a network manager
        would: `addresses = ["192.168.1.10/24"]` (each gives its connected route),
        `routes = ["default via 192.168.1.1", "10.0.0.0/8 via 192.168.1.254 metric 100"]`,
        `carrier = false` (no cable). `vfakefs run` mirrors them into its network namespace."""
        if not dev_valid_name(name):
            raise self.err(f"net.{name}", f"{name!r} is not an interface name (1-15 characters, no '/', ':' "
                                          "or white space)")
        if name == "lo":
            raise self.err(f"net.{name}", "lo is the kernel's own, configured by it")
        bad = check_net_config(name, cfg)
        if bad:
            raise self.err(f"net.{name}.{bad[0]}" if bad[0] else f"net.{name}", bad[1])

    # --- each [[device]] ----------------------------------------------------------------------
    def device_specs(self, entries: list, drivers: set) -> list[dict]:
        if not entries:
            raise self.err("", "no [[device]] entries")
        seen: dict[Bdf, int] = {}
        netdevs: dict[str, str] = {}
        hp_slots: dict[str, str] = {}
        specs = []
        for i, e in enumerate(entries):
            where = f"device #{i + 1}"
            if not isinstance(e, dict):
                raise self.err(where, "expected a [[device]] table")
            if isinstance(e.get("bdf"), str):
                where += f" ({e['bdf']})"
            bad = set(e) - DEVICE_KEYS
            if bad:
                raise self.err(where, f"unknown key {sorted(bad)[0]!r}")
            for key in ("bdf", "kind", "vendor", "device", "class"):
                if key not in e:
                    raise self.err(where, f"missing required key {key!r}")
            check_fields(self.err, where, e, DEVICE_TYPES)
            try:
                bdf = Bdf.from_str(e["bdf"])
            except ValueError as ex:
                raise self.err(f"{where}.bdf", str(ex)) from None
            if bdf in seen:
                raise self.err(f"{where}.bdf", f"duplicate BDF {bdf} (also device #{seen[bdf]})")
            seen[bdf] = i + 1
            if e["kind"] not in KINDS:
                raise self.err(f"{where}.kind", f"unknown kind {e['kind']!r} (one of {', '.join(KINDS)})")
            ptype, htype = KINDS[e["kind"]]
            if "hotplug_slot" in e:
                # a slot pciehp drives: the port's Slot Capabilities say Hot-Plug Capable
                if e["kind"] not in ("root_port", "downstream_port") or "config" in e:
                    raise self.err(f"{where}.hotplug_slot", "a hot-plug slot sits below a root or downstream "
                                                            "port (without a `config` dump)")
                if str(e["hotplug_slot"]) in hp_slots:
                    raise self.err(f"{where}.hotplug_slot", f"slot {e['hotplug_slot']} is also {hp_slots[str(e['hotplug_slot'])]}'s")
                hp_slots[str(e["hotplug_slot"])] = where
            if e.get("ats") and (ptype is None or htype != 0 or "config" in e):
                raise self.err(f"{where}.ats", "ATS is an extended capability of a PCI Express function "
                                               "(an endpoint without a `config` dump)")
            drv = e.get("driver", "pcieport" if e["kind"].endswith("_port") else "")
            if drv and drv not in drivers:
                raise self.err(f"{where}.driver", f"unknown driver {drv!r} (add it to top-level `drivers`)")
            names = e.get("netdev", [])
            for name in [names] if isinstance(names, str) else names:
                if not drv:
                    raise self.err(f"{where}.netdev", f"{name!r} needs a bound driver to register it (driver = ...)")
                if name in netdevs:
                    raise self.err(f"{where}.netdev", f"{name!r} is also {netdevs[name]}'s")
                netdevs[name] = where
            s = dict(e, bdf=bdf, where=where, driver=drv or None)
            s["bars"] = check_bars(self.err, f"{where}.bars", e.get("bars", []), 6 if htype == 0 else 2)
            if e.get("rom"):
                s["rom"] = check_rom(self.err, f"{where}.rom", e["rom"])
            check_link(self.err, f"{where}.link", e.get("link", {}))
            check_msi_irqs(self.err, f"{where}.msi_irqs", e.get("msi_irqs"))
            if "config" in e:
                s["config"] = self.read_dump(f"{where}.config", e["config"], 4096)
                if ptype is None and (self.dump_end <= 256 or not self.extended_config(e["kind"], s["config"])):
                    # conventional PCI: 256 bytes (a longer dump is refused as before)
                    s["config"] = self.read_dump(f"{where}.config", e["config"], 256)
            if e.get("sriov") is not None:
                s["sriov"] = self.sriov(f"{where}.sriov", e["sriov"], s, drivers)
            specs.append(s)
        return specs

    def sriov(self, where: str, sr: dict, s: dict, drivers: set) -> dict:
        check_fields(self.err, where, sr, SRIOV_TYPES)
        for key in ("total_vfs", "offset", "stride", "vf_device"):
            if key not in sr:
                raise self.err(where, f"missing required key {key!r}")
        if KINDS[s["kind"]][0] not in (C.PCIE_ENDPOINT, C.PCIE_RCIEP):
            raise self.err(where, "SR-IOV needs a PCIe endpoint (sriov_init: -ENODEV)")
        if sr.get("vf_driver") and sr["vf_driver"] not in drivers:
            raise self.err(f"{where}.vf_driver", f"unknown driver {sr['vf_driver']!r}")
        out = dict(sr)
        out["vf_bars"] = check_bars(self.err, f"{where}.vf_bars",
                                    sr.get("vf_bars", [{"type": "mem64", "size": 16384, "prefetch": True}]), 6,
                                    copies=sr["total_vfs"])
        if "config" in s and C.ConfigSpace(4096, s["config"]).find_ext_cap(C.EXT_SRIOV) is None:
            raise self.err(where, "the config dump has no SR-IOV capability")
        if "vf_config" in sr:
            out["vf_config"] = self.read_dump(f"{where}.vf_config", sr["vf_config"], 4096)
        return out

    @staticmethod
    def extended_config(kind: str, config: bytes) -> bool:
        """pci_cfg_space_size() of a function without a PCIe capability: extended config
        space only for a host bridge, or a PCI-X 266/533 function (PCI_X_STATUS_266MHZ/533MHZ)."""
        if kind == "host_bridge":
            return True
        pos = C.ConfigSpace(256, config).find_cap(0x07)     # PCI_CAP_ID_PCIX
        return pos is not None and bool(C.ConfigSpace(256, config).r32(pos + 4) & 0xC0000000)

    def read_dump(self, where: str, name: str, size: int) -> bytes:
        """A dump file beside the topology, or the dump itself inline (a multi-line string,
        as `vfakefs record` writes them): the same text either way, read by dump.parse."""
        self.dump_end = 0
        if "\n" in name:
            try:
                self.dump_end = dump.span(name.encode())
                return dump.parse(name.encode(), size)
            except ValueError as e:
                raise self.err(where, f"inline dump: {e}") from None
        path = self.base / name
        try:
            data = userfile.read_bytes(path)
            self.dump_end = dump.span(data)
            return dump.parse(data, size)
        except OSError as e:
            raise self.err(where, f"cannot read {path}: {e.strerror}") from None
        except ValueError as e:
            raise self.err(where, f"{path}: {e}") from None
