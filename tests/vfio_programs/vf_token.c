/* The VF token as a user program meets it: the PF's user sets it with
 * VFIO_DEVICE_FEATURE, the VF's user gives it after the VF's name.
 * usage: vf_token <pf bdf> <pf group> <vf bdf> <vf group>; prints one line per call. */
#include <errno.h>
#include <fcntl.h>
#include <linux/vfio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static void report(const char *what, int ret)
{
	if (ret < 0)
		printf("%s: %s\n", what, strerror(errno));
	else
		printf("%s: ok\n", what);
}

static int open_group(const char *id, int container)
{
	char path[64];
	snprintf(path, sizeof(path), "/dev/vfio/%s", id);
	int g = open(path, O_RDWR);
	report("open group", g);
	report("set container", ioctl(g, VFIO_GROUP_SET_CONTAINER, &container));
	return g;
}

int main(int argc, char **argv)
{
	static const unsigned char uuid[16] = {0xbd, 0x8d, 0x9d, 0x2b, 0x5a, 0x5f, 0x4f, 0x5a,
					       0xa2, 0x11, 0xf5, 0x91, 0x51, 0x4b, 0xa1, 0xf3};
	char name[128];
	if (argc != 5)
		return 2;
	setvbuf(stdout, NULL, _IONBF, 0);
	int c = open("/dev/vfio/vfio", O_RDWR);
	int gpf = open_group(argv[2], c);
	report("set iommu", ioctl(c, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU));
	int gvf = open_group(argv[4], c);
	int pf = ioctl(gpf, VFIO_GROUP_GET_DEVICE_FD, argv[1]);
	report("pf", pf);

	struct vfio_device_feature *f = calloc(1, sizeof(*f) + 16);
	f->argsz = sizeof(*f) + 16;
	f->flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	report("get token", ioctl(pf, VFIO_DEVICE_FEATURE, f));
	f->flags = VFIO_DEVICE_FEATURE_PROBE | VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	report("probe set token", ioctl(pf, VFIO_DEVICE_FEATURE, f));
	f->argsz = sizeof(*f) + 15;
	f->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	report("set short token", ioctl(pf, VFIO_DEVICE_FEATURE, f));
	f->argsz = sizeof(*f) + 16;
	memcpy(f->data, uuid, 16);
	report("set token", ioctl(pf, VFIO_DEVICE_FEATURE, f));
	f->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIGRATION;
	report("migration", ioctl(pf, VFIO_DEVICE_FEATURE, f));

	report("vf without token", ioctl(gvf, VFIO_GROUP_GET_DEVICE_FD, argv[3]));
	snprintf(name, sizeof(name), "%s vf_token=11111111-2222-3333-4444-555555555555", argv[3]);
	report("vf with a wrong token", ioctl(gvf, VFIO_GROUP_GET_DEVICE_FD, name));
	snprintf(name, sizeof(name), "%s vf_token=bd8d9d2b-5a5f-4f5a-a211-f591514ba1f3", argv[3]);
	int vf = ioctl(gvf, VFIO_GROUP_GET_DEVICE_FD, name);
	report("vf with the token", vf);
	report("pf again without token", ioctl(gpf, VFIO_GROUP_GET_DEVICE_FD, argv[1]));
	f->flags = VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_PCI_VF_TOKEN;
	report("vf sets a token", ioctl(vf, VFIO_DEVICE_FEATURE, f));
	return 0;
}
