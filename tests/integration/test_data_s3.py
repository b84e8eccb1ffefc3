"""The dataset readers on S3 (moto over real HTTP) through the storage interface."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sail_api.storage import S3Connection, open_store
from sail_trainer.data.errors import DataError
from sail_trainer.data.images import decode_image
from sail_trainer.data.prompts import read_prompts
from sail_trainer.data.seed_pairs import read_seed_pairs
from tests.peers.s3 import FAST_RETRIES, REGION, create_admin_client


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _value(data: bytes) -> int:
    return int(np.asarray(decode_image(data, source="test"))[0, 0, 0])


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


@pytest.fixture
def s3(moto_s3: Any, s3_bucket: str) -> dict[str, Any]:
    client = create_admin_client(moto_s3.endpoint)

    def put(key: str, body: bytes) -> str:
        client.put_object(Bucket=s3_bucket, Key=key, Body=body)
        return f"s3://{s3_bucket}/{key}"

    opened: list[str] = []

    def opener(root: str) -> Any:
        opened.append(root)
        return open_store(root, S3Connection(endpoint=moto_s3.endpoint, region=REGION), retries=FAST_RETRIES)

    return {"put": put, "bucket": s3_bucket, "open_store": opener, "opened": opened}


def test_jsonl_on_s3_with_images_relative_to_the_file_and_absolute_uris(s3: dict[str, Any]) -> None:
    put = s3["put"]
    put("data/img/w.png", _png(1))
    put("data/img/l.png", _png(2))
    other = put("elsewhere/x.png", _png(3))
    rows = [{"prompt": "a", "winner": "img/w.png", "loser": "img/l.png"},
            {"prompt": "b", "winner": other, "loser": "../elsewhere/x.png"}]
    uri = put("data/pairs.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    pairs = read_seed_pairs(uri, open_store=s3["open_store"])
    assert [(p.prompt, _value(p.winner), _value(p.loser)) for p in pairs] == [("a", 1, 2), ("b", 3, 3)]
    assert set(s3["opened"]) == {f"s3://{s3['bucket']}/data", f"s3://{s3['bucket']}/data/img",
                                 f"s3://{s3['bucket']}/elsewhere"}


def test_pickapic_shards_under_an_s3_prefix(s3: dict[str, Any]) -> None:
    def table(labels: list[float], base: int) -> pa.Table:
        return pa.table({"caption": [f"c{base + i}" for i in range(len(labels))],
                         "jpg_0": [_png(base + i) for i in range(len(labels))],
                         "jpg_1": [_png(100 + base + i) for i in range(len(labels))],
                         "label_0": labels})

    s3["put"]("pickapic/train-00001.parquet", _parquet_bytes(table([0.0], 10)))
    s3["put"]("pickapic/train-00000.parquet", _parquet_bytes(table([1.0, 0.5], 0)))
    s3["put"]("pickapic/README.md", b"not data")
    pairs = read_seed_pairs(f"s3://{s3['bucket']}/pickapic/", open_store=s3["open_store"])
    assert [(p.prompt, _value(p.winner), _value(p.loser)) for p in pairs] == [("c0", 0, 100), ("c10", 110, 10)]


def test_prompts_on_s3_text_and_parquet(s3: dict[str, Any]) -> None:
    text = s3["put"]("prompts/pool.txt", b"one\n\ntwo\n")
    assert read_prompts(text, open_store=s3["open_store"]) == ["one", "two"]
    parquet = s3["put"]("prompts/pool.parquet", _parquet_bytes(pa.table({"caption": ["x", "y"]})))
    assert read_prompts(parquet, column="caption", open_store=s3["open_store"]) == ["x", "y"]


def test_missing_objects_are_data_errors_naming_the_uri(s3: dict[str, Any]) -> None:
    missing = f"s3://{s3['bucket']}/nope/pairs.jsonl"
    with pytest.raises(DataError) as err:
        read_seed_pairs(missing, open_store=s3["open_store"])
    assert err.value.source == missing
    with pytest.raises(DataError, match="does not exist"):
        read_prompts(f"s3://{s3['bucket']}/nope/pool.parquet", open_store=s3["open_store"])
    uri = s3["put"]("d/pairs.jsonl", json.dumps({"prompt": "a", "winner": "w.png", "loser": "l.png"}).encode())
    with pytest.raises(DataError) as err:
        read_seed_pairs(uri, open_store=s3["open_store"])
    assert (err.value.source, err.value.row, err.value.field) == (uri, 1, "winner")
    assert f"s3://{s3['bucket']}/d/w.png does not exist" in str(err.value)


@pytest.mark.parametrize(
    "ref, message",
    [("/etc/hostname", "may not name the local path"), ("../../../x.png", "leaves the bucket"),
     ("../../BUCKET-other/x.png", "leaves the bucket")],
    ids=["local absolute path", "climbs out of the bucket", "climbs into a sibling bucket"],
)
def test_a_dataset_on_s3_cannot_reach_outside_its_bucket(s3: dict[str, Any], ref: str, message: str) -> None:
    ref = ref.replace("BUCKET", s3["bucket"])
    uri = s3["put"]("d/pairs.jsonl", json.dumps({"prompt": "a", "winner": ref, "loser": ref}).encode())
    with pytest.raises(DataError, match=message) as err:
        read_seed_pairs(uri, open_store=s3["open_store"])
    assert err.value.field == "winner"


def test_empty_prefix_is_a_data_error(s3: dict[str, Any]) -> None:
    with pytest.raises(DataError, match="holds no"):
        read_prompts(f"s3://{s3['bucket']}/empty/", open_store=s3["open_store"])
