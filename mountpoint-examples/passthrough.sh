#!/usr/bin/env bash
# The essay's GPU passthrough, step by step, against a vfakefs mount of seed-vtd:
#   bash mountpoint-examples/passthrough.sh MNT
# Expected output: passthrough.expected (tests/mount/test_examples.py runs it).
set -u
MNT=$(realpath "${1:-${MNT:-./mnt}}")
. "$(dirname "$0")/common.sh"

echo "# 1. find the card and its IOMMU group"
show "lspci -nn | grep NVIDIA"
show "basename \$(readlink $SYS/bus/pci/devices/0000:01:00.0/iommu_group)"
show "ls $SYS/kernel/iommu_groups/42/devices"

echo "# 2. take the GPU from its driver and give it to vfio-pci by id"
write 0000:01:00.0 "$SYS/bus/pci/devices/0000:01:00.0/driver/unbind"
write "10de 1b80" "$SYS/bus/pci/drivers/vfio-pci/new_id"
show "readlink $SYS/bus/pci/devices/0000:01:00.0/driver"

echo "# 3. the audio function follows through driver_override"
write vfio-pci "$SYS/bus/pci/devices/0000:01:00.1/driver_override"
write 0000:01:00.1 "$SYS/bus/pci/devices/0000:01:00.1/driver/unbind"
write 0000:01:00.1 "$SYS/bus/pci/drivers_probe"
show "readlink $SYS/bus/pci/devices/0000:01:00.1/driver"

echo "# 4. the group's device node appears"
show "stat -c '%A %t,%T %n' $MNT/dev/vfio/*"
show "lspci -nnk -s 01:00 | grep -e '^0' -e 'driver in use'"

echo "# 5. mistakes get the kernel's answers"
write 0000:01:00.0 "$SYS/bus/pci/drivers/vfio-pci/bind"
write "10de 1b80" "$SYS/bus/pci/drivers/vfio-pci/new_id"
write 01:00.0 "$SYS/bus/pci/drivers/nouveau/bind"
write 0000:01:00.0 "$SYS/bus/pci/drivers/nouveau/unbind"
write 10de "$SYS/bus/pci/drivers/vfio-pci/new_id"
