# 10-cvmfs: mount the OS repository with the FUSE client of the runtime, cache on the scratch disk,
# pinned: the first boot records root hash + tag in aux/cvmfs_snapshot and later boots mount exactly
# that; cvmfs_tag / cvmfs_date (or aux/cvmfs_force_tag) select another snapshot and re-pin.
if [ -n "$U_cvmfs_wait_on_squid" ] && [ -z "$NET_IF" ]; then
    log cvmfs "waiting up to ${U_cvmfs_wait_on_squid}s for the network"
    i=0
    while [ $i -lt "$U_cvmfs_wait_on_squid" ] && ! udhcpc -q -n -t 1 -T 1 -s /usr/share/udhcpc/default.script >/dev/null 2>&1; do
        i=$((i + 2))
    done
fi
set -- --fqrn "$CVMFS_REPO" --cache $ROOT_RW/cache --snapshot-file $ROOT_RW/aux/cvmfs_snapshot
# The OS root under a CPU-starved guest (TCG): no virtual attributes, so that for a tree without
# attributes of its own the kernel stops asking (overlayfs and exec ask for every file: ~2,400
# requests in a Debian boot), and a directory's files fetched ahead only for a reader going through
# it in name order (fetching ahead on every open, the Debian boot made 2,295 copies where it needs
# ~1,485, each fetched, inflated and written with the boot's CPU).
set -- "$@" --no-magic-xattrs --prefetch-in-order
# Every key the profile named (a repository may be signed by any of several master keys).
set +f
for key in /etc/cvmfs/keys/*.pub; do
    [ -f "$key" ] && set -- "$@" --public-key "$key"
done
set -f
if [ -z "$key" ] || [ ! -f "$key" ]; then panic "no repository public keys in the initrd"; fi
# Revoked certificates and revision floors: the image's blacklist (the profile's cvmfs.blacklist),
# then the user data's entries, one a line. The mount reads every file named and adds them up, so the
# user data can revoke more, never less.
[ -f /etc/cvmfs/blacklist ] && set -- "$@" --blacklist /etc/cvmfs/blacklist
if [ -n "$U_cvmfs_blacklist" ]; then
    echo "$U_cvmfs_blacklist" | tr , '\n' >/tmp/blacklist.user-data
    set -- "$@" --blacklist /tmp/blacklist.user-data
fi
old_ifs=$IFS
IFS=,
for s in $CVMFS_SERVER; do
    case "$s" in
        http://*|https://*) url=$s ;;
        *) url="http://$s/cvmfs/@fqrn@" ;;
    esac
    # every @fqrn@ replaced by the shell (an echo | sed in $() was three processes a server)
    with=
    while :; do
        case "$url" in *@fqrn@*) with="$with${url%%@fqrn@*}$CVMFS_REPO"; url=${url#*@fqrn@} ;; *) break ;; esac
    done
    set -- "$@" --server "$with$url"
done
IFS=$old_ifs
[ "$CVMFS_PROXY" != DIRECT ] && set -- "$@" --proxy "$CVMFS_PROXY"
[ -n "$U_cvmfs_quota_limit" ] && set -- "$@" --quota-limit "$U_cvmfs_quota_limit"
# cvmfs_stats on the kernel command line: the daemon's FUSE request counts and CPU (where a boot's time goes),
# readable in the OS at /mnt/.rw/aux/fuse-stats
[ -n "$CVMFS_STATS" ] && set -- "$@" --stats $ROOT_RW/aux/fuse-stats
# An image built with --boot-list: the boot's working set, fetched ahead once mounted (bootlist.py)
[ -f /etc/cvmfs/boot.list ] && set -- "$@" --boot-list /etc/cvmfs/boot.list

# Which snapshot: an explicit selector from the context (new or changed), else the pin, else the
# image's default tag.
selector=
[ -n "$U_cvmfs_tag" ] && selector="tag=$U_cvmfs_tag"
[ -n "$U_cvmfs_date" ] && selector="date=$U_cvmfs_date"
if [ -f $ROOT_RW/aux/cvmfs_force_tag ]; then
    selector="tag=$(head -n 1 $ROOT_RW/aux/cvmfs_force_tag)"
    rm -f $ROOT_RW/aux/cvmfs_force_tag
fi
# aux/cvmfs_selector: "<repository> <selector>" of the last successful mount; a pin is only valid
# for the repository it was taken from (cvmfs_branch may switch to another one).
# (files of one line, read by the shell: no fork and exec of cat, head, sed on every boot)
saved=
IFS= read -r saved 2>/dev/null <$ROOT_RW/aux/cvmfs_selector
saved_repo=${saved%% *}
saved_sel=${saved#"$saved_repo"}
saved_sel=${saved_sel# }
pinned=
if [ -n "$selector" ] && { [ "$selector" != "$saved_sel" ] || [ "$saved_repo" != "$CVMFS_REPO" ]; }; then
    why="selected by the user data"
elif [ -f $ROOT_RW/aux/cvmfs_snapshot ] && [ "$saved_repo" = "$CVMFS_REPO" ]; then
    selector=$saved_sel
    why="pinned since $(date -r $ROOT_RW/aux/cvmfs_snapshot -u +%Y-%m-%dT%H:%M:%SZ 2>/dev/null)"
    pinned=1
else
    selector=${CVMFS_TAG:+tag=$CVMFS_TAG}
    [ -n "$CVMFS_DATE" ] && selector="date=$CVMFS_DATE"
    [ -n "$CVMFS_ROOT_HASH" ] && selector="hash=$CVMFS_ROOT_HASH"
    why="first boot"
fi
if [ -z "$pinned" ]; then
    case "$selector" in
        tag=*) set -- "$@" --tag "${selector#tag=}" ;;
        date=*) set -- "$@" --date "${selector#date=}" ;;
        hash=*) set -- "$@" --root-hash "${selector#hash=}" ;;
        *) [ -f $ROOT_RW/aux/cvmfs_snapshot ] && mv $ROOT_RW/aux/cvmfs_snapshot $ROOT_RW/aux/cvmfs_snapshot.previous ;;
    esac
fi
log cvmfs "mounting $CVMFS_REPO (${selector:-latest}, $why) from $CVMFS_SERVER"
mount_cvmfs /tmp/cvmfs.log "$@" $ROOT_RO \
    || panic "CernVM-FS mount of $CVMFS_REPO failed: $(tail -n 1 /tmp/cvmfs.log)"
# the mount's line, a pin file it ignored (not a hash: the newest revision was mounted and pinned)
# and what its start found of the last stop (after a crash first reads are checked)
grep -e '^mounted' -e '^pin file' -e '^cache:' /tmp/cvmfs.log | while IFS= read -r line; do log cvmfs "$line"; done
# Read ahead 1 MiB instead of the kernel's 128 KiB: every READ is a request the daemon answers in
# Python, and a mapped library (ld.so, the boot's main reader) is read by page-fault readaround.
# libfuse takes reads of up to 1 MiB (max_pages 256). Mapping three large binaries on the host:
# 173 READ requests at 128 KiB, 35 at 1 MiB.
bdi=$(awk -v m=$ROOT_RO '$5 == m {print $3}' /proc/self/mountinfo)
[ -w "/sys/class/bdi/$bdi/read_ahead_kb" ] && echo 1024 >"/sys/class/bdi/$bdi/read_ahead_kb"
echo "$CVMFS_REPO $selector" >$ROOT_RW/aux/cvmfs_selector
snap_root=
snap_tag=
{ IFS= read -r snap_root && IFS= read -r snap_tag; } 2>/dev/null <$ROOT_RW/aux/cvmfs_snapshot
log cvmfs "pinned snapshot $snap_root tag $snap_tag"
[ -d "$ROOT_RO/$CERNVM_PATH" ] || panic "/$CERNVM_PATH not found in $CVMFS_REPO"
