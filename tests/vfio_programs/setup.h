/* The essay's set-up, checked, for the programs that test something after it:
 * a container with group GROUP on type1, a device fd, and guest memory mapped at IOVA 0. */
#ifndef VFIO_SETUP_H
#define VFIO_SETUP_H
#include "report.h"
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

struct vfio_setup { int container, group, device; char *mem; size_t size; };

static inline void must(const char *what, long ret)
{
	if (ret < 0) {
		say("%s: -1 %s", what, errname(errno));
		exit(1);
	}
}

/* open the container and /dev/vfio/<group>, join, SET_IOMMU(type), open `name`,
 * map `size` bytes of fresh anonymous memory at IOVA 0 (none if size is 0). */
static inline struct vfio_setup vfio_setup(const char *group_path, const char *name, int type, size_t size)
{
	struct vfio_setup s = { .size = size };
	must("open container", s.container = open("/dev/vfio/vfio", O_RDWR));
	must("open group", s.group = open(group_path, O_RDWR));
	must("VFIO_GROUP_SET_CONTAINER", ioctl(s.group, VFIO_GROUP_SET_CONTAINER, &s.container));
	must("VFIO_SET_IOMMU", ioctl(s.container, VFIO_SET_IOMMU, type));
	must("VFIO_GROUP_GET_DEVICE_FD", s.device = ioctl(s.group, VFIO_GROUP_GET_DEVICE_FD, name));
	if (size) {
		s.mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (s.mem == MAP_FAILED)
			must("mmap", -1);
		struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m), .vaddr = (uintptr_t)s.mem, .iova = 0,
			.size = size, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE };
		must("VFIO_IOMMU_MAP_DMA", ioctl(s.container, VFIO_IOMMU_MAP_DMA, &m));
	}
	return s;
}
/* What a device's driver does before the device may DMA: set Bus Master Enable in the
 * command register, through the device fd's config region (pread/pwrite at its offset). */
static inline struct outcome enable_bus_master(int device)
{
	struct vfio_region_info reg = { .argsz = sizeof(reg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	uint16_t cmd;
	if (ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &reg) < 0)
		return (struct outcome){ -1, errno };
	if (pread(device, &cmd, 2, reg.offset + 4) != 2)
		return (struct outcome){ -1, errno };
	cmd |= 0x4;                                          /* PCI_COMMAND_MASTER */
	return CALL(pwrite(device, &cmd, 2, reg.offset + 4));
}
#endif
