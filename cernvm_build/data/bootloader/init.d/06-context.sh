# 06-context: the user data found on a context drive is saved on the scratch disk (context/); without a
# drive, later boots reuse the saved copy.
# The parser's lines are saved with their key (init.head.sh read_user_data): the next boot with the
# same user data reads them from here.
if [ -n "$CONTEXT_SRC" ]; then
    [ -n "$USER_DATA_READ" ] || read_user_data /tmp/context/user-data /tmp/context/ucontext $ROOT_RW/context
    cp /tmp/context/user-data $ROOT_RW/context/user-data.new && mv $ROOT_RW/context/user-data.new $ROOT_RW/context/user-data
    keep_user_data_lines /tmp/context/ucontext $ROOT_RW/context
    echo "$CONTEXT_SRC" >$ROOT_RW/context/source
elif [ -f $ROOT_RW/context/user-data ]; then
    log context "no context drive, using the saved user data from $(cat $ROOT_RW/context/source 2>/dev/null)"
    read_user_data $ROOT_RW/context/user-data $ROOT_RW/context/ucontext $ROOT_RW/context
    keep_user_data_lines $ROOT_RW/context/ucontext $ROOT_RW/context
else
    log context "no user data"
fi
# The context wins over the image's command line; a server or proxy from it disables the CDN.
[ -n "$U_cvmfs_cdn" ] && CVMFS_SERVER=$U_cvmfs_cdn
[ -n "$U_cvmfs_server" ] && CVMFS_SERVER=$U_cvmfs_server
[ -n "$U_cvmfs_http_proxy" ] && CVMFS_PROXY=$U_cvmfs_http_proxy
[ -n "$U_cvmfs_branch" ] && CVMFS_REPO=$U_cvmfs_branch
[ -n "$U_cernvm_path" ] && CERNVM_PATH=$U_cernvm_path
:
