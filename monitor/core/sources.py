"""Image sources behind one interface: a local folder or a GCS bucket prefix, listed in pages and read by path."""

from __future__ import annotations

import datetime as dt
import os
import queue
import stat
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from monitor.core.errors import ConfigError, SourceError, first_line

if TYPE_CHECKING:
    from google.cloud.storage import Client

#: Objects per listing request to GCS (the API's maximum is 1,000).
DEFAULT_PAGE_SIZE = 1000
#: Seconds to open a connection / to wait for a response, per request.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
#: Total seconds spent retrying transient GCS errors (429, 5xx, dropped connections) before giving up.
RETRY_TIMEOUT_S = 10.0
#: ``check()`` answers faster than a listing gives up: it is the "is it there at all" probe.
CHECK_RETRY_TIMEOUT_S = 5.0
#: First back-off after a transient error; each next one doubles (with jitter), up to the maximum.
RETRY_INITIAL_S = 0.25
RETRY_MAXIMUM_S = 4.0
#: Kept-alive HTTP connections per GCS client. requests keeps 10 by default: with more fetch
#: threads than that, every extra request opens (and on GCS, TLS-handshakes) a new connection and
#: throws it away. Connections are opened on demand, so this is a cap, not a cost; it equals the
#: largest ``fetch_workers`` the settings allow.
MAX_CONNECTIONS = 256
#: Listing pages requested ahead of the one being consumed (see :meth:`GCSSource.list`).
LIST_PAGES_AHEAD = 2
#: Folders a local listing descends below its root; a deeper folder is listed as one object (``wrong_depth``),
#: not entered: images sit one level down, and the walk must stay bounded on any tree (and below PATH_MAX).
MAX_LOCAL_DEPTH = 32

#: Why a listing already knows an object cannot be an image (``BlobInfo.skip``): counted as skipped, never read.
SKIP_NOT_UTF8 = "name_not_utf8"  # a file or folder name that is not UTF-8 (shown with \x.. escapes)
SKIP_SPECIAL = "not_a_regular_file"  # a FIFO, socket or device in a local folder
SKIP_TOO_DEEP = "wrong_depth"  # a local folder deeper than MAX_LOCAL_DEPTH (listed once, not entered)


@dataclass(frozen=True)
class BlobInfo:
    """One object under a source's root, as listed (no bytes read)."""

    path: str  # relative to the root, "/"-separated; "<Label>/<file>" when well placed
    size: int  # bytes
    checksum: str  # changes whenever the content may have changed (see each source)
    created: dt.datetime  # tz-aware UTC
    updated: dt.datetime  # tz-aware UTC
    symlink: bool = False  # a symbolic link in a local folder: listed (and counted as skipped), never followed
    skip: str | None = (
        None  # a reason (SKIP_*) the listing already knows it is no image: counted as skipped, never read
    )
    metadata: Mapping[str, str] | None = None  # an object's custom metadata (GCS); None where a source has none


@runtime_checkable
class ImageSource(Protocol):
    """Where images live. ``uri`` is canonical: ``gs://bucket/prefix`` or ``file:///abs/path``."""

    uri: str

    def check(self) -> None:
        """Raise :class:`SourceError` quickly if the source is unreachable or missing."""
        ...

    def list(self) -> Iterator[BlobInfo]:
        """Every object under the root, streamed (a page at a time, never the whole listing in memory)."""
        ...

    def read(self, path: str) -> bytes:
        """The bytes of ``path`` (as listed); paths that leave the root are refused with :class:`SourceError`."""
        ...


def checked_relative_path(path: str, uri: str) -> str:
    """Return ``path`` if it is a plain relative path under the root, else raise :class:`SourceError`.

    Refuses absolute paths, ``..`` and ``.`` segments, empty segments and NUL bytes: a path
    read from a CSV must never reach outside the source.
    """
    if not isinstance(path, str) or not path:
        raise SourceError(f"empty image path for {uri}")
    if "\x00" in path or path.startswith(("/", "\\")):
        raise SourceError(f"image path {path!r} is not relative to {uri}")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise SourceError(f"image path {path!r} escapes or is not normalised under {uri}")
    return path


def _shown_name(name: str) -> tuple[str, bool]:
    """``(name, False)`` for a UTF-8 name; else the name with its undecodable bytes as ``\\x..`` escapes, and True.

    On POSIX a name that is not UTF-8 comes from the OS with surrogate escapes, which no store can keep
    (and no encoder can write): such an object is listed under the escaped name, as skipped.
    """
    try:
        name.encode("utf-8")
        return name, False
    except UnicodeEncodeError:
        try:
            raw = os.fsencode(name)  # the bytes the OS gave
        except UnicodeEncodeError:  # a lone surrogate that no OS name decodes to
            raw = name.encode("utf-8", "backslashreplace")
        return raw.decode("utf-8", "backslashreplace"), True


def _rfc3339(text: str | None) -> dt.datetime | None:
    """A GCS resource timestamp (``2026-01-02T03:04:05.678Z``) as tz-aware UTC; None when absent or odd.

    ``datetime.fromisoformat`` parses it about 20x faster than the client's strptime-based
    ``Blob.time_created``, which otherwise dominates the CPU cost of a listing.
    """
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(dt.UTC) if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _utc_from_ns(ns: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC)


class LocalSource:
    """A folder laid out like a bucket: ``<root>/<Label>/<file>``.

    ``checksum`` is ``f"{size}-{mtime_ns}"``: hashing every file on every index run would read
    the whole folder, while size and nanosecond mtime change whenever a file is rewritten.
    ``created`` is the file's mtime: it is the one timestamp every OS and filesystem keeps
    (``st_ctime`` is the inode change time on Linux, ``st_birthtime`` is not portable), and the
    demo sets it with ``os.utime`` to stage images on the day they "arrived". Symbolic links
    are not followed while listing, so the listing never leaves the root; they are listed with
    ``symlink=True`` so that the indexer counts them as skipped instead of losing them silently.
    So are the other objects no image can be, each with its reason in ``skip``: a FIFO, socket or
    device (never opened), a name that is not UTF-8 (its path shown with ``\\x..`` escapes), a folder
    deeper than :data:`MAX_LOCAL_DEPTH` (not entered). The walk is iterative: any depth of tree is safe.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalSource({str(self.root)!r})"

    def check(self) -> None:
        if not self.root.exists():
            raise SourceError(f"local source folder {self.root} does not exist")
        if not self.root.is_dir():
            raise SourceError(f"local source {self.root} is not a folder")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise SourceError(f"local source folder {self.root} is not readable")

    def list(self) -> Iterator[BlobInfo]:
        self.check()
        yield from self._walk(self.root, "")

    def _walk(self, folder: Path, prefix: str) -> Iterator[BlobInfo]:
        """Depth first, each folder's entries sorted by name (listings are reproducible), with a stack, not recursion."""
        stack: list[tuple[Iterator[os.DirEntry[str]], str, bool]] = [(self._entries(folder), prefix, False)]
        while stack:
            entries, prefix, odd_name = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                continue
            name, bad = _shown_name(entry.name)
            rel, bad = f"{prefix}{name}", bad or odd_name
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed between listing and stat: it is simply not there any more
            except OSError as exc:
                raise SourceError(f"cannot list {rel} in {self.uri}: {exc.strerror or exc}") from exc
            when = _utc_from_ns(st.st_mtime_ns)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                if len(stack) >= MAX_LOCAL_DEPTH:
                    yield BlobInfo(
                        path=rel,
                        size=0,
                        checksum=f"dir-{st.st_mtime_ns}",
                        created=when,
                        updated=when,
                        skip=SKIP_TOO_DEEP,
                    )
                else:
                    stack.append((self._entries(Path(entry.path)), rel + "/", bad))
            elif stat.S_ISLNK(mode):
                yield BlobInfo(
                    path=rel,
                    size=st.st_size,
                    checksum=f"link-{st.st_mtime_ns}",
                    created=when,
                    updated=when,
                    symlink=True,
                )
            elif not stat.S_ISREG(mode):
                yield BlobInfo(
                    path=rel,
                    size=0,
                    checksum=f"special-{st.st_mtime_ns}",
                    created=when,
                    updated=when,
                    skip=SKIP_SPECIAL,
                )
            else:
                checksum = f"{st.st_size}-{st.st_mtime_ns}"
                yield BlobInfo(
                    path=rel,
                    size=st.st_size,
                    checksum=checksum,
                    created=when,
                    updated=when,
                    skip=SKIP_NOT_UTF8 if bad else None,
                )

    def _entries(self, folder: Path) -> Iterator[os.DirEntry[str]]:
        """One folder's entries, sorted by name (read at once: the handle is closed before the walk goes on)."""
        try:
            with os.scandir(folder) as entries:
                return iter(sorted(entries, key=lambda e: e.name))
        except OSError as exc:
            raise SourceError(f"cannot list {folder} in {self.uri}: {exc.strerror or exc}") from exc

    def _full_path(self, path: str) -> Path:
        checked_relative_path(path, self.uri)
        full = (self.root / path).resolve()
        if not full.is_relative_to(self.root):
            raise SourceError(f"image path {path!r} leads outside {self.uri}")
        return full

    def read(self, path: str) -> bytes:
        full = self._full_path(path)
        try:
            # Non-blocking, and checked before a byte is read: a FIFO or device named by a hand-edited CSV
            # must not make the fetch hang or read without end.
            fd = os.open(full, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
            with open(fd, "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    raise SourceError(
                        f"{path} in {self.uri} is not a regular file (a folder, FIFO, socket or device): not read"
                    )
                return handle.read()
        except FileNotFoundError as exc:
            raise SourceError(f"{path} does not exist in {self.uri}") from exc
        except OSError as exc:
            raise SourceError(f"cannot read {path} from {self.uri}: {exc.strerror or exc}") from exc


class GCSSource:
    """Objects under ``gs://bucket/prefix/``, through the official google-cloud-storage client.

    The client honours ``STORAGE_EMULATOR_HOST`` on its own (anonymous credentials then). Listing
    walks the API's pages (``page_size`` objects per request) and yields each page's blobs before
    the next page is requested. Transient errors (429, 5xx, dropped connections) are retried by
    google-api-core for at most ``retry_timeout_s`` seconds with exponential back-off
    (``RETRY_INITIAL_S`` doubling up to ``RETRY_MAXIMUM_S``, jittered), each request bounded by
    connect/read timeouts, so an unreachable endpoint turns into a :class:`SourceError` instead of
    a hang. ``read`` is safe to call from many threads at once: one client, one pool of up to
    ``max_connections`` kept-alive connections, the proxy environment read once (a client built
    here, see :func:`_tune_session`; one passed in is used as is).
    ``checksum`` is ``"<md5>@<generation>"`` (crc32c where a composite object has no md5): the
    generation changes on every rewrite, the hash says what the content is.
    Folder placeholder objects (names ending in ``/``, made by the console) are skipped.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        client: Client | None = None,
        *,
        page_size: int = DEFAULT_PAGE_SIZE,
        retry_timeout_s: float = RETRY_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        retry_initial_s: float = RETRY_INITIAL_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if not bucket or "/" in bucket or any(c.isspace() for c in bucket):
            raise ConfigError(f"GCS bucket name {bucket!r} is not valid")
        if page_size < 1:
            raise ConfigError(f"GCS page size {page_size} must be at least 1")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"gs://{bucket}/{self.prefix}" if self.prefix else f"gs://{bucket}"
        if max_connections < 1:
            raise ConfigError(f"GCS max_connections {max_connections} must be at least 1")
        self.page_size = page_size
        self.retry_timeout_s = retry_timeout_s
        self.retry_initial_s = retry_initial_s
        self.max_connections = max_connections
        self._timeout = (connect_timeout_s, read_timeout_s)
        self._client = client
        self._client_lock = threading.Lock()
        self._read_retry: Any = None

    def __repr__(self) -> str:
        return f"GCSSource({self.uri!r})"

    # --- plumbing -------------------------------------------------------------------------
    def _get_client(self) -> Client:
        client = self._client
        if client is not None:
            return client
        with self._client_lock:  # fetch threads may all ask at once: build one client, not one each
            if self._client is None:
                from google.auth.exceptions import GoogleAuthError
                from google.cloud import storage

                try:
                    built = storage.Client()
                except GoogleAuthError as exc:
                    raise SourceError(f"no usable GCS credentials for {self.uri}: {exc}") from exc
                except (OSError, ValueError) as exc:  # user credentials without a project, a universe-domain mismatch
                    raise SourceError(
                        f"cannot build a GCS client for {self.uri}: {str(exc).rstrip('.')}; set GOOGLE_CLOUD_PROJECT to the bucket's project "
                        "(or `gcloud config set project ...`)"
                    ) from exc
                _tune_session(built, self.max_connections)
                self._client = built
            return self._client

    def _retry(self, timeout_s: float) -> Any:
        """The client's own retry policy (429, 5xx, dropped connections) with this source's budget and back-off."""
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(timeout_s).with_delay(
            initial=self.retry_initial_s, multiplier=2.0, maximum=RETRY_MAXIMUM_S
        )

    @property
    def _name_prefix(self) -> str:
        return f"{self.prefix}/" if self.prefix else ""

    def _error(self, exc: BaseException, doing: str, retried_s: float | None = None) -> SourceError:
        """Turn a client error into one readable line naming the bucket and what failed."""
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        if isinstance(exc, gexc.NotFound):
            return SourceError(
                f"bucket gs://{self.bucket} does not exist (or is not visible with these credentials) while {doing}"
            )
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
            return SourceError(f"access to {self.uri} was denied while {doing}: {first_line(exc)}")
        if isinstance(exc, gexc.RetryError):
            cause = exc.cause if exc.cause is not None else exc
            cause_line = first_line(cause)
            retried = self.retry_timeout_s if retried_s is None else retried_s
            return SourceError(
                f"GCS for {self.uri} is unreachable (gave up after retrying for {retried:g} s) while {doing}: {cause_line}"
            )
        if isinstance(exc, GoogleAuthError):
            return SourceError(f"no usable GCS credentials for {self.uri} while {doing}: {first_line(exc)}")
        if isinstance(exc, gexc.GoogleAPICallError):
            return SourceError(f"GCS refused {doing} on {self.uri}: {first_line(exc)}")
        return SourceError(f"GCS for {self.uri} is unreachable while {doing}: {first_line(exc)}")

    def _foreign_errors(self) -> tuple[type[BaseException], ...]:
        import requests
        from google.api_core import exceptions as gexc
        from google.auth.exceptions import GoogleAuthError

        return (gexc.GoogleAPIError, GoogleAuthError, requests.RequestException, ConnectionError, TimeoutError)

    def _to_info(self, blob: Any) -> BlobInfo | None:
        name: str = blob.name
        if name.endswith("/"):
            return None
        path = name[len(self._name_prefix) :]
        props: dict[str, Any] = getattr(blob, "_properties", None) or {}
        digest = props.get("md5Hash") or f"crc32c:{props.get('crc32c')}"
        created = _rfc3339(props.get("timeCreated")) or blob.time_created
        updated = _rfc3339(props.get("updated")) or blob.updated or created
        metadata = props.get("metadata")
        return BlobInfo(
            path=path,
            size=int(props.get("size") or 0),
            checksum=f"{digest}@{props.get('generation')}",
            created=created or updated,
            updated=updated,
            metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
        )

    # --- the interface ----------------------------------------------------------------------
    def check(self) -> None:
        client = self._get_client()
        retry_s = min(CHECK_RETRY_TIMEOUT_S, self.retry_timeout_s)
        try:
            # Listing one object needs only list permission (a bucket GET needs more) and
            # still answers 404 for a missing bucket.
            blobs = client.list_blobs(
                self.bucket,
                prefix=self._name_prefix or None,
                max_results=1,
                retry=self._retry(retry_s),
                timeout=self._timeout,
            )
            for _ in blobs:
                break
        except self._foreign_errors() as exc:
            raise self._error(exc, "checking the bucket", retry_s) from exc

    def list(self) -> Iterator[BlobInfo]:
        """The objects under the prefix, a page at a time, with the next page's request already in flight.

        Against GCS a page costs a round trip (tens of ms) and the caller's work on it about as much:
        a thread requests page k+1 while the caller consumes page k, so a listing takes about the
        longer of the two, not their sum. At most ``LIST_PAGES_AHEAD`` pages wait, so memory stays
        bounded in the size of the bucket. Stopping early (closing the generator) stops the thread.
        """
        client = self._get_client()
        pages: queue.Queue[list[BlobInfo] | BaseException | None] = queue.Queue(maxsize=LIST_PAGES_AHEAD)
        stop = threading.Event()

        def hand_over(item: list[BlobInfo] | BaseException | None) -> bool:
            while not stop.is_set():
                try:
                    pages.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        def produce() -> None:
            try:
                iterator = client.list_blobs(
                    self.bucket,
                    prefix=self._name_prefix or None,
                    page_size=self.page_size,
                    retry=self._retry(self.retry_timeout_s),
                    timeout=self._timeout,
                )
                for page in iterator.pages:  # one request per page, made when the page before it is handed over
                    infos = [info for blob in page if (info := self._to_info(blob)) is not None]
                    if not hand_over(infos):
                        return
                hand_over(None)
            except BaseException as exc:  # handed to the consumer, which raises it in its own thread
                hand_over(exc)

        producer = threading.Thread(target=produce, name=f"list-{self.bucket}", daemon=True)
        producer.start()
        try:
            while (item := pages.get()) is not None:
                if isinstance(item, BaseException):
                    if isinstance(item, self._foreign_errors()):
                        raise self._error(item, "listing objects") from item
                    raise item
                yield from item
        finally:
            stop.set()
            producer.join()

    def read(self, path: str) -> bytes:
        from google.api_core import exceptions as gexc

        checked_relative_path(path, self.uri)
        client = self._get_client()
        name = f"{self._name_prefix}{path}"
        if self._read_retry is None:
            self._read_retry = self._retry(self.retry_timeout_s)
        try:
            # One GET of the media URL; the client retries it (a resumed range request if it broke
            # off mid-body) and checks the bytes against the object's crc32c.
            data: bytes = (
                client.bucket(self.bucket).blob(name).download_as_bytes(retry=self._read_retry, timeout=self._timeout)
            )
            return data
        except gexc.NotFound as exc:
            raise SourceError(f"{path} does not exist in {self.uri} (or its bucket is gone)") from exc
        except self._foreign_errors() as exc:
            raise self._error(exc, f"reading {path}") from exc


def _tune_session(client: Any, pool_size: int) -> None:
    """Make ``client``'s HTTP session fit many fetch threads; what it sends and where does not change.

    - Up to ``pool_size`` kept-alive connections per host (requests' default adapter keeps 10):
      only plain ``HTTPAdapter`` mounts are replaced, keeping their retry setting; a special adapter
      (e.g. google-auth's mutual-TLS one) is left alone.
    - The environment read once: with ``trust_env`` on, requests walks ``os.environ`` for proxy
      and CA-bundle variables on every request (about a tenth of a small download's CPU with 36
      variables set, more in a bigger environment). Every request goes to the client's one
      endpoint, so the same variables are resolved here for that endpoint (``*_PROXY``,
      ``NO_PROXY``, ``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``) and the session stops looking (nor
      does it look up ``~/.netrc``, whose basic auth could only displace the client's own
      credentials). Changing them later needs a new source.
    """
    from requests.adapters import HTTPAdapter
    from requests.utils import get_environ_proxies

    session = client._http  # the client's AuthorizedSession, built on first use
    for prefix in ("https://", "http://"):
        adapter = session.adapters.get(prefix)
        if type(adapter) is HTTPAdapter:
            session.mount(prefix, HTTPAdapter(pool_maxsize=pool_size, max_retries=adapter.max_retries))
    endpoint = getattr(client._connection, "API_BASE_URL", None)
    if session.trust_env and isinstance(endpoint, str) and endpoint:
        proxies = get_environ_proxies(endpoint)  # {} when NO_PROXY covers the endpoint
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        session.trust_env = False
        for scheme, proxy in proxies.items():
            session.proxies.setdefault(scheme, proxy)
        if bundle and session.verify is True:
            session.verify = bundle


def open_source(uri: str) -> ImageSource:
    """The source for ``uri``: ``gs://bucket[/prefix]``, ``file:///abs/path`` or a plain folder path.

    Nothing is contacted here; call ``check()`` to probe the source.
    """
    text = (uri or "").strip()
    if not text:
        raise ConfigError("the source URI is empty")
    if "://" not in text:
        return LocalSource(text)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "gs":
        if not parts.netloc:
            raise ConfigError(f"source URI {uri!r} names no bucket (expected gs://bucket/prefix)")
        if parts.query or parts.fragment:
            raise ConfigError(f"source URI {uri!r} must not carry a query or fragment")
        return GCSSource(parts.netloc, parts.path.strip("/"))
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(f"source URI {uri!r} names a remote host; file:// URIs must be local (file:///abs/path)")
        path = unquote(parts.path)
        if not path.startswith("/"):
            raise ConfigError(f"source URI {uri!r} is not an absolute file:// path")
        return LocalSource(path)
    raise ConfigError(
        f"source URI {uri!r} has unsupported scheme {parts.scheme!r} (use gs:// or file:// or a folder path)"
    )
