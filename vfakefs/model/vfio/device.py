"""Placeholder: the device fd (vfio_pci_core) is written in its own part of issue 9."""


class VfioPciDevice:
    def __init__(self, m, dev, group):
        self.m, self.dev, self.group = m, dev, group
