/* Every VFIO call checked, and every error path the issue names, one line per check:
 * "<what>: <result>" (the test compares the whole transcript with the kernel's answers).
 *
 * The test drives the machine from outside between the phases:
 *   start:   01:00.0 on vfio-pci, 01:00.1 still on snd_hda_intel (group 42 not viable)
 *   "wait viable":   the test moves 01:00.1 to vfio-pci
 *   "wait claimed":  the test tries to bind snd_hda_intel to 01:00.1 (EBUSY) and a
 *                    second program opens /dev/vfio/42 (EBUSY)
 */
#include "report.h"
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#define MiB (1024UL * 1024)
#define UNKNOWN_IOCTL _IO(VFIO_TYPE, VFIO_BASE + 60)     /* no VFIO ioctl has this number */

static int container, group, device;
static char *buf;                                        /* 4 MiB, 2 MiB aligned */

static struct outcome map(uint64_t vaddr, uint64_t iova, uint64_t size, uint32_t flags, uint32_t argsz)
{
	struct vfio_iommu_type1_dma_map m = { .argsz = argsz, .flags = flags,
					      .vaddr = vaddr, .iova = iova, .size = size };
	return CALL(ioctl(container, VFIO_IOMMU_MAP_DMA, &m));
}

static void unmap(const char *what, uint64_t iova, uint64_t size, uint32_t flags)
{
	struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .flags = flags, .iova = iova, .size = size };
	struct outcome o = CALL(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u));
	if (o.ret < 0)
		result(what, o);
	else
		say("%s: %ld size=%#llx", what, o.ret, (unsigned long long)u.size);
}

static void status(const char *what, uint32_t argsz)
{
	struct vfio_group_status s = { .argsz = argsz };
	struct outcome o = CALL(ioctl(group, VFIO_GROUP_GET_STATUS, &s));
	if (o.ret < 0)
		result(what, o);
	else
		say("%s: %ld flags=%#x", what, o.ret, s.flags);
}

static void set_container(const char *what, int fd)
{
	result(what, CALL(ioctl(group, VFIO_GROUP_SET_CONTAINER, &fd)));
}

static void device_fd(const char *what, const char *name, int *out)
{
	struct outcome o = CALL(ioctl(group, VFIO_GROUP_GET_DEVICE_FD, name));
	result_fd(what, o);
	if (out && o.ret >= 0)
		*out = o.ret;
}

static void device_info(const char *what, uint32_t argsz)
{
	struct vfio_device_info info = { .argsz = argsz };
	struct outcome o = CALL(ioctl(device, VFIO_DEVICE_GET_INFO, &info));
	if (o.ret < 0)
		result(what, o);
	else
		say("%s: %ld flags=%#x regions=%u irqs=%u", what, o.ret, info.flags, info.num_regions, info.num_irqs);
}

int main(void)
{
	struct outcome o;
	uint64_t base;

	/* --- phase A: group 42 is not viable (01:00.1 on a DMA-API driver) --- */
	o = CALL(container = open("/dev/vfio/vfio", O_RDWR));
	result_fd("open /dev/vfio/vfio", o);
	result("VFIO_GET_API_VERSION", CALL(ioctl(container, VFIO_GET_API_VERSION)));
	result("VFIO_CHECK_EXTENSION(VFIO_TYPE1_IOMMU)", CALL(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU)));
	result("VFIO_CHECK_EXTENSION(VFIO_TYPE1v2_IOMMU)", CALL(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU)));
	result("VFIO_CHECK_EXTENSION(VFIO_SPAPR_TCE_IOMMU)", CALL(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_SPAPR_TCE_IOMMU)));
	result("container: unknown ioctl before SET_IOMMU", CALL(ioctl(container, UNKNOWN_IOCTL)));
	result("VFIO_SET_IOMMU without a group", CALL(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)));
	o = CALL(group = open("/dev/vfio/42", O_RDWR));
	result_fd("open /dev/vfio/42", o);
	result_fd("open /dev/vfio/42 again", CALL(open("/dev/vfio/42", O_RDWR)));
	status("VFIO_GROUP_GET_STATUS", sizeof(struct vfio_group_status));
	status("VFIO_GROUP_GET_STATUS argsz 4", 4);
	result("group: unknown ioctl", CALL(ioctl(group, UNKNOWN_IOCTL)));
	set_container("VFIO_GROUP_SET_CONTAINER (not viable)", container);
	device_fd("VFIO_GROUP_GET_DEVICE_FD without a container", "0000:01:00.0", NULL);

	/* --- phase B: the test bound 01:00.1 to vfio-pci: viable --- */
	wait_for_test("wait viable");
	status("VFIO_GROUP_GET_STATUS", sizeof(struct vfio_group_status));
	set_container("VFIO_GROUP_SET_CONTAINER(bad fd)", -1);
	set_container("VFIO_GROUP_SET_CONTAINER(a group fd)", group);
	set_container("VFIO_GROUP_SET_CONTAINER", container);
	set_container("VFIO_GROUP_SET_CONTAINER again", container);
	status("VFIO_GROUP_GET_STATUS", sizeof(struct vfio_group_status));
	device_fd("VFIO_GROUP_GET_DEVICE_FD before SET_IOMMU", "0000:01:00.0", NULL);
	result("VFIO_SET_IOMMU(VFIO_SPAPR_TCE_IOMMU)", CALL(ioctl(container, VFIO_SET_IOMMU, VFIO_SPAPR_TCE_IOMMU)));
	result("VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU)", CALL(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)));
	result("VFIO_SET_IOMMU again", CALL(ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU)));
	result("container: unknown ioctl", CALL(ioctl(container, UNKNOWN_IOCTL)));
	device_fd("VFIO_GROUP_GET_DEVICE_FD(0000:01:00.7)", "0000:01:00.7", NULL);
	device_fd("VFIO_GROUP_GET_DEVICE_FD(0000:03:00.0)", "0000:03:00.0", NULL);
	device_fd("VFIO_GROUP_GET_DEVICE_FD(\"0000:01:00.0\\n\")", "0000:01:00.0\n", NULL);
	device_fd("VFIO_GROUP_GET_DEVICE_FD(0000:01:00.0 junk)", "0000:01:00.0 junk", NULL);
	device_fd("VFIO_GROUP_GET_DEVICE_FD(0000:01:00.0)", "0000:01:00.0", &device);
	device_info("VFIO_DEVICE_GET_INFO", sizeof(struct vfio_device_info));
	device_info("VFIO_DEVICE_GET_INFO argsz 8", 8);
	result("device: unknown ioctl", CALL(ioctl(device, UNKNOWN_IOCTL)));
	result("VFIO_GROUP_UNSET_CONTAINER with a device open", CALL(ioctl(group, VFIO_GROUP_UNSET_CONTAINER)));

	buf = mmap(NULL, 6 * MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	base = ((uintptr_t)buf + 2 * MiB - 1) & ~(2 * MiB - 1);
	uint32_t rw = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE, sz = sizeof(struct vfio_iommu_type1_dma_map);
	result("MAP_DMA iova 0 size 2M", map(base, 0, 2 * MiB, rw, sz));
	result("MAP_DMA the same again (overlap)", map(base, 0, 2 * MiB, rw, sz));
	result("MAP_DMA iova 1M size 2M (overlap)", map(base + 2 * MiB, 1 * MiB, 2 * MiB, rw, sz));
	result("MAP_DMA iova 0x200800 (misaligned)", map(base + 2 * MiB, 0x200800, 4096, rw, sz));
	result("MAP_DMA vaddr +0x10 (misaligned)", map(base + 2 * MiB + 0x10, 2 * MiB, 4096, rw, sz));
	result("MAP_DMA size 0x1800 (misaligned)", map(base + 2 * MiB, 2 * MiB, 0x1800, rw, sz));
	result("MAP_DMA size 0", map(base + 2 * MiB, 2 * MiB, 0, rw, sz));
	result("MAP_DMA flags 0", map(base + 2 * MiB, 2 * MiB, 4096, 0, sz));
	result("MAP_DMA argsz 16", map(base + 2 * MiB, 2 * MiB, 4096, rw, 16));
	result("MAP_DMA iova 0xfee00000 (reserved)", map(base + 2 * MiB, 0xfee00000, 4096, rw, sz));
	munmap(buf + 5 * MiB, MiB);          /* past the aligned 4 MiB: now no memory there */
	result("MAP_DMA of unmapped memory", map((uintptr_t)buf + 5 * MiB, 4 * MiB, MiB, rw, sz));
	unmap("UNMAP_DMA iova 0 size 1M (bisects)", 0, MiB, 0);
	unmap("UNMAP_DMA iova 0 size 2M", 0, 2 * MiB, 0);
	unmap("UNMAP_DMA iova 0 size 2M again", 0, 2 * MiB, 0);
	result("MAP_DMA iova 0 size 2M", map(base, 0, 2 * MiB, rw, sz));

	/* --- phase C: the group is claimed; the test tries a DMA-API driver on 01:00.1 --- */
	wait_for_test("wait claimed");
	status("VFIO_GROUP_GET_STATUS", sizeof(struct vfio_group_status));
	result("close device", CALL(close(device)));
	result("VFIO_GROUP_UNSET_CONTAINER", CALL(ioctl(group, VFIO_GROUP_UNSET_CONTAINER)));
	result("VFIO_GROUP_UNSET_CONTAINER again", CALL(ioctl(group, VFIO_GROUP_UNSET_CONTAINER)));
	status("VFIO_GROUP_GET_STATUS", sizeof(struct vfio_group_status));
	result("close group", CALL(close(group)));
	o = CALL(group = open("/dev/vfio/42", O_RDWR));
	result_fd("open /dev/vfio/42 after close", o);
	say("done");
	return 0;
}
