"""The review view in a real browser: Debian's Chromium (headless, through Playwright, no browser
download) loads the test host page (ext-apps' AppBridge), which loads the real ui:// resource from
the real server and proxies the view's tool calls to it over a real MCP client (stdio and HTTP).

Chromium comes from the project's set-up (``make browser``: Debian's package), the host page's
packages from ui/package-lock.json (``make ui``). Screenshots of the run go to docs/images/.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest

from tests.browser_host import ROOT, harness_app, host_page, node_ready, serving
from tests.mcp_harness import EXAMPLE, IN_PROGRESS, SMALL, server_env, structured, text
from tests.test_mcp_transcript import serve_corpus_call
from tests.test_review_call import connected, push_transcript

pytestmark = pytest.mark.anyio

CHROMIUM = Path("/usr/bin/chromium")
#: The flags that work on this project's machines (no GPU, no sandbox as root, nothing phoned home).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Where the run's screenshots go: docs/images/ with CTE1_UPDATE_SCREENSHOTS=1 (the committed ones
#: come from such a run), else a temporary directory (the header's time differs every run).
SCREENSHOTS = ROOT / "docs" / "images" if os.environ.get("CTE1_UPDATE_SCREENSHOTS") else None
#: Playwright waits up to this for a condition (the first review analyses the call). Conditions in
#: the view are functions: a bare expression is eval()ed when polled, which the view's CSP forbids.
WAIT_MS = 90_000


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "no /usr/bin/chromium (make browser installs Debian's package as root)"
    if not node_ready():
        return "node or ui/node_modules missing (make ui)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (the dev extra)"
    return None


if (reason := _missing()) is not None:
    # CI installs all three through make; there a missing one is a failure, not a skip
    if os.environ.get("CI"):
        raise RuntimeError(f"browser tests cannot run: {reason}")
    pytest.skip(reason, allow_module_level=True)

from playwright.async_api import BrowserContext, Frame, Page, Route, async_playwright  # noqa: E402


@pytest.fixture(scope="module")
def page_html(tmp_path_factory: pytest.TempPathFactory) -> str:
    return host_page(tmp_path_factory.mktemp("host"))


@asynccontextmanager
async def browser() -> AsyncIterator[BrowserContext]:
    with tempfile.TemporaryDirectory() as profile:
        async with async_playwright() as playwright:
            # a persistent context is how Playwright takes a --user-data-dir: a new, empty one
            context = await playwright.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield context
            finally:
                await context.close()


@asynccontextmanager
async def review(
    transport: Literal["stdio", "http"],
    env: dict[str, str],
    page_html: str,
    call: dict[str, Any],
    *,
    width: int = 900,
    theme: str = "light",
    dimensions: dict[str, int] | None = None,
    routes: dict[str, Callable[[Route], Awaitable[None]]] | None = None,
) -> AsyncIterator[tuple[Page, Frame, list[dict[str, Any]], list[str]]]:
    """The host page open on ``call``; yields the page, the view's frame, the tool calls the host
    proxied, and every URL the browser requested (to show nothing left loopback). ``routes`` (URL
    pattern: handler) stand between the host page and the harness from the first request: a test
    holds or fails what the host's proxy sends (``/tool``, ``/read``) there. ``dimensions`` is the
    host context's containerDimensions at connect."""
    calls: list[dict[str, Any]] = []
    requested: list[str] = []
    async with (
        connected(transport, env, apps=True) as client,
        serving(harness_app(client, page_html, calls)) as url,
        browser() as context,
    ):
        for pattern, handler in (routes or {}).items():
            await context.route(pattern, handler)
        page = await context.new_page()
        await page.set_viewport_size({"width": width, "height": 900})
        page.on("request", lambda request: requested.append(request.url))
        query = f"call={json.dumps(call)}&theme={theme}"
        if dimensions is not None:
            query += f"&dimensions={json.dumps(dimensions)}"
        await page.goto(f"{url}/?{query}")
        await page.wait_for_function("window.harness && window.harness.initialized === true", timeout=WAIT_MS)
        sandbox = await (await page.wait_for_selector("#app")).content_frame()
        assert sandbox is not None
        view = await (await sandbox.wait_for_selector("#view")).content_frame()
        assert view is not None
        yield page, view, calls, requested


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (checked as the event loop turns), failing only after WAIT_MS."""
    with anyio.fail_after(WAIT_MS / 1000):
        while not condition():
            await anyio.sleep(0.05)


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(
        simulator.url, tmp_path / "cache", CTE1_CHANNEL_ROLES="customer,agent", CTE1_MASK_NUMBERS="true"
    )


async def analytics_of(transport: Literal["stdio", "http"], env: dict[str, str]) -> dict[str, Any]:
    async with connected(transport, env, apps=False) as client:
        analytics: dict[str, Any] = structured(
            await client.call_tool("get_call_analytics", {**EXAMPLE, "timeline": False})
        )["analytics"]
    return analytics


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_the_view_shows_the_call_its_lanes_and_plays_it(
    transport: Literal["stdio", "http"], env: dict[str, str], page_html: str, tmp_path: Path
) -> None:
    expected = await analytics_of(transport, env)
    async with review(transport, env, page_html, EXAMPLE) as (page, view, calls, requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        # the header: the call, its parties' numbers masked, the agent, the duration
        header = await view.inner_text("header")
        assert "942125" in header
        assert "*******2398" in header  # ani, masked (CTE1_MASK_NUMBERS)
        assert "08075082398" not in header
        assert "コムデザイン一郎" in header
        assert "着信スキル名1" in header
        assert "4:40" in header  # 280.447 s
        assert "2026" in header or "20" in header  # the start time, in the viewer's locale
        # the lanes: each party's talk is exactly the analysis' segments
        for channel in (0, 1):
            drawn = await view.eval_on_selector_all(
                f'[data-lane="ch{channel}"] .span',
                "nodes => nodes.map(n => [Number(n.dataset.start), Number(n.dataset.end)])",
            )
            assert drawn == [
                [s["startSeconds"], s["endSeconds"]] for s in expected["segments"] if s["channel"] == channel
            ]
        silences = await view.eval_on_selector_all(
            '[data-lane="silence"] .span',
            "nodes => nodes.map(n => Number(n.dataset.end) - Number(n.dataset.start))",
        )
        assert len(silences) == expected["longSilences"]["count"]
        assert sum(silences) == pytest.approx(expected["longSilences"]["totalSeconds"], abs=0.05)
        overtalk = await view.eval_on_selector_all(
            '[data-lane="overtalk"] .span',
            "nodes => nodes.map(n => Number(n.dataset.end) - Number(n.dataset.start))",
        )
        assert sum(overtalk) == pytest.approx(expected["overtalkSeconds"], abs=0.05)
        # no model on this server: the how-to line, not a blank
        how_to = await view.wait_for_selector("#how-to", timeout=WAIT_MS)
        assert "CTE1_ASR_MODEL" in await how_to.inner_text()
        assert "cte1-mcp models" in await how_to.inner_text()
        # the customer only, from a customer's turn far from anything fetched yet: a clip of that
        # channel starting there is asked for, and it plays
        await view.select_option("#channel", "0")
        turn = next(s for s in expected["segments"] if s["channel"] == 0 and s["startSeconds"] > 150)
        before = len(calls)
        await view.click(
            f'[data-lane="ch0"] .span[data-start="{turn["startSeconds"]}"]', position={"x": 1, "y": 4}
        )
        await view.wait_for_function("() => !document.querySelector('#audio').paused", timeout=WAIT_MS)
        clips = [c["arguments"] for c in calls[before:] if c["name"] == "get_call_clip"]
        playing = await view.evaluate("({start: window.review.clip.start, end: window.review.clip.end})")
        asked = next(c for c in clips if c["startSeconds"] == playing["start"])
        assert asked["channel"] == "0"
        assert asked["endSeconds"] == playing["end"]
        assert asked["endSeconds"] - asked["startSeconds"] <= 20  # bounded clips, never the whole call
        # the click landed at the turn's start (to the pixel: the track is ~800 px for 280 s)
        assert playing["start"] == pytest.approx(turn["startSeconds"], abs=0.5)
        # and the next clip is fetched ahead while this one plays
        await until(lambda: any(c["arguments"]["startSeconds"] == playing["end"] for c in calls[before:]))
        start = await view.evaluate("document.querySelector('#audio').currentTime")
        await view.wait_for_function(
            f"() => document.querySelector('#audio').currentTime > {start} + 0.5", timeout=WAIT_MS
        )
        position = await view.evaluate("window.review.position")
        assert turn["startSeconds"] - 0.5 <= position <= expected["durationSeconds"]
        # the keyboard: space pauses, the right arrow moves 5 s on, space plays again
        await view.focus("#timeline")
        await page.keyboard.press(" ")
        await view.wait_for_function("() => document.querySelector('#audio').paused", timeout=WAIT_MS)
        paused_at = await view.evaluate("window.review.position")
        await page.keyboard.press("ArrowRight")
        await view.wait_for_function(f"() => window.review.position >= {paused_at} + 4.9", timeout=WAIT_MS)
        assert await view.get_attribute("#timeline", "aria-valuetext") is not None
        await page.keyboard.press(" ")
        await view.wait_for_function("() => !document.querySelector('#audio').paused", timeout=WAIT_MS)
        # speed
        await view.click('[data-speed="2"]')
        assert await view.evaluate("document.querySelector('#audio').playbackRate") == 2
        await page.keyboard.press(" ")
        # the view runs under the spec's default CSP (here it could reach its own origin otherwise)
        assert await view.evaluate("fetch('/tools').then(() => 'fetched', () => 'blocked')") == "blocked"
        # nothing left loopback: the page, its API, the sandbox and the view's own data: audio only
        assert all(
            u.startswith(("http://127.0.0.1:", "http://localhost:", "data:", "about:")) for u in requested
        )
        if transport == "stdio":  # the committed screenshots are the transcript test's
            await screenshots(page, view, tmp_path, at=96)


async def screenshots(page: Page, view: Frame, directory: Path, *, at: float) -> None:
    """The view as a reviewer sees it at ``at`` seconds, light, dark (the host's theme, changed
    live) and 360 px."""
    directory.mkdir(parents=True, exist_ok=True)
    await view.evaluate("document.querySelector('#audio').pause()")
    await view.evaluate(f"window.review.seek({at}, false)")
    await page.screenshot(path=str(directory / "review-light.png"), full_page=True)
    # the host's background variable (a light-dark() pair) is used, on the side the theme says
    assert await view.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(254, 254, 254)"
    await page.evaluate("window.harness.setTheme('dark')")
    await view.wait_for_function("() => document.documentElement.dataset.theme === 'dark'", timeout=WAIT_MS)
    background = await view.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(16, 16, 16)"
    await page.screenshot(path=str(directory / "review-dark.png"), full_page=True)
    await page.evaluate("window.harness.setTheme('light')")
    await page.set_viewport_size({"width": 360, "height": 900})
    await view.wait_for_function("() => document.documentElement.scrollWidth <= 360", timeout=WAIT_MS)
    # the view told the host its new height (ui/notifications/size-changed) and the host applied it
    height = await view.evaluate("document.body.scrollHeight")
    await page.wait_for_function(f"document.querySelector('#app').clientHeight >= {height}", timeout=WAIT_MS)
    for frame in (page, view):  # both documents laid out and painted at the new size
        await frame.evaluate("new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    await page.screenshot(path=str(directory / "review-narrow.png"), full_page=True)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_server_error_is_shown_in_the_servers_words(
    transport: Literal["stdio", "http"], env: dict[str, str], page_html: str
) -> None:
    async with review(transport, env, page_html, IN_PROGRESS) as (page, view, _calls, _requested):
        await view.wait_for_selector("#error:not([hidden])", timeout=WAIT_MS)
        await view.wait_for_function(
            "() => document.querySelector('#error').innerText.startsWith('[call_in_progress]')",
            timeout=WAIT_MS,
        )
        shown = await view.inner_text("#error")
        said = await page.evaluate("window.harness.reviewResult.content[0].text")
        assert shown == said
        assert "未完了の通話" in shown
        assert await view.is_hidden("#review")
        assert await view.is_hidden("#loading")


def test_the_committed_view_is_a_fresh_build(tmp_path: Path) -> None:
    """``make ui`` was run after the last change to ui/: the served file is what the sources build."""
    from tests.browser_host import build

    build("--out", str(tmp_path / "review.html"))
    committed = ROOT / "server" / "cte1_mcp" / "app" / "review.html"
    assert (tmp_path / "review.html").read_bytes() == committed.read_bytes(), "run make ui"
    size = committed.stat().st_size
    assert size < 300 * 1024
    html = committed.read_text(encoding="utf-8")
    for remote in ("http://", "https://", "//cdn", "@import", "<link"):
        assert remote not in html, remote


async def test_a_mono_call_has_one_lane_and_no_party_choice(env: dict[str, str], page_html: str) -> None:
    async with connected("stdio", env, apps=False) as client:
        expected = structured(await client.call_tool("get_call_analytics", {**SMALL, "timeline": False}))
    async with review("stdio", env, page_html, SMALL) as (page, view, calls, _requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        lanes = await view.eval_on_selector_all(".lane", "nodes => nodes.map(n => n.dataset.lane)")
        assert lanes == ["ch0", "silence"]  # one party ("mixed"), no overtalk on a mono recording
        drawn = await view.eval_on_selector_all(
            '[data-lane="ch0"] .span',
            "nodes => nodes.map(n => [Number(n.dataset.start), Number(n.dataset.end)])",
        )
        assert drawn == [[s["startSeconds"], s["endSeconds"]] for s in expected["analytics"]["segments"]]
        assert await view.eval_on_selector_all("#channel option", "nodes => nodes.map(n => n.value)") == [
            "mix"
        ]
        # the keyboard from the start: space plays the mix from 0:00; the left arrow stays at 0
        await view.focus("#timeline")
        await page.keyboard.press("ArrowLeft")
        assert await view.evaluate("window.review.position") == 0
        await page.keyboard.press(" ")
        await view.wait_for_function("() => !document.querySelector('#audio').paused", timeout=WAIT_MS)
        [clip] = [c["arguments"] for c in calls if c["name"] == "get_call_clip"][:1]
        assert (clip["startSeconds"], clip["channel"]) == (0, "mix")
        assert clip["endSeconds"] == pytest.approx(
            min(20, expected["analytics"]["durationSeconds"]), abs=0.01
        )


async def test_clips_over_the_inline_limit_come_as_resources_read_through_the_host(
    simulator: Any, tmp_path: Path, page_html: str
) -> None:
    env = server_env(
        simulator.url,
        tmp_path / "cache",
        CTE1_CHANNEL_ROLES="customer,agent",
        CTE1_INLINE_AUDIO_MAX_BYTES="0",
    )
    async with review("http", env, page_html, EXAMPLE) as (page, view, calls, _requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        await view.focus("#timeline")
        await page.keyboard.press(" ")
        await view.wait_for_function("() => !document.querySelector('#audio').paused", timeout=WAIT_MS)
        await view.wait_for_function(
            "() => document.querySelector('#audio').currentTime > 0.5", timeout=WAIT_MS
        )
        assert await page.evaluate("window.harness.resourceReads") >= 1
        assert await view.evaluate(
            "document.querySelector('#audio').src.startsWith('data:audio/wav;base64,')"
        )
        assert any(c["name"] == "get_call_clip" for c in calls)


async def test_a_thirty_minute_call_draws_every_segment_and_plays_any_point_in_bounded_clips(
    env: dict[str, str], page_html: str
) -> None:
    """The simulator's benchmark call of 56 MiB: 30.6 minutes, more talk segments than a tool
    result carries (500): the view reads the analytics resource through the host for the rest."""
    from mcp_types import TextResourceContents

    from cte1_mcp.simulator.calls import BENCHMARK_TENANT

    long_call = {"tenantId": BENCHMARK_TENANT, "sessionId": 56, "recordId": 1}
    async with connected("http", env, apps=False) as client:
        read = await client.read_resource(f"cte1://calls/{BENCHMARK_TENANT}/56/1/analytics")
    [contents] = read.contents
    assert isinstance(contents, TextResourceContents)
    whole = json.loads(contents.text)
    assert len(whole["segments"]) > 500
    async with review("http", env, page_html, long_call) as (_page, view, calls, _requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        await view.wait_for_function(
            f'() => document.querySelectorAll(\'[data-lane="ch0"] .span, [data-lane="ch1"] .span\').length'
            f" === {len(whole['segments'])}",
            timeout=WAIT_MS,
        )
        for channel in (0, 1):
            drawn = await view.eval_on_selector_all(
                f'[data-lane="ch{channel}"] .span',
                "nodes => nodes.map(n => [Number(n.dataset.start), Number(n.dataset.end)])",
            )
            assert drawn == [
                [s["startSeconds"], s["endSeconds"]] for s in whole["segments"] if s["channel"] == channel
            ]
        # near the end of the call: one bounded clip from there, not the call
        await view.evaluate("window.review.seek(1800, true)")
        await view.wait_for_function(
            "() => document.querySelector('#audio').currentTime > 0.5", timeout=WAIT_MS
        )
        clips = [c["arguments"] for c in calls if c["name"] == "get_call_clip"]
        assert clips
        assert all(c["endSeconds"] - c["startSeconds"] <= 20 for c in clips)
        assert any(c["startSeconds"] == 1800 for c in clips)
        assert (await view.inner_text("#now")).startswith("30:0")


#: How the view names each party (its own words, as ui/src/lanes.js has them).
PARTY_LABELS = {"customer": "顧客", "agent": "オペレーター"}


@pytest.fixture(scope="module")
async def transcribed(
    _shared_simulator: Any, whisper_base_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], dict[str, Any]]:
    """A call of real Japanese speech (the corpus's, served once by the simulator as SMALL's
    recording) transcribed once by Whisper-base through a real client: the servers of this module's
    transcript tests share its cache, so they find the recording and the transcript stored."""
    serve_corpus_call(_shared_simulator)
    env = server_env(
        _shared_simulator.url,
        tmp_path_factory.mktemp("transcribed") / "cache",
        CTE1_CHANNEL_ROLES="customer,agent",
        CTE1_ASR_MODEL=str(whisper_base_dir),
        CTE1_ASR_THREADS="2",
    )
    async with connected("stdio", env, apps=False) as client:
        transcript: dict[str, Any] = structured(await client.call_tool("get_call_transcript", SMALL))[
            "transcript"
        ]
    assert not transcript["shortened"] and len(transcript["sentenceList"]) >= 4
    return env, transcript


def clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_the_transcript_is_listed_and_a_clicked_sentence_plays_and_follows_the_playhead(
    transport: Literal["stdio", "http"],
    transcribed: tuple[dict[str, str], dict[str, Any]],
    simulator: Any,
    page_html: str,
    tmp_path: Path,
) -> None:
    env, transcript = transcribed
    sentences = transcript["sentenceList"]
    async with review(transport, env, page_html, SMALL) as (page, view, calls, _requested):
        await view.wait_for_selector(".sentence", timeout=WAIT_MS)
        # every sentence of get_call_transcript, in order, with its speaker, its time and its words
        listed = await view.eval_on_selector_all(
            ".sentence",
            "nodes => nodes.map(n => [Number(n.dataset.start), n.querySelector('.who').innerText,"
            " n.querySelector('.when').innerText, n.querySelector('.text').innerText])",
        )
        assert listed == [
            [
                s["startOffsetMs"] / 1000,
                PARTY_LABELS[s["speaker"]],
                clock(s["startOffsetMs"] / 1000),
                s["text"],
            ]
            for s in sentences
        ]
        # a sentence that the next one follows closely (a turn change): clicked, its party's channel
        # is asked for from its start, and it plays
        index = next(
            i
            for i, (s, after) in enumerate(pairwise(sentences))
            if i > 0 and after["startOffsetMs"] - s["endOffsetMs"] < 1000 and s["channel"] != after["channel"]
        )
        sentence, following = sentences[index], sentences[index + 1]
        await view.evaluate(
            """() => {
                window.samples = [];
                document.querySelector('#audio').addEventListener('timeupdate', () => {
                    const current = document.querySelectorAll('.sentence.current');
                    const marked = document.querySelectorAll('.sentence[aria-current="true"]');
                    window.samples.push([window.review.position, [...current].map(n => Number(n.dataset.sequence)),
                                         [...marked].map(n => Number(n.dataset.sequence))]);
                });
            }"""
        )
        before = len(calls)
        await view.click(f'.sentence[data-sequence="{sentence["sequence"]}"]')
        await view.wait_for_function("() => !document.querySelector('#audio').paused", timeout=WAIT_MS)
        [clip] = [c["arguments"] for c in calls[before:] if c["name"] == "get_call_clip"]
        assert clip["startSeconds"] == pytest.approx(sentence["startOffsetMs"] / 1000, abs=0.001)
        assert clip["channel"] == str(sentence["channel"])
        assert await view.input_value("#channel") == str(sentence["channel"])  # the choice shows it
        start = await view.evaluate("document.querySelector('#audio').currentTime")
        await view.wait_for_function(
            f"() => document.querySelector('#audio').currentTime > {start} + 0.5", timeout=WAIT_MS
        )
        # the clicked sentence is the current one, then the next once the playhead passes its start
        # (a second before it, to keep the wait short whatever the sentence's length)
        following_start = following["startOffsetMs"] / 1000
        await view.evaluate(
            f"window.review.seek({max(sentence['startOffsetMs'] / 1000, following_start - 1)}, true)"
        )
        await view.wait_for_function(
            f"() => window.review.position > {following_start} + 0.3", timeout=WAIT_MS
        )
        await view.evaluate("document.querySelector('#audio').pause()")
        samples = await view.evaluate("window.samples")
        for position, current, marked in samples:
            assert current == marked  # the class and aria-current go together, on one sentence at most
            if sentence["startOffsetMs"] / 1000 <= position < following_start - 0.05:
                assert current == [sentence["sequence"]], (position, current)
            elif following_start + 0.05 <= position <= following["endOffsetMs"] / 1000:
                assert current == [following["sequence"]], (position, current)
        seen = [current for _position, current, _marked in samples if current]
        assert seen[0] == [sentence["sequence"]] and seen[-1] == [following["sequence"]]
        # the recording was the one stored with the transcript, not fetched again
        assert simulator.state.requests == []
        if transport == "stdio":  # paused in a sentence: the screenshots show it as the current one
            await screenshots(page, view, SCREENSHOTS or tmp_path, at=following_start + 0.5)


def tool_named(route: Route) -> tuple[str | None, dict[str, Any]]:
    """The tool a host-proxy request calls, and its arguments (None for other requests)."""
    if route.request.method != "POST":
        return None, {}
    params = json.loads(route.request.post_data or "{}")
    return params.get("name"), params.get("arguments") or {}


async def test_the_view_says_it_is_loading_until_review_call_answers(
    env: dict[str, str], page_html: str
) -> None:
    """A first review analyses the call (seconds, minutes for a long one): the view is not blank."""
    release = anyio.Event()

    async def hold_review(route: Route) -> None:
        if tool_named(route)[0] == "review_call":
            await release.wait()
        await route.continue_()

    async with review("stdio", env, page_html, EXAMPLE, routes={"**/tool": hold_review}) as (
        _page,
        view,
        _calls,
        _requested,
    ):
        await view.wait_for_selector("#loading", state="visible", timeout=WAIT_MS)
        assert await view.inner_text("#loading") == "通話を読み込み中…"
        assert await view.is_hidden("#review") and await view.is_hidden("#error")
        release.set()
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        assert await view.is_hidden("#loading")


LINE = "お客様のご契約内容を確認いたしますので少々お待ちください"


async def test_a_shortened_transcript_is_listed_whole_from_its_resource(
    simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """2,400 sentences: get_call_transcript's result holds the first ~180 (its size bound); the view
    reads the transcript resource through the host and lists every sentence."""
    cache = tmp_path / "cache"
    sentences = [(1 + i % 2, i * 0.008, i * 0.008 + 0.006, f"{i} {LINE}") for i in range(2400)]
    await push_transcript(simulator.url, cache, SMALL, sentences, channel_roles=("customer", "agent"))
    env = server_env(simulator.url, cache, CTE1_CHANNEL_ROLES="customer,agent")
    async with review("stdio", env, page_html, SMALL) as (page, view, _calls, _requested):
        await view.wait_for_function(
            "() => document.querySelectorAll('.sentence').length === 2400", timeout=WAIT_MS
        )
        listed = await view.eval_on_selector_all(
            ".sentence", "nodes => nodes.map(n => n.querySelector('.text').innerText)"
        )
        assert listed == [said for *_, said in sentences]
        assert await page.evaluate("window.harness.resourceReads") >= 1
        assert await view.query_selector("#transcript-shortened") is None


async def test_a_shortened_transcript_whose_resource_cannot_be_read_says_where_the_rest_is(
    simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """The first sentence alone is over get_call_transcript's size bound (the result holds none):
    when the host does not pass resources/read through, the view says the transcript is shortened
    and where it is, not that nobody spoke; once the read works, every sentence is listed."""
    cache = tmp_path / "cache"
    long = "あ" * 60_000
    await push_transcript(
        simulator.url,
        cache,
        SMALL,
        [(2, 1.0, 3.0, long), (1, 4.0, 5.0, "はい")],
        channel_roles=("customer", "agent"),
    )
    env = server_env(simulator.url, cache, CTE1_CHANNEL_ROLES="customer,agent")
    refuse = True

    async def refuse_reads(route: Route) -> None:
        if refuse:
            await route.fulfill(status=403, body="resources/read is not allowed")
        else:
            await route.continue_()

    uri = f"cte1://calls/{SMALL['tenantId']}/{SMALL['sessionId']}/{SMALL['recordId']}/transcript"
    async with review("stdio", env, page_html, SMALL, routes={"**/read?*": refuse_reads}) as (
        _page,
        view,
        _calls,
        _requested,
    ):
        note = await view.wait_for_selector("#transcript-shortened", timeout=WAIT_MS)
        said = await note.inner_text()
        assert "一部のみ" in said and uri in said and "403" in said
        assert "発話はありません" not in await view.inner_text("#transcript")
        refuse = False
        await view.evaluate("() => { window.review.loadTranscript(); }")
        await view.wait_for_function(
            "() => document.querySelectorAll('.sentence').length === 2", timeout=WAIT_MS
        )
        texts = await view.eval_on_selector_all(".sentence .text", "nodes => nodes.map(n => n.innerText)")
        assert texts == [long, "はい"]
        assert await view.query_selector("#transcript-shortened") is None


async def test_a_host_failure_of_the_transcript_call_is_said_as_such(
    simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """The host fails get_call_transcript (a timeout, a refusal): the view says the transcript could
    not be loaded and why, not that transcripts are not enabled; retrying loads it."""
    cache = tmp_path / "cache"
    await push_transcript(
        simulator.url,
        cache,
        SMALL,
        [(2, 1.0, 3.0, "お電話ありがとうございます"), (1, 4.0, 5.0, "はい")],
        channel_roles=("customer", "agent"),
    )
    env = server_env(simulator.url, cache, CTE1_CHANNEL_ROLES="customer,agent")
    fail = True

    async def time_out(route: Route) -> None:
        if fail and tool_named(route)[0] == "get_call_transcript":
            await route.fulfill(status=504, body="upstream request timed out")
        else:
            await route.continue_()

    async with review("stdio", env, page_html, SMALL, routes={"**/tool": time_out}) as (
        _page,
        view,
        _calls,
        _requested,
    ):
        error = await view.wait_for_selector("#transcript-error", timeout=WAIT_MS)
        said = await error.inner_text()
        assert "読み込めませんでした" in said and "504 upstream request timed out" in said
        assert "CTE1_ASR_MODEL" not in await view.inner_text("#transcript")
        assert await view.query_selector("#how-to") is None
        fail = False
        await view.click("#transcript button")
        await view.wait_for_function(
            "() => document.querySelectorAll('.sentence').length === 2", timeout=WAIT_MS
        )


async def test_a_configured_model_that_does_not_load_is_named_in_the_view(
    simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """[transcription_unavailable] has more than one cause: the view shows the server's own words
    (here: the configured model does not load), with the next step."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        (model / name).write_text("{}")
    env = server_env(
        simulator.url, tmp_path / "cache", CTE1_CHANNEL_ROLES="customer,agent", CTE1_ASR_MODEL=str(model)
    )
    async with connected("stdio", env, apps=False) as client:
        result = await client.call_tool("get_call_transcript", EXAMPLE)
    reason = text(result)
    assert "does not load" in reason
    async with review("stdio", env, page_html, EXAMPLE) as (_page, view, _calls, _requested):
        shown = await (await view.wait_for_selector("#how-to", timeout=WAIT_MS)).inner_text()
    assert shown == reason
    assert "not set" not in shown


async def test_only_the_latest_seek_installs_its_clip(env: dict[str, str], page_html: str) -> None:
    """Two quick seeks whose clips come back in the other order: the one asked for last plays."""
    asked = anyio.Event()
    release = anyio.Event()

    async def slow_first_clip(route: Route) -> None:
        name, arguments = tool_named(route)
        if name == "get_call_clip" and arguments["startSeconds"] == 60:
            asked.set()
            await release.wait()
        await route.continue_()

    async with review("stdio", env, page_html, EXAMPLE, routes={"**/tool": slow_first_clip}) as (
        _page,
        view,
        _calls,
        _requested,
    ):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        await view.evaluate("() => { window.review.seek(60, true); }")
        await asked.wait()
        await view.evaluate("() => { window.review.seek(200, true); }")
        await view.wait_for_function(
            "() => window.review.clip?.start === 200 && !document.querySelector('#audio').paused",
            timeout=WAIT_MS,
        )
        release.set()
        # the first seek's clip arrives now: once the view has handled it, the second still plays
        state = await view.evaluate(
            """async () => {
                await window.review.clips.get('mix@60');
                await new Promise((done) => setTimeout(done));
                return [window.review.clip.start, document.querySelector('#audio').paused, window.review.position];
            }"""
        )
    assert state[0] == 200 and state[1] is False and state[2] >= 200


async def test_clips_fit_the_servers_clip_limit(simulator: Any, tmp_path: Path, page_html: str) -> None:
    """CTE1_CLIP_MAX_SECONDS under the view's 20 s: review_call says the limit, the clips fit it."""
    env = server_env(
        simulator.url, tmp_path / "cache", CTE1_CHANNEL_ROLES="customer,agent", CTE1_CLIP_MAX_SECONDS="10"
    )
    async with review("stdio", env, page_html, EXAMPLE) as (_page, view, calls, _requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        await view.click("#play")
        await view.wait_for_function("() => !document.querySelector('#audio').paused", timeout=WAIT_MS)
        assert await view.inner_text("#status") == ""
        clips = [c["arguments"] for c in calls if c["name"] == "get_call_clip"]
    assert clips[0]["startSeconds"] == 0
    assert all(9.9 < c["endSeconds"] - c["startSeconds"] <= 10 for c in clips)


async def test_play_at_the_end_of_the_call_plays_it_from_the_start(
    env: dict[str, str], page_html: str
) -> None:
    async with review("stdio", env, page_html, EXAMPLE) as (_page, view, calls, _requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        await view.evaluate(
            "() => { window.review.seek(window.review.analytics.durationSeconds - 1, true); }"
        )
        await view.wait_for_function("() => document.querySelector('#audio').ended", timeout=WAIT_MS)
        before = len(calls)
        await view.click("#play")
        await view.wait_for_function(
            "() => window.review.clip.start === 0 && !document.querySelector('#audio').paused",
            timeout=WAIT_MS,
        )
        assert await view.evaluate("window.review.position") < 20
        clip = next(c["arguments"] for c in calls[before:] if c["name"] == "get_call_clip")
    assert clip["startSeconds"] == 0


async def test_sentences_without_a_channel_take_their_partys_colour(
    simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """Pushed without CTE1_CHANNEL_ROLES, sentences have no channel: each is coloured by its party
    (CT-e1's speakerId), not all in channel 0's colour."""
    cache = tmp_path / "cache"
    await push_transcript(
        simulator.url, cache, EXAMPLE, [(2, 1.0, 3.0, "お電話ありがとうございます"), (1, 4.0, 6.0, "はい")]
    )
    env = server_env(simulator.url, cache)
    async with review("stdio", env, page_html, EXAMPLE) as (_page, view, _calls, _requested):
        await view.wait_for_selector(".sentence", timeout=WAIT_MS)
        colours = await view.eval_on_selector_all(
            ".sentence .who", "nodes => nodes.map(n => [n.innerText, getComputedStyle(n).color])"
        )
    # the view's light --agent (#0969da) and --customer (#1a7f37)
    assert colours == [["オペレーター", "rgb(9, 105, 218)"], ["顧客", "rgb(26, 127, 55)"]]


async def test_a_long_token_wraps_in_a_narrow_frame(simulator: Any, tmp_path: Path, page_html: str) -> None:
    cache = tmp_path / "cache"
    token = "https://support.example.co.jp/contracts/" + "A1B2C3D4E5" * 6
    await push_transcript(
        simulator.url,
        cache,
        SMALL,
        [(2, 1.0, 3.0, f"URLは{token}です"), (1, 4.0, 5.0, "はい")],
        channel_roles=("customer", "agent"),
    )
    env = server_env(simulator.url, cache, CTE1_CHANNEL_ROLES="customer,agent")
    async with review("stdio", env, page_html, SMALL, width=360) as (_page, view, _calls, _requested):
        await view.wait_for_selector(".sentence", timeout=WAIT_MS)
        overflowing = await view.eval_on_selector_all(
            ".sentences, .sentence, .sentence .text",
            "nodes => nodes.filter(n => n.scrollWidth > n.clientWidth).length",
        )
        assert overflowing == 0
        assert token in (await view.inner_text(".sentence .text")).replace("\n", "")


@pytest.mark.parametrize(
    ("given", "dimensions"),
    [("connect", {"height": 400, "maxWidth": 800}), ("changed", {"maxHeight": 400, "maxWidth": 800})],
)
async def test_a_host_height_is_kept_to_and_the_transcript_scrolls_in_its_own_box(
    given: str, dimensions: dict[str, int], simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """A host that gives the view a height (containerDimensions' height or maxHeight, at connect or
    in host-context-changed): the document does not scroll, header, controls and timeline stay in
    view, the long transcript scrolls in its list, and the followed sentence is kept in view there."""
    cache = tmp_path / "cache"
    sentences = [(1 + i % 2, i * 0.3, i * 0.3 + 0.25, f"{i} {LINE}") for i in range(60)]
    await push_transcript(simulator.url, cache, SMALL, sentences, channel_roles=("customer", "agent"))
    env = server_env(simulator.url, cache, CTE1_CHANNEL_ROLES="customer,agent")
    at_connect = dimensions if given == "connect" else None
    async with review("stdio", env, page_html, SMALL, dimensions=at_connect) as (
        page,
        view,
        _calls,
        _requested,
    ):
        await view.wait_for_function(
            "() => document.querySelectorAll('.sentence').length === 60", timeout=WAIT_MS
        )
        if given == "changed":
            # without containerDimensions the view grows with its content, as before
            await page.wait_for_function("document.querySelector('#app').clientHeight > 500", timeout=WAIT_MS)
            assert await view.evaluate("document.documentElement.scrollHeight") > 500
            await page.evaluate(
                f"window.harness.setHostContext({{containerDimensions: {json.dumps(dimensions)}}})"
            )
        # the view reports the height it keeps to, and the host's frame takes it
        await page.wait_for_function("document.querySelector('#app').clientHeight === 400", timeout=WAIT_MS)
        sizes = await page.evaluate("window.harness.log.filter(entry => entry[0] === 'size')")
        assert sizes[-1] == ["size", 400]
        assert await view.evaluate("document.documentElement.scrollHeight") <= 402
        assert await view.evaluate("document.documentElement.clientHeight") == 400
        bottoms = await view.eval_on_selector_all(
            "header, .controls, #timeline", "nodes => nodes.map(n => n.getBoundingClientRect().bottom)"
        )
        assert all(0 < bottom <= 400 for bottom in bottoms), bottoms
        box = await view.evaluate(
            "(() => { const l = document.querySelector('.sentences'); const r = l.getBoundingClientRect();"
            " return {top: r.top, bottom: r.bottom, client: l.clientHeight, scroll: l.scrollHeight}; })()"
        )
        assert box["bottom"] <= 400 and box["client"] >= 60  # the list takes the height left
        assert box["scroll"] > box["client"]  # and scrolls in its own box
        # the playhead at a late sentence (paused: it stays the current one): it is shown in the
        # list, which scrolled to it; the page does not move
        late = 55
        await view.evaluate(f"window.review.seek({sentences[late][1] + 0.05}, false)")
        await view.wait_for_selector(f'.sentence.current[data-sequence="{late + 1}"]', timeout=WAIT_MS)
        shown = await view.evaluate(
            """(() => {
                const l = document.querySelector('.sentences').getBoundingClientRect();
                const n = document.querySelector('.sentence.current').getBoundingClientRect();
                return {list: [l.top, l.bottom], node: [n.top, n.bottom],
                        scrolled: document.querySelector('.sentences').scrollTop,
                        page: document.scrollingElement.scrollTop};
            })()"""
        )
        assert shown["list"][0] - 1 <= shown["node"][0] and shown["node"][1] <= shown["list"][1] + 1, shown
        assert shown["scrolled"] > 0 and shown["page"] == 0, shown
        assert await view.evaluate("document.querySelector('#play').getBoundingClientRect().bottom") <= 400


#: The view's layout in its frame: how wide its body is, the furthest right any element reaches,
#: which boxes overflow sideways, whether its narrow layout is on (a sentence's text under its
#: speaker), and the timeline's tracks and spans.
LAYOUT = """() => {
    const boxes = [...document.body.querySelectorAll('*')].map(n => n.getBoundingClientRect()).filter(r => r.width > 0);
    const who = document.querySelector('.sentence .who').getBoundingClientRect();
    const said = document.querySelector('.sentence .text').getBoundingClientRect();
    const tracks = [...document.querySelectorAll('.track')].map(n => n.getBoundingClientRect());
    return {
        body: document.body.getBoundingClientRect().width,
        right: Math.max(...boxes.map(r => r.right)),
        overflowing: [...document.querySelectorAll(
            'main, #review, header, dl, .controls, #timeline, .lane, .track, .sentences, .sentence, .sentence .text'
        )].filter(n => n.scrollWidth > n.clientWidth).map(n => n.id || n.className),
        narrow: said.top >= who.bottom,
        tracks: tracks.map(r => [r.left, r.right]),
        spans: Math.max(...[...document.querySelectorAll('.span')].map(n => n.getBoundingClientRect().right)),
    };
}"""


@pytest.mark.parametrize(
    ("given", "dimensions", "narrow"),
    [("connect", {"width": 360}, True), ("changed", {"maxWidth": 600}, False)],
)
async def test_a_host_width_is_laid_out_to_in_a_wider_frame(
    given: str, dimensions: dict[str, int], narrow: bool, simulator: Any, tmp_path: Path, page_html: str
) -> None:
    """containerDimensions' width (fixed) or maxWidth, in a 900 px frame: the view lays out to that
    width (at 360 px its narrow layout), nothing runs out of it, the timeline's tracks and the
    transcript fit inside it, and size-changed reports it; a maxWidth over the frame's width fills
    the frame, as without one."""
    cache = tmp_path / "cache"
    token = "https://support.example.co.jp/contracts/" + "A1B2C3D4E5" * 6
    sentences = [
        (2, 1.0, 3.0, f"URLは{token}です"),
        *[(1 + i % 2, 4.0 + i, 4.8 + i, f"{i} {LINE}") for i in range(6)],
    ]
    await push_transcript(simulator.url, cache, SMALL, sentences, channel_roles=("customer", "agent"))
    env = server_env(simulator.url, cache, CTE1_CHANNEL_ROLES="customer,agent")
    width = dimensions.get("width") or dimensions["maxWidth"]
    async with review(
        "stdio", env, page_html, SMALL, dimensions=dimensions if given == "connect" else None
    ) as (page, view, _calls, _requested):
        await view.wait_for_function(
            "() => document.querySelectorAll('.sentence').length === 7", timeout=WAIT_MS
        )
        if given == "changed":
            assert (await view.evaluate(LAYOUT))["body"] == 900  # without a width it fills the frame
            await page.evaluate(
                f"window.harness.setHostContext({{containerDimensions: {json.dumps(dimensions)}}})"
            )
        await view.wait_for_function(
            f"() => document.body.getBoundingClientRect().width === {width}", timeout=WAIT_MS
        )
        layout = await view.evaluate(LAYOUT)
        assert layout["right"] <= width, layout
        assert layout["overflowing"] == [], layout
        assert layout["narrow"] is narrow, layout
        # every lane's track ends inside the view's padding, its spans inside it
        assert all(0 < left < right <= width - 12 for left, right in layout["tracks"]), layout
        assert layout["spans"] <= max(right for _left, right in layout["tracks"]) + 0.5, layout
        assert token in (await view.inner_text(".sentence .text")).replace("\n", "")
        await page.wait_for_function(
            f"window.harness.sizes.length && window.harness.sizes.at(-1).width === {width}", timeout=WAIT_MS
        )
        if given == "changed":
            await page.evaluate("window.harness.setHostContext({containerDimensions: {maxWidth: 1200}})")
            await view.wait_for_function(
                "() => document.body.getBoundingClientRect().width === 900", timeout=WAIT_MS
            )
            await page.wait_for_function("window.harness.sizes.at(-1).width === 900", timeout=WAIT_MS)
            assert (await view.evaluate(LAYOUT))["overflowing"] == []


#: The host's font faces the view has: their families (unquoted) and load states.
FACES = "() => [...document.fonts].map(f => [f.family.replace(/\"/g, ''), f.status])"
#: The <style> elements holding @font-face rules (the view's own style has none).
FONT_STYLES = (
    "() => [...document.querySelectorAll('style')].filter(s => s.textContent.includes('@font-face')).length"
)


async def test_the_hosts_fonts_are_injected_once_and_replaced(env: dict[str, str], page_html: str) -> None:
    """styles.css.fonts: its @font-face rules are injected as a style's text (never parsed as HTML),
    so the host's --font-sans resolves to its face; a later context's fonts replace them. Under the
    spec's default CSP (the view declares no resourceDomains), fonts and @import from URLs are
    blocked: only local() faces load."""
    async with review("stdio", env, page_html, SMALL) as (page, view, _calls, _requested):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        await view.evaluate(
            """() => {
                window.violations = [];
                document.addEventListener('securitypolicyviolation',
                    (event) => window.violations.push([event.effectiveDirective, event.blockedURI]));
            }"""
        )
        variables = {
            "--color-background-primary": "light-dark(#fefefe, #101010)",
            "--font-sans": '"Host Sans", sans-serif',
        }
        fonts = '@font-face { font-family: "Host Sans"; src: local("IPAMincho"); } /* </style><b id="injected">x</b> */'
        styles = {"variables": variables, "css": {"fonts": fonts}}
        await page.evaluate(f"window.harness.setHostContext({{styles: {json.dumps(styles)}}})")
        await view.wait_for_function(
            f"() => ({FACES})().some(([family]) => family === 'Host Sans')", timeout=WAIT_MS
        )
        loaded = await view.evaluate(
            "document.fonts.load('14px \"Host Sans\"').then(faces => faces.map(f => f.status))"
        )
        assert loaded == ["loaded"]
        assert (await view.evaluate("getComputedStyle(document.body).fontFamily")).startswith('"Host Sans"')
        assert await view.evaluate(FONT_STYLES) == 1
        assert await view.query_selector("#injected") is None
        # the host's fonts change: replaced, not added to
        fonts = (
            '@import url("http://127.0.0.1:9/fonts.css");'
            ' @font-face { font-family: "Host Serif"; src: local("IPAGothic"); }'
            ' @font-face { font-family: "Host Remote"; src: url("http://127.0.0.1:9/remote.woff2"); }'
        )
        styles = {
            "variables": {**variables, "--font-sans": '"Host Serif", sans-serif'},
            "css": {"fonts": fonts},
        }
        await page.evaluate(f"window.harness.setHostContext({{styles: {json.dumps(styles)}}})")
        await view.wait_for_function(
            f"() => ({FACES})().some(([family]) => family === 'Host Serif')", timeout=WAIT_MS
        )
        assert await view.evaluate(FONT_STYLES) == 1
        assert [family for family, _status in await view.evaluate(FACES)] == ["Host Serif", "Host Remote"]
        assert (
            await view.evaluate("document.fonts.load('14px \"Host Serif\"').then(faces => faces.length)") == 1
        )
        await view.evaluate("document.fonts.load('14px \"Host Remote\"').catch(() => null)")
        await view.wait_for_function("() => window.violations.length >= 2", timeout=WAIT_MS)
        violations = await view.evaluate("window.violations")
        assert ["font-src", "http://127.0.0.1:9/remote.woff2"] in violations, violations
        assert any(d.startswith("style-src") and u.endswith("/fonts.css") for d, u in violations), violations


async def test_safe_area_insets_pad_the_view_within_the_hosts_size(
    env: dict[str, str], page_html: str
) -> None:
    """safeAreaInsets: the view is padded by them, inside the host's fixed width and height (the
    document does not grow past them), and still reports that size."""
    async with review("stdio", env, page_html, SMALL, dimensions={"width": 500, "height": 400}) as (
        page,
        view,
        _calls,
        _requested,
    ):
        await view.wait_for_selector("#review:not([hidden])", timeout=WAIT_MS)
        main = "(() => { const r = document.querySelector('main').getBoundingClientRect(); return [r.left, r.top, r.right]; })()"
        assert await view.evaluate(main) == [0, 0, 500]
        insets = {"top": 20, "right": 30, "bottom": 40, "left": 10}
        await page.evaluate(f"window.harness.setHostContext({{safeAreaInsets: {json.dumps(insets)}}})")
        await view.wait_for_function(
            "() => document.querySelector('main').getBoundingClientRect().left === 10", timeout=WAIT_MS
        )
        assert await view.evaluate(main) == [10, 20, 470]
        assert await view.evaluate("document.querySelector('main').getBoundingClientRect().bottom") <= 360
        assert await view.evaluate("document.documentElement.scrollHeight") <= 400
        assert await view.evaluate("document.body.getBoundingClientRect().width") == 500
        await page.wait_for_function(
            "(s => s.width === 500 && s.height === 400)(window.harness.sizes.at(-1))", timeout=WAIT_MS
        )
