"""What the reader accepts from a repository: sizes, depths and field ranges (issue 12).

A signature says who published a tree, not that the tree is safe, and a man in the middle has no
signature at all; so every input is bounded *before* it is read whole, inflated or trusted. The
limits are far above what any real repository uses (the largest known catalogs are a few hundred MB,
nesting is about ten deep, whitelists and manifests are a few hundred bytes) and low enough that a
hostile value costs a few MB of memory and no unbounded time.
"""

from __future__ import annotations

from ..fsutil import size_text

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30

# -- before trust: the signed files, read before their signatures are checked ---------------------
#: ``.cvmfspublished`` (a real one is about 600 bytes)
MAX_MANIFEST_BYTES = 1 * MiB
#: a master public key file (``--key``): an RSA-4096 PEM is under 1 KiB; a few keys in one file fit
MAX_PUBLIC_KEY_BYTES = 64 * KiB
#: ``.cvmfswhitelist`` (a real one is a few hundred bytes per fingerprint)
MAX_WHITELIST_BYTES = 1 * MiB
#: the certificate object, stored and inflated (a real one is about 1 KiB)
MAX_CERTIFICATE_BYTES = 1 * MiB
#: a certificate blacklist file (``--blacklist``; a line is ~60 bytes: tens of thousands of entries fit)
MAX_BLACKLIST_BYTES = 4 * MiB
#: RSA moduli larger than this are refused before any arithmetic (real keys are 2048-4096 bits)
MAX_RSA_BITS = 16384

# -- after trust: sizes a catalog or manifest declares, and caps where nothing is declared ---------
#: a catalog whose size is not declared (schema without the column, or 0): at most this inflated
MAX_CATALOG_BYTES = 4 * GiB
#: the history database (tags) has no declared size
MAX_HISTORY_BYTES = 256 * MiB
#: the meta-information object (JSON about the repository; a real one is a few KiB)
MAX_METAINFO_BYTES = 1 * MiB
#: ``.cvmfsreflog`` (a server-side SQLite list of every object root; grows with the publications)
MAX_REFLOG_BYTES = 256 * MiB
#: nested catalogs below the root catalog, at most this deep (real repositories: about 10)
MAX_NESTING = 64
#: nested catalog references in one catalog
MAX_NESTED_REFS = 100_000
#: rows of a catalog's or history's ``properties`` (the server writes about ten, read whole on open: 3
#: million rows, a 32 MB catalog object, took a reader's RSS from 26 MB to 1 GB)
MAX_PROPERTIES = 1000
#: tags of a history database (a repository tagging every publish for years has some ten thousand;
#: each listed costs about 2 KB: a million took `tag list` to 2.2 GB of RSS)
MAX_TAGS = 1_000_000
#: the longest value of a history database (a tag's name or description): a 200 MB description
#: took `tag list` to 600 MB of RSS and printed it
MAX_TAG_TEXT = 64 * KiB
#: chunks of one file (a 1 TB file in the default 4-16 MiB chunks has about 125,000); the list is
#: held in memory with its entry (about 150 bytes a chunk)
MAX_CHUNKS = 200_000

# -- catalog fields --------------------------------------------------------------------------------
#: a name is at most NAME_MAX bytes (UTF-8), like every Linux file system
MAX_NAME_BYTES = 255
#: a symbolic link target is at most PATH_MAX - 1 bytes
MAX_SYMLINK_BYTES = 4095
#: an extended attribute block is at most what its format can hold: a version and a count byte,
#: then up to 255 entries of (key length, value length, key, value), each length one byte
MAX_XATTR_BYTES = 2 + 255 * (2 + 255 + 255)
#: any one value a catalog query returns (SQLite's SQLITE_LIMIT_LENGTH on the connection): a bigger
#: cell is an error before SQLite reads it (a text cell's ``length`` would read it whole); the
#: largest legitimate cell is an xattr block, ``MAX_XATTR_BYTES``
MAX_CELL_BYTES = 1 * MiB
#: uid/gid 0 .. 2^32 - 2 (2^32 - 1 is "no id" to chown)
MAX_ID = (1 << 32) - 2
#: mtimes within +-2^33 s of 1970 (years 1697 .. 2242): nanoseconds still fit a signed 64-bit integer
MAX_MTIME = 1 << 33
#: sizes are signed 64-bit integers in SQLite; a size must not be negative
MAX_SIZE = (1 << 63) - 1
#: a stored (compressed) object larger than its declared size allows is refused while it streams
ZLIB_SLACK = 1 * KiB


def zlib_bound(size: int) -> int:
    """The most bytes zlib can produce for ``size`` input bytes (zlib's compressBound), plus slack:
    a stored object larger than this for its declared size cannot be genuine."""
    return size + (size >> 12) + (size >> 14) + (size >> 25) + 13 + ZLIB_SLACK


human = size_text  # the one spelling of a cap: fsutil's, which read_capped's refusal uses


# -- container layers (``hub ingest``; ``--max-layer-bytes``/``--max-layer-entries`` raise them) ----
#: the tar bytes a layer may declare (its members' data, sparse files at their real size); every tar
#: stream is also bounded by what its compressed size can hold (``tar_limits.stream_bound``)
MAX_TAR_BYTES = 64 * GiB
#: the holes of one sparse source file of a directory publish (``--max-hole-bytes``): read as zeros, as a
#: tar's sparse members' holes are capped (``TarLimits.max_holes``)
MAX_HOLE_BYTES = MAX_TAR_BYTES
#: members of one layer (a base OS layer has about 100,000)
MAX_TAR_ENTRIES = 2_000_000
#: the most one tar header's own data may hold (a PAX extended header, a GNU long name or link),
#: which tarfile reads into memory whole: paths of 4 KiB and a member's xattrs need far less
MAX_TAR_HEADER_BYTES = 4 * MiB

#: retries per server a flag or the user data may ask for: past it a server that is down is waited on
#: for ever (the CLI's ``--retries`` and the mount daemon's, which the initrd passes from user data)
MAX_RETRIES = 100
#: download threads or workers a ``-j/--jobs`` flag may ask for (``replicate``'s threads, the CLI's
#: ``jobs`` type): past a few dozen they only contend for the interpreter, and -j 100000 started
#: threads until the system refused one (a traceback, pr18d finding 5)
MAX_JOBS = 64

# -- the publisher ---------------------------------------------------------------------------------
#: a whitelist's validity in days (``create --whitelist-days``, ``resign --days``): 100 years; the
#: expiry is written as YYYYMMDDhhmmss, and past year 9999 no date was a traceback
MAX_WHITELIST_DAYS = 36500
