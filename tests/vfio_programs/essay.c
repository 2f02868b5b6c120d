/* The essay's setup_device_passthrough(): its calls in its order with its constants,
 * and no error checks at all. What each call returned is kept and printed afterwards
 * (printing is not checking: the sequence runs on whatever happens).
 *
 * Then it says "ready" and waits for a line on stdin while the test makes the device
 * write guest memory (the `dma` control) and raise MSI vector 0 (the `msi` control);
 * then it prints guest memory at 0x1000 and whether its eventfd became readable.
 *
 *   ./essay            group 42, device 0000:01:00.0 (the essay's)
 */
#include "report.h"
#include <fcntl.h>
#include <linux/vfio.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define GUEST_MEM_SIZE (1024 * 1024)    /* the guest memory the essay maps: 1 MiB at IOVA 0 */

int main(void)
{
	int container, group, device, efd;
	void *guest_mem;
	struct vfio_group_status group_status = { .argsz = sizeof(group_status) };
	struct vfio_device_info device_info = { .argsz = sizeof(device_info) };
	struct vfio_iommu_type1_dma_map dma_map = { .argsz = sizeof(dma_map) };
	char irq_buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *irq_set = (struct vfio_irq_set *)irq_buf;
	struct outcome o[12];

	/* Create a new container */
	o[0] = CALL(container = open("/dev/vfio/vfio", O_RDWR));
	o[1] = CALL(ioctl(container, VFIO_GET_API_VERSION));
	o[2] = CALL(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU));

	/* Open the group */
	o[3] = CALL(group = open("/dev/vfio/42", O_RDWR));
	o[4] = CALL(ioctl(group, VFIO_GROUP_GET_STATUS, &group_status));

	/* Add the group to the container, enable the IOMMU model */
	o[5] = CALL(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container));
	o[6] = CALL(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU));

	/* Get a file descriptor for the device */
	o[7] = CALL(device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, "0000:01:00.0"));
	o[8] = CALL(ioctl(device, VFIO_DEVICE_GET_INFO, &device_info));

	/* Map the guest memory at IOVA 0 */
	guest_mem = mmap(NULL, GUEST_MEM_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dma_map.vaddr = (uintptr_t)guest_mem;
	dma_map.size = GUEST_MEM_SIZE;
	dma_map.iova = 0;
	dma_map.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE;
	o[9] = CALL(ioctl(container, VFIO_IOMMU_MAP_DMA, &dma_map));

	/* Bind MSI vector 0 to an eventfd */
	o[10] = CALL(efd = eventfd(0, 0));
	irq_set->argsz = sizeof(irq_buf);
	irq_set->flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;
	irq_set->index = VFIO_PCI_MSI_IRQ_INDEX;
	irq_set->start = 0;
	irq_set->count = 1;
	memcpy(irq_set->data, &efd, sizeof(int));
	o[11] = CALL(ioctl(device, VFIO_DEVICE_SET_IRQS, irq_set));

	result_fd("open /dev/vfio/vfio", o[0]);
	result("VFIO_GET_API_VERSION", o[1]);
	result("VFIO_CHECK_EXTENSION(VFIO_TYPE1_IOMMU)", o[2]);
	result_fd("open /dev/vfio/42", o[3]);
	result("VFIO_GROUP_GET_STATUS", o[4]);
	say("group flags: %#x", group_status.flags);
	result("VFIO_GROUP_SET_CONTAINER", o[5]);
	result("VFIO_SET_IOMMU(VFIO_TYPE1_IOMMU)", o[6]);
	result_fd("VFIO_GROUP_GET_DEVICE_FD(0000:01:00.0)", o[7]);
	result("VFIO_DEVICE_GET_INFO", o[8]);
	say("device flags: %#x regions: %u irqs: %u", device_info.flags, device_info.num_regions,
	    device_info.num_irqs);
	result("VFIO_IOMMU_MAP_DMA(iova 0, 1 MiB, READ|WRITE)", o[9]);
	result_fd("eventfd", o[10]);
	result("VFIO_DEVICE_SET_IRQS(MSI vector 0 -> eventfd)", o[11]);

	wait_for_test("ready");
	hexdump("guest 0x1000", (char *)guest_mem + 0x1000, 32);
	eventfd_state("eventfd", efd, 2000);
	return 0;
}
