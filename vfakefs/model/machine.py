"""Machine: owns every simulated part; the only object the views see."""
from __future__ import annotations

import errno
import random
from contextlib import contextmanager
from dataclasses import dataclass, field

from vfakefs.model.base import binding
from vfakefs.model.base.drivers import Driver, vfio_bound
from vfakefs.model.base.module import Modules, check_refs
from vfakefs.model.errors import SysfsError
from vfakefs.model.faults import FaultTable
from vfakefs.model.ida import Ida
from vfakefs.model.intel.dmar import DmarUnit
from vfakefs.model.iommu import iommu
from vfakefs.model.iommu.groups import Groups
from vfakefs.model.firmware import Firmware
from vfakefs.model.kmsg import KernelLog
from vfakefs.model.locality import Locality
from vfakefs.model.net import NetDev, parse_route, permanent_address
from vfakefs.model.pci import hotplug, resource_log, sriov
from vfakefs.model.pci.bdf import Bdf
from vfakefs.model.pci.pci import PciFunction
from vfakefs.model.profile import KernelProfile
from vfakefs.model.ram import HostMemory, SystemRam
from vfakefs.model.uevent import UeventLog, announce


@dataclass
class Slot:
    """A physical slot (/sys/bus/pci/slots/<name>/), registered by its port's hotplug driver."""
    name: str
    address: str                # domain:bus:device of what sits in it
    max_speed: str = "Unknown"
    cur_speed: str = "2.5 GT/s PCIe"
    module: str = "pciehp"
    port: PciFunction | None = None   # the bridge whose hotplug controller drives it
    powered: bool = True
    present: bool = True              # Presence Detect State: a card sits in it (pciehp's adapter)
    removal: object = None            # a surprise removal waiting for VFIO users (pci/hotplug_slot.py)
    hotplug: bool = False             # declared by its port (`hotplug_slot`): pciehp announces it at boot

    def holds(self, f: PciFunction) -> bool:
        """f sits in this slot: its domain:bus:device is the slot's address."""
        return "%04x:%02x:%02x" % (f.bdf.domain, f.bdf.bus, f.bdf.dev) == self.address


@dataclass(eq=False, repr=False)      # a repr of every field would print the whole machine
class Machine:
    profile: KernelProfile
    cmdline: str
    functions: list[PciFunction]                 # in enumeration (device_add) order
    drivers: dict[str, Driver]
    dmar: list[DmarUnit]
    interrupt_remapping: bool
    kmsg: KernelLog = field(default_factory=KernelLog)
    uevents: UeventLog = field(default_factory=UeventLog)   # what the kernel announced (model/uevent.py)
    netdevs: dict[str, NetDev] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)
    groups: Groups | None = None
    drivers_autoprobe: int = 1
    resource_alignment: str = ""
    generation: int = 0
    name: str = ""
    nr_cpus: int = 2
    root_dirs: tuple[str, ...] = ()     # other children of pci0000:00 (ACPI companions such as QEMU0002:00)

    def __post_init__(self):
        self.by_bdf = {f.bdf: f for f in self.functions}
        self._next_ifindex = 2  # 1 is lo
        self._listeners = []
        self.eth_ids = Ida()
        self._batch = 0
        self._pending = False
        self._noted: list | None = []           # what changed since the last notification (None: anything)
        self.changes: list | None = None        # what the listeners being notified are told
        self._children: tuple[int, dict] = (-1, {})
        self.removed: list[PciFunction] = []    # what `remove` took away, for `rescan`
        self.module_params: dict = {}           # (module, parameter) -> value set at load or through sysfs
        self.modules = Modules(self)            # the loaded modules (base/module.py)
        self.fault_threshold = 100              # DMA faults before a device loses bus mastering
        self.traffic: dict = {}                 # device name -> traffic.Traffic the engine runs
        self._irq_remap = None                  # irq_remap.IrqRemapTable, made on first use
        self.irq_remap_args: dict | None = None  # how to make it, when interrupt remapping is on
        self.irq_descs = None                   # base/irqs.IrqDescs: MSI irq numbers, made on first use
        self.clock = 0.0                        # simulated seconds the engine has run
        self.delayed: list = []                 # (due clock, work): what the engine runs later
        self.faults = FaultTable()              # misbehaviour on cue: the `faults` control's rules (faults.py)
        self.topology = None                    # the topology.Topology it was booted from
        self.host_memory = HostMemory()         # host pages the DMA API and VFIO pinning take (model/ram.py)
        self.vfio_minors: dict[int, int] = {}   # group -> minor of /dev/vfio/<group>
        self.vfio_pins: list = []               # (hpa, size, ProcessMemory, vaddr) VFIO pinned, by hpa
        self.ram = SystemRam()                  # other host pages device DMA wrote (model/ram.py)
        # what the topology declares beyond the PCI tree (topology._Checker.declared)
        self.acpi: dict = {}                    # firmware tables: {"dmar": {...}} (boot.py)
        self.recorded: dict = {}                # facts of one real boot, not computed (irq, boot_clock)
        self.firmware = Firmware.from_table({})  # e820, root bus windows, what it left unassigned (firmware.py)
        self.hw: dict[Bdf, dict] = {}           # a function's own identity: "mac", "nvme"
        self.rng = random.Random()              # get_random_bytes(): random, unless a test seeds it
        self.net_config: dict[str, dict] = {}   # interface name -> its `[net.<name>]` table (topology)
        self.net_listeners: list = []           # fn(netdev) after a netdev's own state changed (mtu, flags, carrier)
        self.locality = Locality.single(self.nr_cpus)   # sockets, cores, nodes (the topology's, at boot)

    @property
    def vfio_enable_sriov(self) -> bool:
        """vfio-pci's enable_sriov module parameter."""
        return bool(self.module_params.get(("vfio_pci", "enable_sriov"), False))

    @vfio_enable_sriov.setter
    def vfio_enable_sriov(self, value: bool) -> None:
        self.module_params[("vfio_pci", "enable_sriov")] = bool(value)

    # m.uevent(action, obj, extra=()): kobject_uevent_env(), announce obj's add, remove, bind,
    # unbind, change (model/uevent.py); the function itself, no method around it: thousands
    # of VFs announce four events each
    uevent = announce

    def uptime_ms(self) -> int:
        return self.kmsg.uptime_usec() // 1000

    # --- structure -----------------------------------------------------------
    def changed(self, *objs) -> None:
        """Called after every structural change: views rebuild, FUSE invalidates.
        objs: what changed (functions bound or unbound, and their drivers); none:
        anything may have. Inside batch() the listeners hear of it once, at the end;
        while they run, `changes` holds what changed since the last time, None for
        anything (add_function and remove_one add the function, its address and group)."""
        self.generation += 1
        if objs:
            self.note(*objs)
        else:
            self._noted = None
        if self._batch:
            self._pending = True
            return
        self._notify()

    def note(self, *objs) -> None:
        """Record what a change touches, for the next notification (listeners that
        re-list only what may differ); nothing is kept while nobody listens."""
        if self._noted is not None and self._listeners:
            self._noted.extend(objs)

    def _notify(self) -> None:
        self.changes, self._noted = self._noted, []
        for fn in self._listeners:
            fn()
        self.changes = None

    @contextmanager
    def batch(self):
        """Group the changes of one operation (enabling 256 VFs) into one notification."""
        self._batch += 1
        try:
            yield
        finally:
            self._batch -= 1
            if not self._batch and self._pending:
                self._pending = False
                self._notify()

    def subscribe(self, fn) -> None:
        self._listeners.append(fn)

    def unsubscribe(self, fn) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def netdev_changed(self, nd) -> None:
        """A netdev's own state changed (not the structure: no view to rebuild)."""
        for fn in self.net_listeners:
            fn(nd)

    def __repr__(self) -> str:
        return f"<Machine {self.name}>"

    @property
    def iommu_on(self) -> bool:
        return bool(self.dmar) and self.groups is not None

    def iommu_unit(self):
        """The remapping unit, its tables made on first use (iommu.unit)."""
        return iommu.unit(self)

    @property
    def irq_remap(self):
        """The interrupt remapping table as boot leaves it, made when first asked for
        (its numpy arrays stay off the mount path)."""
        if self._irq_remap is None and self.irq_remap_args is not None:
            # imported here, not at the top: irq_boot needs numpy, which stays off the mount path
            from vfakefs.model.intel import irq_boot
            self._irq_remap = irq_boot.build(self, **self.irq_remap_args)
        return self._irq_remap

    @irq_remap.setter
    def irq_remap(self, table) -> None:
        self._irq_remap = table

    def schedule(self, delay: float, work) -> None:
        """Delayed work (a workqueue item): the engine runs it `delay` simulated seconds on."""
        self.delayed.append((self.clock + delay, work))

    def by_rid(self, rid: int, domain: int = 0) -> PciFunction | None:
        return self.by_bdf.get(Bdf.from_rid(domain, rid))

    def alloc_host_memory(self, size: int, align: int = 0x1000, owner: str = "") -> int:
        """Pages of simulated system RAM for DMA buffers (never backed: addresses only),
        aligned to `align` (a power of two); owner says who frees them."""
        return self.host_memory.alloc(size, align, owner)

    def free_host_memory(self, hpa: int) -> None:
        """Give back what alloc_host_memory handed out at hpa, and the bytes written there."""
        self.ram.drop(hpa, self.host_memory.free(hpa))

    def lookup(self, name: str) -> PciFunction | None:
        """bus_find_device_by_name: the exact kernel name only (01:00.0 is not found)."""
        try:
            f = self.by_bdf.get(Bdf.from_str(name))
        except ValueError:
            return None
        return f if f is not None and f.name == name else None

    def children(self, bridge: PciFunction | None) -> list[PciFunction]:
        """Functions whose directory sits below bridge's (VFs beside their PF), once per generation."""
        gen, index = self._children
        if gen != self.generation:
            index = {}
            for f in self.functions:
                if not f.is_virtfn:
                    index.setdefault(id(f.parent), []).append(f)
            for f in self.functions:
                if f.is_virtfn:
                    index.setdefault(id(f.physfn.parent), []).append(f)
            self._children = (self.generation, index)
        return index.get(id(bridge), [])

    def buses(self) -> list[tuple[int, int, PciFunction | None]]:
        """(domain, bus, bridge) of every bus: the root bus and each bridge's secondary."""
        seen = {(f.bdf.domain, f.bdf.bus): f.parent for f in self.functions if not f.is_virtfn}
        for f in self.functions:
            if f.is_bridge:
                seen.setdefault((f.bdf.domain, f.secondary), f)
        return sorted((d, b, p) for (d, b), p in seen.items())

    # --- IOMMU -------------------------------------------------------------------------
    def domains_used(self) -> int:
        """Bits set in dmar0's domain-id bitmap: what the unit's domain-id allocator holds
        (DmarUnit.domain_ids_used; asking makes the unit's tables)."""
        u = iommu.unit(self)
        return u.domain_ids_used() if u is not None else 0

    def vfio_groups(self) -> dict[int, int]:
        """Groups with a /dev/vfio/<N> node (a member bound to a VFIO driver), with the
        node's minor: vfio_group's own ida, lowest free, kept while the node lives."""
        live = set()
        if self.groups is not None:
            live = {gid for gid, g in self.groups.by_id.items()
                    if any(vfio_bound(d) for d in g.devices)}
        for gid in list(self.vfio_minors):
            if gid not in live:
                del self.vfio_minors[gid]
        for gid in sorted(live - self.vfio_minors.keys()):
            used = set(self.vfio_minors.values())
            self.vfio_minors[gid] = next(i for i in range(len(used) + 1) if i not in used)
        return dict(sorted(self.vfio_minors.items()))

    # --- drivers and netdevs ---------------------------------------------------
    def add_netdev(self, dev: PciFunction, drv: Driver, name: str | None = None) -> NetDev:
        """register_netdev(): ethN takes the lowest free N (dev_alloc_name)."""
        if name is None:
            name = f"eth{self.eth_ids.alloc()}"
        elif name.startswith("eth") and name[3:].isdigit():
            self.eth_ids.take(int(name[3:]))
        subdir = None
        if drv.netdev_subdir:
            subdir = f"{drv.netdev_subdir}{sum(1 for d in self.netdevs.values() if d.subdir)}"
        idx = self._next_ifindex
        self._next_ifindex += 1
        mac = permanent_address(self.hw.get(dev.bdf, {}).get("mac"), dev, len(dev.netdevs))
        nd = NetDev(name, dev, idx, mac, subdir)
        cfg = self.net_config.get(name)        # checked by topology.py (net.check_net_config)
        if cfg:                                # (else NetDev's defaults: carrier, 1500, no addresses)
            nd.carrier = cfg.get("carrier", True)
            nd.mtu = cfg.get("mtu", nd.mtu)    # as the network manager sets it after registration
            nd.addresses = tuple(cfg.get("addresses", ()))
            nd.routes = tuple(parse_route(r) for r in cfg.get("routes", ()))
        self.netdevs[name] = nd
        dev.netdevs.append(nd)
        self.note(nd)                # (class/net gains its name: sysfs/dirty.py)
        self.uevent("add", nd)       # netdev_register_kobject -> device_add
        return nd

    def remove_netdev(self, nd: NetDev) -> None:
        self.uevent("remove", nd)    # netdev_unregister_kobject -> device_del
        self.netdevs.pop(nd.name, None)
        nd.dev.netdevs.remove(nd)
        self.note(nd)
        if nd.name.startswith("eth") and nd.name[3:].isdigit():
            self.eth_ids.free(int(nd.name[3:]))

    def release_driver(self, dev: PciFunction) -> None:
        """device_release_driver(): what a driver's own work calls to let a device go."""
        binding.release(self, dev)

    # --- invariants (tests call this after every operation) -------------------------
    def check(self) -> None:
        names = [f.name for f in self.functions]
        assert len(names) == len(set(names)), "duplicate function names"
        for f in self.functions:
            if f.driver is not None:
                assert f in f.driver.devices, f"{f.name}: driver does not list it"
            for nd in f.netdevs:
                assert self.netdevs.get(nd.name) is nd, f"{f.name}: netdev {nd.name} not registered"
            if self.groups is not None:
                assert f.group is not None and f in f.group.devices, f"{f.name}: not in its group"
                assert self.groups.by_id.get(f.group.id) is f.group
        for drv in self.drivers.values():
            for f in drv.devices:
                assert f.driver is drv and f in self.functions, f"{drv.name}: stale device {f.name}"
        if self.groups is not None:
            members = [f for g in self.groups.by_id.values() for f in g.devices]
            assert len(members) == len(set(map(id, members))) == len(self.functions), "group membership"
        for nd in self.netdevs.values():
            assert nd.dev in self.functions and nd in nd.dev.netdevs, f"netdev {nd.name}: stale"
        check_refs(self)
        unit = iommu.booted(self)   # context entries exist once the tables were made
        if unit is not None:
            for f in self.functions:
                dom = f.group.domain
                lo, hi = unit.context(f.bdf.rid)
                if dom.type == "blocked":
                    assert not lo & 1, f"{f.name}: blocked but its context entry is present"
                else:
                    assert lo & 1 and (hi >> 8) & 0xFFFF == dom.did, f"{f.name}: context entry not its group's domain"
            # (the blocking domain a claimed group waits in has no id: intel's blocking_domain)
            live = {g.domain.did for g in self.groups.by_id.values() if g.domain.type != "blocked"}
            assert live <= set(unit.domains), "a group's domain is missing from the unit"

    # --- PCI core operations ------------------------------------------------------------
    def pci_enable(self, dev: PciFunction, value: int) -> None:
        """enable_store (pci-sysfs.c)."""
        if self.profile.enable_busy_when_bound and dev.driver is not None:
            raise SysfsError(errno.EBUSY)
        if value:
            dev.enable_cnt += 1
        elif dev.enable_cnt == 0:
            raise SysfsError(errno.EIO)
        else:
            dev.enable_cnt -= 1

    def reset_function(self, dev: PciFunction) -> None:
        """pci_reset_function(): a simulated FLR leaves the function as it was. With
        every method disabled through reset_method: ENOTTY, as pci_reset_supported()."""
        if not dev.reset_methods:
            raise SysfsError(errno.ENOTTY)
        self.kmsg.dev(dev, "resetting")
        self.kmsg.dev(dev, "reset done")

    def config_write(self, dev: PciFunction, off: int, data: bytes) -> None:
        """pci_write_config(): IDs, class and header type are read-only in hardware; a
        surprise-removed device takes nothing (pci_user_write_config: not found, ignored)."""
        if dev.disconnected:
            return
        for i, b in enumerate(data):
            if off + i >= 0x10 or 0x04 <= off + i < 0x08:
                dev.config.w8(off + i, b)

    def add_function(self, f: PciFunction, unset=frozenset()) -> None:
        """pci_device_add() and iommu_probe_device(): the function exists and has a group.
        unset: resources its setup lines show at 0 (a hot-added card's, before assignment)."""
        self.functions.append(f)
        self.by_bdf[f.bdf] = f
        f.machine = self
        self.note(f, f.bdf)
        for line in resource_log.device_lines(self, f, unset):
            self.kmsg.dev(f, line, prefix="pci")
        if self.groups is not None:
            g = self.groups.add_device(f, self.functions)
            self.kmsg.dev(f, f"Adding to iommu group {g.id}", prefix="pci")
            iommu.attach_device(self, f)
        self.uevent("add", f)        # device_add's KOBJ_ADD (the bus notifier made the group first)

    def remove_one(self, f: PciFunction) -> None:
        """pci_stop_and_remove_bus_device() of one function without a driver."""
        if self.groups is not None and f.group is not None:
            group = f.group
            self.groups.remove_device(f)
            self.kmsg.dev(f, f"Removing from iommu group {group.id}", prefix="pci")
            iommu.detach_device(self, f, group)
            self.note(group)
        self.note(f, f.bdf)
        self.uevent("remove", f)     # device_del's KOBJ_REMOVE
        self.functions.remove(f)
        del self.by_bdf[f.bdf]

    def disable_sriov(self, pf: PciFunction) -> None:
        """pci_disable_sriov(): what a driver's remove calls (binding.release asks for it
        through the Machine, so the driver core need not know the PCI core)."""
        sriov.disable(self, pf)

    def remove_function(self, dev: PciFunction) -> None:
        """`remove`: the function and everything below it go away (pci/hotplug.py)."""
        hotplug.remove_function(self, dev)

    def rescan(self, only=None) -> None:
        """pci_rescan_bus() of what `remove` left (pci/hotplug.py)."""
        hotplug.rescan(self, only)
