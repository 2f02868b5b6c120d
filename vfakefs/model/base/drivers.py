"""Simulated PCI drivers: names, modules and id tables of the real ones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from vfakefs.model.base import driver_ops as ops
from vfakefs.model.base import irqs
from vfakefs.model.ida import Ida

ANY = 0xFFFFFFFF  # PCI_ANY_ID


@dataclass(frozen=True, slots=True)
class PciDeviceId:
    vendor: int
    device: int
    subvendor: int = ANY
    subdevice: int = ANY
    class_code: int = 0
    class_mask: int = 0
    driver_data: int = 0
    override_only: bool = False   # PCI_ID_F_VFIO_DRIVER_OVERRIDE: counts only under driver_override

    def matches(self, dev) -> bool:
        # pci_match_one_device
        return ((self.vendor == ANY or self.vendor == dev.vendor)
                and (self.device == ANY or self.device == dev.device)
                and (self.subvendor == ANY or self.subvendor == dev.subsystem_vendor)
                and (self.subdevice == ANY or self.subdevice == dev.subsystem_device)
                and not ((self.class_code ^ dev.class_code) & self.class_mask))


@dataclass(eq=False)
class Driver:
    """struct pci_driver: what the driver core and the PCI core ask of a driver are its
    callbacks and flags here, never its name, so drivers come and go with their modules."""
    name: str
    module: str | None = None
    id_table: list[PciDeviceId] = field(default_factory=list)
    # .sriov_configure: True, or a callable (m, pf, n) that may refuse (raises SysfsError)
    # before the VFs are enabled, as the driver's own callback does first
    sriov_configure: bool | Callable = False
    net: bool = False                  # registers a netdev per bound device
    # ... only for these device IDs (None: every one): virtio-pci binds every virtio device,
    # and only a network one (virtio_net's VIRTIO_ID_NET: 0x1000 transitional, 0x1041) gets a netdev
    net_devices: tuple[int, ...] | None = None
    driver_managed_dma: bool = False   # vfio-pci, pci-stub, pcieport
    netdev_subdir: str | None = None   # virtio-pci puts the netdev under virtio<N>/
    # what probe adds to the device directory: {dir: child prefix} (nvme/nvme0, ptp/ptp0)
    device_dirs: dict = field(default_factory=dict)
    device_files: dict = field(default_factory=dict)   # {name: content}
    wakeup: bool = False               # enables power/wakeup at probe (device_set_wakeup_enable)
    disables_sriov_on_remove: bool = False   # remove() calls pci_disable_sriov (ixgbe, igb)
    # what probe() prints: str.format fields {dev} {ifname} {mac} {inst} {link} ... (base/probe_log.py)
    probe_log: tuple[str, ...] = ()
    probe_log_before_enable: int = 0   # lines probe prints before pci_enable_device
    probe_log_late: tuple[str, ...] = ()   # what the probe's asynchronous part prints when done (nvme)
    remove_log: tuple[str, ...] = ()       # what remove() prints, before its netdev goes
    hw_info: dict = field(default_factory=dict)   # device ID -> fields its probe lines print (mac_type ...)
    regions: str | None = None         # the name pci_request_regions() claims its BARs under (/proc/iomem)
    enables_device: bool = True        # probe calls pci_enable_device + pci_set_master (vfio-pci waits for open)
    instances: dict = field(default_factory=dict)   # device -> instance number (nvme0, nvme1, ...)
    instance_ids: Ida = field(default_factory=Ida)
    dma_bits: int | None = 64          # what probe passes to dma_set_mask_and_coherent (None: never)
    mtu_range: tuple[int, int] = (68, 1500)   # the netdev's min_mtu, max_mtu as probe sets them
    boot: bool = True                  # registered at boot when the topology names no drivers
    # .probe's own checks, before the device is taken: (m, drv, dev) -> None, or raises
    # through binding.probe_failed (vfio_pci_probe's refusals, e1000's unknown MAC type)
    probe: Callable | None = None
    after_probe: Callable | None = None   # (m, drv, dev): work the probe leaves queued (nvme's reset_work)
    vfio: bool = False                 # registers a VFIO device (vfio_pci_core_register_device)
    captures_vfs: bool = False         # its bus notifier sets driver_override on its PF's new VFs
    port_services: bool = False        # registers the PCIe port services (pcieport)
    irq_plan: Callable | None = None   # (m, dev, drv) -> irqs.Plan: the vectors probe takes
    irqs_on_open: bool = False         # request_irq in ndo_open, not at probe (network drivers)
    irq_admin_first: bool = False      # one vector first, the rest once the controller is up (nvme)
    child_module: str | None = None    # the module udev loads for the devices it creates (virtio_net)

    def registers_netdev(self, dev) -> bool:
        """Whether probing dev registers a network interface."""
        return self.net and (self.net_devices is None or dev.device in self.net_devices)

    def instance(self, dev) -> int:
        """The driver's own ida: the lowest number no bound device holds."""
        if dev not in self.instances:
            self.instances[dev] = self.instance_ids.alloc()
        return self.instances[dev]

    def drop_instance(self, dev) -> None:
        if dev in self.instances:
            self.instance_ids.free(self.instances.pop(dev))
    dynids: list[PciDeviceId] = field(default_factory=list)
    devices: list = field(default_factory=list)  # bound PciFunctions, in bind order
    machine: object = None

    @property
    def module_name(self) -> str:
        return self.module or self.name.replace("-", "_")


def _ids(*pairs: tuple[int, int]) -> list[PciDeviceId]:
    return [PciDeviceId(v, d) for v, d in pairs]


def vfio_bound(dev) -> bool:
    """dev is bound to a VFIO driver (vfio-pci or a variant): its group then has a
    /dev/vfio/<N> node and may be opened."""
    return dev.driver is not None and dev.driver.vfio


def catalogue() -> dict[str, Driver]:
    """A fresh set of drivers (each machine owns its own: dynamic ids are state)."""
    drivers = [
        Driver("pcieport", "pcieport", [PciDeviceId(ANY, ANY, class_code=0x060400, class_mask=0xFFFFFF)],
               driver_managed_dma=True, dma_bits=None, port_services=True),
        # ixgbe_probe: the queue count (ixgbe_init_interrupt_scheme), the link, the board, the address
        Driver("ixgbe", None, _ids((0x8086, 0x1528), (0x8086, 0x10FB), (0x8086, 0x1563)),
               sriov_configure=True, net=True, disables_sriov_on_remove=True, mtu_range=(68, 9710),
               probe_log=("{dev}: Multiqueue Enabled: Rx Queue count = {queues}, Tx Queue count = {queues} "
                          "XDP Queue count = 0", "{dev}: {bandwidth}",
                          "{dev}: MAC: {mac_type}, PHY: {phy_type}, PBA No: {pba}", "{dev}: {mac}",
                          "{dev}: Intel(R) 10 Gigabit Network Connection"),
               remove_log=("{dev}: complete",),
               # enum ixgbe_mac_type / ixgbe_phy_type: X540 (copper, internal PHY), 82599 SFP+, X550
               hw_info={0x1528: {"mac_type": 3, "phy_type": 0}, 0x10FB: {"mac_type": 2, "phy_type": 0},
                        0x1563: {"mac_type": 4, "phy_type": 0}}, regions="ixgbe",
               irq_plan=irqs.ixgbe_plan, irqs_on_open=True),
        # ixgbevf_print_device_info
        Driver("ixgbevf", None, _ids((0x8086, 0x1515), (0x8086, 0x10ED), (0x8086, 0x1565)), net=True, mtu_range=(68, 9710),
               probe_log=("{dev}: {mac}", "{dev}: MAC: {mac_type}", "{dev}: Intel(R) {model} Virtual Function"),
               hw_info={0x1515: {"mac_type": 2, "model": "X540"}, 0x10ED: {"mac_type": 1, "model": "82599"},
                        0x1565: {"mac_type": 3, "model": "X550"}}, regions="ixgbevf",
               irq_plan=irqs.ixgbevf_plan, irqs_on_open=True),
        # igb_probe: the banner, bus and address, part number, interrupt mode
        Driver("igb", None, _ids((0x8086, 0x1521), (0x8086, 0x10C9), (0x8086, 0x1533)),
               sriov_configure=True, net=True, disables_sriov_on_remove=True, mtu_range=(68, 9216),
               probe_log=("{dev}: Intel(R) Gigabit Ethernet Network Connection", "{dev}: {ifname}: ({igb_link}) {mac}",
                          "{dev}: {ifname}: PBA No: {pba}",
                          "{dev}: Using MSI-X interrupts. {queues} rx queue(s), {queues} tx queue(s)"),
               regions="igb", irq_plan=irqs.igb_plan, irqs_on_open=True),
        Driver("igbvf", None, _ids((0x8086, 0x1520), (0x8086, 0x10CA)), net=True, mtu_range=(68, 9216), regions="igbvf",
               irqs_on_open=True),
        Driver("e1000", None, _ids((0x8086, 0x100E), (0x8086, 0x100F)), net=True, mtu_range=(46, 16110),
               probe_log=("{dev} {ifname}: (PCI:33MHz:32-bit) {mac}", "{dev} {ifname}: Intel(R) PRO/1000 Network Connection"),
               regions="e1000", probe=ops.e1000_probe, irqs_on_open=True),
        # e1000_probe: e1000e_check_options, the PTP clock (named after the device until the
        # netdev registers), bus and address, banner, board (enum e1000_mac_type / e1000_phy_type)
        Driver("e1000e", None, _ids((0x8086, 0x10D3), (0x8086, 0x15B8)), net=True, mtu_range=(68, 9212),   # 82574: max_hw_frame_size 9234
               probe_log=("{dev}: Interrupt Throttling Rate (ints/sec) set to dynamic conservative mode",
                          "{dev} {dev} (uninitialized): registered PHC clock",
                          "{dev} {ifname}: (PCI Express:{link}) {mac}", "{dev} {ifname}: Intel(R) PRO/1000 Network Connection",
                          "{dev} {ifname}: MAC: {mac_type}, PHY: {phy_type}, PBA No: {pba}"),
               remove_log=("{dev} {ifname}: removed PHC",),
               hw_info={0x10D3: {"mac_type": 3, "phy_type": 8}, 0x15B8: {"mac_type": 12, "phy_type": 12}},
               regions="e1000e", device_dirs={"ptp": "ptp", "wakeup": "wakeup"}, wakeup=True, irqs_on_open=True),
        Driver("virtio-pci", "virtio_pci", [PciDeviceId(0x1AF4, ANY)], net=True, netdev_subdir="virtio",
               net_devices=(0x1000, 0x1041),
               mtu_range=(68, 65535), child_module="virtio_net"),   # virtio_net without VIRTIO_NET_F_MTU: ETH_MAX_MTU
        Driver("nvme", None, [PciDeviceId(ANY, ANY, class_code=0x010802, class_mask=0xFFFFFF)],
               sriov_configure=True, device_dirs={"nvme": "nvme"}, probe_log=("nvme{inst}: pci function {name}",),
               probe_log_before_enable=1, probe_log_late=("nvme{inst}: {queues}/0/0 default/read/poll queues",),
               after_probe=ops.nvme_after_probe, irq_plan=irqs.nvme_plan, irq_admin_first=True, regions="nvme",
               device_files={"pools": "poolinfo - 0.1\nprp list 256        0    0  256  0\n"
                                      "prp list page       0    0 4096  0\n"}),
        # ConnectX-5 (Ex): mlx5e's netdev hangs off the PCI function (SET_NETDEV_DEV), its
        # max_mtu from the port's 9978-byte frame limit (MLX5E_HW2SW_MTU)
        Driver("mlx5_core", None, _ids((0x15B3, 0x1017), (0x15B3, 0x1019)), regions="mlx5_core",
               net=True, mtu_range=(68, 9978), irqs_on_open=True),
        Driver("nouveau", None, [PciDeviceId(0x10DE, ANY, class_code=0x030000, class_mask=0xFF0000)],
               irq_plan=irqs.nouveau_plan),
        Driver("snd_hda_intel", None, [PciDeviceId(0x10DE, ANY, class_code=0x040300, class_mask=0xFFFF00),
                                       PciDeviceId(0x8086, ANY, class_code=0x040300, class_mask=0xFFFF00)],
               irq_plan=irqs.hda_plan, regions="ICH HD audio"),
        Driver("ahci", None, [PciDeviceId(ANY, ANY, class_code=0x010601, class_mask=0xFFFFFF)], regions="ahci"),
        Driver("vfio-pci", "vfio_pci", [PciDeviceId(ANY, ANY, override_only=True)],
               sriov_configure=ops.vfio_pci_sriov_configure, probe=ops.vfio_pci_probe, vfio=True, captures_vfs=True,
               driver_managed_dma=True, dma_bits=None, enables_device=False,
               disables_sriov_on_remove=True),   # vfio_pci_core_unregister_device: sriov_configure(0)
        Driver("pci-stub", "pci_stub", [], driver_managed_dma=True, dma_bits=None, enables_device=False,
               probe_log=("{dev}: claimed by stub",)),
        # modules lspci -k names for the ICH9 functions; not loaded unless asked for
        Driver("lpc_ich", "lpc_ich", _ids((0x8086, 0x2410), (0x8086, 0x2810), (0x8086, 0x2912), (0x8086, 0x2914),
                                          (0x8086, 0x2916), (0x8086, 0x2917), (0x8086, 0x2918), (0x8086, 0x3a16),
                                          (0x8086, 0x3a18), (0x8086, 0x8c4e)), boot=False),
        Driver("i801_smbus", "i2c_i801", _ids((0x8086, 0x2930), (0x8086, 0x283e), (0x8086, 0x3a30),
                                              (0x8086, 0x1c22), (0x8086, 0x8c22), (0x8086, 0xa123)), boot=False),
    ]
    return {d.name: d for d in drivers}
