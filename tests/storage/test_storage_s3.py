"""s3:// against a real S3 server (moto): folders, single objects, the cache, the errors."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_servers import MODEL_FILES, S3Server, closed_port, read_tree, storage_settings

from modelhost import errors
from modelhost.storage import download
from modelhost.storage._errors import ArchiveTooLarge


def test_folder_with_subfolders_is_fetched_byte_for_byte(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="iris/v1/")
    s3.upload(s3_bucket, {"other.bin": b"not part of the model"}, prefix="iris/")

    path = download(f"s3://{s3_bucket}/iris/v1", storage_settings(tmp_path, s3.env()))

    assert read_tree(path) == MODEL_FILES
    assert path.is_relative_to(tmp_path / "cache")


def test_a_single_object_comes_in_a_folder_of_its_own(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")

    path = download(f"s3://{s3_bucket}/m/model.joblib", storage_settings(tmp_path, s3.env()))

    assert path.is_dir()
    assert read_tree(path) == {"model.joblib": MODEL_FILES["model.joblib"]}


def test_a_second_download_is_a_cache_hit_without_a_get(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    settings = storage_settings(tmp_path, s3.env())

    first = download(f"s3://{s3_bucket}/m", settings)
    assert sorted(s3.object_gets(s3_bucket)) == sorted(f"m/{name}" for name in MODEL_FILES)
    s3.requests.clear()

    second = download(f"s3://{s3_bucket}/m/", settings)

    assert second == first
    assert s3.object_gets(s3_bucket) == []  # only the listing that names the content
    assert read_tree(second) == MODEL_FILES


def test_changed_content_is_a_new_identity_and_is_fetched_again(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    settings = storage_settings(tmp_path, s3.env())
    first = download(f"s3://{s3_bucket}/m", settings)

    s3.upload(s3_bucket, {"config.json": b'{"name": "retrained"}'}, prefix="m/")
    s3.requests.clear()
    second = download(f"s3://{s3_bucket}/m", settings)

    assert second != first
    assert read_tree(second)["config.json"] == b'{"name": "retrained"}'
    assert read_tree(first) == MODEL_FILES  # the old entry is left whole for its users
    assert sorted(s3.object_gets(s3_bucket)) == sorted(f"m/{name}" for name in MODEL_FILES)


def test_identical_content_under_two_uris_is_stored_once(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="a/")
    s3.upload(s3_bucket, MODEL_FILES, prefix="copy/of/a/")
    settings = storage_settings(tmp_path, s3.env())

    first = download(f"s3://{s3_bucket}/a", settings)
    s3.requests.clear()
    second = download(f"s3://{s3_bucket}/copy/of/a", settings)

    assert second == first
    assert s3.object_gets(s3_bucket) == []


def test_a_single_archive_object_is_unpacked(s3: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in MODEL_FILES.items():
            archive.writestr(name, data)
    s3.upload(s3_bucket, {"model.zip": buffer.getvalue()}, prefix="zipped/")

    path = download(f"s3://{s3_bucket}/zipped", storage_settings(tmp_path, s3.env()))

    assert read_tree(path) == MODEL_FILES


def test_a_single_archive_object_past_the_unpack_limit_is_refused(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("weights.bin")
        info.size = 2 * 1024 * 1024
        archive.addfile(info, io.BytesIO(bytes(info.size)))
    s3.upload(s3_bucket, {"model.tar.gz": buffer.getvalue()}, prefix="bomb/")
    settings = storage_settings(tmp_path, s3.env()).replace(max_unpack_bytes=1024 * 1024)

    with pytest.raises(ArchiveTooLarge, match="MODELHOST_MAX_UNPACK_BYTES"):
        download(f"s3://{s3_bucket}/bomb", settings)

    assert not any((tmp_path / "cache" / "models").iterdir())
    assert not any((tmp_path / "cache" / "tmp").iterdir())


def test_anonymous_access_reads_public_objects_without_signing(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="public/", acl="public-read")
    environ = {"AWS_ENDPOINT_URL": s3.endpoint, "awsAnonymousCredential": "true"}
    s3.requests.clear()

    path = download(f"s3://{s3_bucket}/public", storage_settings(tmp_path, environ))

    assert read_tree(path) == MODEL_FILES
    ours = [r for r in s3.requests if r.path.startswith(f"/{s3_bucket}")]
    assert ours
    assert all("authorization" not in r.headers for r in ours)


def test_s3_endpoint_and_use_https_build_the_endpoint(
    s3: S3Server, s3_bucket: str, tmp_path: Path
) -> None:
    s3.upload(s3_bucket, MODEL_FILES, prefix="m/")
    environ = s3.env()
    del environ["AWS_ENDPOINT_URL"]
    environ.update(S3_ENDPOINT=s3.endpoint.removeprefix("http://"), S3_USE_HTTPS="0")

    path = download(f"s3://{s3_bucket}/m", storage_settings(tmp_path, environ))

    assert read_tree(path) == MODEL_FILES


def test_a_missing_prefix_is_not_found(s3: S3Server, s3_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageNotFound, match=rf"s3://{s3_bucket}/absent"):
        download(f"s3://{s3_bucket}/absent", storage_settings(tmp_path, s3.env()))


def test_a_missing_bucket_is_not_found(s3: S3Server, tmp_path: Path) -> None:
    with pytest.raises(errors.StorageNotFound, match="s3://no-such-bucket-here/m"):
        download("s3://no-such-bucket-here/m", storage_settings(tmp_path, s3.env()))


def test_an_unreachable_endpoint_names_it(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    environ = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "S3_MAX_ATTEMPTS": "1",
    }

    with pytest.raises(errors.StorageUnreachable, match=endpoint) as caught:
        download("s3://models/m", storage_settings(tmp_path, environ))
    assert "AWS_ENDPOINT_URL" in str(caught.value)


@pytest.fixture
def iam_enforced(s3: S3Server) -> Iterator[tuple[str, str]]:
    """Moto checking signatures against its IAM users; yields a valid (key id, secret).

    Moto accepts any credentials until told to authenticate (its ``reset-auth`` call,
    which counts the requests still let through without checks): the user, key and
    policy are made first, then every request is checked.
    """
    iam = s3.client("iam")
    user = "model-reader"
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    _reset_auth(s3, "0")
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        _reset_auth(s3, "inf")
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.delete_user_policy(UserName=user, PolicyName="read")
        iam.delete_user(UserName=user)


def _reset_auth(s3: S3Server, allowed_unchecked: str) -> None:
    request = urllib.request.Request(
        f"{s3.endpoint}/moto-api/reset-auth",
        data=allowed_unchecked.encode(),
        method="POST",
        # Not a form: moto reads the raw body, which Flask leaves empty for form posts.
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.mark.parametrize("wrong", ["key id", "secret"])
def test_refused_credentials_are_access_denied_and_name_the_variables(
    s3: S3Server, s3_bucket: str, tmp_path: Path, iam_enforced: tuple[str, str], wrong: str
) -> None:
    key_id, secret = iam_enforced
    environ = s3.env(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)
    environ["AWS_ACCESS_KEY_ID" if wrong == "key id" else "AWS_SECRET_ACCESS_KEY"] = "WRONG"

    with pytest.raises(errors.StorageAccessDenied) as caught:
        download(f"s3://{s3_bucket}/m", storage_settings(tmp_path, environ))

    message = str(caught.value)
    assert f"s3://{s3_bucket}/m" in message
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in message
    assert ("InvalidAccessKeyId" if wrong == "key id" else "SignatureDoesNotMatch") in message
    assert "WRONG" not in message
    assert secret not in message


def test_valid_credentials_pass_the_check(
    s3: S3Server, s3_bucket: str, tmp_path: Path, iam_enforced: tuple[str, str]
) -> None:
    key_id, secret = iam_enforced
    import boto3

    boto3.client(
        "s3",
        endpoint_url=s3.endpoint,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name="us-east-1",
    ).put_object(Bucket=s3_bucket, Key="m/model.joblib", Body=b"weights")
    environ = s3.env(AWS_ACCESS_KEY_ID=key_id, AWS_SECRET_ACCESS_KEY=secret)

    path = download(f"s3://{s3_bucket}/m", storage_settings(tmp_path, environ))

    assert read_tree(path) == {"model.joblib": b"weights"}
