/* A VFIO user of the ConnectX-5 (0000:0c:00.0, IOMMU group 16): the essay's set-up with
 * 1 MiB of memory mapped at IOVA 0 and Bus Master Enable set, then it waits for a line on
 * stdin while the device DMAs; then it unmaps the memory and waits again.
 *
 *   gcc -I ../../tests/vfio_programs -o atc atc.c && ./atc
 */
#include "setup.h"

int main(void)
{
	struct vfio_setup s = vfio_setup("/dev/vfio/16", "0000:0c:00.0", VFIO_TYPE1v2_IOMMU, 1 << 20);
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof(unmap), .iova = 0, .size = 1 << 20 };

	result("bus master", enable_bus_master(s.device));
	wait_for_test("mapped 1 MiB at IOVA 0");
	result("VFIO_IOMMU_UNMAP_DMA(iova 0, 1 MiB)", CALL(ioctl(s.container, VFIO_IOMMU_UNMAP_DMA, &unmap)));
	wait_for_test("unmapped");
	return 0;
}
