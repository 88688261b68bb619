# 20-overlay: the writable OS root: upper + work on the scratch disk over the read-only OS tree.
mount -t overlay overlay \
    -o "lowerdir=$ROOT_RO/$CERNVM_PATH,upperdir=$ROOT_RW/persistent,workdir=$ROOT_RW/work" $ROOT \
    || panic "overlay mount failed"
log overlay "root = $ROOT_RW/persistent over $CVMFS_REPO/$CERNVM_PATH"
[ -x $ROOT/sbin/init ] || [ -L $ROOT/sbin/init ] || panic "no /sbin/init in $CVMFS_REPO/$CERNVM_PATH"
