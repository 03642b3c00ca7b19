"""``backworks up`` waits for every stream and bucket before it stores its starting revision and starts services.

The embedded broker declares the buckets after the streams; CI once saw ``up`` find ``bw_config`` missing.
"""

from __future__ import annotations

import pytest
from nats.aio.client import Client

from backworks.contracts.names import ALL_BUCKETS, CONFIG_BUCKET, SPLITS_BUCKET
from backworks.local.streams import STREAMS
from backworks.local.up import declared
from backworks.pipeline import broker
from backworks.pipeline.errors import BrokerUnavailable


def test_every_bucket_is_waited_for() -> None:
    assert {f"KV_{bucket}" for bucket in ALL_BUCKETS} <= set(STREAMS)


@pytest.mark.parametrize("bucket", [CONFIG_BUCKET, SPLITS_BUCKET])
async def test_a_missing_bucket_is_not_ready_until_declared(nats_client: Client, bucket: str) -> None:
    js = broker.jetstream(nats_client)
    await declared(js, timeout=0.5)
    await js.delete_key_value(bucket)
    with pytest.raises(BrokerUnavailable, match=f"KV_{bucket}"):
        await declared(js, timeout=0.5)
    await broker.declare(js, storage="memory")
    await declared(js, timeout=0.5)
