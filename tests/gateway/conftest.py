"""The gateway fixture: a gateway app served in the test process against the test's nats-server."""

from __future__ import annotations

import pytest

from backworks.local.embedded import EmbeddedNats
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.serving import Gateway, Serving, serving


@pytest.fixture
def gateway(nats_server: EmbeddedNats) -> Gateway:
    """``async with gateway(loaded) as (http, state)``: ``loaded``'s gateway on ``nats_server``, as often as needed."""

    def serve(loaded: LoadedBlueprint) -> Serving:
        return serving(loaded, nats_server)

    return serve
