"""Topology files (TOML) -> Machine, with errors that name file, device and field."""
from __future__ import annotations

import re
import tomllib
from importlib import resources
from pathlib import Path

from vfakefs.model.pci import config as C
from vfakefs.model.iommu import iommu
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.boot import BOOT_STAGES, DMAR_KEYS, boot_log, default_domain, late_boot_log
from vfakefs.model.pci.builder import bar_flags, build_config
from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.base.drivers import Driver, catalogue
from vfakefs.model.errors import TopologyError
from vfakefs.model.iommu.groups import Groups
from vfakefs.model.pci.iov import Sriov
from vfakefs.model.machine import Machine, Slot
from vfakefs.model.pci.pci import IORESOURCE_MEM, IORESOURCE_PREFETCH, IORESOURCE_READONLY, \
    IORESOURCE_SIZEALIGN, IORESOURCE_MEM_64, KINDS, PciFunction, Resource, EMPTY
from vfakefs.model.net import MAC_RE
from vfakefs.model.nvme import NVME_KEYS
from vfakefs.model.profile import PROFILES
from vfakefs.model.pci.resources import Allocator, bridge_windows, covering_windows

TOP_KEYS = {"name", "description", "kernel", "cmdline", "iommu", "drivers", "device", "cpus", "slot_module",
            "root_dirs", "acpi", "recorded"}
IOMMU_KEYS = {"type", "interrupt_remapping", "x2apic", "cap", "ecap", "reg_base", "version", "iotlb_entries"}
DEVICE_KEYS = {"bdf", "kind", "parent", "vendor", "device", "subsystem_vendor", "subsystem_device", "class",
               "revision", "multifunction", "acs", "bars", "rom", "irq", "msi", "msix", "msi_irqs",
               "numa_node", "driver", "netdev", "sriov", "iommu_group", "link", "config", "firmware_node",
               "reset_methods", "aspm", "slot", "dma_mask_bits", "secondary_bus", "subordinate_bus", "aer",
               "ari", "extra_dirs", "rmrr", "comment", "command", "mac", "nvme"}
SRIOV_KEYS = {"total_vfs", "offset", "stride", "vf_device", "vf_driver", "vf_bars", "vf_config",
              "vf_probe_fails_after"}
BAR_KEYS = {"index", "type", "size", "prefetch", "address"}
LINK_KEYS = {"speed", "width", "max_speed", "max_width", "port"}
RANGES = {"vendor": 0xFFFF, "device": 0xFFFF, "subsystem_vendor": 0xFFFF, "subsystem_device": 0xFFFF,
          "class": 0xFFFFFF, "revision": 0xFF, "irq": 0xFFFF, "msi": 32, "msix": 2048,
          "iommu_group": 0xFFFFFF, "dma_mask_bits": 64}


def presets() -> dict[str, str]:
    """Preset name -> its one-line description."""
    out = {}
    for entry in sorted(resources.files("vfakefs.presets").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text())
            out[entry.name[:-5]] = data.get("description", "")
    return out


def load(name_or_path: str) -> Machine:
    """A preset name (see `vfakefs presets`) or a path to a TOML file."""
    path = Path(name_or_path)
    if not path.suffix and not path.exists():
        preset = resources.files("vfakefs.presets") / f"{name_or_path}.toml"
        if not preset.is_file():
            raise TopologyError(name_or_path, "", "no such preset or file (see `vfakefs presets`)")
        return from_text(preset.read_text(), f"preset {name_or_path}", Path(str(preset)).parent)
    try:
        text = path.read_text()
    except OSError as e:
        raise TopologyError(str(path), "", e.strerror or str(e)) from None
    return from_text(text, str(path), path.parent)


def from_text(text: str, source: str = "<topology>", base: Path | None = None) -> Machine:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise TopologyError(source, "", f"not valid TOML: {e}") from None
    m = _Loader(data, source, base or Path(".")).machine()
    m.source = (text, source, base)
    return m


def reset(m: Machine) -> None:
    """Back to the topology's initial state, in place: the views, the mount and the
    kernel log (which goes on) keep their Machine."""
    text, source, base = m.source
    fresh = from_text(text, source, base)
    keep = {"_listeners": m._listeners, "kmsg": m.kmsg, "generation": m.generation}
    m.__dict__.update(fresh.__dict__)
    m.__dict__.update(keep)
    for obj in list(m.functions) + list(m.drivers.values()) + m.dmar:
        obj.machine = m
    if m.groups is not None:
        m.groups.machine = m
        for g in m.groups.by_id.values():
            g.machine = m
    m.kmsg.log("vfakefs: machine reset to its topology")
    m.changed()


def _size(value, err) -> int:
    if isinstance(value, int):
        return value
    m = re.fullmatch(r"(\d+)\s*([KMGT]?)i?B?", str(value).strip(), re.I)
    if not m:
        raise err(f"size {value!r} is not a number (e.g. 16384, \"16K\", \"1M\")")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


class _Loader:
    def __init__(self, data: dict, source: str, base: Path):
        self.data, self.source, self.base = data, source, base

    def err(self, where: str, msg: str) -> TopologyError:
        return TopologyError(self.source, where, msg)

    def machine(self) -> Machine:
        d = self.data
        unknown = set(d) - TOP_KEYS
        if unknown:
            raise self.err("", f"unknown key {sorted(unknown)[0]!r} (known: {', '.join(sorted(TOP_KEYS))})")
        kernel = str(d.get("kernel", "6.12"))
        if kernel not in PROFILES:
            raise self.err("kernel", f"unsupported kernel {kernel!r} (supported: {', '.join(PROFILES)})")
        cmdline = str(d.get("cmdline", "intel_iommu=on"))
        iommu_spec = d.get("iommu", {"type": "intel"})
        bad = set(iommu_spec) - IOMMU_KEYS
        if bad:
            raise self.err("iommu", f"unknown key {sorted(bad)[0]!r}")
        if iommu_spec.get("type", "intel") not in ("intel", "none"):
            raise self.err("iommu.type", f"{iommu_spec.get('type')!r} is not one of intel, none")
        drivers = catalogue()
        for name in d.get("drivers", []):
            drivers.setdefault(name, Driver(name))
        specs = self.device_specs(d.get("device", []), drivers)
        if "drivers" in d:   # the topology names the loaded drivers: register those and the ones in use
            used = {s["driver"] for s in specs} | {(s.get("sriov") or {}).get("vf_driver") for s in specs}
            drivers = {n: drv for n, drv in drivers.items() if n in used or n in d["drivers"]}
        iommu_on = iommu_spec.get("type", "intel") == "intel" and "intel_iommu=off" not in cmdline.split()
        dmar = []
        if iommu_spec.get("type", "intel") == "intel":
            dmar.append(DmarUnit(0, iommu_spec.get("reg_base", 0xFED90000), tuple(iommu_spec.get("version", (1, 0))),
                                 iommu_spec.get("cap", 0xD2078C406F0462), iommu_spec.get("ecap", 0xF050DA),
                                 iotlb_entries=iommu_spec.get("iotlb_entries", 4096)))
        m = Machine(PROFILES[kernel], cmdline, [], drivers, dmar,
                    bool(iommu_spec.get("interrupt_remapping", True)), name=d.get("name", ""),
                    nr_cpus=int(d.get("cpus", 2)), root_dirs=tuple(d.get("root_dirs", ())))
        self.slot_module = d.get("slot_module", "pciehp")
        self.functions(m, specs)
        self.declared(m, d, specs)
        self.netdev_names = {}
        for s in specs:
            f = m.by_bdf[s["bdf"]]
            if s["driver"]:
                f.driver, f.enable_cnt = drivers[s["driver"]], 1
                f.wakeup_enabled = f.driver.wakeup
            names = s.get("netdev", [])
            self.netdev_names[f] = [names] if isinstance(names, str) else list(names)
        boot_log(m, iommu_on, iommu_spec.get("x2apic", True))
        if iommu_on:
            m.groups = Groups(default_domain(cmdline, dmar[0]), m,
                              pinned={f.pinned_group for f in m.functions if f.pinned_group is not None})
            for f in m.functions:
                g = m.groups.add_device(f, m.functions)
                m.kmsg.boot(f"pci {f.name}: Adding to iommu group {g.id}")
                iommu.attach_device(m, f)
            m.kmsg.boot("DMAR: Intel(R) Virtualization Technology for Directed I/O")
        late_boot_log(m)
        for f in m.functions:
            if f.driver is not None:
                f.driver.devices.append(f)
                f.driver.instance(f)   # nvme0, nvme1 ... in probe order
        for f, names in self.netdev_names.items():
            for name in names:
                m.add_netdev(f, f.driver, name)
        for f in m.functions:  # net drivers without a named interface get ethN
            if f.driver is not None and f.driver.net and not f.netdevs:
                m.add_netdev(f, f.driver)
        for obj in list(m.functions) + list(m.drivers.values()) + m.dmar:
            obj.machine = m
        for u in m.dmar:
            u.on_materialize = lambda u=u: iommu.program_all(u)
        if iommu_on and m.interrupt_remapping and m.dmar[0].ir_supported:
            m.irq_remap_args = {"x2apic": iommu_spec.get("x2apic", True)}
        m.check()
        return m

    def declared(self, m: Machine, d: dict, specs: list[dict]) -> None:
        """What the topology declares beyond the PCI tree: `[acpi.dmar]` (the firmware's DMAR
        table, boot.py), `[recorded]` (facts of one real boot the model does not compute:
        `irq` probe order and vectors, `boot_clock` stage times), and per function its own
        identity: `mac` (the permanent address) and `nvme` (Identify strings)."""
        acpi = d.get("acpi", {})
        if not isinstance(acpi, dict) or set(acpi) - {"dmar"}:
            raise self.err("acpi", "must be a table with only `dmar`")
        dmar = acpi.get("dmar", {})
        bad = set(dmar) - DMAR_KEYS if isinstance(dmar, dict) else {"(not a table)"}
        if bad:
            raise self.err("acpi.dmar", f"unknown key {sorted(bad)[0]!r} (known: {', '.join(sorted(DMAR_KEYS))})")
        for key, value in dmar.items():
            want = {"oem_id": str, "oem_table_id": str, "creator_id": str, "hpet": bool, "atsr": list}.get(key, int)
            if not isinstance(value, want) or (want is int and (isinstance(value, bool) or not 0 <= value < 2**64)):
                raise self.err(f"acpi.dmar.{key}", f"{value!r} is not a valid {want.__name__}")
            if key == "atsr" and not all(isinstance(a, dict) and set(a) <= {"flags"} for a in value):
                raise self.err("acpi.dmar.atsr", "each ATSR is a table { flags = N }")
        m.acpi = {"dmar": dict(dmar)}
        rec = d.get("recorded", {})
        if not isinstance(rec, dict) or set(rec) - {"irq", "boot_clock"}:
            raise self.err("recorded", "must be a table of `irq` and `boot_clock`")
        for stage, usec in rec.get("boot_clock", {}).items():
            if stage not in BOOT_STAGES or not isinstance(usec, int) or usec < 0:
                raise self.err(f"recorded.boot_clock.{stage}",
                               f"a stage ({', '.join(BOOT_STAGES)}) = microseconds since boot")
        irq = rec.get("irq", {})
        if set(irq) - {"probe_order", "vectors"}:
            raise self.err("recorded.irq", "only `probe_order` and `vectors`")
        for v in irq.get("vectors", []):
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, int) for x in v)
                    and 0 <= v[1] <= 0xFF and 0 <= v[2] < m.nr_cpus):
                raise self.err("recorded.irq.vectors", f"{v!r} is not [IRTE index, vector, cpu < {m.nr_cpus}]")
        m.recorded = rec
        for s in specs:
            hw = {}
            if s.get("mac"):
                if not isinstance(s["mac"], str) or not MAC_RE.fullmatch(s["mac"].lower()):
                    raise self.err(f"{s['where']}.mac", f"{s['mac']!r} is not a MAC address (52:54:00:12:34:56)")
                hw["mac"] = s["mac"].lower()
            if "nvme" in s:
                nv = s["nvme"]
                if not isinstance(nv, dict) or set(nv) - NVME_KEYS or not all(
                        isinstance(x, str) and x.isascii() for x in nv.values()):
                    raise self.err(f"{s['where']}.nvme", f"a table of ASCII strings: {', '.join(sorted(NVME_KEYS))}")
                hw["nvme"] = dict(nv)
            if hw:
                m.hw[s["bdf"]] = hw

    # --- devices -----------------------------------------------------------------
    def device_specs(self, entries: list, drivers: dict) -> list[dict]:
        if not isinstance(entries, list) or not entries:
            raise self.err("", "no [[device]] entries")
        seen: dict[Bdf, int] = {}
        specs = []
        for i, e in enumerate(entries):
            where = f"device #{i + 1}" + (f" ({e['bdf']})" if isinstance(e.get("bdf"), str) else "")
            bad = set(e) - DEVICE_KEYS
            if bad:
                raise self.err(where, f"unknown key {sorted(bad)[0]!r}")
            for key in ("bdf", "kind", "vendor", "device", "class"):
                if key not in e:
                    raise self.err(where, f"missing required key {key!r}")
            try:
                bdf = Bdf.from_str(str(e["bdf"]))
            except ValueError as ex:
                raise self.err(f"{where}.bdf", str(ex)) from None
            if bdf in seen:
                raise self.err(f"{where}.bdf", f"duplicate BDF {bdf} (also device #{seen[bdf]})")
            seen[bdf] = i + 1
            if e["kind"] not in KINDS:
                raise self.err(f"{where}.kind", f"unknown kind {e['kind']!r} (one of {', '.join(KINDS)})")
            for key, top in RANGES.items():
                if key in e and (not isinstance(e[key], int) or not 0 <= e[key] <= top):
                    raise self.err(f"{where}.{key}", f"{e[key]!r} is out of range 0..{top:#x}")
            drv = e.get("driver", "pcieport" if e["kind"].endswith("_port") else "")
            if drv and drv not in drivers:
                raise self.err(f"{where}.driver", f"unknown driver {drv!r} (add it to top-level `drivers`)")
            sr = e.get("sriov")
            if sr is not None:
                bad = set(sr) - SRIOV_KEYS
                if bad:
                    raise self.err(f"{where}.sriov", f"unknown key {sorted(bad)[0]!r}")
                for key in ("total_vfs", "offset", "stride", "vf_device"):
                    if key not in sr:
                        raise self.err(f"{where}.sriov", f"missing required key {key!r}")
                if not 1 <= sr["total_vfs"] <= 0xFFFF or not 1 <= sr["offset"] <= 0xFFFF or not 1 <= sr["stride"] <= 0xFFFF:
                    raise self.err(f"{where}.sriov", "total_vfs, offset and stride must be 1..65535")
                if sr.get("vf_driver") and sr["vf_driver"] not in drivers:
                    raise self.err(f"{where}.sriov.vf_driver", f"unknown driver {sr['vf_driver']!r}")
            specs.append(dict(e, bdf=bdf, where=where, driver=drv or None))
        by_bdf = {s["bdf"]: s for s in specs}
        for s in specs:
            if "parent" in s:
                try:
                    p = Bdf.from_str(str(s["parent"]))
                except ValueError as ex:
                    raise self.err(f"{s['where']}.parent", str(ex)) from None
                if p not in by_bdf:
                    raise self.err(f"{s['where']}.parent", f"parent {p} is not a device of this topology")
                if KINDS[by_bdf[p]["kind"]][1] != 1:
                    raise self.err(f"{s['where']}.parent", f"parent {p} is a {by_bdf[p]['kind']}, not a bridge")
                s["parent"] = p
            elif s["bdf"].bus != 0:
                raise self.err(s["where"], f"parent missing: {s['bdf']} is not on the root bus 00")
        return specs

    def functions(self, m: Machine, specs: list[dict]) -> None:
        alloc = Allocator()
        children: dict = {}
        for s in specs:
            children.setdefault(s.get("parent"), []).append(s)
        # device_add order: a bus's devices by devfn, then each bridge's bus in turn
        order: list[dict] = []

        def walk(parent):
            kids = sorted(children.get(parent, []), key=lambda s: s["bdf"])
            order.extend(kids)
            for k in kids:
                if KINDS[k["kind"]][1] == 1:
                    walk(k["bdf"])
        walk(None)
        slots_used = {(s["bdf"].domain, s["bdf"].bus, s["bdf"].dev) for s in specs if s["bdf"].fn}
        # bus numbers: a bridge's secondary is its children's bus; subordinate the deepest below
        bus_range: dict[Bdf, tuple[int, int]] = {}
        next_bus = [max(s["bdf"].bus for s in specs) + 1]

        def buses(s) -> tuple[int, int]:
            kids = children.get(s["bdf"], [])
            sec = s.get("secondary_bus", kids[0]["bdf"].bus if kids else None)
            if sec is None:
                sec = next_bus[0]
                next_bus[0] += 1
            sub = sec
            for k in kids:
                sub = max(sub, k["bdf"].bus, self.vf_last_bus(k))
                if KINDS[k["kind"]][1] == 1:
                    sub = max(sub, buses(k)[1])
            sub = s.get("subordinate_bus", sub)
            bus_range[s["bdf"]] = (sec, sub)
            return sec, sub
        for s in order:
            if KINDS[s["kind"]][1] == 1 and s["bdf"] not in bus_range:
                buses(s)
        made: dict[Bdf, PciFunction] = {}
        for s in reversed(order):  # children first, so bridge windows can cover them
            made[s["bdf"]] = self.function(s, alloc, bus_range, made, children, slots_used)
        for s in order:
            f = made[s["bdf"]]
            f.parent = made.get(s.get("parent"))
            m.functions.append(f)
            if s.get("slot") is not None:
                port = f.parent
                m.slots.append(Slot(str(s["slot"]), "%04x:%02x:%02x" % (f.bdf.domain, f.bdf.bus, f.bdf.dev),
                                    port.link_speed(False).strip() if port and port.kind == "root_port" else "Unknown",
                                    port.link_speed(True).strip() if port else "Unknown", self.slot_module))
        m.by_bdf = {f.bdf: f for f in m.functions}

    def vf_last_bus(self, s: dict) -> int:
        sr = s.get("sriov")
        if not sr:
            return 0
        last = s["bdf"].rid + sr["offset"] + sr["stride"] * (sr["total_vfs"] - 1)
        return last >> 8

    def bars(self, s: dict, alloc: Allocator, count: int) -> list[Resource]:
        out = [EMPTY] * count
        for j, b in enumerate(s.get("bars", [])):
            where = f"{s['where']}.bars[{j}]"
            bad = set(b) - BAR_KEYS
            if bad:
                raise self.err(where, f"unknown key {sorted(bad)[0]!r}")
            idx, kind = b.get("index", j), b.get("type", "mem32")
            if kind not in ("mem32", "mem64", "io"):
                raise self.err(f"{where}.type", f"{kind!r} is not one of mem32, mem64, io")
            if not 0 <= idx < count:
                raise self.err(f"{where}.index", f"BAR index {idx} out of range 0..{count - 1}")
            size = _size(b["size"], lambda msg: self.err(f"{where}.size", msg))
            if size & (size - 1):
                raise self.err(f"{where}.size", f"BAR size {size:#x} is not a power of two")
            start = b["address"] if "address" in b else alloc.take(kind, size)
            out[idx] = Resource(start, size, bar_flags(kind, b.get("prefetch", False)))
        return out

    def function(self, s, alloc, bus_range, made, children, slots_used) -> PciFunction:
        ptype, htype = KINDS[s["kind"]]
        bars = self.bars(s, alloc, 6 if htype == 0 else 2)
        rom = EMPTY
        if s.get("rom"):
            spec = s["rom"] if isinstance(s["rom"], dict) else {"size": s["rom"]}
            size = _size(spec.get("size"), lambda msg: self.err(f"{s['where']}.rom", msg))
            rom = Resource(spec["address"] if "address" in spec else alloc.take("mem32", size),
                           size, IORESOURCE_MEM | IORESOURCE_PREFETCH | IORESOURCE_READONLY | IORESOURCE_SIZEALIGN)
        sr = s.get("sriov")
        vf_bars = []
        if sr:
            vf_bars = self.bars({"bars": sr.get("vf_bars", [{"type": "mem64", "size": 16384, "prefetch": True}]),
                                 "where": f"{s['where']}.sriov"}, Allocator(), 6)
            # the IOV resource holds TotalVFs copies of each VF BAR
            given = {b.get("index", j): "address" in b for j, b in enumerate(sr.get("vf_bars", []))}
            vf_bars = [r if not r.size or given.get(i) else
                       Resource(alloc.take("mem64" if r.flags & IORESOURCE_MEM_64 else "mem32", r.size * sr["total_vfs"]),
                                r.size, r.flags) for i, r in enumerate(vf_bars)]
        windows = []
        sec, sub = bus_range.get(s["bdf"], (0, 0))
        if htype == 1:
            windows = covering_windows(s["bdf"], made, children)
        multifunction = s.get("multifunction", (s["bdf"].domain, s["bdf"].bus, s["bdf"].dev) in slots_used)
        link = s.get("link", {})
        bad = set(link) - LINK_KEYS
        if bad:
            raise self.err(f"{s['where']}.link", f"unknown key {sorted(bad)[0]!r}")
        if "config" in s:
            path = self.base / s["config"]
            try:
                cfg = C.load_dump(path, 4096 if ptype is not None else 256)
            except OSError as e:
                raise self.err(f"{s['where']}.config", f"cannot read {path}: {e.strerror}") from None
            if htype == 1:
                windows = bridge_windows(cfg)
        else:
            acs = s.get("acs")
            if acs is True:
                acs = C.ACS_SV | C.ACS_RR | C.ACS_CR | C.ACS_UF | (C.ACS_TB if s["kind"] == "downstream_port" else 0)
            elif acs is False:
                acs = None
            cfg = build_config(
                kind=s["kind"], pcie_type=ptype, header_type=htype, vendor=s["vendor"], device=s["device"],
                class_code=s["class"], revision=s.get("revision", 0),
                subsystem_vendor=s.get("subsystem_vendor", 0), subsystem_device=s.get("subsystem_device", 0),
                multifunction=multifunction, bars=bars, rom=rom, irq=s.get("irq", 0),
                bound=bool(s.get("driver")), msi=s.get("msi", 0), msix=s.get("msix", 0), acs=acs, link=link,
                sriov=dict(sr, vf_bars=vf_bars) if sr else None,
                bus_numbers=(s["bdf"].bus, sec, sub), windows=windows,
                ari=bool(s.get("ari", bool(sr))), aer=bool(s.get("aer", ptype is not None)))
        if "command" in s:
            cfg.w16(0x04, s["command"])
        pcie = ptype is not None
        f = PciFunction(
            bdf=s["bdf"], kind=s["kind"], vendor=s["vendor"], device=s["device"], class_code=s["class"],
            config=cfg, subsystem_vendor=s.get("subsystem_vendor", 0),
            subsystem_device=s.get("subsystem_device", 0), revision=s.get("revision", 0),
            multifunction=multifunction, bars=bars + [EMPTY] * (6 - len(bars)), rom=rom, windows=windows,
            irq=s.get("irq", 0), numa_node=s.get("numa_node", -1), driver_override=None,
            pinned_group=s.get("iommu_group"), secondary=sec, subordinate=sub,
            dma_mask_bits=s.get("dma_mask_bits", 64 if pcie or s.get("driver") else 32),
            firmware_node=s.get("firmware_node"),
            reset_methods=tuple(s.get("reset_methods", ("flr", "bus") if pcie and htype == 0 else ())),
            aspm=tuple(s.get("aspm", ("l0s_aspm",) if pcie else ())), slot=s.get("slot"),
            extra_dirs=tuple(s.get("extra_dirs", ())))
        f.consistent_dma_mask_bits = f.dma_mask_bits
        f.msi_irqs = self.msi_irqs(s)
        if s.get("rmrr"):
            f.rmrrs = tuple(tuple(r) for r in s["rmrr"])
        if sr:
            pos = cfg.find_ext_cap(C.EXT_SRIOV)
            if pos is None:
                raise self.err(f"{s['where']}.sriov", "the config dump has no SR-IOV capability")
            f.sriov = Sriov(f, pos, sr.get("vf_driver"), vf_bars)
            f.sriov.vf_probe_fails_after = sr.get("vf_probe_fails_after")
            if "vf_config" in sr:
                path = self.base / sr["vf_config"]
                try:
                    f.sriov.vf_config = bytes(C.load_dump(path, 4096).bytes)
                except OSError as e:
                    raise self.err(f"{s['where']}.sriov.vf_config", f"cannot read {path}: {e.strerror}") from None
        return f

    def msi_irqs(self, s) -> list[tuple[int, str]]:
        spec = s.get("msi_irqs")
        if spec is None:
            return []
        if isinstance(spec, dict) and "irqs" in spec:
            return [(irq, spec.get("kind", "msix")) for irq in spec["irqs"]]
        first, count, kind = spec if isinstance(spec, list) else (spec["first"], spec["count"], spec["kind"])
        return [(first + i, kind) for i in range(count)]

