"""Paths, listen addresses and user names written into server configuration files (nginx, squid).

Neither format has one escaping rule that every directive honours, so a path goes in only when it
needs none: letters, digits and ``._/+@:-``. Anything else (a space, a quote, a newline that would
start a directive of its own) is refused with the path and the fix.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from ..errors import CvmfsError

_PLAIN = re.compile(r"^[A-Za-z0-9._/+@:-]+\Z")  # \Z: $ takes "x\n"
#: a user and an optional group, as useradd accepts names (``user nobody;\nload_module ...`` went in
#: whole, pr16d finding 5)
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}(?: [a-z_][a-z0-9_-]{0,31})?")  # fullmatch: $ takes "x\n"


def is_plain(text: str) -> bool:
    """Whether ``text`` goes into a configuration as it is (also a URL path: nginx's repository names)."""
    return _PLAIN.match(text) is not None


def plain_path(path: Path, what: str, program: str) -> str:
    """``path`` as text for a ``program`` configuration, or a one-line error naming ``what`` it is."""
    text = str(path)
    if not is_plain(text):
        raise CvmfsError(
            f"{text}: the {what} path holds characters a {program} configuration cannot carry unescaped",
            hint="use a path of letters, digits and ._/+@:- only",
        )
    return text


def no_scope(
    text: str, flag: str, hint: str = "give a plain IP address or network, e.g. 10.0.0.0/8 or ::1"
) -> None:
    """Refuse an IPv6 scope id and any whitespace or control character in an address ``flag`` names,
    before ``ipaddress`` sees it: ``ipaddress`` takes any text after ``%`` but ``/``, newlines
    included, and str() gives it back whole (``--listen $'::1%x\\nhttp_access allow all'`` made an
    open proxy, pr16f finding 4)."""
    if "%" in text or any(c.isspace() or not c.isprintable() for c in text):
        raise CvmfsError(
            f"{flag} {text!r}: a scope id (%), whitespace or a control character in an address",
            hint=hint,
        )


def listen_at(listen: str, port: int) -> str:
    """``ADDR:PORT`` for nginx's ``listen`` and squid's ``http_port``: ``listen`` empty or ``*`` is
    every address (the port alone), else an IP address (IPv6 in brackets). Anything else is refused:
    the text went in whole and could close the directive (``--listen '80; } ... {'``)."""
    if listen in ("", "*"):
        return str(port)
    no_scope(listen, "--listen")
    try:
        address = ipaddress.ip_address(listen)
    except ValueError:
        raise CvmfsError(
            f"--listen {listen!r}: not an IP address",
            hint="e.g. --listen 127.0.0.1 (and --port for the port)",
        ) from None
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


def user_name(user: str) -> str:
    """``user`` for nginx's ``user`` directive (a name and an optional group), or a one-line error."""
    if not _USER.fullmatch(user):
        raise CvmfsError(
            f"--user {user!r}: not a user name",
            hint="e.g. --user www-data, or --user 'nginx nginx' with a group",
        )
    return user
