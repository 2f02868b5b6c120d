"""vfakefs: a simulated Linux PCI / IOMMU / SR-IOV machine, mounted with FUSE."""
__version__ = "0.1.0"
