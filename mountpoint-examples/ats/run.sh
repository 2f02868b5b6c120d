#!/usr/bin/env bash
# ATS (Address Translation Services) on the ConnectX-5 (0c:00.0): the device caches
# translations in its own ATC, and every unmap must reach it as a device-TLB invalidation.
exec 2>&1; set -v    # a transcript: each command, then what it printed
C=/sys/kernel/debug/vfakefs
I=/sys/kernel/debug/iommu/intel

# The kernel enabled ATS: the unit has ECAP.DT, the DMAR table's ATSR names the root port
# above the device (00:1d.4), and the device's domain translates
dmesg -t | grep -e 'ecap' -e ATSR
lspci -vvv -s 0c:00.0 | grep -A2 'Address Translation Service'
# its context entry: translation type 01b (Device-TLB) in bits 2-3 of the low qword (...5)
grep ^0c:00 $I/dmar_translation_struct | cut -f1,3
# (atc_stats is vfakefs's own: the ATC's hits, misses = translation requests, invalidations)
cat $C/atc_stats

# Give group 16 to vfio-pci and run a VFIO user: 1 MiB mapped at IOVA 0, bus mastering on
ls /sys/kernel/iommu_groups/16/devices
echo 0000:0c:00.0 > /sys/bus/pci/devices/0000:0c:00.0/driver/unbind
echo vfio-pci > /sys/bus/pci/devices/0000:0c:00.0/driver_override
echo 0000:0c:00.0 > /sys/bus/pci/drivers_probe
ATC=$(mktemp)
gcc -I ../../tests/vfio_programs -o $ATC atc.c
coproc $ATC
while read -r line <&${COPROC[0]}; do echo "$line"; [[ $line = mapped* ]] && break; done
# joining the VFIO domain flushed the device's whole ATC: one device-TLB invalidation
# (type 3, the device's source id 0c00 in qw0, "everything" as the size in qw1)
cat $C/atc_stats
grep -P '^ +\d+\t00000c0000000003\t' $I/invalidation_queue | cut -f2,3

# The device reads a page: a miss, so a translation request to the unit; the same page
# again and a write into it are served by its ATC; another page misses again
exec 3<>$C/dma
echo "0000:0c:00.0 read 0x2000 8" >&3; cat <&3
echo "0000:0c:00.0 read 0x2000 8" >&3; cat <&3
echo "0000:0c:00.0 write 0x2010 8 data=ab" >&3; cat <&3
echo "0000:0c:00.0 read 0x3000 8" >&3; cat <&3
cat $C/atc_stats

# The program unmaps its memory (VFIO_IOMMU_UNMAP_DMA): the unit's IOTLB is invalidated,
# then the device's ATC, for the 256 pages (size bit set, address 0x7f000: 1 MiB at 0)
echo >&${COPROC[1]}
while read -r line <&${COPROC[0]}; do echo "$line"; [[ $line = unmapped* ]] && break; done
grep -P '^ +\d+\t00000c0000000003\t' $I/invalidation_queue | cut -f2,3
cat $C/atc_stats
# nothing stale is left in the ATC: the same read now faults
echo "0000:0c:00.0 read 0x2000 8" >&3; cat <&3
echo >&${COPROC[1]}
wait
rm $ATC
