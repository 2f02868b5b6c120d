"""The system-call adapter: what files cannot carry (VFIO ioctls), answered from the model through seccomp user notification."""
