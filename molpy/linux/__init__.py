"""Linux on molpy: building the kernel (build.py), its boot protocol (boot.py), root disks (rootfs.py)."""
