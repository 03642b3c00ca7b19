"""``/_backworks/``: the dashboard's page, script and style sheet (self-contained, locked down by their headers),
the stages' view it polls, and what it shows when there is no analytics service or no per-request event."""

from __future__ import annotations

import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

from nats.aio.client import Client

from backworks.gateway.app import REPORT_PATH
from backworks.gateway.dashboard import CONTENT_SECURITY_POLICY, DASHBOARD_PATH, STAGES_PATH, asset
from backworks.pipeline import blueprints
from backworks.pipeline.blueprints import LoadedBlueprint
from tests.files import write_blueprint
from tests.serving import Gateway, wait_live
from tests.stages import running_stages

SECRET_KEY = "dashboard-secret-key-0123456789"
KEYED = f"""
name: keyed
events: {{enabled: false}}
plugins:
  keys:
    type: api-key
    config: {{keys: [{{consumer: alice, sha256: {hashlib.sha256(SECRET_KEY.encode()).hexdigest()}}}]}}
endpoints:
  notes:
    path: /notes
    plugins: [keys]
    handler: {{type: mock}}
"""


class Page(HTMLParser):
    """What the page loads: scripts (with any inline text), style sheets, inline styles, every URL it names."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.inline_script = ""
        self.sheets: list[str | None] = []
        self.inline_styles = 0
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self.inline_styles += tag == "style" or "style" in found
        if tag == "script":
            self.scripts.append(found.get("src"))
            self._in_script = True
        if tag == "link" and found.get("rel") == "stylesheet":
            self.sheets.append(found.get("href"))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_script += data.strip()


def javascript_constant(name: str) -> str:
    found = re.search(rf'^const {name} = "([^"]+)";', asset("dashboard.js").decode(), re.MULTILINE)
    assert found, f"{name} is not a string constant of dashboard.js"
    return found.group(1)


async def test_the_page_its_script_and_style_sheet_are_served_locked_down(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with gateway(example) as (http, _):
        page = await http.get(DASHBOARD_PATH)
        bare = await http.get(DASHBOARD_PATH.rstrip("/"))
        parsed = Page()
        parsed.feed(page.text)
        (script,) = parsed.scripts
        (sheet,) = parsed.sheets
        assert script is not None and sheet is not None
        js = await http.get(urljoin(DASHBOARD_PATH, script))
        css = await http.get(urljoin(DASHBOARD_PATH, sheet))
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert (bare.status_code, bare.headers["location"]) == (307, f"http://test{DASHBOARD_PATH}")
    assert js.status_code == css.status_code == 200
    assert js.headers["content-type"] == "text/javascript; charset=utf-8"
    assert css.headers["content-type"] == "text/css; charset=utf-8"
    for response in (page, js, css):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
    assert "default-src 'none'" in CONTENT_SECURITY_POLICY
    # Everything it needs comes from the gateway: no inline script or style (the CSP would block them), no CDN.
    assert parsed.inline_script == "" and parsed.inline_styles == 0
    assert not [url for url in parsed.urls if "//" in url], parsed.urls
    assert "//" not in re.sub(r"^\s*//.*$|\s//.*$", "", js.text, flags=re.MULTILINE), "the script names no URL"
    assert "innerHTML" not in js.text and "eval(" not in js.text


def test_the_script_polls_the_report_api_and_the_stages_view() -> None:
    assert urljoin(DASHBOARD_PATH, javascript_constant("REPORT_URL")) == REPORT_PATH
    assert urljoin(DASHBOARD_PATH, javascript_constant("STAGES_URL")) == STAGES_PATH


async def test_the_stages_view_shows_live_replicas_breakers_and_pending_work(
    gateway: Gateway, nats_client: Client, example: LoadedBlueprint
) -> None:
    async with running_stages(example, nats_client), gateway(example) as (http, state):
        await wait_live(state, replicas={name: 1 for name in example.instances})
        assert (await http.get("/hello/you")).status_code == 200
        response = await http.get(STAGES_PATH)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    view = response.json()
    assert (view["blueprint"], view["nats_connected"], view["events"]["enabled"]) == ("hello-api", True, True)
    stages = {stage["stage"]: stage for stage in view["stages"]}
    assert set(stages) == {f"{name}.{phase.value}" for name, item in example.instances.items()
                           for phase in item.cls.phases}  # fmt: skip
    for stage in stages.values():
        assert (stage["live_replicas"], stage["breaker"], stage["status"]) == (1, "closed", "healthy"), stage
        assert (stage["pending"], stage["ack_pending"]) == (0, 0), stage


async def test_without_replicas_analytics_or_events_the_page_still_says_why(
    gateway: Gateway, nats_client: Client, tmp_path: Path
) -> None:
    loaded = blueprints.load(write_blueprint(tmp_path, KEYED))
    async with gateway(loaded) as (http, _):
        page = await http.get(DASHBOARD_PATH)
        view = (await http.get(STAGES_PATH)).json()
        report = await http.get(f"{REPORT_PATH}?since=15m")
    assert page.status_code == 200
    assert view["events"]["enabled"] is False
    stages = {stage["stage"]: (stage["live_replicas"], stage["status"]) for stage in view["stages"]}
    assert stages == {"keys.request": (0, "unhealthy"), "notes-handler.request": (0, "unhealthy")}
    assert SECRET_KEY not in str(view) and hashlib.sha256(SECRET_KEY.encode()).hexdigest() not in str(view)
    assert report.status_code == 503, "the page shows this problem's detail"
    assert "backworks analytics serve" in report.json()["detail"]
