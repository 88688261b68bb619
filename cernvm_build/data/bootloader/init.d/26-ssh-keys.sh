# 26-ssh-keys: an OS without cloud-init (no /usr/bin/cloud-init) but with OpenSSH (/etc/ssh) still gets
# what cernvm-launch puts in the user data's cloud-config: the login keys (ssh_authorized_keys ->
# /root/.ssh/authorized_keys), the pinned host key (ssh_keys -> /etc/ssh/ssh_host_<type>_key) and the
# hostname. Read by the demo OS's own parser (apply-user-data.awk, shipped in the initrd as well):
# values are data, never evaluated. A cloud-init OS applies the user data itself (NoCloud drive).
if [ -f $ROOT_RW/context/user-data ] && [ ! -e $ROOT/usr/bin/cloud-init ] && [ -d $ROOT/etc/ssh ]; then
    out=/tmp/ssh-keys
    rm -rf $out && mkdir -p $out
    awk -v out=$out -f /usr/share/ucernvm/apply-user-data.awk $ROOT_RW/context/user-data
    applied=
    if [ -s $out/authorized_keys ]; then
        mkdir -p $ROOT/root/.ssh && chmod 700 $ROOT/root/.ssh
        cp $out/authorized_keys $ROOT/root/.ssh/authorized_keys && chmod 600 $ROOT/root/.ssh/authorized_keys
        applied="$applied /root/.ssh/authorized_keys"
    fi
    set +f
    for k in "$out"/hostkey_*; do
        [ -s "$k" ] || continue
        t=${k##*/hostkey_}
        cp "$k" "$ROOT/etc/ssh/ssh_host_${t}_key" && chmod 600 "$ROOT/etc/ssh/ssh_host_${t}_key"
        applied="$applied /etc/ssh/ssh_host_${t}_key"
    done
    set -f
    if [ -s $out/hostname ]; then
        cp $out/hostname $ROOT/etc/hostname
        applied="$applied /etc/hostname"
    fi
    log keys "no cloud-init in the OS; from the user data:${applied:- nothing}"
fi
