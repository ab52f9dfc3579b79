"""Run in a child process: load a Whisper model, check it, decode one window and align a sentence.

CTranslate2 faults (SIGSEGV, or SIGABRT from a corrupted heap) rather than raising when config.json
does not fit model.bin: in word alignment, when ``alignment_heads`` name layers the decoder lacks.
Silence never reaches alignment (it has no words), so the alignment is called directly, with a
sentence's real tokens: what a transcription does, where a crash costs this child, not the server.
Usage: ``python -m cte1_mcp.transcribe.engines.faster_whisper_probe JSON`` (the model folder,
device, compute type, threads). It prints ``{"step": …}`` before each step, so a parent whose
child was ended by a signal knows where, then ``{"ok": true}``, ``{"error": "…"}`` or
``{"unusable": "…"}`` (``check_loaded``'s reason).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cte1_mcp.transcribe.base import ModelUnusable
from cte1_mcp.transcribe.engines import faster_whisper as engine
from cte1_mcp.transcribe.engines.child_probe import say

#: One every Whisper has, English-only ones too: each language's own token is checked in the server
#: (``cannot_hear``, within the model's languages), so one language decodes as any would.
LANGUAGE = "en"
#: Real text, so alignment has tokens to place.
SENTENCE = " Thank you for calling, how can I help you today?"
#: Decoding a few tokens runs every step of it (the suppressed tokens included) at a fraction of a
#: full window's cost.
MAX_LENGTH = 16


def main() -> int:
    config = json.loads(sys.argv[1])
    say(step="load")
    try:
        from faster_whisper import WhisperModel

        model = WhisperModel(
            config["model_dir"],
            device=config["device"],
            compute_type=config["compute_type"],
            cpu_threads=config["threads"],
            num_workers=1,
            local_files_only=True,
        )
    except Exception as error:
        return _failed("load", error)
    try:
        engine.check_loaded(model, Path(config["model_dir"]))
    except ModelUnusable as error:
        say(unusable=str(error))
        return 1
    say(step="decode")
    try:
        from faster_whisper.audio import pad_or_trim  # type: ignore[import-untyped]
        from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
        from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]

        tokenizer = Tokenizer(
            model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=LANGUAGE
        )
        features = pad_or_trim(model.feature_extractor(np.zeros(16_000, np.float32)))
        encoded = model.encode(features)
        # as faster-whisper's transcribe calls it (its default suppression: -1, the non-speech tokens)
        model.model.generate(
            encoded,
            [model.get_prompt(tokenizer, [], without_timestamps=False)],
            beam_size=engine.BEAM_SIZE,
            max_length=MAX_LENGTH,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        )
    except Exception as error:
        return _failed("decode", error)
    say(step="align")
    try:
        text = tokenizer.encode(SENTENCE)
        model.model.align(encoded, tokenizer.sot_sequence, [text], features.shape[-1])  # the whole window
    except Exception as error:
        return _failed("align", error)
    say(ok=True)
    return 0


def _failed(step: str, error: BaseException) -> int:
    """The reason goes back to the parent, which words it for the user."""
    lines = str(error).strip().splitlines()
    say(step=step, kind=type(error).__name__, error=(lines[0] if lines else "")[:400])
    return 1


if __name__ == "__main__":
    sys.exit(main())
