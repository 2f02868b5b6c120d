/* bench/vfio.py's program: VFIO timings from inside a process, printed as "key value".
 *
 *   vfio_bench unrelated N                       N FIONREADs on a pipe (no VFIO at all)
 *   vfio_bench ioctl N GROUP BDF                 N emulated GROUP_GET_STATUS and N FIONREADs
 *   vfio_bench map SIZE GROUP BDF [IOVA]         one MAP_DMA of SIZE bytes (MAP_NORESERVE) at IOVA (1 GiB),
 *                                                and its UNMAP
 *   vfio_bench dmabuf SIZE GROUP BDF             SIZE bytes mapped at IOVA 0; "ready"; after a line
 *                                                on stdin, the bytes that differ from byte 0
 *   vfio_bench buffer SIZE                       SIZE bytes, no VFIO: "addr 0x..." and "ready"; after a
 *                                                line, the bytes that differ from byte 0
 *   vfio_bench hold N GROUP BDF BDF2             both devices, 64 MiB mapped (setup_ns: how long that
 *                                                took); "ready"; after a line, N GROUP_GET_STATUS timed
 * Timings in nanoseconds (CLOCK_MONOTONIC around each call); medians and p90 over N. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static int container = -1, group = -1;

static uint64_t now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void must(const char *what, long ret)
{
	if (ret < 0) {
		printf("error %s: %s\n", what, strerrorname_np(errno));
		exit(1);
	}
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void stats(const char *key, uint64_t *t, long n)
{
	qsort(t, n, sizeof(*t), cmp);
	printf("%s_p50_ns %llu\n%s_p90_ns %llu\n", key, (unsigned long long)t[n / 2], key,
	       (unsigned long long)t[n * 9 / 10]);
}

static int setup(const char *gid, const char *bdf, const char *bdf2)
{
	char path[64];
	int device;
	snprintf(path, sizeof(path), "/dev/vfio/%s", gid);
	must("open /dev/vfio/vfio", container = open("/dev/vfio/vfio", O_RDWR));
	must("open group", group = open(path, O_RDWR));
	must("GROUP_SET_CONTAINER", ioctl(group, VFIO_GROUP_SET_CONTAINER, &container));
	must("SET_IOMMU", ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
	must("GET_DEVICE_FD", device = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf));
	if (bdf2)
		must("GET_DEVICE_FD 2", ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf2));
	return device;
}

/* size bytes of address space aligned to 1 GiB (so type1 can use its largest pages), not reserved */
static char *guest_memory(size_t size)
{
	size_t align = 1UL << 30;
	char *p = mmap(NULL, size + align, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		must("mmap", -1);
	return (char *)(((uintptr_t)p + align - 1) & ~(align - 1));
}

static void map(char *mem, uint64_t iova, uint64_t size)
{
	struct vfio_iommu_type1_dma_map m = { .argsz = sizeof(m), .vaddr = (uintptr_t)mem, .iova = iova,
		.size = size, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE };
	must("MAP_DMA", ioctl(container, VFIO_IOMMU_MAP_DMA, &m));
}

static void unrelated(uint64_t *t, long n)
{
	int fds[2], avail;
	must("pipe", pipe(fds));
	for (long i = 0; i < n; i++) {
		uint64_t t0 = now();
		ioctl(fds[0], FIONREAD, &avail);
		t[i] = now() - t0;
	}
	close(fds[0]);
	close(fds[1]);
}

static void emulated(uint64_t *t, long n)
{
	for (long i = 0; i < n; i++) {
		struct vfio_group_status st = { .argsz = sizeof(st) };
		uint64_t t0 = now();
		must("GROUP_GET_STATUS", ioctl(group, VFIO_GROUP_GET_STATUS, &st));
		t[i] = now() - t0;
	}
}

/* Bus Master Enable through the config region, as a device's driver sets it before DMA */
static void bus_master(int device)
{
	struct vfio_region_info reg = { .argsz = sizeof(reg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	uint16_t cmd;
	must("GET_REGION_INFO", ioctl(device, VFIO_DEVICE_GET_REGION_INFO, &reg));
	must("pread config", pread(device, &cmd, 2, reg.offset + 4));
	cmd |= 0x4;
	must("pwrite config", pwrite(device, &cmd, 2, reg.offset + 4));
}

static void wait_line(void)
{
	char line[64];
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		return 2;
	const char *mode = argv[1];
	long n = strtol(argv[2], NULL, 0);
	uint64_t *t = calloc(n > 0 ? n : 1, sizeof(*t));

	if (!strcmp(mode, "unrelated")) {
		unrelated(t, n);                            /* warm-up */
		unrelated(t, n);
		stats("unrelated", t, n);
	} else if (!strcmp(mode, "ioctl") && argc == 5) {
		setup(argv[3], argv[4], NULL);
		emulated(t, n / 10 + 1);                    /* warm-up */
		unrelated(t, n);
		emulated(t, n);
		stats("emulated", t, n);
		unrelated(t, n);
		stats("unrelated", t, n);
	} else if (!strcmp(mode, "map") && (argc == 5 || argc == 6)) {
		uint64_t iova = argc == 6 ? strtoull(argv[5], NULL, 0) : 1UL << 30;
		setup(argv[3], argv[4], NULL);
		char *mem = guest_memory(n);
		uint64_t t0 = now();
		map(mem, iova, n);
		printf("map_ns %llu\n", (unsigned long long)(now() - t0));
		struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = iova, .size = n };
		t0 = now();
		must("UNMAP_DMA", ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u));
		printf("unmap_ns %llu\nunmapped %llu\n", (unsigned long long)(now() - t0), (unsigned long long)u.size);
	} else if (!strcmp(mode, "dmabuf") && argc == 5) {
		int device = setup(argv[3], argv[4], NULL);
		char *mem = guest_memory(n);
		map(mem, 0, n);
		bus_master(device);
		wait_line();
		long differ = 0;
		for (long i = 0; i < n; i++)
			differ += mem[i] != mem[0];
		printf("byte0 %#x\ndiffer %ld\n", (unsigned char)mem[0], differ);
	} else if (!strcmp(mode, "buffer")) {
		char *mem = guest_memory(n);
		printf("addr %#llx\n", (unsigned long long)(uintptr_t)mem);
		wait_line();
		long differ = 0;
		for (long i = 0; i < n; i++)
			differ += mem[i] != mem[0];
		printf("byte0 %#x\ndiffer %ld\n", (unsigned char)mem[0], differ);
	} else if (!strcmp(mode, "hold") && argc == 6) {
		uint64_t t0 = now();
		setup(argv[3], argv[4], argv[5]);
		map(guest_memory(64 << 20), 0, 64 << 20);
		printf("setup_ns %llu\n", (unsigned long long)(now() - t0));
		wait_line();
		emulated(t, n);
		stats("emulated", t, n);
	} else {
		return 2;
	}
	return 0;
}
