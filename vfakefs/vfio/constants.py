"""The constants of <linux/vfio.h>, named as there, for programs written against the
Python API (values from the model where it defines them)."""
from vfakefs.model.vfio.container import VFIO_API_VERSION
from vfakefs.model.vfio.device import (VFIO_DEVICE_FLAGS_PCI, VFIO_DEVICE_FLAGS_RESET, VFIO_PCI_BAR0_REGION_INDEX,
                                       VFIO_PCI_BAR5_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX,
                                       VFIO_PCI_INDEX_TO_OFFSET, VFIO_PCI_NUM_REGIONS, VFIO_PCI_OFFSET_MASK,
                                       VFIO_PCI_OFFSET_SHIFT, VFIO_PCI_ROM_REGION_INDEX, VFIO_PCI_VGA_REGION_INDEX,
                                       VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_FLAG_CAPS,
                                       VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
                                       VFIO_REGION_INFO_FLAG_WRITE)
from vfakefs.model.vfio.feature import (VFIO_DEVICE_FEATURE_DMA_LOGGING_REPORT, VFIO_DEVICE_FEATURE_DMA_LOGGING_START,
                                        VFIO_DEVICE_FEATURE_DMA_LOGGING_STOP, VFIO_DEVICE_FEATURE_GET,
                                        VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY,
                                        VFIO_DEVICE_FEATURE_LOW_POWER_ENTRY_WITH_WAKEUP,
                                        VFIO_DEVICE_FEATURE_LOW_POWER_EXIT, VFIO_DEVICE_FEATURE_MASK,
                                        VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE,
                                        VFIO_DEVICE_FEATURE_MIGRATION, VFIO_DEVICE_FEATURE_PCI_VF_TOKEN,
                                        VFIO_DEVICE_FEATURE_PROBE, VFIO_DEVICE_FEATURE_SET)
from vfakefs.model.vfio.group import VFIO_GROUP_FLAGS_CONTAINER_SET, VFIO_GROUP_FLAGS_VIABLE
from vfakefs.model.vfio.intrs import (VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE,
                                      VFIO_IRQ_INFO_NORESIZE, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
                                      VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK,
                                      VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
                                      VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_INTX_IRQ_INDEX,
                                      VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_IRQS,
                                      VFIO_PCI_REQ_IRQ_INDEX)
from vfakefs.model.vfio.type1 import (VFIO_DMA_CC_IOMMU, VFIO_DMA_MAP_FLAG_READ, VFIO_DMA_MAP_FLAG_VADDR,
                                      VFIO_DMA_MAP_FLAG_WRITE, VFIO_DMA_UNMAP_FLAG_ALL,
                                      VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, VFIO_DMA_UNMAP_FLAG_VADDR,
                                      VFIO_IOMMU_INFO_CAPS, VFIO_IOMMU_INFO_PGSIZES,
                                      VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
                                      VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, VFIO_TYPE1_IOMMU, VFIO_TYPE1_NESTING_IOMMU,
                                      VFIO_TYPE1v2_IOMMU, VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR)

# the IOMMU types and extensions type1 does not have (CHECK_EXTENSION answers 0)
VFIO_SPAPR_TCE_IOMMU, VFIO_EEH, VFIO_SPAPR_TCE_v2_IOMMU, VFIO_NOIOMMU_IOMMU = 2, 5, 7, 8

__all__ = [n for n in dir() if n.startswith("VFIO_")]
