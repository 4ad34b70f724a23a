"""The ``hf://`` source: a model repository on the Hugging Face Hub, at a pinned commit.

``hf://<org>/<model>[:<revision>]`` as in KServe; the revision (a branch, a tag or a commit)
defaults to ``main``. ``identity()`` is the commit the revision resolves to (one API call; none
when the revision already is a full commit id), and ``fetch`` downloads that commit, not the
revision again, so the files match the identity the cache filed them under.

Everything goes through ``huggingface_hub`` with its settings passed explicitly from the
settings' environment: ``HF_ENDPOINT`` (default ``https://huggingface.co``) and the token from
``HF_TOKEN`` or ``HUGGING_FACE_HUB_TOKEN``. With no token there, anonymous access is asked for
(``token=False``), so the library does not fall back to a token of the process environment or
of ``~/.cache/huggingface/token``. What ``huggingface_hub`` reads from the process environment
when it is imported still applies: ``HF_HUB_OFFLINE`` (then every fetch fails as unreachable),
``HF_HUB_DOWNLOAD_TIMEOUT``, ``HF_HUB_ETAG_TIMEOUT``, ``HF_HUB_DISABLE_XET``, and ``HF_HOME`` /
``HF_XET_CACHE`` for the chunk cache of Xet-stored files. The download's own bookkeeping
(``.cache/huggingface`` in the folder, the revision refs) is kept inside ``dest`` and removed.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelhost.errors import StorageAccessDenied, StorageError, StorageNotFound, StorageUnreachable
from modelhost.settings import StorageSettings

from ._source import Progress

__all__ = ["HfSource"]

SCHEME = "hf://"
DEFAULT_ENDPOINT = "https://huggingface.co"
DEFAULT_REVISION = "main"
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")
_COMMIT = re.compile(r"[0-9a-f]{40}")
# Where the download keeps its bookkeeping inside the destination folder.
_BOOKKEEPING = (".cache", "huggingface")
# Transport failures of the HTTP libraries huggingface_hub has used (httpx, httpx2, requests).
_TRANSPORT_ERRORS = {"ConnectError", "ConnectTimeout", "TimeoutException", "NetworkError"}
_TRANSPORT_ERRORS |= {"ConnectionError", "Timeout", "ReadTimeout", "TransportError"}


class HfSource:
    """A Hugging Face Hub model repository at a revision."""

    def __init__(self, uri: str, settings: StorageSettings):
        self.uri = uri
        self.repo_id, self.revision = _parse(uri)
        environ = settings.environ
        self._endpoint = (environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self._token: str | bool = next((environ[n] for n in TOKEN_VARS if environ.get(n)), False)
        self._commit = self.revision if _COMMIT.fullmatch(self.revision) else None

    def identity(self) -> str:
        if self._commit is None:
            with self._errors():
                info = self._api().model_info(self.repo_id, revision=self.revision)
            if not isinstance(info.sha, str) or not _COMMIT.fullmatch(info.sha):
                raise StorageError(f"{self.uri}: the Hub gave no commit for {self.revision!r}")
            self._commit = info.sha
        return self._commit

    def fetch(self, dest: Path, progress: Progress) -> None:
        from huggingface_hub import snapshot_download

        commit = self.identity()
        with self._errors():
            info = self._api().model_info(self.repo_id, revision=commit, files_metadata=True)
            sizes = [sibling.size for sibling in info.siblings or ()]
            progress.set_total(sum(sizes) if all(isinstance(n, int) for n in sizes) else None)
            snapshot_download(
                self.repo_id,
                revision=commit,
                local_dir=dest,
                cache_dir=dest.joinpath(*_BOOKKEEPING, "refs"),
                endpoint=self._endpoint,
                token=self._token,
                tqdm_class=_progress_bar_class(progress),
            )
        _remove_bookkeeping(dest)

    def _api(self) -> Any:
        from huggingface_hub import HfApi

        return HfApi(endpoint=self._endpoint, token=self._token)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate huggingface_hub's exceptions into the storage errors."""
        from huggingface_hub import errors

        where = f"{self.uri} ({self._endpoint})"
        try:
            yield
        except errors.GatedRepoError as exc:
            raise StorageAccessDenied(
                f"{where}: gated repository, the token has no access: {_summary(exc)}"
            ) from None
        except errors.RepositoryNotFoundError as exc:
            hint = "" if self._token else " (a private repository needs HF_TOKEN)"
            raise StorageNotFound(f"{where}: {_summary(exc)}{hint}") from None
        except errors.RevisionNotFoundError as exc:
            raise StorageNotFound(f"{where}: {_summary(exc)}") from None
        except errors.OfflineModeIsEnabled as exc:
            raise StorageUnreachable(f"{where}: HF_HUB_OFFLINE is set: {exc}") from None
        except errors.HfHubHTTPError as exc:
            status = getattr(exc.response, "status_code", 0)
            detail = getattr(exc, "server_message", None) or _summary(exc)
            if status in (401, 403):
                raise StorageAccessDenied(f"{where}: access denied ({status}): {detail}") from None
            if status == 404:
                raise StorageNotFound(f"{where}: {detail}") from None
            if status == 429 or status >= 500:
                raise StorageUnreachable(f"{where}: {detail}") from None
            raise StorageError(f"{where}: {detail}") from None
        except errors.LocalEntryNotFoundError as exc:
            # What snapshot_download raises when the Hub stops answering mid-way.
            raise StorageUnreachable(f"{where}: {_summary(exc)}") from None
        except errors.EntryNotFoundError as exc:
            raise StorageNotFound(f"{where}: {_summary(exc)}") from None
        except Exception as exc:
            if _is_transport_error(exc):
                raise StorageUnreachable(f"{where}: cannot reach the Hub: {exc}") from None
            if isinstance(exc, OSError):
                raise StorageError(f"{where}: {exc}") from None
            raise


def _parse(uri: str) -> tuple[str, str]:
    if not uri.startswith(SCHEME):
        raise StorageError(f"{uri!r} is not an hf:// URI")
    repo_id, _, revision = uri[len(SCHEME) :].strip("/").partition(":")
    if not _REPO_ID.fullmatch(repo_id):
        raise StorageError(f"{uri}: {repo_id!r} is not a repository id (<org>/<model>)")
    return repo_id, revision or DEFAULT_REVISION


def _remove_bookkeeping(dest: Path) -> None:
    """Remove ``.cache/huggingface`` (and ``.cache`` if that leaves it empty)."""
    shutil.rmtree(dest.joinpath(*_BOOKKEEPING), ignore_errors=True)
    parent = dest / _BOOKKEEPING[0]
    if parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()


def _summary(exc: BaseException) -> str:
    """The status and what was not found, without the library's paragraphs of advice."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2]) or type(exc).__name__


def _is_transport_error(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionError | TimeoutError) or any(
        cls.__name__ in _TRANSPORT_ERRORS
        and cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
        for cls in type(exc).__mro__
    )


def _progress_bar_class(progress: Progress) -> type:
    """A tqdm stand-in that passes snapshot_download's byte counts on to ``progress``.

    snapshot_download makes several bars from the class it is given: files done, bytes
    received, bytes written ("Reconstructing..."). Only the last is passed on: it counts each
    file once, whether it came over plain HTTP or Xet. Updates come from download threads.
    """
    lock = threading.Lock()

    class ProgressBar:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.n = 0
            self.total = kwargs.get("total")
            self.format_dict: dict[str, Any] = {}
            self._forward = "reconstruct" in str(kwargs.get("desc", "")).lower()

        def update(self, n: float | None = 1) -> None:
            count = int(n or 0)
            self.n += count
            if self._forward and count:
                with lock:
                    progress.update(count)

        def __enter__(self) -> ProgressBar:
            return self

        def __exit__(self, *exc_info: object) -> None:
            return None

        def __getattr__(self, name: str) -> Any:
            # Every other tqdm method (refresh, close, set_description, ...) does nothing.
            return _ignore

    return ProgressBar


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
