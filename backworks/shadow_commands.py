"""``backworks record`` and ``backworks replay``: record an endpoint's traffic, replay it against another instance."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from backworks.console import BlueprintArg, Format, FormatOption, NatsOption, console, fail, output

if TYPE_CHECKING:
    from nats.js import JetStreamContext

    from backworks.contracts.recordings import RecordingSwitch
    from backworks.pipeline.blueprints import LoadedBlueprint
    from backworks.shadowdiff import DiffReport

DEFAULT_SAMPLE = "10%"
DEFAULT_DURATION = "10m"
PROGRESS_INTERVAL = 1.0
"""Seconds between two looks at how many requests were recorded."""
SETTLE_TIMEOUT = 5.0
"""Seconds ``record`` waits, once stopped, for the gateways' last recordings to be stored (they publish in batches)."""
REVISION_KEY = "rev.{number}"
"""Key of blueprint revision N in ``bw_config`` (the layout of ``backworks apply``)."""
TEXT_EXAMPLES = 10
"""Differing requests the text report lists one by one (``--format json`` lists them all)."""


def share(text: str) -> float:
    """``"10%"`` -> 0.1; ``"0.25"`` -> 0.25; the share must be in (0, 1]."""
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise fail(f"cannot read --sample {text!r}: write a percentage (10%) or a fraction (0.1)") from None
    if not 0 < value <= 1:
        raise fail(f"--sample {text!r} is not between 0 (excluded) and 100%")
    return value


async def _admin(servers: list[str]) -> Any:
    from backworks.pipeline import broker

    return await broker.connect(servers, name="backworks-shadow")


async def _record(servers: list[str], switch: RecordingSwitch, detach: bool, fmt: Format) -> dict[str, Any]:
    import asyncio
    import contextlib
    import signal
    import time

    from backworks.contracts.names import RECORD_STREAM
    from backworks.pipeline import broker
    from backworks.recordings import recorded, switch_off, switch_on

    client = await _admin(servers)
    js = broker.jetstream(client)
    try:
        await broker.attach(js, RECORD_STREAM, timeout=5.0)
        await switch_on(js, switch)
        if detach:
            return {"session": switch.session, "endpoint": switch.endpoint, "sample": switch.sample,
                    "until": switch.until, "detached": True}  # fmt: skip
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        count = shown = 0
        while not stop.is_set() and time.time() < switch.until:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(PROGRESS_INTERVAL, max(0.0, switch.until - time.time())))
            count = await recorded(js, switch.endpoint, switch.session)
            if count != shown and fmt is Format.TEXT:
                left = max(0, round(switch.until - time.time()))
                console.print(
                    f"recording {switch.endpoint}: {count} request(s) so far ({left} s left)", highlight=False
                )
                shown = count
        await switch_off(js, switch.endpoint)
        settle = time.monotonic() + SETTLE_TIMEOUT  # the gateways' last batches are on their way
        while time.monotonic() < settle:
            await asyncio.sleep(PROGRESS_INTERVAL)
            latest = await recorded(js, switch.endpoint, switch.session)
            if latest == count:
                break
            count = latest
        ended = min(time.time(), switch.until)
        return {"session": switch.session, "endpoint": switch.endpoint, "sample": switch.sample,
                "seconds": round(ended - switch.started_at, 1), "recorded": count}  # fmt: skip
    finally:
        await client.drain()


def record(
    blueprint: BlueprintArg,
    endpoint: Annotated[str, typer.Option("--endpoint", help="The endpoint to record.", show_default=False)],
    sample: Annotated[
        str, typer.Option("--sample", help="Share of requests recorded: 10%, 100%, 0.5.")
    ] = DEFAULT_SAMPLE,
    for_: Annotated[
        str, typer.Option("--for", help="How long to record (90s, 10m, 1h); the gateways stop by themselves then.")
    ] = DEFAULT_DURATION,
    detach: Annotated[
        bool, typer.Option("--detach", help="Turn recording on and return; it ends by itself after --for.")
    ] = False,
    nats: NatsOption = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Record a sample of an endpoint's requests and responses into BW_RECORD, for `backworks replay`.

    Gateways copy sampled requests (credentials sealed with the dead-letter key, as in dead letters) off the
    request path; recording ends after --for even if this command dies. Shows progress until then or Ctrl-C.
    """
    import asyncio

    from backworks.cli import load_or_exit, resolve_servers
    from backworks.pipeline.errors import PipelineError
    from backworks.recordings import new_switch
    from backworks.tap.filters import seconds

    loaded = load_or_exit(blueprint)
    if endpoint not in loaded.model.endpoints:
        raise fail(f"no endpoint {endpoint!r} in {blueprint}; endpoints: {', '.join(sorted(loaded.model.endpoints))}")
    try:
        duration = seconds(for_)
    except PipelineError as exc:
        raise fail(str(exc)) from None
    switch = new_switch(endpoint, share(sample), duration)
    try:
        result = asyncio.run(_record(resolve_servers(loaded, nats), switch, detach, format))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if format is Format.JSON:
        print(json.dumps(result))
    elif detach:
        output().print(f"recording {endpoint} (session {switch.session}, {switch.sample:.0%} of requests) for "
                       f"{duration:.0f} s; it ends by itself", highlight=False)  # fmt: skip
    else:
        output().print(
            f"recorded {result['recorded']} request(s) of {endpoint} in {result['seconds']} s (session "
            f"{switch.session}, {switch.sample:.0%} sampled); replay them with `backworks replay {blueprint} "
            f"--against INSTANCE --endpoint {endpoint} --session {switch.session}`",
            highlight=False,
        )


async def revision(js: JetStreamContext, live: LoadedBlueprint, number: int) -> LoadedBlueprint:
    """Blueprint revision ``number`` from ``bw_config`` (key ``rev.<number>``): a stored revision (a JSON object
    holding the blueprint under ``blueprint`` and its file under ``source``, where relative paths resolve), or the
    blueprint document itself (YAML or JSON; relative paths resolve from the live blueprint's folder)."""
    import yaml
    from nats.js.errors import KeyNotFoundError, NotFoundError

    from backworks.contracts.names import CONFIG_BUCKET
    from backworks.pipeline import blueprints
    from backworks.shadow import ReplayError

    key = REVISION_KEY.format(number=number)
    try:
        entry = await (await js.key_value(CONFIG_BUCKET)).get(key)
    except (KeyNotFoundError, NotFoundError):
        raise ReplayError(f"no revision {number} in {CONFIG_BUCKET} (key {key}): see `backworks history`") from None
    data = yaml.safe_load(entry.value or b"")
    where = str(live.path.parent / f"{CONFIG_BUCKET}:{key}")
    if isinstance(data, dict) and "blueprint" in data and "endpoints" not in data:  # a stored ``Revision``
        where = str(data.get("source") or where)
        data = data["blueprint"]
        data = yaml.safe_load(data) if isinstance(data, str) else data
    return blueprints.validate(data, where)


async def _replay(
    servers: list[str], live: LoadedBlueprint, source: LoadedBlueprint | None, options: dict[str, Any]
) -> DiffReport:
    from backworks.pipeline import broker
    from backworks.pipeline.deadletters import CredentialsUnavailable
    from backworks.recordings import latest_session, recordings
    from backworks.shadow import ShadowRunner, plan, recorded, replay_envelope
    from backworks.shadowdiff import Compared, DiffReport, Outcome, compare

    client = await _admin(servers)
    js = broker.jetstream(client)
    try:
        if options["revision"] is not None:
            source = await revision(js, live, options["revision"])
        endpoint, session = options["endpoint"], options["session"]
        if session is None:
            endpoint, session = await latest_session(js, endpoint)
        elif endpoint is None:
            raise fail("--session needs --endpoint (a session belongs to one endpoint)")
        shadow = plan(live, source or live, endpoint, options["against"], options["replacing"])
        report = DiffReport(endpoint, session, shadow.against, shadow.replacing)
        runner = ShadowRunner(shadow)
        await runner.start()
        try:
            async for _, item in recordings(js, endpoint, session):
                if options["limit"] is not None and len(report.compared) >= options["limit"]:
                    break
                sent = item.envelope
                try:
                    envelope = replay_envelope(item, shadow.itinerary, shadow.timeout_ms)
                except CredentialsUnavailable as exc:
                    report.add(Compared(sent.request_id, sent.method, sent.path, Outcome.ERROR, error=str(exc)))
                    continue
                new = await runner.run(envelope)
                old = recorded(item, shadow.replacing)
                report.add(compare(sent.request_id, sent.method, sent.path, old, new, options["ignored"]), old, new)
        finally:
            await runner.stop()
        return report
    finally:
        await client.drain()


def print_report(report: DiffReport) -> None:
    out = output()
    say = out.print
    counts = report.counts()
    say(f"replayed {counts['replayed']} recorded request(s) of {report.endpoint} (session {report.session}) against "
        f"{report.against}, replacing {report.replacing}", highlight=False, markup=False)  # fmt: skip
    say(f"  same {counts['same']}   differs {counts['differs']}   errors {counts['error']}", highlight=False)
    if differences := report.differences():
        say("differences (requests):", highlight=False)
        for kind, count in differences.items():
            say(f"  {kind:<32} {count:>6}   e.g. {report.example(kind)}", highlight=False, markup=False)
    for error, count in report.errors().items():
        say(f"  error ({count}): {error}", highlight=False, markup=False)
    from backworks.shadowdiff import distribution

    labels = {
        "recorded_total": "live, whole request (gateway)",
        "replayed_total": "replay, whole itinerary (in-process)",
        "recorded_stage": f"live, {report.replacing}",
        "replayed_stage": f"replay, {report.against}",
    }
    say(f"{'latency (ms)':<40} {'p50':>8} {'p95':>8} {'p99':>8}", highlight=False)
    for name, label in labels.items():
        if found := distribution(report.latency.get(name, [])):
            say(f"  {label:<38} {found['p50']:>8.3f} {found['p95']:>8.3f} {found['p99']:>8.3f}", highlight=False,
                markup=False)  # fmt: skip
    listed = [item for item in report.compared if item.kinds][:TEXT_EXAMPLES]
    for item in listed:
        say(f"  {item.request_id} {item.method} {item.path}: {'; '.join(item.kinds)}", highlight=False, markup=False)


def replay(
    blueprint: BlueprintArg,
    against: Annotated[
        str, typer.Option("--against", help="The plugin instance to replay through (a new version, a changed config).")
    ],
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Whose recordings. Default: the latest recording's endpoint.")
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Which recording (printed by `record`). Default: the latest.")
    ] = None,
    replacing: Annotated[
        str | None,
        typer.Option(
            "--replacing", help="The stage --against stands in for. Default: the one of the same plugin type."
        ),
    ] = None,
    from_: Annotated[
        int | None,
        typer.Option("--from", help="Take --against's config from this blueprint revision (bw_config key rev.N)."),
    ] = None,
    blueprint_from: Annotated[
        Path | None, typer.Option("--blueprint-from", help="Take --against's config from this blueprint file.")
    ] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="Replay at most N recorded requests.", min=1)] = None,
    ignore_header: Annotated[
        list[str] | None,
        typer.Option(
            "--ignore-header",
            help="A header not to compare (repeatable); server-timing, traceresponse and date never are.",
        ),
    ] = None,
    fail_on_diff: Annotated[
        bool, typer.Option("--fail-on-diff", help="Exit with 1 when a request differs or could not be replayed.")
    ] = False,
    nats: NatsOption = None,
    format: FormatOption = Format.TEXT,
) -> None:
    """Replay recorded requests through another plugin instance, in this process, and diff old vs new responses.

    Shadow traffic: no client, nothing published on the broker, plugin stores in memory. The report counts same /
    differs / errors, names what differs (status, headers, body), and compares latency: the recorded total and
    replaced stage against the replay's. Credentials are restored from the seal with the dead-letter key.
    """
    import asyncio

    from backworks.cli import load_or_exit, resolve_servers
    from backworks.pipeline.errors import PipelineError
    from backworks.shadowdiff import IGNORED_HEADERS

    if from_ is not None and blueprint_from is not None:
        raise fail("--from and --blueprint-from both name where --against's config comes from: give one")
    live = load_or_exit(blueprint)
    source = load_or_exit(blueprint_from) if blueprint_from else None
    ignored = IGNORED_HEADERS | {name.lower() for name in ignore_header or []}
    options = {"against": against, "endpoint": endpoint, "session": session, "replacing": replacing,
               "revision": from_, "limit": limit, "ignored": ignored}  # fmt: skip
    try:
        report = asyncio.run(_replay(resolve_servers(live, nats), live, source, options))
    except PipelineError as exc:
        raise fail(str(exc)) from None
    if format is Format.JSON:
        print(json.dumps(report.as_dict()))
    else:
        print_report(report)
    counts = report.counts()
    if fail_on_diff and (counts["differs"] or counts["error"]):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("record")(record)
    app.command("replay")(replay)
