# 00-setup: pseudo filesystems, banner, kernel command line.
mkdir -p /proc /sys /dev /run /tmp $ROOT $ROOT_RW $ROOT_RO
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
echo 0 >/proc/sys/kernel/printk 2>/dev/null
# /version and the kernel's release by the shell's read: a command substitution of cat or uname is a
# fork and an exec (~7 ms of the boot's one CPU under emulation; a read of a short file ~0.2 ms)
version=
read -r version 2>/dev/null </version
kernel=
read -r kernel 2>/dev/null </proc/sys/kernel/osrelease
echo
echo "Welcome to micro-CernVM $version"
echo
log setup "kernel $kernel, initrd $version"

CVMFS_REPO=; CERNVM_PATH=; CVMFS_SERVER=; CVMFS_TAG=; CVMFS_DATE=; CVMFS_ROOT_HASH=; CVMFS_PROXY=DIRECT; CVMDEBUG=; CVMFS_STATS=
# the cloud metadata service; cernvm_metadata_url=http://HOST:PORT points it elsewhere (tests, clouds
# that serve it on another address); cernvm_metadata_url=none skips it
METADATA_URL=http://169.254.169.254
# shellcheck disable=SC2013  # the kernel command line is words by definition (set -f: no globbing)
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        cvmfs_repos=*) CVMFS_REPO=${arg#*=} ;;
        cernvm_path=*) CERNVM_PATH=${arg#*=} ;;
        cvmfs_server=*) CVMFS_SERVER=${arg#*=} ;;
        cvmfs_repository_tag=*) CVMFS_TAG=${arg#*=} ;;
        cvmfs_repository_date=*) CVMFS_DATE=${arg#*=} ;;
        cvmfs_root_hash=*) CVMFS_ROOT_HASH=${arg#*=} ;;
        cvmfs_proxy=*|cvmfs_http_proxy=*) CVMFS_PROXY=${arg#*=} ;;
        cernvm_metadata_url=*) METADATA_URL=${arg#*=} ;;
        cvmdebug) CVMDEBUG=1 ;;
        cvmfs_stats) CVMFS_STATS=1 ;;
    esac
done
[ -n "$CVMFS_REPO" ] || panic "no cvmfs_repos= on the kernel command line"
log setup "repository $CVMFS_REPO path /${CERNVM_PATH} snapshot ${CVMFS_ROOT_HASH:-${CVMFS_DATE:-${CVMFS_TAG:-<latest>}}} servers $CVMFS_SERVER"

# The runtime stays where the initrd has it ($RT names it): the FUSE process runs from it and opens
# files there after the OS has started, and 90-boot.sh enters the OS without emptying the initramfs
# (a copy onto a tmpfs of its own, for switch_root to spare, took 0.2 s under TCG and 17 MB more RAM).
ln -sfn $RT_SRC $RT || panic "cannot link the runtime at $RT"
# (the mount's Python starts once the modules are loaded: 01-modules.sh)
