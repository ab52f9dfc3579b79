"""Sample calls that speak a written dialogue (natural Japanese, Kokoro-82M) instead of random phrases.

The words come in the dialogue's order (``speech/dialogues_ja.json``); only the timing is drawn
from the call's seed: gaps between turns, which turns start before the other party has finished
(the style's overtalks), where a backchannel falls, and the agent's hold where the dialogue has one.
The gaps are stretched (to at most 3.5 s) so a short dialogue fills its call; turns that do not fit
before the closing sentence are left out. What was said, by whom and when is read off the lines
(:func:`utterances`): the ground truth a transcript of a sample call is held to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from cte1_mcp.simulator.conversation import AGENT, CUSTOMER, Acoustics, Conversation, Interval, Line, Style
from cte1_mcp.simulator.speech import Role, Step, dialogue_bank

_PARTY: dict[Role, Literal[0, 1]] = {"customer": CUSTOMER, "agent": AGENT}
#: Silence before the first and after the last sentence, and the longest gap a stretch may make
#: (under the analyser's 5-second long silence: only a hold is one).
LEAD, TAIL, MAX_GAP = 0.6, 0.8, 3.5


@dataclass(frozen=True, slots=True)
class Utterance:
    """One sentence of a dialogue call as placed: the ground truth of its transcript."""

    party: Literal[0, 1]
    start: float
    end: float
    text: str
    backchannel: bool
    #: Says a number written in kanji (Whisper tends to write digits).
    numerals: bool


@lru_cache(maxsize=16)
def spoken(name: str, seconds: float, seed: int, style: Style, acoustics: Acoustics) -> Conversation:
    """The dialogue ``name`` as a call of exactly ``seconds``."""
    phrases, dialogues = dialogue_bank()
    dialogue = dialogues[name]
    rng = random.Random(seed)  # noqa: S311 -- reproducible test audio, not secrets
    *body, closing = dialogue.steps

    def length(step: Step) -> float:
        return style.hold_seconds if step.hold else phrases[step.phrase].seconds

    # 1. the steps that fit before the closing sentence, at ordinary gaps
    budget = seconds - LEAD - TAIL - length(closing)
    kept: list[Step] = []
    gaps: list[float] = []
    used = 0.0
    for step in body:
        if step.hold and not style.hold_seconds:
            continue
        # the hold is the whole pause: the agent's "thank you for waiting" follows it at once
        gap = 0.0 if not kept or step.hold or kept[-1].hold else rng.uniform(0.35, 1.2)
        if used + gap + length(step) + 0.8 > budget:
            break
        kept.append(step)
        gaps.append(gap)
        used += gap + length(step)
    gaps.append(rng.uniform(0.5, 1.0))  # before the closing
    kept.append(closing)
    # 2. the overtalks: turns starting 0.8-1.5 s before the other party's long sentence ends
    eligible = [
        i
        for i in range(2, len(kept) - 1)
        if not kept[i].hold
        and not kept[i - 1].hold
        and kept[i - 1].role != kept[i].role
        and length(kept[i - 1]) > 2.5
    ]
    for i in sorted(rng.sample(eligible, min(style.overtalks, len(eligible)))):
        gaps[i] = -rng.uniform(0.8, 1.5)
    # 3. stretch the other gaps so the dialogue fills the call (a hold's ends keep their own)
    slack = seconds - LEAD - TAIL - sum(length(step) for step in kept) - sum(gaps)
    stretchable = [i for i, g in enumerate(gaps) if g > 0 and not kept[i].hold]
    widest = max((gaps[i] for i in stretchable), default=0.0)
    if slack > 0 and widest > 0:
        factor = min(1 + slack / sum(gaps[i] for i in stretchable), MAX_GAP / widest)
        for i in stretchable:
            gaps[i] *= factor
    # 4. place them, with the style's backchannels under long turns
    lines: list[Line] = []
    holds: list[Interval] = []
    busy_until = {CUSTOMER: 0.0, AGENT: 0.0}
    t, backchannels = LEAD, style.backchannels
    for step, gap in zip(kept, gaps, strict=True):
        if step.hold:
            holds.append((round(t + 0.3, 3), round(t + style.hold_seconds - 0.3, 3)))
            t += style.hold_seconds
            continue
        party = _PARTY[step.role]
        start = round(max(t + gap, busy_until[party] + 0.3), 3)
        end = start + phrases[step.phrase].seconds
        lines.append(Line(start, party, step.phrase))
        busy_until[party] = end
        other: Role = "agent" if step.role == "customer" else "customer"
        short = phrases[dialogue.backchannels[other]]
        at = round(start + rng.uniform(1.0, 1.6), 3)
        if (
            backchannels
            and end - start > 2.5
            and at + short.seconds < end - 0.3
            and at > busy_until[_PARTY[other]] + 0.3
            and rng.random() < 0.5
        ):
            lines.append(Line(at, _PARTY[other], short.name))
            busy_until[_PARTY[other]] = at + short.seconds
            backchannels -= 1
        t = max(t, end)
    return Conversation(
        seconds, tuple(sorted(lines, key=lambda line: line.start)), acoustics, seed, tuple(holds)
    )


def utterances(conversation: Conversation) -> tuple[Utterance, ...]:
    """Who said what when in a dialogue call (lines of the espeak bank are not sentences: skipped)."""
    phrases, dialogues = dialogue_bank()
    backchannels = {name for dialogue in dialogues.values() for name in dialogue.backchannels.values()}
    numerals = {step.phrase for dialogue in dialogues.values() for step in dialogue.steps if step.numerals}
    return tuple(
        Utterance(
            line.party,
            line.start,
            min(line.start + phrases[line.phrase].seconds, conversation.seconds),
            phrases[line.phrase].text,
            line.phrase in backchannels,
            line.phrase in numerals,
        )
        for line in conversation.lines
        if line.phrase in phrases
    )
