# 06-context: user data from a config drive (CONFIG-2: openstack/latest/user_data) or a NoCloud
# context disk (cidata: user-data), saved on the scratch disk; later boots reuse the saved copy.
# The [ucernvm-begin] block is parsed by the Python runtime into checked key=value lines.
found=
mkdir -p /mnt/context
for dev in $(ls /dev | grep -e '^sr[0-9]' -e '^vd[a-z]$' -e '^sd[a-z]$' -e '^xvd[a-z]$'); do
    [ "/dev/$dev" = "$ROOT_DEV" ] && continue
    for fs in iso9660 vfat; do
        mount -t $fs -o ro "/dev/$dev" /mnt/context 2>/dev/null || continue
        for f in openstack/latest/user_data user-data; do
            if [ -f "/mnt/context/$f" ]; then
                cp "/mnt/context/$f" $ROOT_RW/context/user-data.new && found="/dev/$dev:$f"
                break
            fi
        done
        umount /mnt/context
        [ -n "$found" ] && break 2
    done
done
if [ -n "$found" ]; then
    mv $ROOT_RW/context/user-data.new $ROOT_RW/context/user-data
    echo "$found" >$ROOT_RW/context/source
    log context "user data from $found"
elif [ -f $ROOT_RW/context/user-data ]; then
    log context "no context drive, using the saved user data from $(cat $ROOT_RW/context/source 2>/dev/null)"
else
    log context "no user data"
fi
U_resize_rootfs=; U_cvmfs_server=; U_cvmfs_cdn=; U_cvmfs_http_proxy=; U_cvmfs_branch=; U_cvmfs_tag=
U_cvmfs_date=; U_cernvm_path=; U_cernvm_inject=; U_cvmfs_wait_on_squid=
if [ -f $ROOT_RW/context/user-data ]; then
    py cernvm_build.bootloader.userdata $ROOT_RW/context/user-data >$ROOT_RW/context/ucontext
    while IFS= read -r line; do
        key=${line%%=*}
        val=${line#*=}
        case "$key" in
            resize_rootfs) U_resize_rootfs=$val ;;
            cvmfs_server) U_cvmfs_server=$val ;;
            cvmfs_cdn) U_cvmfs_cdn=$val ;;
            cvmfs_http_proxy) U_cvmfs_http_proxy=$val ;;
            cvmfs_branch) U_cvmfs_branch=$val ;;
            cvmfs_tag) U_cvmfs_tag=$val ;;
            cvmfs_date) U_cvmfs_date=$val ;;
            cernvm_path) U_cernvm_path=$val ;;
            cernvm_inject) U_cernvm_inject=$val ;;
            cvmfs_wait_on_squid) U_cvmfs_wait_on_squid=$val ;;
        esac
        [ "$key" = cernvm_inject ] && val="(${#val} bytes)"
        log context "$key=$val"
    done <$ROOT_RW/context/ucontext
fi
# The context wins over the image's command line; a server or proxy from it disables the CDN.
[ -n "$U_cvmfs_cdn" ] && CVMFS_SERVER=$U_cvmfs_cdn
[ -n "$U_cvmfs_server" ] && CVMFS_SERVER=$U_cvmfs_server
[ -n "$U_cvmfs_http_proxy" ] && CVMFS_PROXY=$U_cvmfs_http_proxy
[ -n "$U_cvmfs_branch" ] && CVMFS_REPO=$U_cvmfs_branch
[ -n "$U_cernvm_path" ] && CERNVM_PATH=$U_cernvm_path
:
