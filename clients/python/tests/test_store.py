"""Storing once in S3, against moto's server over HTTP: HEAD, conditional PUT, verification."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any, Dict, Iterator, List

import boto3
import botocore.exceptions
import pytest
from botocore.stub import ANY, Stubber

from lambda_packager import PackagerError, s3 as store
from lambda_packager.packing import Package, pack_files
from lambda_packager.selection import find_files

from support import REGION, make_tree, new_bucket, object_bytes, unique_bucket_name


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Package]:
    root = make_tree(
        tmp_path / "fn",
        {"handler.py": b"def handler(e, c):\n    return 1\n", "run": (b"#!/bin/sh\n", True)},
    )
    with pack_files(find_files(str(root), ["**"], [], False), function="MyFunction") as packed:
        yield packed


def counting(client: Any) -> List[str]:
    calls: List[str] = []
    client.meta.events.register("before-call.s3.*", lambda model, **_: calls.append(model.name))
    return calls


def test_moto_honours_if_none_match_on_put_object(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        s3.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert object_bytes(s3, bucket, "k") == b"first"


def test_a_new_package_is_stored_with_its_checksum_type_and_acl(
    s3: Any, bucket: str, package: Package
) -> None:
    assert package.key is not None
    calls = counting(s3)
    stored = store.store_once(s3, bucket, package.key, package, acl="authenticated-read")

    assert stored.uploaded
    assert calls == ["HeadObject", "PutObject"]
    data = object_bytes(s3, bucket, package.key)
    assert data == Path(package.path).read_bytes()
    assert package.key == f"lambda-MyFunction-{hashlib.sha256(data).hexdigest()}.zip"
    head = s3.head_object(Bucket=bucket, Key=package.key, ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
    assert head["ContentType"] == "application/zip"
    assert head["CacheControl"] == "public, max-age=31536000, immutable"
    grants = s3.get_object_acl(Bucket=bucket, Key=package.key)["Grants"]
    assert {
        "Type": "Group",
        "URI": "http://acs.amazonaws.com/groups/global/AuthenticatedUsers",
    } in [g["Grantee"] for g in grants]


def test_an_existing_package_is_verified_and_not_written_again(s3: Any, package: Package) -> None:
    assert package.key is not None
    bucket = new_bucket(s3, versioned=True)
    first = store.store_once(s3, bucket, package.key, package)
    calls = counting(s3)
    second = store.store_once(s3, bucket, package.key, package)

    assert first.uploaded and not second.uploaded
    assert calls == ["HeadObject"]
    assert first.version_id is not None and second.version_id == first.version_id
    versions = s3.list_object_versions(Bucket=bucket)["Versions"]
    assert [v["VersionId"] for v in versions] == [first.version_id]


def test_a_lost_race_is_verified_and_not_an_error(s3: Any, bucket: str, package: Package) -> None:
    """Another machine stores the same package between our HEAD and our PUT."""
    assert package.key is not None
    other = boto3.client("s3", region_name=REGION)
    data = Path(package.path).read_bytes()

    def other_machine_first(**_: Any) -> None:
        other.put_object(
            Bucket=bucket,
            Key=package.key,
            Body=data,
            IfNoneMatch="*",
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=package.code_sha256,
        )

    s3.meta.events.register_first("before-call.s3.PutObject", other_machine_first)
    calls = counting(s3)
    stored = store.store_once(s3, bucket, package.key, package)

    assert not stored.uploaded
    assert calls == ["HeadObject", "PutObject", "HeadObject"]
    assert object_bytes(s3, bucket, package.key) == data


def test_a_lost_race_to_other_bytes_is_a_key_conflict(
    s3: Any, bucket: str, package: Package
) -> None:
    assert package.key is not None
    other = boto3.client("s3", region_name=REGION)

    def other_machine_first(**_: Any) -> None:
        other.put_object(Bucket=bucket, Key=package.key, Body=b"not this package", IfNoneMatch="*")

    s3.meta.events.register_first("before-call.s3.PutObject", other_machine_first)
    with pytest.raises(PackagerError) as raised:
        store.store_once(s3, bucket, package.key, package)
    assert raised.value.code == "key_conflict"
    assert object_bytes(s3, bucket, package.key) == b"not this package"


def test_other_bytes_of_the_same_size_are_a_key_conflict(
    s3: Any, bucket: str, package: Package
) -> None:
    assert package.key is not None
    forged = bytearray(Path(package.path).read_bytes())
    forged[-1] ^= 1
    s3.put_object(
        Bucket=bucket,
        Key=package.key,
        Body=bytes(forged),
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=base64.b64encode(hashlib.sha256(forged).digest()).decode(),
    )
    with pytest.raises(PackagerError) as raised:
        store.store_once(s3, bucket, package.key, package)
    assert raised.value.code == "key_conflict"
    assert object_bytes(s3, bucket, package.key) == bytes(forged)


def test_a_conditional_write_conflict_is_retried(
    package: Package, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3's 409 ConditionalRequestConflict (moto never sends it): a narrow stubbed test."""
    assert package.key is not None
    monkeypatch.setattr(store, "CONFLICT_BACKOFF_SECONDS", 0.0)
    client = boto3.client("s3", region_name=REGION)
    stub = Stubber(client)
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
    stub.add_response("put_object", {"VersionId": "v1"})
    with stub:
        stored = store.store_once(client, "b", package.key, package)
    stub.assert_no_pending_responses()
    assert stored.uploaded and stored.version_id == "v1"

    stub = Stubber(client)
    stub.add_client_error("head_object", "404", http_status_code=404)
    for _ in range(store.CONFLICT_RETRIES + 1):
        stub.add_client_error("put_object", "ConditionalRequestConflict", http_status_code=409)
    with stub, pytest.raises(botocore.exceptions.ClientError, match="ConditionalRequestConflict"):
        store.store_once(client, "b", package.key, package)
    stub.assert_no_pending_responses()


def test_a_denied_head_is_an_error_not_absent(package: Package) -> None:
    assert package.key is not None
    client = boto3.client("s3", region_name=REGION)
    stub = Stubber(client)
    stub.add_client_error("head_object", "403", http_status_code=403)
    with stub, pytest.raises(botocore.exceptions.ClientError, match="403"):
        store.store_once(client, "b", package.key, package)


def test_ensure_bucket_creates_a_missing_bucket_in_its_region(s3: Any) -> None:
    name = unique_bucket_name()
    regional = boto3.client("s3", region_name="eu-west-1")
    store.ensure_bucket(regional, name, "eu-west-1")
    assert s3.get_bucket_location(Bucket=name)["LocationConstraint"] == "eu-west-1"
    store.ensure_bucket(regional, name, "eu-west-1")  # exists: nothing happens


def test_store_once_sends_the_expected_put(package: Package) -> None:
    """The PutObject carries If-None-Match, the algorithm and our own checksum."""
    assert package.key is not None
    client = boto3.client("s3", region_name=REGION)
    stub = Stubber(client)
    expected: Dict[str, Any] = {
        "Bucket": "b",
        "Key": package.key,
        "Body": ANY,
        "ContentLength": package.size,
        "ContentType": "application/zip",
        "CacheControl": store.CACHE_CONTROL,
        "IfNoneMatch": "*",
        "ChecksumAlgorithm": "SHA256",
        "ChecksumSHA256": package.code_sha256,
        "ACL": "private",
    }
    stub.add_client_error("head_object", "404", http_status_code=404)
    stub.add_response("put_object", {}, expected)
    with stub:
        assert store.store_once(client, "b", package.key, package, acl="private").uploaded
