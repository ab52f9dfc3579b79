// What the timeline draws, from the analysis JSON (not the PNG): one lane per party's talk, their
// overlaps (overtalk), and the silences of the analysis' threshold or longer (holds included).

export function clock(seconds) {
  const whole = Math.max(0, Math.floor(seconds));
  return `${Math.floor(whole / 60)}:${String(whole % 60).padStart(2, "0")}`;
}

/** Lanes from the analysis: each party's talk, both at once (overtalk), and silences of the
 * analysis' threshold or longer (holds included: the analysis counts them as non-talk). */
export function lanes(analytics) {
  const duration = analytics.durationSeconds;
  const parties = analytics.parties.map((party) => ({
    key: `ch${party.channel ?? 0}`,
    label: partyLabel(party.label),
    channel: party.channel,
    role: party.label,
    spans: analytics.segments
      .filter((s) => (s.channel ?? 0) === (party.channel ?? 0))
      .map((s) => [s.startSeconds, s.endSeconds]),
  }));
  const result = [...parties];
  if (parties.length === 2) {
    const overlap = [];
    for (const [a0, a1] of parties[0].spans)
      for (const [b0, b1] of parties[1].spans) {
        const start = Math.max(a0, b0);
        const end = Math.min(a1, b1);
        if (end > start) overlap.push([start, end]);
      }
    result.push({ key: "overtalk", label: "同時発話", spans: overlap.sort((x, y) => x[0] - y[0]) });
  }
  const talk = analytics.segments.map((s) => [s.startSeconds, s.endSeconds]).sort((x, y) => x[0] - y[0]);
  const threshold = analytics.longSilences?.thresholdSeconds ?? 5;
  const silences = [];
  let reached = 0;
  for (const [start, end] of [...talk, [duration, duration]]) {
    if (start - reached >= threshold) silences.push([reached, start]);
    reached = Math.max(reached, end);
  }
  result.push({ key: "silence", label: `無音 ${threshold}秒以上`, spans: silences });
  return result;
}

export function partyLabel(label) {
  return { customer: "顧客", agent: "オペレーター", mixed: "通話" }[label] ?? label;
}
