"""The module table: every module the simulated kernel knows, as its source declares it
(Debian 6.1 amd64). Read through modules.py (modules(), of_driver(), dep_order())."""
from __future__ import annotations

from dataclasses import replace

from vfakefs.model.base.modinfo import ModuleInfo, Param

INTEL = "Intel Corporation, <linux.nics@intel.com>"
ALEX = "Alex Williamson <alex.williamson@redhat.com>"


def _m(name, path, depends=(), **kw) -> ModuleInfo:
    return ModuleInfo(name, path, tuple(depends), **kw)


def _builtin(name, drivers=(), params=(), **kw) -> ModuleInfo:
    return ModuleInfo(name, None, (), builtin=True, drivers=tuple(drivers), params=tuple(params), **kw)


def _bool(name, mode, default, desc="") -> Param:
    return Param(name, "bool", mode, ("Y" if default else "N") if mode else None, desc)


def _p(name, type_, mode, default, desc="") -> Param:
    return Param(name, type_, mode, str(default) if mode else None, desc)


_DEBUG = _p("debug", "int", 0, None, "Debug level (0=none,...,16=all)")
_COPYBREAK = _p("copybreak", "uint", 0o644, 256, "Maximum size of packet that is copied to a new buffer on receive")


def _e1000_array(*names_descs) -> tuple[Param, ...]:
    # E1000_PARAM(): module_param_array_named(X, X, int, &num_X, 0)
    return tuple(Param(n, "array of int", 0, None, d) for n, d in names_descs)


_E1000_COMMON = (("TxIntDelay", "Transmit Interrupt Delay"), ("TxAbsIntDelay", "Transmit Absolute Interrupt Delay"),
                 ("RxIntDelay", "Receive Interrupt Delay"), ("RxAbsIntDelay", "Receive Absolute Interrupt Delay"),
                 ("InterruptThrottleRate", "Interrupt Throttling Rate"),
                 ("SmartPowerDownEnable", "Enable PHY smart power down"))

_CRCT10DIF_ALIASES = ("crypto-crct10dif", "crct10dif")

_MODULES = (
    # --- virtio (the reference's virtio-net behind the switch) ---------------------------------------
    _m("virtio_net", "kernel/drivers/net/virtio_net.ko", ("net_failover", "virtio", "virtio_ring"),
       params=(_p("napi_weight", "int", 0o444, 64), _bool("csum", 0o444, True), _bool("gso", 0o444, True),
               _bool("napi_tx", 0o644, True)),
       description="Virtio network driver", aliases=("virtio:d00000001v*",), coresize=73728),
    _m("net_failover", "kernel/drivers/net/net_failover.ko", ("failover",),
       description="Failover driver for Paravirtual drivers", license="GPL v2", coresize=24576),
    _m("failover", "kernel/net/core/failover.ko",
       description="Generic failover infrastructure/interface", license="GPL v2", coresize=16384),
    _m("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko",
       ("virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio", "virtio_ring"), drivers=("virtio-pci",),
       params=(_bool("force_legacy", 0o444, False, "Force legacy mode for transitional virtio 1 devices"),),
       description="virtio-pci", authors=("Anthony Liguori <aliguori@us.ibm.com>",), version="1", coresize=24576),
    _m("virtio_pci_legacy_dev", "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
       description="Legacy Virtio PCI Device", authors=("Wu Zongyong <wuzongyong@linux.alibaba.com>",),
       version="0.1", coresize=16384),
    _m("virtio_pci_modern_dev", "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
       description="Modern Virtio PCI Device", authors=("Jason Wang <jasowang@redhat.com>",),
       version="0.1", coresize=20480),
    _m("virtio", "kernel/drivers/virtio/virtio.ko", ("virtio_ring",), coresize=20480),
    _m("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko", coresize=49152),
    # --- Intel NICs -----------------------------------------------------------------------------------
    _m("e1000", "kernel/drivers/net/ethernet/intel/e1000/e1000.ko", drivers=("e1000",),
       params=(_e1000_array(("TxDescriptors", "Number of transmit descriptors"),
                            ("RxDescriptors", "Number of receive descriptors"), ("Speed", "Speed setting"),
                            ("Duplex", "Duplex setting"), ("AutoNeg", "Advertised auto-negotiation setting"),
                            ("FlowControl", "Flow Control setting"),
                            ("XsumRX", "Disable or enable Receive Checksum offload"), *_E1000_COMMON)
               + (_COPYBREAK, _DEBUG)),
       description="Intel(R) PRO/1000 Network Driver", authors=(INTEL,), license="GPL v2", coresize=163840),
    _m("e1000e", "kernel/drivers/net/ethernet/intel/e1000e/e1000e.ko", drivers=("e1000e",),
       params=(_e1000_array(*_E1000_COMMON, ("IntMode", "Interrupt Mode"),
                            ("KumeranLockLoss", "Enable Kumeran lock loss workaround"),
                            ("WriteProtectNVM", "Write-protect NVM [WARNING: disabling this can lead to corrupted NVM]"),
                            ("CrcStripping", "Enable CRC Stripping, disable if your BMC needs the CRC"))
               + (_COPYBREAK, _DEBUG)),
       description="Intel(R) PRO/1000 Network Driver", authors=(INTEL,), license="GPL v2", coresize=315392),
    _m("ixgbe", "kernel/drivers/net/ethernet/intel/ixgbe/ixgbe.ko", ("mdio", "dca"), drivers=("ixgbe",),
       params=(_p("max_vfs", "uint", 0, None, "Maximum number of virtual functions to allocate per physical "
                  "function - default is zero and maximum value is 63. (Deprecated)"),
               _bool("allow_unsupported_sfp", 0o444, False,
                     "Allow unsupported and untested SFP+ modules on 82599-based adapters"), _DEBUG),
       description="Intel(R) 10 Gigabit PCI Express Network Driver", authors=(INTEL,), license="GPL v2",
       coresize=389120),
    _m("ixgbevf", "kernel/drivers/net/ethernet/intel/ixgbevf/ixgbevf.ko", drivers=("ixgbevf",), params=(_DEBUG,),
       description="Intel(R) 10 Gigabit Virtual Function Network Driver", authors=(INTEL,), license="GPL v2",
       coresize=98304),
    _m("igb", "kernel/drivers/net/ethernet/intel/igb/igb.ko", ("dca", "i2c_algo_bit"), drivers=("igb",),
       params=(_p("max_vfs", "uint", 0, None, "Maximum number of virtual functions to allocate per physical function"),
               _DEBUG),
       description="Intel(R) Gigabit Ethernet Network Driver", authors=(INTEL,), license="GPL v2", coresize=286720),
    _m("igbvf", "kernel/drivers/net/ethernet/intel/igbvf/igbvf.ko", drivers=("igbvf",), params=(_DEBUG,),
       description="Intel(R) Gigabit Virtual Function Network Driver", authors=(INTEL,), license="GPL v2",
       coresize=57344),
    _m("mdio", "kernel/drivers/net/mdio.ko", description="Generic support for MDIO-compatible transceivers",
       authors=("Copyright 2006-2009 Solarflare Communications Inc.",), coresize=16384),
    _m("dca", "kernel/drivers/dma/dca.ko", description="Intel Direct Cache Access (DCA) service module",
       version="1.12.1", coresize=16384),
    _m("i2c_algo_bit", "kernel/drivers/i2c/algos/i2c-algo-bit.ko",
       params=(_bool("bit_test", 0, False, "lines testing - 0 off; 1 report; 2 fail if stuck"),),
       description="I2C-Bus bit-banging algorithm", authors=("Simon G. Vogl <simon@tk.uni-linz.ac.at>",),
       coresize=16384),
    # --- VFIO -----------------------------------------------------------------------------------------
    _m("vfio_pci", "kernel/drivers/vfio/pci/vfio-pci.ko", ("vfio_pci_core", "vfio"), drivers=("vfio-pci",),
       params=(Param("ids", "string", 0, None, "Initial PCI IDs to add to the vfio driver, format is "
                     "\"vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]\" and multiple comma "
                     "separated entries can be specified"),
               _bool("nointxmask", 0o644, False, "Disable support for PCI 2.3 style INTx masking.  If this "
                     "resolves problems for specific devices, report lspci -vvvxxx to linux-pci@vger.kernel.org "
                     "so the device can be fixed automatically via the broken_intx_masking flag."),
               _bool("disable_vga", 0o444, False, "Disable VGA resource access through vfio-pci"),
               _bool("disable_idle_d3", 0o644, False,
                     "Disable using the PCI D3 low power state for idle, unused devices"),
               _bool("enable_sriov", 0o644, False, "Enable support for SR-IOV configuration.  Enabling SR-IOV on "
                     "a PF typically requires support of the userspace PF driver, enabling VFs without such "
                     "support may result in non-functional VFs or PF."),
               _bool("disable_denylist", 0o444, False, "Disable use of device denylist. Disabling the denylist "
                     "allows binding to devices with known errata that may lead to exploitable stability or "
                     "security issues when accessed by untrusted users.")),
       description="VFIO PCI - User Level meta-driver", authors=(ALEX,), license="GPL v2", coresize=16384),
    _m("vfio_pci_core", "kernel/drivers/vfio/pci/vfio-pci-core.ko", ("vfio_virqfd", "irqbypass", "vfio"),
       description="core driver for VFIO based PCI devices", authors=(ALEX,), license="GPL v2", coresize=73728),
    _m("vfio_virqfd", "kernel/drivers/vfio/vfio_virqfd.ko", description="IRQFD support for VFIO bus drivers",
       authors=(ALEX,), license="GPL v2", version="0.1", coresize=16384),
    _m("irqbypass", "kernel/virt/lib/irqbypass.ko", description="IRQ bypass manager utility module",
       license="GPL v2", coresize=16384),
    _m("vfio_iommu_type1", "kernel/drivers/vfio/vfio_iommu_type1.ko", ("vfio",),
       params=(_bool("allow_unsafe_interrupts", 0o644, False,
                     "Enable VFIO IOMMU support for on platforms without interrupt remapping support."),
               _bool("disable_hugepages", 0o644, False, "Disable VFIO IOMMU support for IOMMU hugepages."),
               _p("dma_entry_limit", "uint", 0o644, 65535,
                  "Maximum number of user DMA mappings per container (65535).")),
       description="Type1 IOMMU driver for VFIO", authors=(ALEX,), license="GPL v2", version="0.2",
       coresize=45056),
    _m("vfio", "kernel/drivers/vfio/vfio.ko",
       params=(_bool("enable_unsafe_noiommu_mode", 0o644, False, "Enable UNSAFE, no-IOMMU mode.  This mode "
                     "provides no device isolation, no DMA translation, no host kernel protection, cannot be used "
                     "for device assignment to virtual machines, requires RAWIO permissions, and will taint the "
                     "kernel.  If you do not know what this is for, step away. (default: false)"),),
       description="VFIO - User Level meta-driver", authors=(ALEX,), license="GPL v2", version="0.3",
       softdep_post=("vfio_iommu_type1", "vfio_iommu_spapr_tce"),
       aliases=("char-major-10-196", "devname:vfio/vfio"), coresize=49152,
       init_log=("VFIO - User Level meta-driver version: 0.3",)),
    # --- NVMe and the CRC libraries below it ----------------------------------------------------------
    _m("nvme", "kernel/drivers/nvme/host/nvme.ko", ("nvme_core",), drivers=("nvme",),
       params=(_p("use_threaded_interrupts", "int", 0, None),
               _bool("use_cmb_sqes", 0o444, True, "use controller's memory buffer for I/O SQes"),
               _p("max_host_mem_size_mb", "uint", 0o444, 128,
                  "Maximum Host Memory Buffer (HMB) size per controller (in MiB)"),
               _p("sgl_threshold", "uint", 0o644, 32768, "Use SGLs when average request segment size is larger "
                  "or equal to this size. Use 0 to disable SGLs."),
               _p("io_queue_depth", None, 0o644, 1024, "set io queue depth, should >= 2 and < 4096"),
               _p("write_queues", None, 0o644, 0, "Number of queues to use for writes. If not set, reads and "
                  "writes will share a queue set."),
               _p("poll_queues", None, 0o644, 0, "Number of queues to use for polled IO."),
               _bool("noacpi", 0o444, False, "disable acpi bios quirks")),
       authors=("Matthew Wilcox <willy@linux.intel.com>",), version="1.0", coresize=57344),
    _m("nvme_core", "kernel/drivers/nvme/host/nvme-core.ko", ("t10_pi",),
       params=(_p("admin_timeout", "uint", 0o644, 60, "timeout in seconds for admin commands"),
               _p("io_timeout", "uint", 0o644, 30, "timeout in seconds for I/O"),
               _p("shutdown_timeout", "byte", 0o644, 5, "timeout in seconds for controller shutdown"),
               _p("max_retries", "byte", 0o644, 5, "max number of retries a command may have"),
               _p("default_ps_max_latency_us", "ulong", 0o644, 100000,
                  "max power saving latency for new devices; use PM QOS to change per device"),
               _bool("force_apst", 0o644, False, "allow APST for newly enumerated devices even if quirked off"),
               _p("apst_primary_timeout_ms", "ulong", 0o644, 100, "primary APST timeout in ms"),
               _p("apst_secondary_timeout_ms", "ulong", 0o644, 2000, "secondary APST timeout in ms"),
               _p("apst_primary_latency_tol_us", "ulong", 0o644, 15000, "primary APST latency tolerance in us"),
               _p("apst_secondary_latency_tol_us", "ulong", 0o644, 100000,
                  "secondary APST latency tolerance in us"),
               _bool("multipath", 0o444, True, "turn on native support for multipath"),
               _p("iopolicy", None, 0o644, "numa", "Default multipath I/O policy; 'numa' (default) or 'round-robin'")),
       version="1.0", coresize=163840),
    _m("t10_pi", "kernel/block/t10-pi.ko", ("crc64_rocksoft", "crc_t10dif"),
       description="T10 Protection Information module", coresize=16384),
    _m("crc64_rocksoft", "kernel/lib/crc64-rocksoft.ko", ("crc64",),
       params=(_p("transform", None, 0o444, "crc64-rocksoft-generic", "current crc64 transform"),),
       description="Rocksoft model CRC64 calculation (library API)", softdep_pre=("crc64",), coresize=20480),
    _m("crc_t10dif", "kernel/lib/crc-t10dif.ko", ("crct10dif_common",),
       params=(_p("transform", None, 0o444, "crct10dif-pclmul", "current crc t10 dif transform"),),
       description="T10 DIF CRC calculation (library API)", softdep_pre=("crct10dif",),
       crypto_users=("crct10dif_pclmul", "crct10dif_generic"), coresize=20480),
    _m("crct10dif_generic", "kernel/crypto/crct10dif_generic.ko", ("crct10dif_common",),
       description="T10 DIF CRC calculation.", coresize=16384,
       aliases=_CRCT10DIF_ALIASES + ("crypto-crct10dif-generic", "crct10dif-generic")),
    _m("crct10dif_pclmul", "kernel/arch/x86/crypto/crct10dif-pclmul.ko", ("crct10dif_common",),
       description="T10 DIF CRC calculation accelerated with PCLMULQDQ.",
       authors=("Tim Chen <tim.c.chen@linux.intel.com>",), coresize=16384,
       aliases=_CRCT10DIF_ALIASES + ("crypto-crct10dif-pclmul", "crct10dif-pclmul",
                                     "cpu:type:x86,ven*fam*mod*:feature:*0081*")),
    _m("crc64", "kernel/lib/crc64.ko", description="CRC64 calculations", license="GPL v2", coresize=20480),
    _m("crct10dif_common", "kernel/crypto/crct10dif_common.ko",
       description="T10 DIF CRC calculation common code", coresize=16384),
    # --- stubs and the drivers lspci -k names for the ICH9 functions --------------------------------------
    _m("pci_stub", "kernel/drivers/pci/pci-stub.ko", drivers=("pci-stub",),
       params=(Param("ids", "string", 0, None, "Initial PCI IDs to add to the stub driver, format is "
                     "\"vendor:device[:subvendor[:subdevice[:class[:class_mask]]]]\" and multiple comma "
                     "separated entries can be specified"),),
       authors=("Chris Wright <chrisw@sous-sol.org>",), coresize=16384),
    _m("lpc_ich", "kernel/drivers/mfd/lpc_ich.ko", drivers=("lpc_ich",),
       description="LPC interface for Intel ICH", authors=("Aaron Sierra <asierra@xes-inc.com>",),
       license="GPL", coresize=28672),
    _m("i2c_i801", "kernel/drivers/i2c/busses/i2c-i801.ko", ("i2c_smbus",), drivers=("i801_smbus",),
       params=(_p("disable_features", "uint", 0o444, 0, "Disable selected driver features:\n"
                  "\t\t  0x01  disable SMBus PEC\n\t\t  0x02  disable the block buffer\n"
                  "\t\t  0x08  disable the I2C block read functionality\n\t\t  0x10  don't use interrupts\n"
                  "\t\t  0x20  disable SMBus Host Notify "),),
       description="I801 SMBus driver", authors=("Jean Delvare <jdelvare@suse.de>",), coresize=36864),
    _m("i2c_smbus", "kernel/drivers/i2c/i2c-smbus.ko", description="SMBus protocol extensions support",
       authors=("Jean Delvare <jdelvare@suse.de>",), coresize=20480),
    _m("ahci", "kernel/drivers/ata/ahci.ko", ("libahci", "libata"), drivers=("ahci",),
       params=(_p("marvell_enable", "int", 0o644, 1, "Marvell SATA via AHCI (1 = enabled)"),
               _p("mobile_lpm_policy", "int", 0o644, 3,
                  "Default LPM policy for mobile chipsets")),
       description="AHCI SATA low-level driver", authors=("Jeff Garzik",), version="3.0", coresize=49152),
    _m("libahci", "kernel/drivers/ata/libahci.ko", ("libata",), description="Common AHCI SATA low-level routines",
       authors=("Jeff Garzik",), coresize=49152),
    _m("libata", "kernel/drivers/ata/libata.ko", ("scsi_mod", "scsi_common"),
       description="Library module for ATA devices", authors=("Jeff Garzik",), version="3.00", coresize=401408),
    _m("scsi_mod", "kernel/drivers/scsi/scsi_mod.ko", ("scsi_common",), description="SCSI core",
       coresize=278528),
    _m("scsi_common", "kernel/drivers/scsi/scsi_common.ko", description="SCSI functions used by both the "
       "initiator and the target code", coresize=16384),
    # --- the other catalogue drivers' modules ------------------------------------------------------------
    _m("mlx5_core", "kernel/drivers/net/ethernet/mellanox/mlx5/core/mlx5_core.ko",
       ("mlxfw", "psample", "tls", "pci_hyperv_intf"), drivers=("mlx5_core",),
       params=(_p("debug_mask", "uint", 0o644, 0, "debug mask: 1 = dump cmd data, 2 = dump cmd exec time, "
                  "3 = both. Default=0"),
               _p("prof_sel", "uint", 0o444, 2, "profile selector. Valid range 0 - 2"),
               _bool("probe_vf", 0o444, True, "probe VFs or not, 0 = not probe, 1 = probe. Default = 1")),
       description="Mellanox 5th generation network adapters (ConnectX series) core driver",
       authors=("Eli Cohen <eli@mellanox.com>",), license="Dual BSD/GPL", coresize=1998848),
    _m("mlxfw", "kernel/drivers/net/ethernet/mellanox/mlxfw/mlxfw.ko", description="Mellanox firmware flash lib",
       authors=("Yotam Gigi <yotamg@mellanox.com>",), license="Dual BSD/GPL", coresize=36864),
    _m("psample", "kernel/net/psample/psample.ko", description="netlink channel for packet sampling",
       authors=("Yotam Gigi <yotam.gi@gmail.com>",), license="GPL v2", coresize=20480),
    _m("tls", "kernel/net/tls/tls.ko", description="Transport Layer Security Support",
       authors=("Mellanox Technologies",), license="Dual BSD/GPL", coresize=139264, aliases=("tcp-ulp-tls",)),
    _m("pci_hyperv_intf", "kernel/drivers/pci/controller/pci-hyperv-intf.ko",
       description="Hyper-V PCI Interface", license="GPL v2", coresize=16384),
    _m("nouveau", "kernel/drivers/gpu/drm/nouveau/nouveau.ko",
       ("drm_display_helper", "drm_kms_helper", "drm_ttm_helper", "ttm", "drm", "i2c_algo_bit", "mxm_wmi",
        "wmi", "video", "cec"), drivers=("nouveau",),
       params=(_p("modeset", "int", 0o400, -1, "enable driver (default: auto, 0 = disabled, "
                  "1 = enabled, 2 = headless)"),),
       description="nVidia Riva/TNT/GeForce/Quadro/Tesla/Tegra K1+", authors=("Nouveau Project",),
       license="GPL and additional rights", coresize=2818048),
    _m("drm", "kernel/drivers/gpu/drm/drm.ko", description="DRM shared core routines",
       license="GPL and additional rights", coresize=618496),
    _m("drm_kms_helper", "kernel/drivers/gpu/drm/drm_kms_helper.ko", ("drm",),
       description="DRM KMS helper", license="GPL and additional rights", coresize=204800),
    _m("drm_display_helper", "kernel/drivers/gpu/drm/display/drm_display_helper.ko", ("drm", "drm_kms_helper"),
       description="DRM display adapter helper", license="GPL and additional rights", coresize=184320),
    _m("ttm", "kernel/drivers/gpu/drm/ttm/ttm.ko", ("drm",), description="TTM memory manager subsystem (for DRM device)",
       license="GPL and additional rights", coresize=94208),
    _m("drm_ttm_helper", "kernel/drivers/gpu/drm/drm_ttm_helper.ko", ("ttm", "drm_kms_helper"),
       description="DRM gem ttm helpers", coresize=16384),
    _m("mxm_wmi", "kernel/drivers/platform/x86/mxm-wmi.ko", ("wmi",), description="MXM WMI Driver",
       coresize=16384),
    _m("wmi", "kernel/drivers/platform/x86/wmi.ko", description="ACPI-WMI Mapping Driver", coresize=36864),
    _m("video", "kernel/drivers/acpi/video.ko", ("wmi",), description="ACPI Video Driver", coresize=65536),
    _m("cec", "kernel/drivers/media/cec/core/cec.ko", ("rc_core",), description="Device node registration for cec drivers",
       coresize=61440),
    _m("rc_core", "kernel/drivers/media/rc/rc-core.ko", description="Remote Controller core", coresize=65536),
    _m("snd_hda_intel", "kernel/sound/pci/hda/snd-hda-intel.ko",
       ("snd_intel_dspcfg", "snd_hda_codec", "snd_hda_core", "snd_pcm", "snd"), drivers=("snd_hda_intel",),
       description="Intel HDA driver", coresize=57344),
    _m("snd_intel_dspcfg", "kernel/sound/hda/snd-intel-dspcfg.ko", ("snd_hda_core",),
       description="Intel DSP config driver", license="GPL v2", coresize=36864),
    _m("snd_hda_codec", "kernel/sound/pci/hda/snd-hda-codec.ko", ("snd_hwdep", "snd_hda_core", "snd_pcm", "snd"),
       description="HDA codec core", coresize=188416),
    _m("snd_hda_core", "kernel/sound/hda/snd-hda-core.ko", ("snd_pcm", "snd"), description="HD-audio bus",
       coresize=118784),
    _m("snd_hwdep", "kernel/sound/core/snd-hwdep.ko", ("snd",), description="Hardware dependent layer",
       coresize=20480),
    _m("snd_pcm", "kernel/sound/core/snd-pcm.ko", ("snd_timer", "snd"), description="Midlevel PCM code for ALSA.",
       coresize=155648),
    _m("snd_timer", "kernel/sound/core/snd-timer.ko", ("snd",), description="ALSA timer interface",
       coresize=49152),
    _m("snd", "kernel/sound/core/snd.ko", ("soundcore",), description="Advanced Linux Sound Architecture driver "
       "for soundcards.", coresize=126976),
    _m("soundcore", "kernel/sound/soundcore.ko", description="Core sound module", coresize=16384),
    # --- built in (CONFIG_...=y in Debian's amd64 config) ---------------------------------------------------
    _builtin("pcieport", ("pcieport",)),                 # drivers/pci/pcie/portdrv.c: no parameters
    _builtin("acpiphp", params=(_bool("disable", 0o444, False, "disable acpiphp driver"),)),
    _builtin("pciehp", params=(_bool("pciehp_poll_mode", 0o644, False,
                                     "Using polling mechanism for hot-plug events or not"),
                               _p("pciehp_poll_time", "int", 0o644, 0, "Polling mechanism frequency, in seconds"))),
    _builtin("shpchp", ("shpchp",), params=(
        _bool("shpchp_debug", 0o644, False, "Debugging mode enabled or not"),
        _bool("shpchp_poll_mode", 0o644, False, "Using polling mechanism for hot-plug events or not"),
        _p("shpchp_poll_time", "int", 0o644, 2, "Polling mechanism frequency, in seconds"))),
    _builtin("8250_pci", ("serial",)),
    _builtin("8250_mid", ("8250_mid",)),
    _builtin("8250_pericom", ("8250_pericom",)),
    _builtin("intel_agp", ("agpgart-intel",)),
    _builtin("sis_agp", ("agpgart-sis",), params=(_bool("agp_sis_force_delay", 0, False),
                                                   _p("agp_sis_agp_spec", "int", 0, None))),
    _builtin("via_agp", ("agpgart-via",)),
    _builtin("iosf_mbi", ("iosf_mbi_pci",)),
    _builtin("xen_platform_pci", ("xen-platform-pci",)),
)


# one symbol each exports that its users need: what load_module() names when it is missing
_SYMBOLS = {
    "net_failover": "net_failover_create",
    "failover": "failover_register",
    "virtio_pci_legacy_dev": "vp_legacy_probe",
    "virtio_pci_modern_dev": "vp_modern_probe",
    "virtio": "register_virtio_driver",
    "virtio_ring": "vring_interrupt",
    "mdio": "mdio_mii_ioctl",
    "dca": "dca3_get_tag",
    "i2c_algo_bit": "i2c_bit_add_bus",
    "vfio_pci_core": "vfio_pci_core_register_device",
    "vfio_virqfd": "vfio_virqfd_enable",
    "irqbypass": "irq_bypass_register_producer",
    "vfio": "vfio_register_group_dev",
    "nvme_core": "nvme_init_ctrl",
    "t10_pi": "t10_pi_type1_crc",
    "crc64_rocksoft": "crc64_rocksoft_update",
    "crc_t10dif": "crc_t10dif",
    "crc64": "crc64_be",
    "crct10dif_common": "crc_t10dif_generic",
    "i2c_smbus": "i2c_handle_smbus_alert",
    "libahci": "ahci_do_softreset",
    "libata": "ata_host_activate",
    "scsi_mod": "scsi_host_alloc",
    "scsi_common": "scsi_normalize_sense",
    "mlxfw": "mlxfw_firmware_flash",
    "psample": "psample_sample_packet",
    "tls": "tls_get_record",
    "pci_hyperv_intf": "hyperv_read_cfg_blk",
    "drm": "drm_dev_register",
    "drm_kms_helper": "drm_helper_probe_single_connector_modes",
    "drm_display_helper": "drm_dp_dpcd_read",
    "ttm": "ttm_bo_init_validate",
    "drm_ttm_helper": "drm_gem_ttm_mmap",
    "mxm_wmi": "mxm_wmi_supported",
    "wmi": "wmi_has_guid",
    "video": "acpi_video_register",
    "cec": "cec_register_adapter",
    "rc_core": "rc_register_device",
    "snd_intel_dspcfg": "snd_intel_dsp_driver_probe",
    "snd_hda_codec": "snd_hda_codec_new",
    "snd_hda_core": "snd_hdac_bus_init",
    "snd_hwdep": "snd_hwdep_new",
    "snd_pcm": "snd_pcm_new",
    "snd_timer": "snd_timer_new",
    "snd": "snd_card_new",
    "soundcore": "register_sound_special",
}


# what the network drivers' module init prints (pr_info of their driver string and copyright;
# e1000 and e1000e as the reference's boot log shows them)
_INIT_LOG = {
    "e1000": ('e1000: Intel(R) PRO/1000 Network Driver', 'e1000: Copyright (c) 1999-2006 Intel Corporation.'),
    "e1000e": ('e1000e: Intel(R) PRO/1000 Network Driver', 'e1000e: Copyright(c) 1999 - 2015 Intel Corporation.'),
    "ixgbe": ('ixgbe: Intel(R) 10 Gigabit PCI Express Network Driver', 'ixgbe: Copyright (c) 1999-2016 Intel Corporation.'),
    "ixgbevf": ('ixgbevf: Intel(R) 10 Gigabit PCI Express Virtual Function Network Driver', 'ixgbevf: Copyright (c) 2009 - 2018 Intel Corporation.'),
    "igb": ('igb: Intel(R) Gigabit Ethernet Network Driver', 'igb: Copyright (c) 2007-2014 Intel Corporation.'),
    "igbvf": ('igbvf: Intel(R) Gigabit Virtual Function Network Driver', 'igbvf: Copyright (c) 2009 - 2012 Intel Corporation.'),
}


MODULES = tuple(replace(mod, symbol=_SYMBOLS.get(mod.name), init_log=_INIT_LOG.get(mod.name, mod.init_log))
                for mod in _MODULES)
