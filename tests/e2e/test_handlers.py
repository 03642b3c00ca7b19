"""``backworks up`` with a python handler (SQLite opened in the module's startup) and a proxy route to a real
upstream: real processes, real HTTP."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent

import httpx
import pytest

from backworks.local.ports import free_port
from tests.e2e.processes import BACKWORKS, start, stop, wait_healthy
from tests.upstreams import Upstream, running

pytestmark = pytest.mark.e2e

NOTES_APP = """
import sqlite3
from pathlib import Path

from backworks.plugins.python import HTTPError, Request

HERE = Path(__file__).parent
DB: sqlite3.Connection | None = None


def startup() -> None:
    global DB
    DB = sqlite3.connect(HERE / "notes.db", check_same_thread=False, isolation_level=None)
    DB.execute("create table if not exists notes (id integer primary key, title text not null)")


def shutdown() -> None:
    assert DB is not None
    DB.close()
    (HERE / "shutdown.log").open("a").write("closed\\n")


def create_note(request: Request):
    assert DB is not None
    cursor = DB.execute("insert into notes (title) values (?)", (request.json()["title"],))
    return 201, {"id": cursor.lastrowid}, {"location": f"/notes/{cursor.lastrowid}"}


async def get_note(request: Request):
    assert DB is not None
    row = DB.execute("select id, title from notes where id = ?", (int(request.path_params["id"]),)).fetchone()
    if row is None:
        raise HTTPError(404, f"no note {request.path_params['id']}")
    return {"id": row[0], "title": row[1]}


def boom(request: Request):
    raise RuntimeError("the secret is hunter2")
"""


@dataclass
class Running:
    base: str
    folder: Path
    upstream: Upstream
    log: Path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    folder = tmp_path_factory.mktemp("handlers")
    (folder / "notes_app.py").write_text(dedent(NOTES_APP))
    with running(Upstream("search")) as upstream:
        (folder / "blueprint.yaml").write_text(
            dedent(f"""\
                name: handlers-e2e
                endpoints:
                  create:
                    path: /notes
                    methods: [POST]
                    handler: {{type: python, config: {{function: "notes_app:create_note"}}}}
                  note:
                    path: /notes/{{id:int}}
                    handler: {{type: python, config: {{function: "notes_app:get_note"}}}}
                  boom:
                    path: /boom
                    handler: {{type: python, config: {{function: "notes_app:boom"}}}}
                  search:
                    path: /search/{{rest:path}}
                    methods: [GET, POST]
                    handler: {{type: proxy, config: {{targets: [{{url: "{upstream.url}"}}], strip_prefix: /search}}}}
            """)
        )
        port = free_port()
        log = folder / "up.log"
        # Run from elsewhere: the module is found next to the blueprint, not in the working directory.
        up = start("up", str(folder / "blueprint.yaml"), "--port", str(port), log=log, cwd=folder.parent)
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process=up, log=log)
            yield Running(f"http://127.0.0.1:{port}", folder, upstream, log)
        finally:
            stop(up, timeout=20)
    # Each of the three python handler processes ran the module's shutdown() when `up` stopped it.
    assert (folder / "shutdown.log").read_text().splitlines() == ["closed"] * 3


def test_validate_names_the_blueprint_line_of_a_missing_function(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("def f(request):\n    return {}\n")
    (tmp_path / "blueprint.yaml").write_text(
        'name: v\nendpoints:\n  a:\n    path: /a\n    handler: {type: python, config: {function: "app:g"}}\n'
    )
    result = subprocess.run(
        [BACKWORKS, "validate", str(tmp_path / "blueprint.yaml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"{tmp_path / 'blueprint.yaml'}:5:" in result.stdout
    assert "has no function 'g'; it defines: f" in result.stdout


def test_python_handler_stores_and_reads_notes_in_sqlite(stack: Running) -> None:
    created = httpx.post(f"{stack.base}/notes", json={"title": "first"}, timeout=10)
    assert created.status_code == 201, created.text
    note_id = created.json()["id"]
    assert created.headers["location"] == f"/notes/{note_id}"
    read = httpx.get(f"{stack.base}/notes/{note_id}", timeout=10)
    assert read.json() == {"id": note_id, "title": "first"}
    missing = httpx.get(f"{stack.base}/notes/999999", timeout=10)
    assert missing.status_code == 404 and missing.json()["detail"] == "no note 999999"
    assert (stack.folder / "notes.db").is_file()


def test_python_handler_exception_is_a_500_without_its_text_and_is_logged(stack: Running) -> None:
    response = httpx.get(f"{stack.base}/boom", headers={"x-request-id": "e2e-boom"}, timeout=10)
    assert response.status_code == 500
    assert "hunter2" not in response.text and response.json()["stage"] == "boom-handler.request"
    logged = [json.loads(line) for line in stack.log.read_text().splitlines() if "handler function raised" in line]
    assert [entry["request_id"] for entry in logged] == ["e2e-boom"]


def test_proxy_route_reaches_the_upstream(stack: Running) -> None:
    response = httpx.post(f"{stack.base}/search/q?term=x", content=b"find me", timeout=10)
    assert response.status_code == 200, response.text
    assert response.json() == {"upstream": "search", "method": "POST", "path": "/q", "body": "find me"}
    headers = dict(stack.upstream.last["headers"])
    assert stack.upstream.last["query"] == "term=x"
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-host"] == stack.base.removeprefix("http://")
