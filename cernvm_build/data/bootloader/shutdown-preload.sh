#!/run/initramfs/bin/busybox sh
# shellcheck shell=sh
# Run by ucernvm-shutdown-preload.service (90-boot.sh installs both), at the very end of the OS's
# shutdown. systemd-shutdown stops every process around its kill spree (kill(-1, SIGSTOP) ... SIGCONT),
# the CernVM-FS daemon too, while it runs from the OS root: a page of its code not in memory then
# waits for the stopped daemon, for ever (the guest sits idle instead of powering off; seen after the
# page cache was dropped). Reading systemd-shutdown and its libraries now puts them in memory.
bb=/run/initramfs/bin/busybox
for f in /usr/lib/systemd/systemd-shutdown /lib/systemd/systemd-shutdown; do
    [ -e "$f" ] && break
done
# the libraries as the dynamic loader resolves them (ldd without ldd): "name => /path (addr)"
# shellcheck disable=SC2016  # an awk program
libs=$(/lib64/ld-linux-x86-64.so.2 --list "$f" 2>/dev/null | $bb awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
# shellcheck disable=SC2086  # one word per path
$bb cat "$f" $libs >/dev/null 2>&1
exit 0
