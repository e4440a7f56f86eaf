"""The public weights this pipeline uses, by name: what each is for, its licence, where it is
published, and how a copy is checked (``ums weights list | download | verify | path``).

- Files live in ``UMS_HOME`` (default: the ums cache folder, ``~/.cache/ums``) under their
  published file names.
- :func:`download` is the only code that touches the network, and only ``ums weights download``
  calls it. Everywhere else a registered name given for a weight path (``--detector yolov8x``,
  ``--sam sam_vit_b``, ``--detector-weights fasterrcnn_resnet50_fpn``) resolves to the file in
  ``UMS_HOME`` or fails with the command to run: nothing is ever fetched implicitly.
- ``UMS_WEIGHTS_MIRROR`` (a base URL) replaces every origin with ``<mirror>/<file name>``: a
  site's own copy for machines behind a firewall, and the tests' local server.
- Integrity: what the registry can know about each file, and nothing is called verified beyond it:
  the exact size and full SHA-256 of the SAM files; torchvision's approximate size and the SHA-256
  prefix its file names carry; for every file, that it is a PyTorch checkpoint (a wrong or truncated
  download is not); and the full SHA-256 recorded on first download in ``UMS_HOME/hashes.json``,
  which shows later changes only (trust on first use: for the ultralytics, YOLOv7 and TSJNet files
  no size or hash is published). CLIP ViT-B/32's SHA-256 is the one its address carries; the size and
  SHA-256 of CLIP's tokenizer vocabulary are those the clip-anytorch 2.6.0 wheel records for its copy.
- Open-vocabulary detectors (YOLO-World, YOLOE) need a text encoder and CLIP's tokenizer vocabulary
  besides their own file: each is an entry of its own, named in the detector's ``after``.
- A download reaches its final name only whole and checked: a body cut short (a dropped connection,
  a truncated chunked response) stays in ``<file>.part`` for the next run to complete.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

HOME_ENV = "UMS_HOME"
MIRROR_ENV = "UMS_WEIGHTS_MIRROR"
HASHES_FILE = "hashes.json"
PART_SUFFIX = ".part"
CHUNK = 1 << 20
TIMEOUT_S = 60
# torchvision's _file_size is MiB rounded to 3 decimals: allow the rounding and a little more
APPROX_TOLERANCE_MIB = 0.001
# the start of torch.save's legacy (pre-zip) format: pickle protocol 2, then torch's magic number
TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ts")  # .ts: TorchScript, the same zip archive as torch.save

Progress = Callable[[int, int | None], None]


class WeightsError(Exception):
    """A download or check that failed; the message says what to do next."""


class UnknownWeights(WeightsError):
    pass


@dataclass(frozen=True)
class Weight:
    name: str
    file: str
    purpose: str
    licence: str
    source: str
    url: str | None  # None: the publisher's page needs a browser (manual download)
    size: int | None = None  # exact bytes, where the publisher's file is known
    sha256: str | None = None  # the full SHA-256 of the publisher's file, where it is known
    approx_mib: float | None = None  # torchvision's published size
    sha256_prefix: str | None = None  # torch.hub's convention: file name "-<first 8 hex>."
    loads_as: str | None = None  # the derived file the pipeline reads (YOLOv7: its ONNX export)
    after: str | None = None  # what to run once the file is here ({home} = UMS_HOME)
    manual: str | None = None  # how to get it by hand ({home} = UMS_HOME)
    model_type: str | None = None  # SAM architecture the checkpoint needs


SAM_SOURCE = "facebookresearch/segment-anything (dl.fbaipublicfiles.com)"
ULTRALYTICS_RELEASE = "v8.4.0"  # attempt_download_asset(release=...) in the pinned ultralytics 8.4.190
YOLOV7_RELEASE = "v0.1"
TORCHVISION_SOURCE = "torchvision 0.29.1 weight enums (download.pytorch.org)"
TORCHVISION_LICENCE = "BSD-3-Clause code; trained on COCO (dataset terms apply)"

# Our loader reads the (N, 7) output of ONNX Runtime's NMS (batch, x0, y0, x1, y1, class, score in
# letterboxed pixels): --grid --end2end with --max-wh (without it the graph is TensorRT's plugin).
# The graph's NMS replaces detector.iou and its conf-thres hides anything below it, so both equal
# our defaults (iou 0.45, confidence 0.25). A square, static input: the loader letterboxes to it.
# Its attempt_load unpickles the whole model with torch.load, which torch >= 2.6 refuses by default.
YOLOV7_EXPORT = ("in a clone of github.com/WongKinYiu/yolov7, in its own environment (its requirements.txt with "
                 "torch<2.6, plus onnx and onnx-simplifier): python export.py --weights {home}/{file} --grid --end2end "
                 "--simplify --topk-all 100 --iou-thres 0.45 --conf-thres 0.25 --img-size {size} {size} --max-wh {size}"
                 " (writes {home}/{onnx}, which --detector {name} then loads)")

TSJNET_MANUAL = ("manual download: the official checkpoint is only on Baidu Netdisk, "
                 "https://pan.baidu.com/s/1TykTSd5UMAAAtHq1HumvXQ?pwd=r914 (extraction code r914), linked from "
                 "weight/README.md of github.com/XylonXu01/TSJNet; save it as {home}/TSJNet.pth, then "
                 "`ums weights verify tsjnet_official` records its SHA-256")


def _sam(variant: str, file: str, size: int, sha256: str, note: str) -> Weight:
    return Weight(f"sam_{variant}", file, f"SAM ViT-{variant[-1].upper()} masks for autolabel (--sam; {note})",
                  "Apache-2.0", SAM_SOURCE, f"https://dl.fbaipublicfiles.com/segment_anything/{file}", size=size,
                  sha256=sha256, model_type=variant)


def _ultralytics(family: str, scale: str) -> Weight:
    label = family.replace("yolo", "YOLO")
    return Weight(f"{family}{scale}", f"{family}{scale}.pt", f"{label}-{scale} COCO detector for autolabel (--detector)",
                  "AGPL-3.0", f"ultralytics/assets release {ULTRALYTICS_RELEASE}",
                  f"https://github.com/ultralytics/assets/releases/download/{ULTRALYTICS_RELEASE}/{family}{scale}.pt")


# What ultralytics' own set_classes would fetch for each family (ultralytics/nn/text_model.py), as
# `ums weights` names: YOLO-World embeds its prompts with CLIP ViT-B/32, YOLOE with MobileCLIP's
# TorchScript text encoder (MobileCLIP2 for YOLOE-26, whose YAML says text_model: mobileclip2:b).
CLIP_VOCABULARY = "clip_bpe_vocab"
TEXT_ENCODERS = {"yolo-world": "clip_vit_b32", "yoloe:mobileclip:blt": "mobileclip_blt", "yoloe:mobileclip2:b": "mobileclip2_b"}
CLIP_MODEL_SHA256 = "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af"
MOBILECLIP_LICENCE = "Apple MobileCLIP weights licence (apple/ml-mobileclip LICENSE_weights_data)"


def _open_vocabulary(stem: str, label: str, encoder: str) -> Weight:
    return Weight(stem, f"{stem}.pt", f"{label} open-vocabulary detector for autolabel (--detector; --classes)", "AGPL-3.0",
                  f"ultralytics/assets release {ULTRALYTICS_RELEASE}",
                  f"https://github.com/ultralytics/assets/releases/download/{ULTRALYTICS_RELEASE}/{stem}.pt",
                  after=f"its text encoder and tokenizer vocabulary: ums weights download {encoder} {CLIP_VOCABULARY}")


def _text_encoder(name: str, file: str, purpose: str, licence: str, source: str, url: str, **known) -> Weight:
    return Weight(name, file, purpose, licence, source, url, after=f"its tokenizer vocabulary: ums weights download "
                  f"{CLIP_VOCABULARY}", **known)


def _yolov7(stem: str, size: int = 640) -> Weight:
    onnx = f"{stem}.onnx"
    after = YOLOV7_EXPORT.replace("{file}", f"{stem}.pt").replace("{onnx}", onnx).replace("{size}", str(size))
    return Weight(stem, f"{stem}.pt", f"{stem} COCO detector for autolabel (--detector {stem} loads its ONNX export)",
                  "GPL-3.0", f"WongKinYiu/yolov7 release {YOLOV7_RELEASE}",
                  f"https://github.com/WongKinYiu/yolov7/releases/download/{YOLOV7_RELEASE}/{stem}.pt",
                  loads_as=onnx, after=after.replace("{name}", stem))


def _torchvision(name: str, file: str, approx_mib: float, purpose: str) -> Weight:
    prefix = file.rsplit("-", 1)[1].split(".")[0]
    return Weight(name, file, purpose, TORCHVISION_LICENCE, TORCHVISION_SOURCE, f"https://download.pytorch.org/models/{file}",
                  approx_mib=approx_mib, sha256_prefix=prefix)


def _registry(entries: Iterable[Weight]) -> dict[str, Weight]:
    table: dict[str, Weight] = {}
    for entry in entries:
        if entry.name in table:
            raise ValueError(f"weights registry: {entry.name!r} registered twice")
        table[entry.name] = entry
    return table


REGISTRY: dict[str, Weight] = _registry([
    # sizes: the byte counts these files are served with (the names' hex is no SHA-256 prefix). Meta
    # publishes no hash; these SHA-256 are the ones independent projects record for the files it
    # serves (micro-sam's model registry among them), which agree with one another.
    _sam("vit_b", "sam_vit_b_01ec64.pth", 375_042_383, "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
         "fastest"),
    _sam("vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607, "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
         "add --sam-type vit_l"),
    _sam("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879, "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
         "best masks; add --sam-type vit_h"),
    *(_ultralytics(family, scale) for family in ("yolov8", "yolo11", "yolo26") for scale in "nsmlx"),
    *(_yolov7(stem) for stem in ("yolov7-tiny", "yolov7", "yolov7x")),
    *(_open_vocabulary(f"yolov8{scale}-worldv2", f"YOLOv8{scale}-Worldv2", TEXT_ENCODERS["yolo-world"])
      for scale in "smlx"),
    *(_open_vocabulary(f"yoloe-{family}{scale}-seg", f"YOLOE-{family}{scale} (segmentation)", TEXT_ENCODERS[encoder])
      for family, scales, encoder in (("v8", "sml", "yoloe:mobileclip:blt"), ("11", "sml", "yoloe:mobileclip:blt"),
                                      ("26", "nsmlx", "yoloe:mobileclip2:b"))
      for scale in scales),
    _text_encoder("clip_vit_b32", "ViT-B-32.pt", "OpenAI CLIP ViT-B/32: the text encoder of YOLO-World (--text-encoder)",
                  "MIT (openai/CLIP LICENSE)", "openai/CLIP (openaipublic.azureedge.net)",
                  f"https://openaipublic.azureedge.net/clip/models/{CLIP_MODEL_SHA256}/ViT-B-32.pt", sha256=CLIP_MODEL_SHA256),
    *(_text_encoder(name, f"{name}.ts", f"{label} TorchScript text encoder of {users} (--text-encoder)", MOBILECLIP_LICENCE,
                    f"ultralytics/assets release {ULTRALYTICS_RELEASE}",
                    f"https://github.com/ultralytics/assets/releases/download/{ULTRALYTICS_RELEASE}/{name}.ts")
      for name, label, users in (("mobileclip_blt", "MobileCLIP-B (LT)", "YOLOE-v8/11"),
                                 ("mobileclip2_b", "MobileCLIP2-B", "YOLOE-26"))),
    Weight(CLIP_VOCABULARY, "bpe_simple_vocab_16e6.txt.gz", "CLIP's byte-pair tokenizer vocabulary: every text encoder "
           "above reads its prompts with it", "MIT (openai/CLIP LICENSE)", "openai/CLIP repository (clip/)",
           "https://raw.githubusercontent.com/openai/CLIP/main/clip/bpe_simple_vocab_16e6.txt.gz", size=1_356_917,
           sha256="924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a"),
    _torchvision("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth", 159.743,
                 "Faster R-CNN R50-FPN (COCO) task detector of tsjnet train / eval-det (--detector-weights)"),
    _torchvision("deeplabv3_resnet101", "deeplabv3_resnet101_coco-586e9e4e.pth", 233.217,
                 "DeepLabV3-R101 (21 VOC classes) tsjnet segmenter (--segmenter-weights; needs tasks.train_segmenter)"),
    _torchvision("deeplabv3_resnet50", "deeplabv3_resnet50_coco-cd0a2569.pth", 160.515,
                 "DeepLabV3-R50 (21 VOC classes) tsjnet segmenter (--segmenter-weights; needs tasks.train_segmenter)"),
    Weight("tsjnet_official", "TSJNet.pth", "official TSJNet fusion weights, input of `tsjnet convert`",
           "MIT (XylonXu01/TSJNet LICENSE)", "XylonXu01/TSJNet, Baidu Netdisk (manual)", None,
           after="tsjnet convert tsjnet_official weights/tsjnet", manual=TSJNET_MANUAL),
])


def weights_home() -> Path:
    explicit = os.environ.get(HOME_ENV)
    if explicit:
        return Path(explicit).expanduser()
    from ums.core.offline import cache_root

    return cache_root()


def lookup(name: str) -> Weight:
    """A registered entry by name, or by its published file name (``yolov8x.pt``)."""
    if name in REGISTRY:
        return REGISTRY[name]
    for entry in REGISTRY.values():
        if entry.file == name:
            return entry
    raise UnknownWeights(f"{name!r} is not a registered weight (`ums weights list` shows the names)")


def _fill(text: str, home: Path) -> str:
    return text.replace("{home}", str(home))


# -- local state -------------------------------------------------------------------------------


def read_hashes(home: Path) -> dict[str, dict]:
    path = home / HASHES_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: unreadable ({exc}); fix or delete it (hashes are then recorded anew)") from exc


def record_hash(home: Path, entry: Weight, digest: str, size: int, origin: str) -> dict:
    from ums.core.atomic import write_text

    hashes = read_hashes(home)
    hashes[entry.file] = {"sha256": digest, "size": size, "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                          "origin": origin}
    write_text(home / HASHES_FILE, json.dumps(hashes, indent=1, sort_keys=True) + "\n")
    return hashes[entry.file]


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def size_problem(entry: Weight, size: int, recorded: dict | None) -> str | None:
    if entry.size is not None and size != entry.size:
        return f"{size} bytes, published {entry.size}"
    if entry.approx_mib is not None and abs(size / 2**20 - entry.approx_mib) > APPROX_TOLERANCE_MIB:
        return f"{size / 2**20:.3f} MiB, published {entry.approx_mib} MiB"
    if recorded and size != recorded["size"]:
        return f"{size} bytes, {recorded['size']} at first download"
    return None


def hash_problem(entry: Weight, digest: str, recorded: dict | None) -> str | None:
    if entry.sha256 and digest != entry.sha256:
        return f"SHA-256 {digest[:16]}..., published {entry.sha256[:16]}..."
    if entry.sha256_prefix and not digest.startswith(entry.sha256_prefix):
        return f"SHA-256 {digest[:16]}..., the file name says {entry.sha256_prefix}..."
    if recorded and digest != recorded["sha256"]:
        return (f"SHA-256 {digest[:16]}..., recorded {recorded['sha256'][:16]}... at first download ({recorded['recorded']}); "
                f"if the publisher replaced the file, delete its line in {HASHES_FILE}")
    return None


def format_problem(entry: Weight, path: Path) -> str | None:
    """Every registered ``.pt``/``.pth`` is a torch.save file: a zip archive (whose directory sits at
    its end, so a truncated copy fails too) or the legacy pickle format, which starts with a magic number."""
    if not entry.file.endswith(CHECKPOINT_SUFFIXES) or zipfile.is_zipfile(path):
        return None
    with open(path, "rb") as handle:
        if handle.read(len(TORCH_LEGACY_MAGIC)) == TORCH_LEGACY_MAGIC:
            return None
    return "not a PyTorch checkpoint (no zip archive, no legacy torch.save header): a truncated or wrong file"


@dataclass
class Check:
    digest: str
    size: int
    problems: list[str]
    recorded: dict | None  # the record the file was held against, None on first sight


def check_file(entry: Weight, path: Path, home: Path) -> Check:
    recorded = read_hashes(home).get(entry.file)
    size, digest = path.stat().st_size, sha256_of(path)
    problems = [p for p in (size_problem(entry, size, recorded), hash_problem(entry, digest, recorded),
                            format_problem(entry, path)) if p]
    return Check(digest, size, problems, recorded)


def published_check(entry: Weight) -> str | None:
    """What the registry knows of the publisher's file, in words; None when it knows nothing."""
    if entry.sha256:
        return "published size and SHA-256" if entry.size is not None else "published SHA-256"
    if entry.sha256_prefix:
        return f"published size (~{entry.approx_mib} MiB) and SHA-256 prefix {entry.sha256_prefix}"
    return None


def hash_source(entry: Weight, recorded: dict | None) -> str:
    first = f"recorded {recorded['recorded'][:10]}" if recorded else "recorded on first download"
    return f"{published_check(entry)} + {first}" if published_check(entry) else f"none published; {first}"


def size_text(entry: Weight, recorded: dict | None) -> str:
    if entry.size is not None:
        return f"{entry.size / 2**20:.1f} MiB"
    if entry.approx_mib is not None:
        return f"~{entry.approx_mib:.1f} MiB"
    return f"{recorded['size'] / 2**20:.1f} MiB" if recorded else "?"


# -- presence ----------------------------------------------------------------------------------

# how a file's state reads in `list`, and what resolving its name does then
STATES = {
    "present": "yes",
    "absent": "no",
    "partial": "partial download (rerun download to resume)",
    "not-exported": "downloaded; ONNX export pending",
}


def state_of(entry: Weight, home: Path) -> str:
    if entry.loads_as and (home / entry.loads_as).is_file():
        return "present"
    if (home / entry.file).is_file():
        return "not-exported" if entry.loads_as else "present"
    return "partial" if (home / (entry.file + PART_SUFFIX)).is_file() else "absent"


def listing(home: Path | None = None) -> list[dict]:
    """One row per entry, as `ums weights list` shows it (and `--json` prints it)."""
    home = home or weights_home()
    hashes = read_hashes(home)
    return [{"name": e.name, "for": e.purpose, "size": size_text(e, hashes.get(e.file)), "licence": e.licence,
             "source": e.source, "hash": hash_source(e, hashes.get(e.file)), "present": STATES[state_of(e, home)],
             "file": e.file, "url": e.url} for e in REGISTRY.values()]


def local_path(entry: Weight, home: Path) -> Path:
    """The file the pipeline reads for this entry (its ONNX export for YOLOv7)."""
    return home / (entry.loads_as or entry.file)


def missing_message(entry: Weight, home: Path) -> str:
    if state_of(entry, home) == "not-exported":
        return f"{entry.file} is downloaded but the pipeline loads its ONNX export {entry.loads_as}: {_fill(entry.after, home)}"
    if entry.manual:
        return f"{entry.file} is not in {home}: {_fill(entry.manual, home)}"
    return (f"registered weights, not downloaded: run `ums weights download {entry.name}` (the only command that uses "
            f"the network; files go to {home}, set by {HOME_ENV}), or pass a local file")


def _named_entry(value: str | Path | None) -> Weight | None:
    """The entry a bare registered name stands for; None for paths (an existing file always wins)."""
    if value is None:
        return None
    path = Path(value)
    if path.exists() or path.name != str(value):
        return None
    try:
        return lookup(str(value))
    except UnknownWeights:
        return None


def present_registered_file(value: str | Path | None) -> Path | None:
    """The UMS_HOME file a registered name stands for, when it is there (never raises)."""
    entry = _named_entry(value)
    resolved = local_path(entry, weights_home()) if entry else None
    return resolved if resolved is not None and resolved.is_file() else None


def resolve_weights(value: str | Path | None, flag: str) -> Path | None:
    """A weight path as given, or for a bare registered name the file in UMS_HOME; an absent
    registered file is an error naming ``flag`` and the command that fetches it."""
    entry = _named_entry(value)
    if entry is None:
        return None if value is None else Path(value)
    home = weights_home()
    resolved = local_path(entry, home)
    if not resolved.is_file():
        raise FileNotFoundError(f"{flag} {value}: {missing_message(entry, home)}")
    return resolved


def registered_model_type(value: str | Path | None) -> str | None:
    """The SAM architecture a registered name or official file name implies (None otherwise)."""
    if value is None:
        return None
    try:
        return lookup(Path(value).name).model_type
    except UnknownWeights:
        return None


# -- network: `ums weights download` only ------------------------------------------------------


def source_url(entry: Weight, home: Path) -> str:
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        return f"{mirror.rstrip('/')}/{entry.file}"
    if entry.url is None:
        raise WeightsError(f"{entry.file} has no download address ({_fill(entry.manual or 'copy it into {home} by hand', home)})")
    return entry.url


def _open(url: str, offset: int):
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    request = urllib.request.Request(url, headers={**headers, "User-Agent": "ums-weights"})
    return urllib.request.urlopen(request, timeout=TIMEOUT_S)


class Unreachable(WeightsError):
    """The server could not be asked, or refused: another source is the way on."""


class Dropped(WeightsError):
    """The body stopped short; what arrived is kept in the ``.part`` for the next run to complete."""


def fetch(url: str, part: Path, on_progress: Progress | None = None) -> None:
    """Bring ``part`` up to the whole file at ``url``, continuing what an earlier run left there.
    A dropped connection keeps what arrived and raises: the next call asks only for the rest."""
    offset = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, offset)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing left to send: the .part is already whole
        raise Unreachable(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        said = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason  # not "[Errno 111] ..."
        raise Unreachable(f"{url}: {said}") from exc
    with response:
        if response.status != 206:
            offset = 0  # the server ignored the range and sends everything again
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        received, whole = _stream(response, part, offset, total, on_progress)
    if not whole or (total is not None and received < total):
        of = f" of {total}" if total is not None else ""
        raise Dropped(f"{url}: connection dropped after {received}{of} bytes")


def _stream(response, part: Path, offset: int, total: int | None, on_progress: Progress | None) -> tuple[int, bool]:
    """Append the body to ``part``: the bytes it now holds, and whether the body arrived to its end
    (a chunked body cut short raises in ``read``: without that it would pass for a whole file)."""
    received = offset
    with open(part, "ab" if offset else "wb") as handle:
        try:
            for chunk in iter(lambda: response.read(CHUNK), b""):
                handle.write(chunk)
                received += len(chunk)
                if on_progress:
                    on_progress(received, total)
        except (OSError, http.client.HTTPException):
            return received, False  # a reset connection: what arrived is kept and the caller reports the gap
    return received, True


def download(name: str | Weight, home: Path | None = None, on_progress: Progress | None = None) -> Path:
    """Fetch one registered file into UMS_HOME: resumable (``.part`` + HTTP Range), checked
    (size, SHA-256) before it is renamed to its final name. A file that fails the checks is
    deleted; the final name only ever holds a checked file."""
    entry = name if isinstance(name, Weight) else lookup(name)
    home = home or weights_home()
    home.mkdir(parents=True, exist_ok=True)
    target = home / entry.file
    if target.is_file():
        present = check_file(entry, target, home)
        if not present.problems:
            if present.recorded is None:
                record_hash(home, entry, present.digest, present.size, "found in place")
            return target
    url = source_url(entry, home)
    part = home / (entry.file + PART_SUFFIX)
    try:
        fetch(url, part, on_progress)
    except Dropped as exc:
        raise WeightsError(f"{exc} (rerun `ums weights download {entry.name}` to fetch only the rest, kept in {part}; "
                           f"{_other_sources(entry, home)})") from exc
    except Unreachable as exc:
        raise WeightsError(f"{exc} ({_other_sources(entry, home)})") from exc
    checked = check_file(entry, part, home)
    if checked.problems:
        part.unlink()
        raise WeightsError(f"download from {url} refused and deleted: {'; '.join(checked.problems)} "
                           f"(the server sent another file than the registered one; {_other_sources(entry, home)})")
    os.replace(part, target)
    if checked.recorded is None:
        record_hash(home, entry, checked.digest, checked.size, url)
    return target


def _other_sources(entry: Weight, home: Path) -> str:
    """Where else the file can come from: a mirror, or a copy placed by hand."""
    mirror = os.environ.get(MIRROR_ENV)
    if mirror:
        where = f"{MIRROR_ENV}={mirror} gave no good {entry.file}: check that mirror"
    else:
        where = f"set {MIRROR_ENV}=URL to a site mirror that serves {entry.file}"
    return f"{where}, or copy {entry.file} into {home} by hand and run `ums weights verify {entry.name}`"


def next_step(entry: Weight, home: Path | None = None) -> str | None:
    return _fill(entry.after, home or weights_home()) if entry.after else None


# -- verify ------------------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    ok: bool
    message: str
    next_step: str = ""  # what to do about a failure


def verify_one(entry: Weight, home: Path, named: bool) -> Verdict | None:
    path = home / entry.file
    if not path.is_file():
        if not named:
            return None
        return Verdict(entry.name, False, f"{entry.file} is absent from {home}", missing_message(entry, home))
    checked = check_file(entry, path, home)
    if checked.problems:
        fix = (f"delete it and run `ums weights download {entry.name}`" if entry.url else
               f"replace it with the right file ({_fill(entry.manual or '', home)})")
        return Verdict(entry.name, False, f"{path}: {'; '.join(checked.problems)}", fix)
    if checked.recorded is None:
        record_hash(home, entry, checked.digest, checked.size, "verify")
    return Verdict(entry.name, True, _what_was_checked(entry, checked))


def _what_was_checked(entry: Weight, checked: Check) -> str:
    """An ok in words that claim no more than was checked."""
    checkpoint = ", a PyTorch checkpoint" if entry.file.endswith(CHECKPOINT_SUFFIXES) else ""
    if checked.recorded is None:
        history = "its SHA-256 is recorded now, to show later changes (trust on first use)"
    else:
        history = f"SHA-256 unchanged since {checked.recorded['recorded'][:10]}"
    published = published_check(entry)
    if published:
        return f"{checked.size} bytes{checkpoint}; matches the {published}; {history}"
    return (f"{checked.size} bytes{checkpoint}; no size or SHA-256 is published for {entry.file}, so nothing shows it is "
            f"the publisher's file: {history}")


def verify(names: Iterable[str] | None = None, home: Path | None = None) -> list[Verdict]:
    """Check every present file (or the named ones, absent counting as a failure) against its
    size and SHA-256 records. A YOLOv7 ONNX export is made here, so only its .pt is checked."""
    home = home or weights_home()
    names = list(names or [])
    entries = [lookup(n) for n in names] if names else list(REGISTRY.values())
    verdicts = [verify_one(e, home, named=bool(names)) for e in entries]
    return [v for v in verdicts if v is not None]

