"""The μCernVM bootloader: the initrd (busybox, modules, Python runtime, fused /init) and the modules
that run inside it (user data, scratch disk)."""
