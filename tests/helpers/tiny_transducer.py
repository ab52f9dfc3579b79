"""A tiny transducer (encoder, decoder, joiner and tokens.txt, a few KB) that sherpa-onnx's real
offline loader and greedy decoder run, built with the ``onnx`` package's helpers.

Real weights cannot be had here, and random weights alone give text nobody can predict. So the
weights are set so that what the model emits is known by construction, and the tests can check the
decoding, the timestamps and the sentence splitting against it:

- the encoder keeps every 4th feature frame (sherpa-onnx assumes a subsampling factor of 4, so one
  output frame is 40 ms) and turns the frame's loudest log-mel bin into a "loud" score;
- the decoder embeds the last token emitted;
- the joiner answers blank on a quiet frame, and on a loud frame the token after the last one in
  ``cycle`` (after its end, the first again).

So a burst of sound of n output frames reads as the next n characters of the cycle, timed at the
frames where they were emitted, and silence reads as nothing. A small random projection is added to
the encoder's and joiner's paths (scaled well below the decision margin) so the graphs do real
arithmetic on random weights, as a trained model's would.

The metadata is what sherpa-onnx's ``OfflineTransducerModel`` reads: ``vocab_size`` and
``context_size`` on the decoder (it exits the process without them), ``model_type`` on the encoder
as icefall's export writes it (read only when no model type is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: sherpa-onnx's fbank features (80 mel bins) and its fixed subsampling: one encoder frame is 40 ms.
FEATURE_DIM = 80
FRAME_SECONDS = 0.04
#: icefall's stateless decoder looks at the last two tokens.
CONTEXT_SIZE = 2
#: The loudest log-mel bin of a frame of digital silence is about -15.9 (log of float epsilon); of
#: the tests' bursts (white noise at 0.1 amplitude) well above 0. The threshold sits between.
LOUD_THRESHOLD = -5.0
_MARGIN = 20.0
_OPSET = [helper.make_opsetid("", 17)]
_IR_VERSION = 8


@dataclass(frozen=True)
class TinyTransducer:
    """The files of one built model and what it emits, for the tests' expectations."""

    directory: Path
    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path
    cycle: str

    def expected_text(self, emitted: int, start: int = 0) -> str:
        """The characters ``emitted`` loud frames read, from position ``start`` in the cycle."""
        return "".join(self.cycle[(start + i) % len(self.cycle)] for i in range(emitted))


def build(
    directory: Path,
    *,
    cycle: str = "こんにちは。",
    int8_names: bool = False,
    seed: int = 0,
    decoder_metadata: dict[str, str] | None = None,
    float_lengths: bool = False,
    fixed_frames: int | None = None,
) -> TinyTransducer:
    """Write ``encoder-tiny.onnx``, ``decoder-tiny.onnx``, ``joiner-tiny.onnx`` (``*.int8.onnx``
    with ``int8_names``; the weights stay float) and ``tokens.txt`` into ``directory``.

    Faults a real export can have: ``decoder_metadata`` replaces the decoder's metadata;
    ``float_lengths`` makes the encoder take its lengths as float (sherpa-onnx wants integers);
    ``fixed_frames`` gives the encoder a fixed number of input frames, as an export with static
    shapes has (it then runs on audio of that length only)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = ["<blk>", *cycle]
    if len(set(vocab)) != len(vocab):
        raise ValueError("the cycle's characters must be distinct (one token each)")
    suffix = ".int8.onnx" if int8_names else ".onnx"
    metadata = (
        {"vocab_size": str(len(vocab)), "context_size": str(CONTEXT_SIZE)}
        if decoder_metadata is None
        else decoder_metadata
    )
    model = TinyTransducer(
        directory=directory,
        encoder=directory / f"encoder-tiny{suffix}",
        decoder=directory / f"decoder-tiny{suffix}",
        joiner=directory / f"joiner-tiny{suffix}",
        tokens=directory / "tokens.txt",
        cycle=cycle,
    )
    _save(
        _encoder(rng, float_lengths, fixed_frames),
        model.encoder,
        {"model_type": "zipformer2", "comment": "tiny test model"},
    )
    _save(_decoder(len(vocab)), model.decoder, metadata)
    _save(_joiner(len(vocab), rng), model.joiner, {})
    model.tokens.write_text("".join(f"{token} {index}\n" for index, token in enumerate(vocab)), "utf-8")
    return model


def _save(graph: onnx.GraphProto, path: Path, metadata: dict[str, str]) -> None:
    model = helper.make_model(graph, opset_imports=_OPSET, producer_name="cte1-mcp tests")
    model.ir_version = _IR_VERSION
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _const(name: str, value: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(value, name)


def _encoder(rng: np.random.Generator, float_lengths: bool, fixed_frames: int | None) -> onnx.GraphProto:
    """(N, T, 80) features, (N,) lengths → (N, ceil(T/4), 2) of [loud, quiet], (N,) lengths."""
    noise = (rng.standard_normal((FEATURE_DIM, 2)) * 1e-3).astype(np.float32)
    nodes = [
        # x[:, ::4, :]
        helper.make_node("Slice", ["x", "start", "end", "axis", "step"], ["sub"]),
        helper.make_node("ReduceMax", ["sub"], ["peak"], axes=[-1], keepdims=1),
        helper.make_node("Sub", ["peak", "threshold"], ["above"]),
        helper.make_node("Mul", ["above", "steepness"], ["scaled"]),
        helper.make_node("Sigmoid", ["scaled"], ["loud"]),
        helper.make_node("Sub", ["one", "loud"], ["quiet"]),
        helper.make_node("Concat", ["loud", "quiet"], ["flags"], axis=-1),
        # a random projection of the features, far too small to change a decision
        helper.make_node("Tanh", ["sub"], ["squashed"]),
        helper.make_node("MatMul", ["squashed", "noise"], ["jitter"]),
        helper.make_node("Add", ["flags", "jitter"], ["encoder_out"]),
        # lengths: ceil(T / 4)
        helper.make_node("Cast", ["x_lens"], ["lengths"], to=TensorProto.INT64),
        helper.make_node("Add", ["lengths", "three"], ["padded"]),
        helper.make_node("Div", ["padded", "four"], ["encoder_out_lens"]),
    ]
    initializers = [
        _const("start", np.array([0], np.int64)),
        _const("end", np.array([np.iinfo(np.int64).max], np.int64)),
        _const("axis", np.array([1], np.int64)),
        _const("step", np.array([4], np.int64)),
        _const("threshold", np.array(LOUD_THRESHOLD, np.float32)),
        _const("steepness", np.array(4.0, np.float32)),
        _const("one", np.array(1.0, np.float32)),
        _const("noise", noise),
        _const("three", np.array(3, np.int64)),
        _const("four", np.array(4, np.int64)),
    ]
    return helper.make_graph(
        nodes,
        "tiny_encoder",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", fixed_frames or "T", FEATURE_DIM]),
            helper.make_tensor_value_info(
                "x_lens", TensorProto.FLOAT if float_lengths else TensorProto.INT64, ["N"]
            ),
        ],
        [
            helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", "T_out", 2]),
            helper.make_tensor_value_info("encoder_out_lens", TensorProto.INT64, ["N"]),
        ],
        initializers,
    )


def _decoder(vocab_size: int) -> onnx.GraphProto:
    """(N, context) token ids → (N, vocab) one-hot of the last one (the start context is blank)."""
    nodes = [
        helper.make_node("Slice", ["y", "minus_one", "end", "axis"], ["last"]),
        helper.make_node("Squeeze", ["last", "axis"], ["last_id"]),
        helper.make_node("Gather", ["embedding", "last_id"], ["decoder_out"], axis=0),
    ]
    initializers = [
        _const("minus_one", np.array([-1], np.int64)),
        _const("end", np.array([np.iinfo(np.int64).max], np.int64)),
        _const("axis", np.array([1], np.int64)),
        _const("embedding", np.eye(vocab_size, dtype=np.float32)),
    ]
    return helper.make_graph(
        nodes,
        "tiny_decoder",
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", CONTEXT_SIZE])],
        [helper.make_tensor_value_info("decoder_out", TensorProto.FLOAT, ["N", vocab_size])],
        initializers,
    )


def _joiner(vocab_size: int, rng: np.random.Generator) -> onnx.GraphProto:
    """encoder frame (N, 2), decoder state (N, vocab) → logits (N, vocab): blank when quiet, the
    next token of the cycle when loud."""
    successor = np.zeros((vocab_size, vocab_size), np.float32)
    for last in range(vocab_size):
        successor[last, last % (vocab_size - 1) + 1] = _MARGIN  # blank → 1, k → k+1, last → 1
    blank = np.zeros((1, vocab_size), np.float32)
    blank[0, 0] = _MARGIN
    noise = (rng.standard_normal((2, vocab_size)) * 1e-2).astype(np.float32)
    nodes = [
        helper.make_node("Slice", ["encoder_out", "zero", "one", "axis"], ["loud"]),
        helper.make_node("Slice", ["encoder_out", "one", "two", "axis"], ["quiet"]),
        helper.make_node("MatMul", ["decoder_out", "successor"], ["next"]),
        helper.make_node("Mul", ["next", "loud"], ["emit"]),
        helper.make_node("Mul", ["quiet", "blank"], ["rest"]),
        helper.make_node("MatMul", ["encoder_out", "noise"], ["jitter"]),
        helper.make_node("Add", ["emit", "rest"], ["both"]),
        helper.make_node("Add", ["both", "jitter"], ["logit"]),
    ]
    initializers = [
        _const("zero", np.array([0], np.int64)),
        _const("one", np.array([1], np.int64)),
        _const("two", np.array([2], np.int64)),
        _const("axis", np.array([1], np.int64)),
        _const("successor", successor),
        _const("blank", blank),
        _const("noise", noise),
    ]
    return helper.make_graph(
        nodes,
        "tiny_joiner",
        [
            helper.make_tensor_value_info("encoder_out", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("decoder_out", TensorProto.FLOAT, ["N", vocab_size]),
        ],
        [helper.make_tensor_value_info("logit", TensorProto.FLOAT, ["N", vocab_size])],
        initializers,
    )
