/* A forked child uses the container, group and device fds it inherited: its ioctls are
 * answered as its parent's are, its own MAP_DMA pins its own memory, and the eventfd it
 * registers is its own. The child's exit closes only its copies: the parent still holds
 * the group afterwards.
 *
 * Parent: the essay's set-up with 1 MiB at IOVA 0, bus mastering on through the config
 *         region, then fork and wait.
 * Child:  ioctls on every inherited fd, 1 MiB of its own at IOVA 0x100000, MSI vector 0
 *         bound to its eventfd; "child ready"; after the test's line, its memory at
 *         IOVA 0x101000 and its eventfd; unmap and exit.
 * Parent: the child's exit status, its own memory at IOVA 0x1000, the group's status. */
#include "setup.h"
#include <sys/eventfd.h>
#include <sys/wait.h>

#define MiB (1024UL * 1024)

static void child(struct vfio_setup s)
{
	struct vfio_group_status st = { .argsz = sizeof(st) };
	struct vfio_device_info info = { .argsz = sizeof(info) };
	struct vfio_iommu_type1_info iinfo = { .argsz = sizeof(iinfo) };
	struct outcome o;

	o = CALL(ioctl(s.group, VFIO_GROUP_GET_STATUS, &st));
	result("child: VFIO_GROUP_GET_STATUS", o);
	say("child: group flags: %#x", st.flags);
	result("child: VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)",
	       CALL(ioctl(s.container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU)));
	result("child: VFIO_IOMMU_GET_INFO", CALL(ioctl(s.container, VFIO_IOMMU_GET_INFO, &iinfo)));
	say("child: iommu flags: %#x", iinfo.flags & VFIO_IOMMU_INFO_PGSIZES);
	result("child: VFIO_DEVICE_GET_INFO", CALL(ioctl(s.device, VFIO_DEVICE_GET_INFO, &info)));
	say("child: device flags: %#x regions: %u irqs: %u", info.flags, info.num_regions, info.num_irqs);

	char *mem = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m), .vaddr = (uintptr_t)mem, .iova = MiB,
		.size = MiB, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE };
	result("child: VFIO_IOMMU_MAP_DMA(iova 0x100000, 1 MiB)", CALL(ioctl(s.container, VFIO_IOMMU_MAP_DMA, &m)));

	int efd = eventfd(0, 0);
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq = (struct vfio_irq_set *)buf;
	*irq = (struct vfio_irq_set){ .argsz = sizeof(buf), .index = VFIO_PCI_MSI_IRQ_INDEX, .start = 0, .count = 1,
		.flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER };
	memcpy(irq->data, &efd, sizeof(int));
	result("child: VFIO_DEVICE_SET_IRQS(MSI vector 0 -> eventfd)", CALL(ioctl(s.device, VFIO_DEVICE_SET_IRQS, irq)));

	wait_for_test("child ready");
	hexdump("child: iova 0x101000", mem + 0x1000, 16);
	eventfd_state("child: eventfd", efd, 2000);
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = MiB, .size = MiB };
	o = CALL(ioctl(s.container, VFIO_IOMMU_UNMAP_DMA, &u));
	result("child: VFIO_IOMMU_UNMAP_DMA", o);
	say("child: unmapped %#llx", (unsigned long long)u.size);
	exit(0);
}

int main(void)
{
	struct vfio_setup s = vfio_setup("/dev/vfio/42", "0000:01:00.0", VFIO_TYPE1v2_IOMMU, MiB);
	say("parent: set up");
	result("parent: bus master on (config region)", enable_bus_master(s.device));
	pid_t pid = fork();
	if (pid == 0)
		child(s);
	int wstatus = 0;
	waitpid(pid, &wstatus, 0);
	say("parent: child exited %d", WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1);
	hexdump("parent: iova 0x1000", s.mem + 0x1000, 16);
	struct vfio_group_status st = { .argsz = sizeof(st) };
	result("parent: VFIO_GROUP_GET_STATUS", CALL(ioctl(s.group, VFIO_GROUP_GET_STATUS, &st)));
	say("parent: group flags: %#x", st.flags);
	struct vfio_device_info info = { .argsz = sizeof(info) };
	result("parent: VFIO_DEVICE_GET_INFO", CALL(ioctl(s.device, VFIO_DEVICE_GET_INFO, &info)));
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .flags = VFIO_DMA_UNMAP_FLAG_ALL };
	result("parent: VFIO_IOMMU_UNMAP_DMA(ALL)", CALL(ioctl(s.container, VFIO_IOMMU_UNMAP_DMA, &u)));
	say("parent: unmapped %#llx", (unsigned long long)u.size);
	return 0;
}
