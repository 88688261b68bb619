# 26-ssh-keys: an OS with OpenSSH (/etc/ssh) gets what cernvm-launch puts in the user data's
# cloud-config: the login keys (ssh_authorized_keys -> /root/.ssh/authorized_keys), the pinned host key
# (ssh_keys -> /etc/ssh/ssh_host_<type>_key) and the hostname. Read by the demo OS's own parser
# (apply-user-data.awk, shipped in the initrd as well): values are data, never evaluated. A cloud-init
# OS gets them too, before its sshd can start: cloud-init applies the whole user data later (config
# drive / NoCloud), writing the same keys, and cernvm-launch's first login must not race it.
if [ -f $ROOT_RW/context/user-data ] && [ -d $ROOT/etc/ssh ]; then
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
    if [ -e $ROOT/usr/bin/cloud-init ]; then
        log keys "from the user data (cloud-init applies the rest):${applied:- nothing}"
    else
        log keys "no cloud-init in the OS; from the user data:${applied:- nothing}"
    fi
fi
