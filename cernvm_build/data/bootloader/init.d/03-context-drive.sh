# 03-context-drive: user data, read before the scratch disk is touched (resize_rootfs decides how the
# first boot partitions it), from the first source that has some, in μCernVM's order:
# 1. a config drive (CONFIG-2: openstack/latest/user_data) or a NoCloud disk (cidata: user-data);
# 2. an OpenNebula context CD (context.sh: EC2_USER_DATA or USER_DATA, parsed as data, never sourced);
# 3. the cloud metadata service (GCE, EC2, OpenStack flavours at $METADATA_URL), when the network is up.
# It is read (parsed) by 04-devices on a first boot (resize_rootfs decides the partition's size), else
# by 06-context, which saves it on the scratch disk; later boots without any source reuse the saved copy.
CONTEXT_SRC=
mkdir -p $CONTEXT_MNT /tmp/context
# The disks in name order; the first with user data is the source.
# A type the kernel does not have yet (vfat before the late modules) is not tried: mounting it would
# make the kernel run its modprobe (fs-vfat) once per disk, which fails in the initrd (diag boot: two such
# processes on every boot, the image and the scratch disk, before the context disk).
context_from_disks() {
    # " nodev sysfs  ext4  iso9660 ... ": words (read by the shell: a tr was two processes)
    fstypes=" "
    while read -r a b; do fstypes="$fstypes$a ${b:+$b }"; done 2>/dev/null <$FILESYSTEMS
    [ "$fstypes" != " " ] || fstypes="  "
    # the disks by the shell's glob, in name order (kernel identifiers, no blanks): an ls | grep was
    # three processes
    set +f
    devs=
    for dev in "$DEV_DIR"/*; do
        dev=${dev##*/}
        case $dev in sr[0-9]* | vd[a-z] | sd[a-z] | xvd[a-z]) devs="$devs $dev" ;; esac
    done
    set -f
    for dev in $devs; do
        for fs in iso9660 vfat; do
            case "$fstypes" in "  " | *" $fs "*) ;; *) continue ;; esac  # "  ": unreadable, try all
            mount -t $fs -o ro "/dev/$dev" $CONTEXT_MNT 2>/dev/null || continue
            for f in openstack/latest/user_data user-data; do
                if [ -f "$CONTEXT_MNT/$f" ]; then
                    copy_user_data "$CONTEXT_MNT/$f" /tmp/context/user-data && CONTEXT_SRC="/dev/$dev:$f"
                    break
                fi
            done
            if [ -z "$CONTEXT_SRC" ] && [ -f $CONTEXT_MNT/context.sh ] &&
                src=$(py_early cloudsource opennebula $CONTEXT_MNT/context.sh /tmp/context/user-data); then
                CONTEXT_SRC="/dev/$dev:$src"
            fi
            umount $CONTEXT_MNT
            [ -n "$CONTEXT_SRC" ] && return 0
        done
    done
}
context_from_disks
context_from_metadata() {
    if [ -n "$NET_IF" ] && [ "$METADATA_URL" != none ] &&
        src=$(py_early cloudsource metadata /tmp/context/user-data --url "$METADATA_URL"); then
        CONTEXT_SRC="metadata $src"
    fi
    METADATA_ASKED=1
}
# A cloud that never attaches a config drive or a CD (EC2, GCE: their firmware names them, as
# cloud-init's ds-identify reads it) is asked first: the late modules below cost ~4.2 guest-s under
# TCG on a PC (its IDE controller is always there) before a metadata-served boot would ask. Without
# user data from it, the disks are looked at as on any machine.
METADATA_ASKED=
dmi_vendor=
dmi_product=
dmi_bios=
read -r dmi_vendor <"$SYS_DMI/sys_vendor" 2>/dev/null
read -r dmi_product <"$SYS_DMI/product_name" 2>/dev/null
read -r dmi_bios <"$SYS_DMI/bios_version" 2>/dev/null
case "$dmi_vendor|$dmi_product|$dmi_bios" in
    "Amazon EC2|"* | *"|Google Compute Engine|"* | *"|"*[Aa]mazon*)
        [ -n "$CONTEXT_SRC" ] || context_from_metadata ;;
esac
# The IDE/SATA/SCSI disks and CD-ROMs (an OpenNebula context CD...) and vfat (a config drive in
# that format) only when no disk had iso9660 user data: their modules load then (01-modules.sh), and
# every disk is looked at again. A virtio disk's iso9660 user data is thus taken before a CD's.
if [ -z "$CONTEXT_SRC" ] && load_late_modules; then
    context_from_disks
fi
[ -n "$CONTEXT_SRC" ] || [ -n "$METADATA_ASKED" ] || context_from_metadata
[ -n "$CONTEXT_SRC" ] && log context "user data from $CONTEXT_SRC"
USER_DATA_READ=
