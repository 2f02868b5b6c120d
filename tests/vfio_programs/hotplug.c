/* A VFIO user whose device is pulled out under it (surprise removal of its card):
 *   hotplug <group path> <device name>
 * It opens the device as the essay does, registers an eventfd on the device request
 * interrupt (VFIO_PCI_REQ_IRQ_INDEX), says "ready" and waits for a line; the test pulls the
 * card meanwhile. Then it reports whether the kernel asked for the device back (the eventfd),
 * what the device's config space reads now, says "closing", waits for a line, closes the
 * device and says "closed"; then waits again and exits (closing the group and container). */
#include "setup.h"
#include <sys/eventfd.h>

static void wait_line(void)
{
	char line[64];
	if (!fgets(line, sizeof(line), stdin))
		exit(0);
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		say("usage: hotplug <group path> <device>");
		return 2;
	}
	struct vfio_setup s = vfio_setup(argv[1], argv[2], VFIO_TYPE1v2_IOMMU, 0);
	int efd = eventfd(0, EFD_CLOEXEC);
	must("eventfd", efd);
	char buf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (struct vfio_irq_set *)buf;
	*set = (struct vfio_irq_set){ .argsz = sizeof(buf), .index = VFIO_PCI_REQ_IRQ_INDEX, .start = 0, .count = 1,
				      .flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER };
	memcpy(set->data, &efd, sizeof(int));
	result("VFIO_DEVICE_SET_IRQS REQ", CALL(ioctl(s.device, VFIO_DEVICE_SET_IRQS, set)));
	struct vfio_region_info reg = { .argsz = sizeof(reg), .index = VFIO_PCI_CONFIG_REGION_INDEX };
	must("VFIO_DEVICE_GET_REGION_INFO", ioctl(s.device, VFIO_DEVICE_GET_REGION_INFO, &reg));
	uint16_t status = 0;                       /* PCI_STATUS: the device's own, not virtualized */
	result("pread status", CALL(pread(s.device, &status, 2, reg.offset + 6)));
	say("status: %04x", status);
	say("ready");
	wait_line();

	struct pollfd p = { .fd = efd, .events = POLLIN };
	int n = poll(&p, 1, 30000);               /* never for ever: 30 s, then say so */
	uint64_t count = 0;
	if (n == 1 && read(efd, &count, sizeof(count)) == sizeof(count))
		say("device request: %s", count ? "yes" : "no");
	else
		say("device request: none within 30 s");

	result("pread status", CALL(pread(s.device, &status, 2, reg.offset + 6)));
	say("status: %04x", status);              /* the card is gone: all ones */
	say("closing");
	wait_line();
	close(s.device);
	say("closed");
	wait_line();
	close(s.group);
	close(s.container);
	return 0;
}
