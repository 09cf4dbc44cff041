"""Downloads: streamed to a temporary file with a progress bar, SHA-256 checked, then renamed.

Files are kept under `<cache>/<key of the URL>/<sha256>`: a pinned download is fetched once, and a pin is only
ever answered from the cache with a file that came from that same URL (a pin left over from another archive
makes a download, whose hash then disagrees).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from pipeline.errors import ArtganError

CHUNK = 1 << 16


def _timeout_error(url: str, timeout: float, what: str) -> ArtganError:
    return ArtganError(
        f"{what}: no answer from {url} within {timeout:g} s; check the address and the network, or raise data.timeout"
    )


URL_FILE = "url"  # beside the cached files of one URL: the URL itself, so a cached pin can be traced to it


def url_dir(cache: Path, url: str) -> Path:
    """The cache folder of the downloads of `url` (keyed by the URL: one URL's pin never serves another)."""
    return cache / hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def pinned_elsewhere(cache: Path, url: str, sha256: str) -> str | None:
    """The URL of another cached download whose file has SHA-256 `sha256` (a pin copied from it), or None."""
    if not cache.is_dir():
        return None
    for d in sorted(cache.iterdir()):
        src = d / URL_FILE
        if d.is_dir() and (d / sha256).is_file() and src.is_file():
            other = src.read_text(encoding="utf-8", errors="replace").strip()
            if other != url:
                return other
    return None


def download(url: str, cache: Path, sha256: str, timeout: float, what: str) -> Path:
    """The verified local copy of `url` (downloaded unless the pinned file of this URL is already cached)."""
    from pipeline.data.digest import file_sha256

    cache = url_dir(cache, url)
    if sha256:
        cached = cache / sha256
        if cached.is_file() and file_sha256(cached) == sha256:
            return cached
    request = urllib.request.Request(url, headers={"User-Agent": "artgan"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise ArtganError(
            f"{what}: the server answered HTTP {exc.code} {exc.reason} for {url}; check the address"
        ) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, (TimeoutError, socket.timeout)):
            raise _timeout_error(url, timeout, what) from None
        raise ArtganError(f"{what}: cannot reach {url} ({exc.reason}); check the address and the network") from None
    except (TimeoutError, socket.timeout):
        raise _timeout_error(url, timeout, what) from None
    except OSError as exc:
        raise ArtganError(f"{what}: cannot download {url} ({exc}); check the address and the network") from None

    from tqdm import tqdm

    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".download.", suffix=".tmp", dir=cache)
    tmp = Path(tmp_name)
    h = hashlib.sha256()
    try:
        with response, os.fdopen(fd, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            got = 0
            with tqdm(
                total=total,
                desc="download",
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                disable=None,
                mininterval=0.5,
            ) as bar:
                while True:
                    try:
                        chunk = response.read(CHUNK)
                    except (TimeoutError, socket.timeout):
                        raise _timeout_error(url, timeout, what) from None
                    except OSError as exc:
                        raise ArtganError(f"{what}: the download of {url} broke off ({exc}); try again") from None
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    got += len(chunk)
                    bar.update(len(chunk))
            if total is not None and got != total:
                raise ArtganError(f"{what}: the download of {url} stopped after {got} of {total} bytes; try again")
        digest = h.hexdigest()
        if sha256 and digest != sha256:
            other = pinned_elsewhere(cache.parent, url, sha256)
            if other:
                raise ArtganError(
                    f"{what}: the download has SHA-256 {digest} but data.sha256 is {sha256}, the pin of another "
                    f"archive ({other}, downloaded earlier); set data.sha256 to {digest} if {url} is the archive "
                    "you mean"
                )
            raise ArtganError(
                f"{what}: the download has SHA-256 {digest} but data.sha256 is {sha256}; the file changed on the "
                "server or the pin is wrong: check the source, then update data.sha256"
            )
        if not sha256:
            print(f"warning: {url} is not pinned; add `sha256: {digest}` under `data:` in params.yaml", file=sys.stderr)
        final = cache / digest
        os.replace(tmp, final)
        (cache / URL_FILE).write_text(url + "\n", encoding="utf-8")
        return final
    finally:
        tmp.unlink(missing_ok=True)
