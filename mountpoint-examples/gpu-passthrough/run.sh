#!/usr/bin/env bash
# GPU passthrough as the essay does it: give IOMMU group 42 (the GTX 1080 and its audio
# function) to vfio-pci, then run the essay's setup_device_passthrough() unmodified.
exec 2>&1; set -v    # a transcript: each command, then what it printed

# The card and its IOMMU group: every device in the group must go to vfio-pci
lspci -nnk -s 01:00
readlink /sys/bus/pci/devices/0000:01:00.0/iommu_group
ls /sys/kernel/iommu_groups/42/devices

# Unbind both functions from their drivers and let vfio-pci take them
for d in 0000:01:00.0 0000:01:00.1; do
    echo $d > /sys/bus/pci/devices/$d/driver/unbind
    echo vfio-pci > /sys/bus/pci/devices/$d/driver_override
    echo $d > /sys/bus/pci/drivers_probe
done
lspci -k -s 01:00 | grep 'in use'
stat -c '%A %n' /dev/vfio/*

# driver_override keeps other drivers off: nouveau no longer matches the GPU (ENODEV)
echo 0000:01:00.0 > /sys/bus/pci/drivers/nouveau/bind

# The essay's C program: container, group, IOMMU, device, 1 MiB of guest memory at IOVA 0,
# MSI vector 0 on an eventfd; it prints each call's result, says "ready" and waits
ESSAY=$(mktemp)
gcc -I ../../tests/vfio_programs -o $ESSAY ../../tests/vfio_programs/essay.c
coproc $ESSAY
# (copies of its pipes: bash drops COPROC as soon as the program exits)
exec {from}<&${COPROC[0]} {to}>&${COPROC[1]}
while read -r line <&$from; do echo "$line"; [ "$line" = ready ] && break; done

# While it waits, the device acts. Bus Master Enable first (a guest's driver would set it)
setpci -s 01:00.0 COMMAND=0x0006
# the GPU writes 16 bytes at IOVA 0x1000, translated through the VFIO domain
exec 3<>/sys/kernel/debug/vfakefs/dma; echo "0000:01:00.0 write 0x1000 16 data=c0ffee" >&3; cat <&3
# and raises MSI vector 0, which interrupt remapping delivers
exec 4<>/sys/kernel/debug/vfakefs/msi; echo "0000:01:00.0 vector 0" >&4; cat <&4
# the group's context entries now carry the VFIO domain's id
grep ^01:00 /sys/kernel/debug/iommu/intel/dmar_translation_struct | cut -f1,3

# Let the program go on: it prints what landed in its memory and its eventfd
echo >&$to
cat <&$from
wait
rm $ESSAY
