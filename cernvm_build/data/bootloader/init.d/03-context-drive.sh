# 03-context-drive: user data from a config drive (CONFIG-2: openstack/latest/user_data) or a NoCloud
# disk (cidata: user-data), read before the scratch disk is touched (resize_rootfs decides how the
# first boot partitions it). 06-context saves it on the scratch disk.
CONTEXT_SRC=
mkdir -p /mnt/context /tmp/context
# shellcheck disable=SC2010  # device names are kernel identifiers, no blanks; set -f is on
for dev in $(ls /dev | grep -e '^sr[0-9]' -e '^vd[a-z]$' -e '^sd[a-z]$' -e '^xvd[a-z]$'); do
    for fs in iso9660 vfat; do
        mount -t $fs -o ro "/dev/$dev" /mnt/context 2>/dev/null || continue
        for f in openstack/latest/user_data user-data; do
            if [ -f "/mnt/context/$f" ]; then
                cp "/mnt/context/$f" /tmp/context/user-data && CONTEXT_SRC="/dev/$dev:$f"
                break
            fi
        done
        umount /mnt/context
        [ -n "$CONTEXT_SRC" ] && break 2
    done
done
if [ -n "$CONTEXT_SRC" ]; then
    log context "user data from $CONTEXT_SRC"
    read_user_data /tmp/context/user-data /tmp/context/ucontext
fi
