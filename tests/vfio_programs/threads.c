/* Two threads issue VFIO ioctls at the same time on the same fds: one asks the group's
 * status and the device's info, the other maps and unmaps a page of its own IOVA range.
 * Every answer is checked; each thread prints its count of calls and of wrong answers. */
#include "setup.h"
#include <pthread.h>

#define ROUNDS 300
#define MiB (1024UL * 1024)

static struct vfio_setup s;
static pthread_barrier_t start;

static void *asker(void *arg)
{
	long bad = 0, calls = 0;
	(void)arg;
	pthread_barrier_wait(&start);
	for (int i = 0; i < ROUNDS; i++) {
		struct vfio_group_status st = { .argsz = sizeof(st) };
		struct vfio_device_info info = { .argsz = sizeof(info) };
		bad += ioctl(s.group, VFIO_GROUP_GET_STATUS, &st) != 0 || st.flags != 3;
		bad += ioctl(s.device, VFIO_DEVICE_GET_INFO, &info) != 0 || info.num_regions != 9;
		calls += 2;
	}
	say("asker: %ld calls, %ld wrong", calls, bad);
	return NULL;
}

static void *mapper(void *arg)
{
	long bad = 0, calls = 0;
	(void)arg;
	pthread_barrier_wait(&start);
	for (int i = 0; i < ROUNDS; i++) {
		uint64_t iova = 2 * MiB + (i % 16) * 4096;
		struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m), .vaddr = (uintptr_t)s.mem + (i % 16) * 4096,
			.iova = iova, .size = 4096, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE };
		struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = 4096 };
		bad += ioctl(s.container, VFIO_IOMMU_MAP_DMA, &m) != 0;
		bad += ioctl(s.container, VFIO_IOMMU_UNMAP_DMA, &u) != 0 || u.size != 4096;
		calls += 2;
	}
	say("mapper: %ld calls, %ld wrong", calls, bad);
	return NULL;
}

int main(void)
{
	pthread_t a, b;
	s = vfio_setup("/dev/vfio/42", "0000:01:00.0", VFIO_TYPE1v2_IOMMU, 2 * MiB);
	pthread_barrier_init(&start, NULL, 2);
	pthread_create(&a, NULL, asker, NULL);
	pthread_create(&b, NULL, mapper, NULL);
	pthread_join(a, NULL);
	pthread_join(b, NULL);
	/* what is left mapped: only the set-up's 2 MiB at IOVA 0 */
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = 2 * MiB, .size = 2 * MiB };
	result("VFIO_IOMMU_UNMAP_DMA(the mapper's range)", CALL(ioctl(s.container, VFIO_IOMMU_UNMAP_DMA, &u)));
	say("unmapped %#llx", (unsigned long long)u.size);
	u = (struct vfio_iommu_type1_dma_unmap){ .argsz = sizeof(u), .iova = 0, .size = 2 * MiB };
	result("VFIO_IOMMU_UNMAP_DMA(the set-up's range)", CALL(ioctl(s.container, VFIO_IOMMU_UNMAP_DMA, &u)));
	say("unmapped %#llx", (unsigned long long)u.size);
	return 0;
}
