"""S3 and GCS sources on fsspec (s3fs, gcsfs), configured the way KServe's initializer is.

The client options come from the environment snapshot in ``StorageSettings.environ``,
read with KServe's variable names (``AWS_ENDPOINT_URL``, ``S3_ENDPOINT``,
``awsAnonymousCredential``, ``GOOGLE_APPLICATION_CREDENTIALS``, ...) and passed to the
client explicitly. The client libraries are imported only when a source is used.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage._errors import StoreContext
from modelhost.storage._objects import ListedSource, RemoteFile, md5_fingerprint, relative_files
from modelhost.storage._source import Progress

__all__ = ["GcsSource", "S3Source", "bytes_callback", "env_flag", "env_number"]

_TRUE = ("1", "true", "yes", "on")


def env_flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


def env_number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise errors.StorageError(f"{name}={raw!r} is not a number.") from None


def _bucket_and_key(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if not parts.netloc:
        raise errors.StorageError(f"{uri}: no bucket name (expected {parts.scheme}://bucket/path).")
    return parts.netloc, parts.path.strip("/")


class _FsspecSource(ListedSource):
    """A bucket store reached through an fsspec filesystem."""

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        super().__init__(uri, settings)
        self.bucket, self.key = _bucket_and_key(uri)
        self.environ = settings.environ
        self._filesystem: Any = None
        self._concurrency = 4

    @property
    def _root(self) -> str:
        return f"{self.bucket}/{self.key}".rstrip("/")

    def _new_filesystem(self) -> Any:
        raise NotImplementedError

    def _fingerprint(self, name: str, info: Mapping[str, Any]) -> str:
        raise NotImplementedError

    def _fs(self) -> Any:
        if self._filesystem is None:
            self._filesystem = self._new_filesystem()
        return self._filesystem

    def _list(self) -> list[RemoteFile]:
        found = self._fs().find(self._root, detail=True, withdirs=False)
        objects = [
            (name, int(info.get("size") or 0), self._fingerprint(name, info))
            for name, info in found.items()
            if info.get("type") != "directory"
        ]
        return relative_files(self._root, objects)

    def _download(self, targets: list[tuple[RemoteFile, Path]], progress: Progress) -> None:
        self._fs().get(
            [remote.name for remote, _ in targets],
            [str(path) for _, path in targets],
            callback=files_callback(progress),
            batch_size=self._concurrency,
        )


class S3Source(_FsspecSource):
    """``s3://bucket/path``: one object, or every object under the prefix."""

    extra = "s3"

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        super().__init__(uri, settings)
        env = self.environ
        self.endpoint, endpoint_var = _s3_endpoint(env)
        self.anonymous = env_flag(env, "awsAnonymousCredential")
        self._concurrency = int(env_number(env, "S3_MAX_FILE_CONCURRENCY", 4)) or 4
        if self.anonymous:
            credentials = "anonymous (awsAnonymousCredential=true)"
        elif env.get("AWS_ACCESS_KEY_ID"):
            credentials = "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" + (
                " and AWS_SESSION_TOKEN" if env.get("AWS_SESSION_TOKEN") else ""
            )
        else:
            credentials = "the AWS SDK's default chain (no AWS_ACCESS_KEY_ID was set)"
        where = f"{self.endpoint} ({endpoint_var})" if self.endpoint else "AWS (default)"
        self._context = StoreContext("S3", where, credentials)

    def context(self) -> StoreContext:
        return self._context

    def _new_filesystem(self) -> Any:
        import s3fs

        env = self.environ
        region = env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None
        client: dict[str, Any] = {}
        if region:
            client["region_name"] = region
        verify = _s3_verify(env)
        if verify is not None:
            client["verify"] = verify
        addressing: dict[str, Any] = {}
        if env_flag(env, "S3_USER_VIRTUAL_BUCKET"):
            addressing["addressing_style"] = "virtual"
        if self.endpoint == "https://s3.amazonaws.com" and region not in (None, "us-east-1"):
            # The legacy global endpoint redirects other regions; virtual style avoids it.
            addressing["addressing_style"] = "virtual"
        if env_flag(env, "S3_USE_ACCELERATE"):
            addressing["use_accelerate_endpoint"] = True
        config: dict[str, Any] = {
            "connect_timeout": env_number(env, "S3_CONNECT_TIMEOUT", 15),
            "read_timeout": env_number(env, "S3_READ_TIMEOUT", 60),
            "retries": {
                "max_attempts": int(env_number(env, "S3_MAX_ATTEMPTS", 3)),
                "mode": "standard",
            },
        }
        if addressing:
            config["s3"] = addressing
        keys: dict[str, Any] = {}
        if not self.anonymous and env.get("AWS_ACCESS_KEY_ID"):
            keys = {
                "key": env.get("AWS_ACCESS_KEY_ID"),
                "secret": env.get("AWS_SECRET_ACCESS_KEY"),
                "token": env.get("AWS_SESSION_TOKEN") or None,
            }
        return s3fs.S3FileSystem(
            anon=self.anonymous,
            endpoint_url=self.endpoint,
            client_kwargs=client,
            config_kwargs=config,
            skip_instance_cache=True,
            use_listings_cache=False,
            **keys,
        )

    def _fingerprint(self, name: str, info: Mapping[str, Any]) -> str:
        etag = str(info.get("ETag") or "").strip('"')
        # A single-part upload's ETag is its MD5; a multipart or encrypted one only names a version.
        return md5_fingerprint(etag) or f"etag:{self.endpoint or 'aws'}/{name}#{etag}"


def _s3_endpoint(env: Mapping[str, str]) -> tuple[str | None, str]:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(name):
            return env[name].rstrip("/"), name
    host = env.get("S3_ENDPOINT", "").strip()
    if host:
        if "://" in host:
            return host.rstrip("/"), "S3_ENDPOINT"
        scheme = (
            "http" if env.get("S3_USE_HTTPS", "1").strip().lower() in ("0", "false") else "https"
        )
        return f"{scheme}://{host}", "S3_ENDPOINT and S3_USE_HTTPS"
    return None, ""


def _s3_verify(env: Mapping[str, str]) -> bool | str | None:
    if env.get("S3_VERIFY_SSL", "").strip().lower() in ("0", "false"):
        return False
    return env.get("AWS_CA_BUNDLE") or None


class GcsSource(_FsspecSource):
    """``gs://bucket/path``: one object, or every object under the prefix."""

    extra = "gcs"

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        super().__init__(uri, settings)
        env = self.environ
        emulator = env.get("STORAGE_EMULATOR_HOST", "").strip()
        if emulator and "://" not in emulator:
            emulator = f"http://{emulator}"
        self.endpoint = emulator or None
        self.key_file = env.get("GOOGLE_APPLICATION_CREDENTIALS") or None
        if self.key_file:
            credentials = "the service account key in GOOGLE_APPLICATION_CREDENTIALS"
        elif self.endpoint:
            credentials = "anonymous (emulator in STORAGE_EMULATOR_HOST)"
        else:
            credentials = (
                "Google's default credentials, else anonymous "
                "(no GOOGLE_APPLICATION_CREDENTIALS was set)"
            )
        where = f"{self.endpoint} (STORAGE_EMULATOR_HOST)" if self.endpoint else "Google Cloud"
        self._context = StoreContext("GCS", where, credentials)

    def context(self) -> StoreContext:
        return self._context

    def _new_filesystem(self) -> Any:
        # The plain JSON-API filesystem: gcsfs's default class first asks the gRPC
        # storage-control API for the bucket's layout, which emulators do not serve.
        from gcsfs.core import GCSFileSystem

        token = self.key_file or ("anon" if self.endpoint else None)
        return GCSFileSystem(
            token=token,
            endpoint_url=self.endpoint,
            skip_instance_cache=True,
            use_listings_cache=False,
        )

    def _fingerprint(self, name: str, info: Mapping[str, Any]) -> str:
        md5 = md5_fingerprint(info.get("md5Hash"))
        # Composite objects have no MD5; their generation names the version.
        return md5 or f"generation:{self.endpoint or 'gcs'}/{name}#{info.get('generation')}"


@functools.cache
def _callback_classes() -> tuple[type[Any], type[Any]]:
    from fsspec.callbacks import Callback

    class BytesCallback(Callback):  # type: ignore[misc]
        """Forwards one transfer's bytes to a Progress."""

        def __init__(self, progress: Progress) -> None:
            super().__init__()
            self.progress = progress
            self.reported = 0

        def set_size(self, size: int | None) -> None:
            pass  # the total is the whole model's, set by the source

        def relative_update(self, inc: int = 1) -> None:
            self.progress.update(inc)
            self.reported += inc

        def absolute_update(self, value: int) -> None:
            self.progress.update(value - self.reported)
            self.reported = value

    class FilesCallback(Callback):  # type: ignore[misc]
        """Counts files (ignored) and hands each transfer a BytesCallback."""

        def __init__(self, progress: Progress) -> None:
            super().__init__()
            self.progress = progress

        def branched(self, path_1: str, path_2: str, **kwargs: Any) -> Any:
            return BytesCallback(self.progress)

    return BytesCallback, FilesCallback


def bytes_callback(progress: Progress) -> Any:
    """An fsspec callback for a single-file transfer that reports bytes to ``progress``."""
    return _callback_classes()[0](progress)


def files_callback(progress: Progress) -> Any:
    """An fsspec callback for a multi-file ``get`` that reports bytes to ``progress``."""
    return _callback_classes()[1](progress)
