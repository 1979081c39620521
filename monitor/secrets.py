"""Secrets never shown: masking of passwords, tokens and webhook URLs in every text the service prints or logs.

Two layers, so that a secret is hidden wherever it turns up (settings, JSON, errors, logs, a library's
own debug lines):

- **by shape**: the password of any ``scheme://user:password@host`` (an empty user name, or a ``/`` or
  ``:`` inside an unescaped password, included), and the value of query parameters whose name says
  secret (``token``, ``key``, ``password``, ``secret``, ``signature``...);
- **by value**: the secrets the settings hold (the MongoDB password; every part of an alert URL but
  its scheme, and its host when that is a host name) are registered when settings load
  (:func:`register`), and every occurrence of them is replaced, in any form of text.

:func:`show_url` gives the form of a URL fit for people: scheme and host, nothing after it.
:class:`RedactingFilter` applies :func:`redact` to every log record of a handler.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit

MASK = "***"
#: Registered values shorter than this are not masked by value (they would mask ordinary words).
MIN_SECRET_LENGTH = 4

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@\s]*)@")
_SECRET_QUERY = re.compile(
    r"(?P<name>[?&+](?:[\w-]*(?:token|key|secret|password|passwd|pwd|pass|auth|signature|sig|credential)s?[\w-]*))=(?P<value>[^&\s\"']*)",
    re.IGNORECASE,
)
_lock = threading.Lock()
_registered: set[str] = set()


def _pattern() -> re.Pattern[str] | None:
    with _lock:
        values = sorted(_registered, key=len, reverse=True)
    # Not inside a longer word: a webhook path "hook" must not mask "webhook" in ordinary text.
    return re.compile("(?<![A-Za-z0-9])(?:" + "|".join(re.escape(v) for v in values) + ")(?![A-Za-z0-9])") if values else None


def register(values: Iterable[str]) -> None:
    """Remember ``values`` as secrets: :func:`redact` masks them wherever they appear from now on."""
    with _lock:
        _registered.update(v for v in values if v and len(v) >= MIN_SECRET_LENGTH)


#: Apprise schemes whose host is a host name; in every other scheme the host may be a token (``tgram://BOTTOKEN/``).
WEB_SCHEMES = frozenset({"json", "jsons", "xml", "xmls", "form", "forms", "http", "https", "mongodb", "mongodb+srv"})


def _forms(values: Iterable[str]) -> list[str]:
    return sorted({form for value in values if value for form in (value, unquote(value))})


def uri_password(uri: str) -> list[str]:
    """The password of ``scheme://user:password@host`` (raw and percent-decoded); the user name is not secret."""
    match = _USERINFO.search(uri)
    return _forms([match["pw"]]) if match else []


def url_secrets(url: str) -> list[str]:
    """The parts of an alert URL that may be secret: user info, path segments, query values, and the host
    unless the scheme is a web one (apprise puts tokens in all of these: ``slack://TokenA/TokenB/TokenC``,
    ``tgram://bottoken/chat``, headers as ``+X-Api-Key=value``). Raw and percent-decoded forms.
    """
    found: list[str] = []
    match = _USERINFO.search(url)
    if match:
        found += [match["user"], match["pw"]]
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    userinfo, _, host = parts.netloc.rpartition("@")
    found += [userinfo] if userinfo and not match else []
    if parts.scheme.lower() not in WEB_SCHEMES:
        found += [host, *host.split(":")]
    found += [segment for segment in parts.path.split("/") if segment]
    found += [pair.partition("=")[2] for pair in parts.query.split("&")]  # raw values (the decoded forms follow)
    found += [parts.fragment] if parts.fragment else []
    return _forms(found)


def redact(text: str) -> str:
    """``text`` with every password, secret query value and registered secret replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SECRET_QUERY.sub(lambda m: f"{m['name']}={MASK}", text)
    pattern = _pattern()
    return pattern.sub(MASK, text) if pattern else text


def show_url(url: str) -> str:
    """A URL fit for people: ``scheme://host/…`` for web schemes, ``scheme://…`` for the others (their host may be a token)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<not a URL>"
    if not parts.scheme:
        return "<not a URL>"
    if parts.scheme.lower() not in WEB_SCHEMES:
        return f"{parts.scheme}://…"
    host = parts.netloc.rsplit("@", 1)[-1]
    return redact(f"{parts.scheme}://{host}") + ("/…" if parts.path.strip("/") or parts.query else "")


class RedactingFilter(logging.Filter):
    """Mask secrets in a log record's message (arguments merged first) before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True
