"""Open-vocabulary detectors (YOLO-World, YOLOE), prompted with words of the dataset taxonomy.

ultralytics gives these models their classes by embedding the class names with a text encoder that
it builds itself, fetching the encoder's weights (and pip-installing OpenAI's ``clip`` package) at
that moment. Here nothing is fetched: the embeddings are computed from local files and handed to
the model the way ultralytics' own ``set_classes`` leaves it, so its downloader is never called.

- Prompts: words of ``labels/ums.yaml``, a class name or one of its synonyms (``detector.classes``,
  ``--classes``; by default every name and synonym). A box a prompt finds gets the class the word
  names; boxes of one class found by several prompts then go through one class-wise NMS.
- Text encoder (``detector.text_encoder``, ``--text-encoder``: a path or a ``ums weights`` name; by
  default the one the model family was trained with, ``TEXT_ENCODERS``): either a TorchScript module
  from tokens to embeddings (YOLOE's MobileCLIP, ``mobileclip_blt.ts`` / ``mobileclip2_b.ts``) or
  OpenAI's CLIP checkpoint (YOLO-World's ``ViT-B-32.pt``), whose text tower is rebuilt here from its
  weights. The ``clip`` package ultralytics uses is not installable from PyPI (its PyPI forks import
  ``pkg_resources``, which current setuptools no longer ships), so neither it nor its loader is used.
- Tokens: CLIP's byte-pair encoding (what ultralytics calls, ``clip.tokenize(texts, truncate=True)``,
  for both families), read from its vocabulary file ``bpe_simple_vocab_16e6.txt.gz``: beside the text
  encoder, or the ``clip_bpe_vocab`` entry of ``ums weights``.
"""

from __future__ import annotations

import gzip
import html
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from ums.detections import Detections
from ums.taxonomy import DATASET_TAXONOMY, Taxonomy, load_taxonomy
from ums.weights import CLIP_VOCABULARY, TEXT_ENCODERS, lookup, missing_message, resolve_weights, weights_home

if TYPE_CHECKING:
    from ums.autolabel.detectors import DetectorConfig

FAMILIES = ("yolo-world", "yoloe")
TEXT_ENCODER_FLAG = "--text-encoder"
CONTEXT_LENGTH = 77  # every CLIP text encoder reads 77 tokens
MERGES = 49152 - 256 - 2  # how many merges of the vocabulary file CLIP's tokenizer reads
START, END = "<|startoftext|>", "<|endoftext|>"
WORD_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


# -- prompts -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    text: str
    class_id: int  # in the dataset taxonomy


def resolve_prompts(classes: list[str] | None, taxonomy: Taxonomy) -> list[Prompt]:
    """The prompts for ``classes`` (each a class name or synonym of ``taxonomy``), or every name and
    synonym of the taxonomy when None; a word that names no class is an error listing the classes."""
    words = classes if classes is not None else [word for info in taxonomy.classes for word in info.words]
    words = list(dict.fromkeys(" ".join(word.split()) for word in words))  # repeats would only repeat boxes
    if not words or not all(words):
        raise ValueError(f"--classes names no class (give words of labels/{taxonomy.name}.yaml, e.g. "
                         f"--classes \"person,car\"; classes: {taxonomy.vocabulary()})")
    prompts = []
    for word in words:
        class_id = taxonomy.class_of_word(word)
        if class_id is None:
            raise ValueError(f"--classes {word!r} is no class or synonym of labels/{taxonomy.name}.yaml (classes, "
                             f"with synonyms: {taxonomy.vocabulary()}; add a synonym there to prompt with other words)")
        prompts.append(Prompt(word, class_id))
    return prompts


def prompts_by_class(prompts: list[Prompt]) -> dict[int, str]:
    """Class id -> the prompt text that finds it (several prompts of one class joined by ", ")."""
    texts: dict[int, list[str]] = {}
    for prompt in prompts:
        texts.setdefault(prompt.class_id, []).append(prompt.text)
    return {class_id: ", ".join(words) for class_id, words in sorted(texts.items())}


def to_taxonomy(boxes: np.ndarray, scores: np.ndarray, prompt_index: np.ndarray, prompts: list[Prompt], iou: float,
                taxonomy: str) -> Detections:
    """Boxes found per prompt as detections of the prompts' classes: "person" and "pedestrian" both
    finding one walker would otherwise give it two labels."""
    classes = np.array([p.class_id for p in prompts], np.int64)[np.asarray(prompt_index, np.int64)]
    if len(boxes) == 0:
        return Detections(boxes, scores, classes, taxonomy)
    kept = batched_nms(torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(scores, dtype=torch.float32),
                       torch.from_numpy(classes), iou).numpy()
    return Detections(boxes[kept], scores[kept], classes[kept], taxonomy)


# -- CLIP's tokenizer --------------------------------------------------------------------------


def _byte_symbols() -> dict[int, str]:
    """CLIP's reversible byte -> character table: printable bytes stand for themselves, the rest for
    characters from U+0100 on, so no byte becomes whitespace or a control character."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols = {byte: chr(byte) for byte in printable}
    symbols.update({byte: chr(256 + n) for n, byte in enumerate(b for b in range(256) if b not in symbols)})
    return symbols


class ClipTokenizer:
    """CLIP's byte-pair encoding (the tokenizer of openai/CLIP, which ultralytics uses for both
    families): the same token ids for the same vocabulary file."""

    def __init__(self, vocabulary: Path):
        import regex

        with gzip.open(vocabulary, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")[1:MERGES + 1]  # the first line is a header
        merges = [tuple(line.split()) for line in lines if line.strip()]
        self.symbols = _byte_symbols()
        characters = list(self.symbols.values())
        tokens = [*characters, *(c + "</w>" for c in characters), *("".join(m) for m in merges), START, END]
        self.ids = {token: i for i, token in enumerate(tokens)}
        self.ranks = {merge: i for i, merge in enumerate(merges)}
        self.pattern = regex.compile(WORD_PATTERN, regex.IGNORECASE)
        self.cache: dict[str, list[str]] = {}

    def __call__(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), 77) token ids: start, the text's tokens, end, zeros; a longer text is cut to
        fit and still ends with the end token."""
        out = torch.zeros(len(texts), CONTEXT_LENGTH, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.ids[START], *self.encode(text)][:CONTEXT_LENGTH - 1] + [self.ids[END]]
            out[row, :len(ids)] = torch.tensor(ids)
        return out

    def encode(self, text: str) -> list[int]:
        import ftfy

        text = " ".join(html.unescape(html.unescape(ftfy.fix_text(text))).split()).lower()
        ids = []
        for word in self.pattern.findall(text):
            symbols = "".join(self.symbols[byte] for byte in word.encode("utf-8"))
            ids += [self.ids[piece] for piece in self._merge(symbols)]
        return ids

    def _merge(self, word: str) -> list[str]:
        """Merge the lowest-ranked adjacent pair, left to right, until no pair has a rank."""
        if word not in self.cache:
            pieces = [*word[:-1], word[-1] + "</w>"]
            while len(pieces) > 1:
                best = min(zip(pieces, pieces[1:]), key=lambda pair: self.ranks.get(pair, len(self.ranks)))
                if best not in self.ranks:
                    break
                merged, i = [], 0
                while i < len(pieces):
                    if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                        merged.append(pieces[i] + pieces[i + 1])
                        i += 2
                    else:
                        merged.append(pieces[i])
                        i += 1
                pieces = merged
            self.cache[word] = pieces
        return self.cache[word]


# -- text encoders -----------------------------------------------------------------------------


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ClipBlock(nn.Module):
    """A residual attention block of CLIP's text transformer (its parameter names)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, width * 4), gelu=QuickGELU(),
                                             c_proj=nn.Linear(width * 4, width)))
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class ClipTextTower(nn.Module):
    """The text half of OpenAI's CLIP (``encode_text``, then unit length), built from a checkpoint's
    own weights and shapes as CLIP's ``build_model`` does; the image half is never built."""

    def __init__(self, vocab_size: int, context: int, width: int, layers: int, embed: int):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.zeros(context, width))
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(ClipBlock(width, width // 64 or 1) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.zeros(width, embed))
        self.register_buffer("mask", torch.full((context, context), float("-inf")).triu(1), persistent=False)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> ClipTextTower:
        layers = len({key.split(".")[2] for key in state if key.startswith("transformer.resblocks.")})
        tower = cls(state["token_embedding.weight"].shape[0], state["positional_embedding"].shape[0],
                    state["ln_final.weight"].shape[0], layers, state["text_projection"].shape[1])
        wanted = tower.state_dict()
        tower.load_state_dict({key: state[key].float() for key in wanted})  # OpenAI's files are half precision
        return tower.eval()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = (self.token_embedding(tokens) + self.positional_embedding).permute(1, 0, 2)  # sequence first
        for block in self.transformer.resblocks:
            x = block(x, self.mask)
        x = self.ln_final(x.permute(1, 0, 2))
        x = x[torch.arange(len(x)), tokens.argmax(-1)] @ self.text_projection  # at the end token, the highest id
        return F.normalize(x, dim=-1)


def is_clip_checkpoint(state: dict) -> bool:
    return all(key in state for key in ("token_embedding.weight", "positional_embedding", "text_projection",
                                        "ln_final.weight"))


def load_text_encoder(path: Path, device: str) -> nn.Module:
    """A module from (N, 77) token ids to (N, D) embeddings: a TorchScript text encoder as it is (it
    normalises inside, as ultralytics relies on), or CLIP's text tower from a CLIP checkpoint (a
    TorchScript archive, as OpenAI publishes it, or a state dict)."""
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError):
        module = None
    if module is not None and not is_clip_checkpoint(module.state_dict()):
        return module.to(device).eval()
    try:
        state = module.state_dict() if module is not None else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for a file that is no checkpoint
        raise ValueError(f"{TEXT_ENCODER_FLAG} {path}: not a TorchScript text encoder or a CLIP checkpoint "
                         f"({exc})") from exc
    if not isinstance(state, dict) or not is_clip_checkpoint(state):
        raise ValueError(f"{TEXT_ENCODER_FLAG} {path}: not a TorchScript text encoder, and no CLIP checkpoint either "
                         "(it has no token_embedding/text_projection weights)")
    return ClipTextTower.from_state_dict(state).to(device)


def tokenizer_vocabulary(encoder: Path) -> Path:
    """CLIP's vocabulary file: beside the text encoder, or the registered copy in UMS_HOME."""
    entry = lookup(CLIP_VOCABULARY)
    for candidate in (encoder.parent / entry.file, weights_home() / entry.file):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{TEXT_ENCODER_FLAG} {encoder.name}: its tokenizer vocabulary {entry.file} is neither "
                            f"beside it nor in UMS_HOME: {missing_message(entry, weights_home())}")


@torch.no_grad()
def embed_prompts(texts: list[str], encoder_path: Path, device: str) -> torch.Tensor:
    """(1, len(texts), D) float32 text embeddings, as ultralytics' ``get_text_pe`` computes them."""
    tokens = ClipTokenizer(tokenizer_vocabulary(encoder_path))(texts).to(device)
    features = load_text_encoder(encoder_path, device)(tokens).float()
    return features.reshape(1, len(texts), -1).cpu()


# -- the models --------------------------------------------------------------------------------


def family_of(model) -> str | None:
    """``yolo-world`` or ``yoloe`` for an ultralytics model of those kinds (by its class), else None."""
    from ultralytics.nn.tasks import WorldModel, YOLOEModel

    inner = getattr(model, "model", None)
    if isinstance(inner, WorldModel):
        return "yolo-world"
    return "yoloe" if isinstance(inner, YOLOEModel) else None


def default_text_encoder(family: str, model) -> str:
    """The ``ums weights`` name of the text encoder the family was trained with."""
    if family == "yolo-world":
        return TEXT_ENCODERS["yolo-world"]
    variant = getattr(model.model, "text_model", "mobileclip:blt")
    if f"yoloe:{variant}" not in TEXT_ENCODERS:
        raise ValueError(f"this YOLOE model wants the text encoder {variant!r}, which `ums weights` does not know: "
                         f"pass {TEXT_ENCODER_FLAG} PATH")
    return TEXT_ENCODERS[f"yoloe:{variant}"]


def resolve_text_encoder(value: Path | None, family: str, model) -> Path:
    chosen = value if value is not None else Path(default_text_encoder(family, model))
    path = resolve_weights(chosen, TEXT_ENCODER_FLAG)
    if not path.is_file():
        names = ", ".join(sorted(set(TEXT_ENCODERS.values())))
        raise FileNotFoundError(f"{TEXT_ENCODER_FLAG} {path}: no such file (a TorchScript text encoder or a CLIP "
                                f"checkpoint, or a name of `ums weights list`: {names})")
    return path


def expected_width(family: str, model) -> int:
    """The embedding size the model's head takes."""
    inner = model.model
    return inner.txt_feats.shape[-1] if family == "yolo-world" else inner.model[-1].embed


def give_classes(model, family: str, names: list[str], embeddings: torch.Tensor) -> None:
    """Leave the model as ultralytics' ``set_classes`` would, from our embeddings."""
    inner = model.model
    if family == "yolo-world":
        inner.txt_feats = embeddings
        inner.model[-1].nc = len(names)
        inner.names = list(names)
    else:
        head = inner.model[-1]
        if hasattr(head, "lrpc"):
            raise ValueError("this YOLOE model is prompt-free (a -pf file with a fixed vocabulary): use a YOLOE model "
                             "without -pf, which takes --classes")
        with torch.no_grad():
            model.set_classes(names, head.get_tpe(embeddings.to(next(inner.parameters()).dtype)))
    model.predictor = None  # a predictor made before holds the old classes


class OpenVocabularyDetector:
    """A YOLO-World or YOLOE model prompted with words of the dataset taxonomy; its detections are
    in that taxonomy, and ``prompts`` says which words found each class."""

    def __init__(self, model, path: Path, config: DetectorConfig, family: str):
        self.model, self.config, self.family = model, config, family
        self.taxonomy = DATASET_TAXONOMY
        self.vocabulary = resolve_prompts(config.classes, load_taxonomy(self.taxonomy))
        self.prompts = prompts_by_class(self.vocabulary)
        encoder = resolve_text_encoder(config.text_encoder, family, model)
        texts = [prompt.text for prompt in self.vocabulary]
        embeddings = embed_prompts(texts, encoder, config.device)
        if embeddings.shape[-1] != expected_width(family, model):
            raise ValueError(f"{TEXT_ENCODER_FLAG} {encoder}: its embeddings have {embeddings.shape[-1]} values, "
                             f"--detector {path.name} takes {expected_width(family, model)} (give the text encoder "
                             f"the model was trained with, by default {default_text_encoder(family, model)})")
        give_classes(model, family, texts, embeddings)

    def detect(self, image: np.ndarray, image_size: int | None = None) -> Detections:
        from ums.autolabel.detectors import predict_boxes

        boxes, scores, prompt_index = predict_boxes(self.model, image, self.config, image_size)
        return to_taxonomy(boxes, scores, prompt_index, self.vocabulary, self.config.iou, self.taxonomy)
