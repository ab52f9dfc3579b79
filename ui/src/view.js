// The call-review view: header, timeline lanes, transcript and playback for one call. Everything it
// shows comes from this server's tools, called through the host (review_call's result,
// get_call_transcript, get_call_clip); nothing is fetched from the network.
import { clock, lanes, partyLabel } from "./lanes.js";
import { HostConnection } from "./protocol.js";

const CLIP_SECONDS = 20; // one clip: ~320 KB of 8 kHz WAV, under the server's inline limit
const SEEK_SECONDS = 5;
// Play with less than this left restarts from the beginning (else it would play a sliver and stop).
const END_SECONDS = 0.5;
const SPEEDS = [1, 1.5, 2];

const $ = (selector) => document.querySelector(selector);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null) node.setAttribute(key, String(value));
  }
  for (const child of children) node.append(child);
  return node;
};

class Review {
  constructor(host) {
    this.host = host;
    this.args = null;
    this.call = null;
    this.analytics = null;
    this.sentences = [];
    this.channel = "mix";
    this.speed = 1;
    this.clips = new Map(); // `${channel}@${start}` -> Promise<{start, end, url}>
    this.clip = null; // the clip in the audio element
    this.clipSeconds = CLIP_SECONDS;
    this.wanted = 0; // counts clip requests: only the latest one may install its clip
    this.transcriptRequest = 0; // likewise for the transcript (a retry may overtake a slow first call)
    this.position = 0;
    this.audio = $("#audio");
    this.audio.addEventListener("timeupdate", () => this.onTime());
    this.audio.addEventListener("ended", () => this.nextClip());
    this.audio.addEventListener("play", () => this.showPlaying());
    this.audio.addEventListener("pause", () => this.showPlaying());
    document.addEventListener("keydown", (event) => this.onKey(event));
  }

  // --- what the host sends -----------------------------------------------------------------

  /** The host's context, whole at connect, then its changed fields (each a whole top-level field:
   * ext-apps' AppBridge sends a changed `styles` or `containerDimensions` entire). */
  applyContext(context) {
    if (!context) return;
    const root = document.documentElement;
    if (context.theme) root.dataset.theme = context.theme;
    const variables = context.styles?.variables ?? {};
    for (const [name, value] of Object.entries(variables))
      if (value) root.style.setProperty(name, value);
    if (context.styles) hostFonts(context.styles.css?.fonts);
    if (context.locale) this.locale = context.locale;
    if (context.timeZone) this.timeZone = context.timeZone;
    if ("containerDimensions" in context) this.fit(context.containerDimensions);
    if ("safeAreaInsets" in context)
      for (const side of ["top", "right", "bottom", "left"]) {
        const inset = context.safeAreaInsets?.[side];
        if (inset > 0) root.style.setProperty(`--inset-${side}`, `${inset}px`);
        else root.style.removeProperty(`--inset-${side}`);
      }
    if ("containerDimensions" in context || "safeAreaInsets" in context) this.reportSize();
    if (this.call) this.renderHeader();
  }

  /** A host's fixed height or maxHeight: the view keeps to it, its transcript list scrolling in its
   * own box (header, controls and timeline stay in view). Without one the view grows with its
   * content and tells the host its height. A host's fixed width or maxWidth: the view lays out to
   * it (or within it) in a wider frame too, never wider than its frame; without one it fills its
   * frame. */
  fit(dimensions) {
    bound("fit", "--fit-height", "height", dimensions?.height, dimensions?.maxHeight);
    bound("fitWidth", "--fit-width", "width", dimensions?.width, dimensions?.maxWidth);
  }

  /** ui/notifications/size-changed with the size the view takes (safe-area insets included): its
   * content's height, or within a host's height or maxHeight, the height it keeps to; the frame's
   * width, or within a host's width or maxWidth, the width it lays out to. */
  reportSize() {
    const root = document.documentElement;
    const body = document.body.getBoundingClientRect();
    const height = root.dataset.fit ? Math.ceil(body.height) : root.scrollHeight;
    const width = root.dataset.fitWidth ? Math.ceil(body.width) : root.scrollWidth;
    this.host.notify("ui/notifications/size-changed", { width, height });
  }

  onToolInput(params) {
    this.args = params.arguments ?? null;
  }

  onToolResult(result) {
    if (result.isError || !result.structuredContent) {
      this.showError(textOf(result) || "The server returned no result.");
      return;
    }
    const data = result.structuredContent;
    this.call = data.call;
    this.analytics = data.analytics;
    this.args = this.args ?? { tenantId: data.call.tenantId, sessionId: data.call.sessionId, recordId: data.call.recordId };
    // clips no longer than the server cuts (CTE1_CLIP_MAX_SECONDS); a ms under it, as the server
    // compares end - start in floating point
    if (data.clipMaxSeconds > 0) this.clipSeconds = Math.min(CLIP_SECONDS, data.clipMaxSeconds - 0.001);
    $("#loading").hidden = true;
    $("#error").hidden = true;
    $("#review").hidden = false;
    this.renderHeader();
    this.renderTimeline();
    this.loadTranscript();
    if (data.analytics.segmentsTruncated && data.analyticsUri) this.loadAllSegments(data.analyticsUri);
  }

  /** A tool result carries the first 500 talk segments; the analytics resource has them all. */
  async loadAllSegments(uri) {
    try {
      this.analytics = await this.readJson(uri);
      this.renderTimeline();
    } catch (error) {
      $("#status").textContent = `タイムラインは最初の${this.analytics.segments.length}区間のみ表示: ${error.message}`;
    }
  }

  // --- rendering ---------------------------------------------------------------------------

  showError(message) {
    $("#loading").hidden = true;
    $("#review").hidden = true;
    const box = $("#error");
    box.hidden = false;
    box.textContent = message;
  }

  renderHeader() {
    const call = this.call;
    const when = call.connectTime ? new Date(call.connectTime) : null;
    const started = when
      ? new Intl.DateTimeFormat(this.locale || undefined, {
          dateStyle: "medium",
          timeStyle: "medium",
          timeZone: this.timeZone || undefined,
        }).format(when)
      : "—";
    const direction = { inbound: "着信", outbound: "発信" }[call.directionLabel] ?? "—";
    const rows = [
      ["方向", direction],
      [call.directionLabel === "outbound" ? "発信元" : "顧客番号", call.ani ?? "—"],
      [call.directionLabel === "outbound" ? "発信先" : "着信番号", call.dnis ?? "—"],
      ["オペレーター", call.agentName || call.agentId || "—"],
      ["スキル", call.skillName || "—"],
      ["開始", started],
      ["通話時間", call.durationSeconds != null ? clock(call.durationSeconds) : "—"],
    ];
    const list = $("#meta");
    list.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    $("#title").textContent = `通話 ${call.tenantId} / ${call.sessionId} / ${call.recordId}`;
  }

  renderTimeline() {
    const duration = this.analytics.durationSeconds;
    const lanesBox = $("#lanes");
    lanesBox.replaceChildren();
    for (const lane of lanes(this.analytics)) {
      const track = el("div", {
        class: "track",
        onclick: (event) => {
          const box = track.getBoundingClientRect();
          this.seek(((event.clientX - box.left) / box.width) * duration, true);
        },
      });
      for (const [start, end] of lane.spans) {
        track.append(
          el("div", {
            class: `span ${lane.key}`,
            "data-start": start,
            "data-end": end,
            title: `${lane.label} ${clock(start)}–${clock(end)}`,
            style: `left:${(start / duration) * 100}%;width:${Math.max(((end - start) / duration) * 100, 0.15)}%`,
          }),
        );
      }
      lanesBox.append(el("div", { class: "lane", "data-lane": lane.key }, el("span", { class: "lane-label" }, lane.label), track));
    }
    const axis = $("#axis");
    axis.replaceChildren();
    const step = [10, 15, 30, 60, 120, 300, 600].find((s) => duration / s <= 6) ?? 900;
    // a tick at the end is drawn to its left: centred on it, its label would run out of the view
    for (let t = 0; t <= duration; t += step)
      axis.append(el("span", { class: t / duration > 0.95 ? "tick end" : "tick", style: `left:${(t / duration) * 100}%` }, clock(t)));
    $("#total").textContent = clock(duration);
    // the channel choice: both, or one party (by channel number: role names need CTE1_CHANNEL_ROLES)
    const parties = this.analytics.parties.filter((party) => party.channel !== null && party.channel !== undefined);
    $("#channel").replaceChildren(
      el("option", { value: "mix" }, "両方"),
      ...(parties.length > 1 ? parties.map((party) => el("option", { value: String(party.channel) }, `${partyLabel(party.label)}のみ`)) : []),
    );
    this.movePlayhead();
  }

  async loadTranscript() {
    const box = $("#transcript");
    box.replaceChildren(el("p", { class: "note" }, "文字起こしを読み込み中…"));
    const request = ++this.transcriptRequest;
    let result;
    try {
      result = await this.host.callTool("get_call_transcript", this.args);
    } catch (error) {
      if (request !== this.transcriptRequest) return;
      // the host failed the call (timeout, refusal, ...): the server never answered, so say that
      box.replaceChildren(
        el("p", { class: "error", id: "transcript-error" }, `文字起こしを読み込めませんでした (ホストでの get_call_transcript の呼び出しが失敗): ${error.message}`),
        el("button", { type: "button", onclick: () => this.loadTranscript() }, "再試行"),
      );
      return;
    }
    if (request !== this.transcriptRequest) return;
    if (result.isError) {
      // the server's own words: they name the cause (no model configured, one that does not load, ...)
      // and the next step
      const said = textOf(result) || "The server returned no transcript.";
      const unavailable = /^\[transcription_unavailable\]/.test(said);
      box.replaceChildren(el("p", { class: unavailable ? "note said" : "error", id: unavailable ? "how-to" : "transcript-error" }, said));
      return;
    }
    const data = result.structuredContent ?? {};
    let transcript = data.transcript ?? { sentenceList: [] };
    let missing = null;
    if (transcript.shortened) {
      // the result holds only the first sentences (under the result size bound): the resource has all
      try {
        transcript = await this.readJson(data.transcriptUri);
      } catch (error) {
        if (request !== this.transcriptRequest) return;
        missing = el(
          "p",
          { class: "note", id: "transcript-shortened" },
          `文字起こしは一部のみ表示しています (最初の${transcript.sentenceList.length}文)。全文は ${data.transcriptUri} にあります: ${error.message}`,
        );
      }
    }
    if (request !== this.transcriptRequest) return;
    this.sentences = transcript.sentenceList ?? [];
    const list = el("ol", { class: "sentences" });
    for (const sentence of this.sentences) {
      const start = sentence.startOffsetMs / 1000;
      list.append(
        el(
          "li",
          {},
          el(
            "button",
            {
              // a sentence without a channel (pushed without CTE1_CHANNEL_ROLES) takes its party's colour
              class: `sentence ${sentence.channel != null ? `ch${sentence.channel}` : `sp${sentence.speakerId}`}`,
              "data-start": start,
              "data-sequence": sentence.sequence,
              onclick: () => this.playSentence(sentence),
            },
            el("span", { class: "who" }, partyLabel(sentence.speaker)),
            el("span", { class: "when" }, clock(start)),
            el("span", { class: "text" }, sentence.text),
          ),
        ),
      );
    }
    const parts = missing ? [missing] : [];
    if (this.sentences.length) parts.push(list);
    else if (!missing) parts.push(el("p", { class: "note" }, "発話はありません。"));
    box.replaceChildren(...parts);
  }

  /** A resource of this server as JSON, read through the host. */
  async readJson(uri) {
    if (!uri) throw new Error("no resource named");
    const read = await this.host.request("resources/read", { uri });
    const text = (read?.contents || []).find((item) => typeof item.text === "string")?.text;
    if (!text) throw new Error(`The host returned nothing for ${uri}.`);
    return JSON.parse(text);
  }

  // --- playback ----------------------------------------------------------------------------

  /** A sentence plays from its start on its speaker's channel (the channel choice shows it; a mono
   * call has only the mix). */
  playSentence(sentence) {
    const channel = String(sentence.channel ?? "mix");
    const choice = $("#channel");
    if (channel !== this.channel && [...choice.options].some((option) => option.value === channel)) {
      choice.value = channel;
      this.channel = channel;
      this.clip = null; // the next clip comes from the sentence's channel
    }
    this.seek(sentence.startOffsetMs / 1000, true);
  }

  /** The clip that starts at ``start`` on the chosen channel, fetched once. */
  fetchClip(start) {
    const duration = this.analytics.durationSeconds;
    const from = Math.round(Math.min(start, duration) * 1000) / 1000;
    const key = `${this.channel}@${from}`;
    if (!this.clips.has(key)) {
      const end = Math.min(from + this.clipSeconds, duration);
      const args = { ...this.args, startSeconds: from, endSeconds: end, channel: this.channel, format: "wav", sampleRate: 8000, inline: true };
      const pending = this.host.callTool("get_call_clip", args).then(async (result) => {
        if (result.isError) throw new Error(textOf(result));
        const audio = (result.content || []).find((block) => block.type === "audio");
        // a data: URL, not a blob: one: hosts' default CSP allows media from data: only
        if (audio) return { start: from, end, url: `data:${audio.mimeType};base64,${audio.data}` };
        // over the server's inline limit: the clip's resource, read through the host
        const link = (result.content || []).find((block) => block.type === "resource_link");
        if (!link) throw new Error("The server sent no audio for this clip.");
        const read = await this.host.request("resources/read", { uri: link.uri });
        const contents = (read?.contents || []).find((item) => item.blob);
        if (!contents) throw new Error(`The host returned no audio for ${link.uri}.`);
        return { start: from, end, url: `data:${contents.mimeType || link.mimeType};base64,${contents.blob}` };
      });
      pending.catch(() => this.clips.delete(key));
      this.clips.set(key, pending);
    }
    return this.clips.get(key);
  }

  async seek(seconds, play) {
    const duration = this.analytics.durationSeconds;
    const target = Math.max(0, Math.min(seconds, duration - 0.05));
    this.position = target;
    this.movePlayhead();
    const wasPlaying = play ?? !this.audio.paused;
    const inClip = this.clip && target >= this.clip.start && target < this.clip.end - 0.05;
    if (inClip) {
      this.wanted++; // a clip still coming for an earlier seek must not replace this one
      this.audio.currentTime = target - this.clip.start;
    } else if (!(await this.load(target))) {
      return; // a later seek asked for another clip: it plays, not this one
    }
    if (wasPlaying) this.play();
  }

  /** Installs the clip from ``start``; false when a later request overtook this one (its clip is
   * the one to play: the clips of two quick seeks may arrive in either order). */
  async load(start) {
    const request = ++this.wanted;
    $("#status").textContent = "音声を取得中…";
    let clip;
    try {
      clip = await this.fetchClip(start);
    } catch (error) {
      if (request !== this.wanted) return false;
      $("#status").textContent = error.message;
      throw error;
    }
    if (request !== this.wanted) return false;
    this.clip = clip;
    this.audio.src = clip.url;
    this.audio.playbackRate = this.speed;
    this.audio.defaultPlaybackRate = this.speed;
    $("#status").textContent = "";
    return true;
  }

  async play() {
    if (!this.clip && !(await this.load(this.position))) return;
    this.audio.playbackRate = this.speed;
    try {
      await this.audio.play();
    } catch (error) {
      $("#status").textContent = `再生できません: ${error.message}`;
    }
    if (this.clip.end < this.analytics.durationSeconds) this.fetchClip(this.clip.end).catch(() => {}); // fetch ahead
  }

  toggle() {
    if (!this.audio.paused) this.audio.pause();
    else if (this.position >= this.analytics.durationSeconds - END_SECONDS) this.seek(0, true); // at the end: from the start
    else this.seek(this.position, true);
  }

  async nextClip() {
    if (!this.clip || this.clip.end >= this.analytics.durationSeconds - 0.05) return;
    this.position = this.clip.end;
    if (await this.load(this.clip.end)) this.play();
  }

  onTime() {
    if (!this.clip) return;
    this.position = this.clip.start + this.audio.currentTime;
    this.movePlayhead();
  }

  movePlayhead() {
    const duration = this.analytics?.durationSeconds || 1;
    $("#playhead").style.left = `${(this.position / duration) * 100}%`;
    $("#now").textContent = clock(this.position);
    $("#timeline").setAttribute("aria-valuenow", String(Math.round(this.position)));
    $("#timeline").setAttribute("aria-valuetext", clock(this.position));
    this.highlight();
  }

  highlight() {
    let current = null;
    for (const sentence of this.sentences)
      if (sentence.startOffsetMs / 1000 <= this.position + 0.01) current = sentence;
      else break;
    const active = current && this.position <= current.endOffsetMs / 1000 + 1 ? current.sequence : null;
    for (const node of document.querySelectorAll(".sentence")) {
      const on = Number(node.dataset.sequence) === active;
      if (on && !node.classList.contains("current")) reveal(node);
      node.classList.toggle("current", on);
      if (on) node.setAttribute("aria-current", "true");
      else node.removeAttribute("aria-current");
    }
  }

  showPlaying() {
    const playing = !this.audio.paused;
    const button = $("#play");
    button.textContent = playing ? "❚❚ 一時停止" : "▶ 再生";
    button.setAttribute("aria-pressed", String(playing));
  }

  setChannel(channel) {
    if (channel === this.channel) return;
    this.channel = channel;
    this.clip = null; // the next clip comes from the chosen channel
    this.seek(this.position, !this.audio.paused);
  }

  setSpeed(speed) {
    this.speed = speed;
    this.audio.playbackRate = speed;
    for (const node of document.querySelectorAll("[data-speed]"))
      node.setAttribute("aria-pressed", String(Number(node.dataset.speed) === speed));
  }

  onKey(event) {
    if (!this.analytics) return;
    const tag = event.target?.tagName;
    if (event.key === " " && tag !== "BUTTON" && tag !== "SELECT") {
      event.preventDefault();
      this.toggle();
    } else if ((event.key === "ArrowRight" || event.key === "ArrowLeft") && tag !== "SELECT") {
      event.preventDefault();
      this.seek(this.position + (event.key === "ArrowRight" ? SEEK_SECONDS : -SEEK_SECONDS));
    }
  }
}

/** The sentence in view: within a host's height only its list scrolls (not the page or the host's). */
function reveal(node) {
  const list = node.closest(".sentences");
  if (!document.documentElement.dataset.fit || !list) {
    node.scrollIntoView({ block: "nearest" });
    return;
  }
  const box = list.getBoundingClientRect();
  const top = box.top + list.clientTop;
  const bottom = top + list.clientHeight;
  const at = node.getBoundingClientRect();
  if (at.top < top) list.scrollTop += at.top - top;
  else if (at.bottom > bottom) list.scrollTop += at.bottom - bottom;
}

/** One dimension of a host's containerDimensions on the root element: data-<mode> is `fixed` (the
 * host's height or width) or "max" (maxHeight or maxWidth), and <variable> the size; neither given,
 * both are removed. */
function bound(mode, variable, fixed, size, max) {
  const root = document.documentElement;
  const limit = size > 0 ? size : max > 0 ? max : null;
  if (limit === null) {
    delete root.dataset[mode];
    root.style.removeProperty(variable);
  } else {
    root.dataset[mode] = size > 0 ? fixed : "max";
    root.style.setProperty(variable, `${limit}px`);
  }
}

/** The host's font CSS (styles.css.fonts: @font-face rules, @import of font URLs) in one style element
 * of the view's, as text (never parsed as HTML); a later context's fonts replace it. Under the view's
 * CSP (it declares no resourceDomains) only local() faces load: font files and @import from URLs are
 * blocked, and the host's font variables fall back along their lists. */
function hostFonts(css) {
  let style = document.getElementById("host-fonts");
  if (!css) {
    style?.remove();
    return;
  }
  if (!style) {
    style = el("style", { id: "host-fonts" });
    document.head.append(style);
  }
  if (style.textContent !== css) style.textContent = css;
}

function textOf(result) {
  return (result?.content || [])
    .filter((block) => block.type === "text")
    .map((block) => block.text)
    .join("\n");
}

async function main() {
  const host = new HostConnection();
  const review = new Review(host);
  $("#play").addEventListener("click", () => review.toggle());
  $("#channel").addEventListener("change", (event) => review.setChannel(event.target.value));
  $("#speeds").append(
    ...SPEEDS.map((speed) =>
      el("button", { "data-speed": speed, "aria-pressed": String(speed === 1), onclick: () => review.setSpeed(speed) }, `${speed}×`),
    ),
  );
  host.on("ui/notifications/tool-input", (params) => review.onToolInput(params));
  host.on("ui/notifications/tool-result", (params) => review.onToolResult(params));
  host.on("ui/notifications/host-context-changed", (params) => review.applyContext(params));
  host.on("ui/notifications/tool-cancelled", () => review.showError("The call to review_call was cancelled."));
  new ResizeObserver(() => review.reportSize()).observe(document.body);
  const initialized = await host.connect({ name: "cte1-review", version: "1.0.0" });
  review.applyContext(initialized.hostContext);
  window.review = review; // for the browser tests' assertions and a curious developer's console
}

main();
