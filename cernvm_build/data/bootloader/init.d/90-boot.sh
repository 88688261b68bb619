# 90-boot: hand the mounts to the OS and enter it: /sbin/init.
# The scratch disk and the runtime are bind-mounted (not moved) so that the FUSE process, whose
# root stays the old initramfs, keeps finding its cache and its modules at the paths it opened.
mkdir -p $ROOT/mnt/.rw $ROOT/mnt/.rt
mount --bind $ROOT_RW $ROOT/mnt/.rw
mount --bind $RT $ROOT/mnt/.rt
# The FUSE daemon by its argv[0] (py_storage's exec -a): one pidof, not a tr per process in /proc
# (a fork and exec each, ~2 s for a hundred kernel threads under TCG).
pids=" $(pidof @ucernvm-cvmfs)"  # " 123", as the log line below has always shown it
echo "${pids# }" >$ROOT/.cvmfs_pids
# The shutdown hand-back (systemd's /run/initramfs/shutdown): a /run of our own that the OS keeps
# (systemd mounts one only where none is), holding busybox and the program that unmounts the overlay,
# CernVM-FS and the scratch disk once the OS has stopped (shutdown.sh).
[ -d $ROOT/run ] || mkdir $ROOT/run
own_run=
if mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $ROOT/run; then
    own_run=1
    mkdir -p $ROOT/run/initramfs/bin
    cp /bin/busybox $ROOT/run/initramfs/bin/busybox
    cp /usr/share/ucernvm/shutdown $ROOT/run/initramfs/shutdown
    echo "${pids# }" >$ROOT/run/initramfs/cvmfs_pids
    echo "$ROOT_DEV" >$ROOT/run/initramfs/scratch_dev
fi
# The CernVM-FS mount goes under /run/initramfs, /mnt/.ro naming it: systemd leaves mounts there alone
# (neither umount.target nor systemd-shutdown unmounts them). Anywhere else systemd-shutdown unmounts
# it with MNT_FORCE, which for FUSE aborts the connection: the overlay's lower layer, the OS root, is
# then gone while systemd-shutdown still runs from it, and a page of it not in memory (after memory
# pressure or drop_caches) can no longer be read.
if [ -n "$own_run" ] && mkdir -p $ROOT/run/initramfs/cvmfs && mount --move $ROOT_RO $ROOT/run/initramfs/cvmfs; then
    [ -L $ROOT/mnt/.ro ] || rmdir $ROOT/mnt/.ro 2>/dev/null
    ln -sfn /run/initramfs/cvmfs $ROOT/mnt/.ro
else
    [ -L $ROOT/mnt/.ro ] && rm -f $ROOT/mnt/.ro
    mkdir -p $ROOT/mnt/.ro
    mount --move $ROOT_RO $ROOT/mnt/.ro
fi
# the initrd's logs (cvmfs.log, udhcpc.log, e2fsck.log...) for a look from the OS: globbing is off
# everywhere else (init.head.sh: set -f), so it is turned on for this one line
set +f
cp /tmp/*.log $ROOT_RW/aux/ 2>/dev/null
set -f
if [ -n "$CVMDEBUG" ]; then
    log boot "cvmdebug: debug shell (the OS root is in $ROOT; exit to continue booting)"
    setsid cttyhack sh
fi
# The OS's modprobe needs the kernel's whole module tree (the initrd carries only what booting needs):
# an OS built by cernvm-build has it at /usr/lib/modules/<kver> for the profile's kernel.
kver=$(uname -r)
if [ -d "$ROOT/lib/modules/$kver" ]; then
    log boot "modules: the OS has /lib/modules/$kver"
else
    log boot "modules: the OS has no /lib/modules/$kver: modprobe there fails (build it for this kernel)"
    load_other_modules
fi
log boot "switching root to /sbin/init (cvmfs pids:$pids)"
# systemd-shutdown's last kill pass asks in_initrd() (first time in that process) while every other
# process, the FUSE daemon too, is stopped (kill(-1, SIGSTOP) ... SIGCONT): access("/etc/initrd-release")
# then looks the name up through the overlay in CernVM-FS, and once drop_caches or memory pressure
# has dropped that dentry the FUSE LOOKUP is never answered: the guest hangs for good. systemd takes
# the answer from this variable instead (PID 1 passes its environment to systemd-shutdown).
export SYSTEMD_IN_INITRD=0
# The initrd's library path is no business of the OS's programs (PID 1 would pass it on).
unset LD_LIBRARY_PATH
umount /dev/pts 2>/dev/null
mount --move /dev $ROOT/dev 2>/dev/null || mount -t devtmpfs devtmpfs $ROOT/dev
umount /sys /proc 2>/dev/null
# busybox switch_root would empty the initramfs, the runtime with it (the FUSE process runs from it):
# the init does the rest of what switch_root does itself (the OS root moved over /, entered, its init
# run as PID 1) and frees only the kernel modules (4.8 MB); busybox, e2fsprogs and the runtime stay
# (the shutdown program has its own busybox in /run/initramfs).
rm -rf "/lib/modules/$kver"
cd $ROOT || panic "cannot enter the OS root $ROOT"
mount --move . / || panic "cannot move the OS root $ROOT over /"
# shellcheck disable=SC2093  # PID 1 becomes the OS's init; nothing runs after this on success
exec chroot . /sbin/init
