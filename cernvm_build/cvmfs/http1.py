"""A lean HTTP/1.1 GET on a raw kept-alive socket: what the reader's fetcher needs and no more.

Why not ``http.client``: on a cold FUSE read of small files the daemon's Python time per object is
what the real client beats us on, and ``http.client`` (a buffered file over the socket per response,
its request builder, its status and header parsing) cost ~100-150 µs per GET against ~40-50 µs for
this (measured on loopback). Everything here is stdlib (the μCernVM initrd runs it).

Bounds a hostile server meets (the ones ``http.client`` had, plus a head deadline): a header line
of at most ``MAX_HEADER_LINE`` bytes, at most ``MAX_HEADERS`` lines, the status line and headers
within ``HEAD_TIMEOUTS`` socket timeouts of the request (a server trickling its header block a byte
at a time is given up, as a trickling body is by the fetcher's low-speed limit), every socket
operation within the timeout. Bodies are delimited by Content-Length, chunked transfer encoding, or
the connection's end (then not kept). A connection is kept only when its response was read exactly
to its end with nothing after it.
"""

from __future__ import annotations

import math
import re
import select
import socket
import struct
import time
from collections.abc import Sequence

from ..numtext import decimal

#: bounds on a response's header block (http.client's own: a line, the number of lines)
MAX_HEADER_LINE = 65536
MAX_HEADERS = 100
#: the status line and header block must all arrive within this many socket timeouts
HEAD_TIMEOUTS = 2
#: the most asked of the socket at once for a body (a bigger recv buffer is allocated per call)
RECV = 256 << 10


#: a body's rest of at least this many bytes is waited for whole, in one wake-up (``_await``); a
#: smaller one comes in a segment or two anyway
AWAIT_WHOLE = 8 << 10
#: the most waited for at once that way (the kernel caps SO_RCVLOWAT at half its largest receive
#: buffer itself; a reader asks for at most 1 MiB)
AWAIT_MOST = 1 << 20
_LOWAT = getattr(socket, "SO_RCVLOWAT", None)
_POLLIN = getattr(select, "POLLIN", 1)

#: a space, CR or LF: refused in a request line (one C call, not a generator per character class)
_WHITESPACE = re.compile("[ \r\n]").search


class ProtocolError(Exception):
    """The server's answer is not HTTP we accept (the fetch moves on, as for a broken transfer)."""


class Closed(ConnectionError):
    """The server closed the connection before any byte of the answer (a kept-alive connection it
    let go of: worth one fresh try)."""


_ssl_context = None


def _tls(sock: socket.socket, host: str) -> socket.socket:
    global _ssl_context
    import ssl  # only for https: a plain-HTTP client (the initrd's) never loads it

    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context.wrap_socket(sock, server_hostname=host)


def split_netloc(netloc: str, scheme: str) -> tuple[str, int]:
    default = 443 if scheme == "https" else 80
    if netloc.startswith("["):  # [IPv6]:port
        host, _, rest = netloc[1:].partition("]")
        if not (rest.startswith(":") and rest[1:]):
            return host, default
        port = rest[1:]
    else:
        host, colon, port = netloc.rpartition(":")
        if not colon:
            return netloc, default
    number = decimal(port, 5)
    if number is None or not 0 < number <= 65535:
        raise ProtocolError(f"bad port in {netloc!r}")
    return host, number


def timeval(seconds: float) -> bytes:
    """``seconds`` as the kernel's socket timeout (``struct timeval``), rounded up to whole
    microseconds: a zero timeval means "wait forever", so a timeout below 1 µs must not become one."""
    if not 0 < seconds <= 86400:  # nan too
        raise ValueError(f"a socket timeout of {seconds} s (expected more than 0, at most 86400)")
    micro = math.ceil(seconds * 1_000_000)
    return struct.pack("ll", micro // 1_000_000, micro % 1_000_000)


class Connection:
    """One connection to ``netloc`` (a server or a proxy); opened on the first request."""

    __slots__ = ("_at", "_buf", "_poll", "host", "port", "scheme", "sock", "timeout")

    def __init__(self, scheme: str, netloc: str, timeout: float):
        self.scheme = scheme
        self.host, self.port = split_netloc(netloc, scheme)
        self.timeout = timeout
        self.sock: socket.socket | None = None
        #: bytes received, consumed up to ``_at`` (the rest: the start of the response being read);
        #: b"" once all are consumed. An offset, not the rest sliced off: a pipelined batch's answers
        #: come in one buffer, and copying what is left of it at each head and body read was ~27k
        #: instructions a fetched object (issue 13)
        self._buf = b""
        self._at = 0
        #: the socket registered for POLLIN (``_register``), made on first use
        self._poll: select.poll | None = None

    def close(self) -> None:
        sock, self.sock = self.sock, None
        self._buf, self._at = b"", 0
        self._poll = None
        if sock is not None:
            sock.close()

    def get(self, target: str, host: str, headers: bytes = b"") -> Response:
        """Send ``GET target`` (``headers``: extra CRLF-ended lines) and read the answer's head."""
        self.send((target,), host, headers)
        return Response(self)

    def send(self, targets: Sequence[str], host: str, headers: bytes = b"") -> None:
        """Send ``GET`` for each of ``targets`` at once (pipelined, in one write: the answers come
        back in that order, each read with ``Response(connection)`` in turn)."""
        if _WHITESPACE(host) or any(map(_WHITESPACE, targets)):
            raise ProtocolError(
                f"refusing a request line with whitespace in it: {host[:100]!r} {targets!r:.200}"
            )
        if self.sock is None:
            # an ASCII name as bytes: a str is IDNA-encoded first, which imports encodings.idna,
            # stringprep and unicodedata into the mount's start (its one connection); getaddrinfo
            # takes bytes, typeshed only names str
            name = self.host.encode() if self.host.isascii() else self.host
            sock = socket.create_connection((name, self.port), self.timeout)  # type: ignore[arg-type]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "https":
                sock = _tls(sock, self.host)
            else:
                # The timeout kept by the kernel (a blocked recv/send fails with EAGAIN after it)
                # instead of by Python, which polls before every recv and send: a system call and a
                # GIL hand-off less per call, thousands on a cold read.
                sock.settimeout(None)
                limit = timeval(self.timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, limit)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, limit)
            self.sock = sock
        try:
            tail = f" HTTP/1.1\r\nHost: {host}\r\n".encode() + headers + b"\r\n"
            # joined in C (no generator frame per request: one per fetched object)
            self.sock.sendall(b"GET " + (tail + b"GET ").join(map(str.encode, targets)) + tail)
        except BlockingIOError:
            raise TimeoutError("timed out") from None

    def reusable_idle(self) -> bool:
        """Open, with nothing received that was not read (after the last pipelined answer)."""
        return self.sock is not None and not self._buf

    def spoiled(self) -> bool:
        """A kept-alive plain-HTTP connection that got bytes while idle, or whose end came: the
        bytes would be read as the next request's answer (bytes after a body's last segment arrive
        after the check that kept it), and a request on a closed one is spent. One poll that does
        not wait, nothing consumed. Not checked over TLS (a record there may be no answer's byte)."""
        sock = self.sock
        if sock is None or self.scheme != "http":
            return False
        # Polled, not peeked: a peek at nothing raised BlockingIOError on every reuse (an exception
        # per fetched object); readable is a byte there, the end, or a reset (POLLHUP, POLLERR)
        return bool((self._poll or self._register(sock)).poll(0))

    def _register(self, sock: socket.socket) -> select.poll:
        """``_poll`` made: ``sock`` registered for POLLIN (``spoiled``, ``_await``), once a connection."""
        poll = self._poll = select.poll()
        poll.register(sock, _POLLIN)
        return poll

    # -- reading -----------------------------------------------------------------------------------
    def _consume(self, buf: bytes, at: int) -> None:
        """``buf`` is held, consumed up to ``at`` (dropped once all of it is)."""
        if at < len(buf):
            self._buf, self._at = buf, at
        else:
            self._buf, self._at = b"", 0

    def _take(self, n: int) -> bytes:
        """Up to ``n`` of the bytes held, consumed (the caller checked some are held)."""
        buf, at = self._buf, self._at
        data = buf[at : at + n]
        self._consume(buf, at + len(data))
        return data

    def _recv(self, n: int, flags: int = 0) -> bytes:
        assert self.sock is not None
        try:
            return self.sock.recv(n, flags)
        except BlockingIOError:  # SO_RCVTIMEO ran out
            raise TimeoutError("timed out") from None

    def _await(self, n: int) -> bytes:
        """Up to ``n`` bytes of a body known to be at least that long, from a plain socket: the thread
        sleeps until all of them are there (SO_RCVLOWAT, then poll), or the timeout, then takes what
        is there. A blocking recv (MSG_WAITALL too) is woken by every segment that arrives: ~17 for a
        25 KB object over Ethernet, each a context switch and a return to Python, and in the μCernVM
        guest (one vCPU under TCG) those wake-ups were much of a fetch's CPU (issue 13). The mark is
        set back to 1 before returning: a head's recv must not wait for a body's worth of bytes.
        Like a recv under SO_RCVTIMEO: what came within the timeout (the caller's low-speed check
        sees a trickle), TimeoutError if nothing did, b"" at the connection's end. What is there
        already is taken at once without waiting (a pipelined batch's later answers: one call); if
        that is only part and the rest is at least AWAIT_WHOLE, the rest is waited for whole too and
        both returned together (one copy): else a body arriving at the pace it is consumed would
        come back one arrival at a time, the many small blocks this avoids (review r13a)."""
        sock = self.sock
        assert sock is not None
        try:
            got = sock.recv(n, socket.MSG_DONTWAIT)
        except BlockingIOError:
            got = b""
        else:
            if not got or n - len(got) < AWAIT_WHOLE:
                return got  # the end, all of it, or a small rest (asked for again by the caller)
        rest = n - len(got)
        poll = self._poll or self._register(sock)
        # Not a blocking recv with the mark set: the kernel wakes a reader when what is *not yet
        # copied* reaches the mark, so once a recv has copied part of the body the rest would never
        # reach it (it hangs; seen on Linux 6.18). poll copies nothing.
        try:
            sock.setsockopt(socket.SOL_SOCKET, _LOWAT, min(rest, AWAIT_MOST))  # type: ignore[arg-type]
        except OSError:  # a kernel (a sandbox?) that refuses the mark: a blocking read, as without it
            return self._blocking(got, rest)
        try:
            ready = poll.poll(self.timeout * 1000)
            data = sock.recv(rest, socket.MSG_DONTWAIT)
        except BlockingIOError:
            data = None
        finally:
            sock.setsockopt(socket.SOL_SOCKET, _LOWAT, 1)  # type: ignore[arg-type]
        if data is not None:
            return got + data  # at the end (b""): what came before it; the next call sees the end
        if got:
            return got  # nothing more within the timeout, or a spurious wake-up
        if not ready:
            raise TimeoutError("timed out")
        return self._recv(n, socket.MSG_WAITALL)  # ready but nothing there (spurious): as before

    def _blocking(self, got: bytes, n: int) -> bytes:
        """``got`` and up to ``n`` more bytes by one blocking recv (``got`` alone if none come within
        the timeout)."""
        try:
            return got + self._recv(n, socket.MSG_WAITALL)
        except TimeoutError:
            if got:
                return got
            raise

    def _line(self, until: float, what: str) -> bytes:
        """The next line (without its end), at most MAX_HEADER_LINE bytes, by ``until`` (chunk
        size lines, the trailer)."""
        buf, at = self._buf, self._at
        start = at
        while True:
            i = buf.find(b"\n", start)
            if i >= 0:
                if i - at > MAX_HEADER_LINE:
                    raise ProtocolError(f"{what} longer than {MAX_HEADER_LINE} bytes")
                self._consume(buf, i + 1)
                return buf[at : i - 1] if i > at and buf[i - 1] == 13 else buf[at:i]
            if len(buf) - at > MAX_HEADER_LINE:
                raise ProtocolError(f"{what} longer than {MAX_HEADER_LINE} bytes")
            # what was consumed is dropped as the next read is appended (a copy anyway): kept, it
            # held a whole stream of tiny chunks whose every read ended inside a line (pr24a #2)
            start = len(buf) - at
            buf = buf[at:] + self._more(until, what)
            self._buf, self._at = buf, 0
            at = 0

    def _more(self, until: float, what: str) -> bytes:
        if time.monotonic() > until:
            raise ProtocolError(f"the {what} took more than {HEAD_TIMEOUTS}x the timeout to arrive")
        more = self._recv(65536)
        if not more:
            self._buf, self._at = b"", 0
            raise ProtocolError(f"the connection ended in the {what}")
        return more

    def _head(self, until: float) -> bytes:
        """The status line and header lines up to the empty line that ends them, each line but the
        last ended by a bare LF, within the bounds; what follows stays in the buffer (the body's
        start)."""
        buf, at = self._buf, self._at
        if not buf:
            buf = self._recv(65536)
            if not buf:
                raise Closed("the server closed the connection before answering")
        start = at
        while True:
            # the first empty line: CRLF CRLF, or a bare LF line end on either side. The bare-LF
            # search stops where the CRLF one found the end: past it lie the body and, pipelined,
            # the next answers, where a "\n\n" is rarely found and the search ran through all of
            # them (~50k instructions a fetched object, 14 % of a batch's, in bytes.find)
            a = buf.find(b"\n\r\n", start)
            b = buf.find(b"\n\n", start, len(buf) if a < 0 else a + 1)
            end = a if b < 0 or 0 <= a < b else b
            if end >= 0:
                self._consume(buf, end + (3 if end == a else 2))
                block = buf[at:end]
                if block.endswith(b"\r"):
                    block = block[:-1]
                # whole-block operations, not a loop per line (this runs for every object fetched)
                block = block.replace(b"\r\n", b"\n")
                if block.count(b"\n") > MAX_HEADERS:
                    raise ProtocolError(f"got more than {MAX_HEADERS} headers")
                if len(block) > MAX_HEADER_LINE and max(map(len, block.split(b"\n"))) > MAX_HEADER_LINE:
                    raise ProtocolError(f"a header line longer than {MAX_HEADER_LINE} bytes")
                return block
            if buf.count(b"\n", at) > MAX_HEADERS + 1:
                raise ProtocolError(f"got more than {MAX_HEADERS} headers")
            if len(buf) - max(at - 1, buf.rfind(b"\n", at)) > MAX_HEADER_LINE + 2:
                raise ProtocolError(f"a header line longer than {MAX_HEADER_LINE} bytes")
            start = max(at, len(buf) - 2) - at
            buf = buf[at:] + self._more(until, "response head")  # the consumed part dropped (``_line``)
            at = 0


def _fields(block: str) -> dict[str, str]:
    """Header lines (LF-separated) as lower-case name -> value (a repeated name: its last value; a
    folded line continues the field before it)."""
    fields: dict[str, str] = {}
    last = ""
    for text in block.split("\n"):
        if not text:
            continue
        if text[0] in " \t" and last:
            fields[last] = f"{fields[last]} {text.strip()}"
            continue
        name, colon, value = text.partition(":")
        if colon:
            last = name.strip().lower()
            fields[last] = value.strip()
    return fields


#: the fields the reader needs of every answer, as ``_fields`` names them
_WANTED = ("connection", "transfer-encoding", "content-length")
#: each with the text that starts its line and that text's length (made once, not per answer)
_NEEDLES = tuple((name, f"\n{name}:", len(name) + 2) for name in _WANTED)


def _wanted(block: str) -> list[str | None]:
    """The ``_WANTED`` fields' values in a header block (each line after a LF), as ``_fields``
    reads them, without a dict of every field: splitting, stripping and lower-casing every line
    was a third of reading an answer's head (issue 13). Where a name is not once, plainly at a
    line's start (no white space before its colon, no folded line after it, not part of another
    line), ``_fields`` reads the block."""
    low = block.lower()  # Latin-1: the same length, so a position in it is one in ``block``
    values: list[str | None] = []
    for name, needle, skip in _NEEDLES:
        n = low.count(name)
        if not n:
            values.append(None)
            continue
        i = low.find(needle)
        if n > 1 or i < 0:
            fields = _fields(block)
            return [fields.get(name) for name in _WANTED]
        i += skip
        j = block.find("\n", i)
        if j < 0:
            j = len(block)
        elif block[j + 1 : j + 2] in (" ", "\t"):  # folded: the next line continues it
            fields = _fields(block)
            return [fields.get(name) for name in _WANTED]
        values.append(block[i:j].strip())
    return values


class Response:
    """The head of an answer (``status``, ``reason``, ``headers`` as lower-case name -> last value)
    and its body through ``read1``/``drain``. ``reusable`` once the body was read to its end."""

    __slots__ = (
        "_chunk_left",
        "_conn",
        "_fields",
        "_left",
        "_reason",
        "chunked",
        "length",
        "status",
        "will_close",
    )

    def __init__(self, conn: Connection):
        self._conn = conn
        until = time.monotonic() + HEAD_TIMEOUTS * conn.timeout
        while True:
            head = conn._head(until)
            line, _, fields = head.partition(b"\n")
            version, _, rest = line.partition(b" ")
            code, _, reason = rest.partition(b" ")
            if not version.startswith(b"HTTP/1.") or len(code) != 3 or not code.isdigit():
                raise ProtocolError(f"not an HTTP/1.x status line: {line[:100]!r}")
            status = int(code)
            if not 100 <= status < 200:
                break
        self._reason = reason  # decoded only if asked for (``reason``: an error's text)
        block = self._fields = "\n" + fields.decode("iso-8859-1")
        self.status = status
        connection, encoding, value = _wanted(block)
        if version == b"HTTP/1.0":
            self.will_close = connection is None or "keep-alive" not in connection.lower()
        else:
            self.will_close = connection is not None and "close" in connection.lower()
        chunked = self.chunked = encoding is not None and encoding.lower() == "chunked"
        self._chunk_left = 0  # of the current chunk; -1 once the last one was read
        length: int | None
        if status in (204, 304):
            length = 0
        elif chunked or value is None:
            length = None
            if not chunked:
                self.will_close = True  # the body ends with the connection
        else:
            length = decimal(value)
            if length is None:
                raise ProtocolError(f"bad Content-Length {value[:40]!r}")
        self.length = length  # the body's declared size (None: chunked or until the end)
        self._left = length  # what is left of it

    @property
    def reason(self) -> str:
        """The status line's text after the code (stripped)."""
        return (self._reason or b"").decode("iso-8859-1").strip()

    @property
    def headers(self) -> dict[str, str]:
        """Lower-case name -> value (a repeated name: its last value)."""
        return _fields(self._fields)

    def _trailer(self, until: float) -> None:
        """Skip the chunked body's trailer (bounded as the head)."""
        for _ in range(MAX_HEADERS + 1):
            if not self._conn._line(until, "trailer"):
                return
        raise ProtocolError(f"got more than {MAX_HEADERS} trailer lines")

    @property
    def complete(self) -> bool:
        """Read to its end, and the server keeps the connection (a pipelined answer's successor may
        already be buffered)."""
        done = self._chunk_left == -1 if self.chunked else self._left == 0
        return done and not self.will_close

    @property
    def reusable(self) -> bool:
        """Read to its end, nothing after it, and the server keeps the connection."""
        return self.complete and not self._conn._buf

    def read1(self, n: int) -> bytes:
        """Up to ``n`` bytes of the body (one recv: all ``n`` of a length-bound plain-HTTP body
        unless the timeout or the connection's end comes first); b"" at its end. A body cut short by
        the connection's end: b"" (the caller compares with ``length``) or, chunked, ProtocolError."""
        if self.chunked:
            return self._chunk(n)
        conn = self._conn
        left = self._left
        if left == 0:
            return b""
        if left is not None and left < n:
            n = left
        if conn._buf:
            data = conn._take(n)
        elif left is not None and conn.scheme == "http":
            # All ``n`` bytes in one call (or what came within the timeout, or up to the end):
            # never more than the body, and on a big object a few 1 MiB blocks instead of one per
            # segment that happened to arrive, each block a round of GIL hand-offs downstream
            # (hash, inflate, write) among the daemon's threads.
            if n >= AWAIT_WHOLE and _LOWAT is not None:
                data = conn._await(n)
            else:
                data = conn._recv(n, socket.MSG_WAITALL)
            if not data:
                self.will_close = True
                return b""
        else:
            data = conn._recv(n if n < RECV else RECV)
            if not data:
                self.will_close = True
                if left is None:
                    self._left = 0  # the end of a body delimited by the connection's end
                return b""
        if left is not None:
            self._left = left - len(data)
        return data

    def _chunk(self, n: int) -> bytes:
        conn = self._conn
        if self._chunk_left == -1:
            return b""
        until = time.monotonic() + HEAD_TIMEOUTS * conn.timeout
        if self._chunk_left == 0:
            line = conn._line(until, "chunk size line")
            size = line.partition(b";")[0].strip()
            try:
                left = int(size, 16)
            except ValueError:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}") from None
            if left < 0:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            if left == 0:
                self._trailer(until)
                self._chunk_left = -1
                return b""
            self._chunk_left = left
        n = min(n, self._chunk_left)
        if conn._buf:
            data = conn._take(n)
        else:
            data = conn._recv(n if n < RECV else RECV)
            if not data:
                self.will_close = True
                raise ProtocolError("the connection ended inside a chunk")
        self._chunk_left -= len(data)
        if self._chunk_left == 0 and conn._line(until, "chunk end"):
            raise ProtocolError("a chunk longer than its size line says")
        return data

    def drain(self, most: int) -> bool:
        """Read and drop the rest of a small unwanted body (an error page, a redirect) so the
        connection can be reused; False (not reusable) if more than ``most`` bytes are left."""
        left = self._left
        if left == 0 and not self.chunked:  # read to its end already (the usual case): no read
            return self.reusable
        if left is not None and left > most:
            return False
        got = 0
        while block := self.read1(most + 1 - got):
            got += len(block)
            if got > most:
                return False
        return self.reusable
