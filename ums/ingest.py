"""Stage ``ingest``: find DJI captures in a flight folder, read their metadata, extract raw thermal.

Re-running is cheap and safe: a file whose size and modification time are unchanged is not read
again, a changed file is re-read (its content hash decides what it is), new files are added, and
files that vanished are reported but their records kept. Every file is committed as soon as it is
read, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
import stat as file_mode
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ums.core.atomic import write_image
from ums.camera import THERMAL_FRAME_SIZES, frame_size_problem, max_source_bytes
from ums.dji.exif import find_exif_block, read_exif
from ums.dji.filenames import (
    IMAGE_SUFFIXES,
    THERMAL_LETTERS,
    VISIBLE_LETTERS,
    CaptureName,
    fallback_capture_name,
    parse_capture_name,
)
from ums.dji.jpeg import APP1, JpegError, JpegHeader, read_header
from ums.dji.rjpeg import RawThermalError, extract_raw_thermal, has_flir_container, has_raw_thermal, raw_layout_fits
from ums.dji.xmp import XmpError, find_xmp_packet, implausible_numbers, parse_drone_dji
from ums.core.records import (
    CaptureRecord,
    ExifSummary,
    FileProbe,
    FrameRecord,
    Issue,
    StageResult,
    ThermalRawRecord,
    XmpField,
)
from ums.core.executors import ExecutorSettings
from ums.core.runner import CaptureStage, Outcome, StageContext, StageReport, Task, run_capture_stage
from ums.core.stage_names import ALIGN, AUTOLABEL, CROP, EXPORT, REVIEW, SPLIT
from ums.core.stage_names import INGEST as STAGE
from ums.core.workspace import DATABASE_NAME, Workspace

THERMAL_RAW_DIR = "thermal_raw"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_SOURCE_LETTERS = {"InfraredCamera": "T", "WideCamera": "W", "ZoomCamera": "Z", "VisibleCamera": "V"}
# The folders a workspace writes at its root: not read when the workspace is the flight folder itself.
WORKSPACE_OUTPUT_FOLDERS = frozenset({THERMAL_RAW_DIR, CROP, ALIGN, AUTOLABEL, REVIEW, SPLIT, EXPORT, "reports",
                                      "fiftyone-db"})


class NothingToIngest(ValueError):
    """The flight folder holds no DJI capture that can be ingested."""


class SkipFile(ValueError):
    """A readable file that is not a DJI capture frame."""


class IngestConfig(BaseModel):
    """Settings of ``ums ingest`` (``pipelines/ingest.yaml`` holds the defaults)."""

    model_config = ConfigDict(extra="forbid")  # a misspelt setting is an error, not a no-op

    timestamp_tolerance_s: float = Field(1.0, ge=0, description="frames of one sequence number "
                                         "within this many seconds are one capture")
    extract_thermal_raw: bool = True


@dataclass
class IngestReport(StageReport):
    """Per source file: read now (``done``), unchanged since the last ingest (``skipped``), failed
    (retried next run) or not run; then what the files make."""

    flight_root: str = ""
    unreadable: int = 0
    ignored: int = 0
    duplicates: int = 0
    removed: int = 0
    captures: int = 0
    paired: int = 0
    thermal_raw: int = 0

    @property
    def files_seen(self) -> int:
        return self.planned

    @property
    def read(self) -> int:
        return self.done

    @property
    def unchanged(self) -> int:
        return self.skipped

    def rows(self) -> list[tuple[str, int]]:
        rows = [("JPEG files", self.files_seen), ("read now", self.read), ("unchanged since last ingest", self.unchanged)]
        if self.failed:
            rows.append(("failed (rerun to retry)", self.failed))
        if self.not_run:
            rows.append(("not run (rerun to resume)", self.not_run))
        return rows + [
            ("unreadable or not DJI", self.unreadable),
            ("duplicates skipped", self.duplicates),
            ("removed since last ingest", self.removed),
            ("other files ignored", self.ignored),
            ("captures", self.captures),
            ("visible + thermal pairs", self.paired),
            ("raw thermal extracted", self.thermal_raw),
            ("issues", len(self.issues)),
        ]


def ingest_flight(
    workspace: Workspace, flight_dir: str | os.PathLike[str], config: IngestConfig | None = None,
    executor: ExecutorSettings | None = None,
) -> IngestReport:
    """Ingest one flight folder (an SD card's DCIM, or any folder below it) into ``workspace``.

    Raises FileNotFoundError for a missing folder and NothingToIngest for one without a single JPEG,
    before any run is recorded."""
    config = config or IngestConfig()
    root = _flight_root(flight_dir)
    scan = scan_flight(root, workspace.root)
    if not scan.candidates:
        raise _nothing_to_ingest(root, scan, [])
    flight_root = str(root)
    stage = CaptureStage(
        STAGE, partial(_read_tasks, scan), read_file, current=partial(_known_file, flight_root),
        record=partial(_record_read, flight_root), finish=partial(_group_flight, scan),
        details=lambda config: {"flight_root": flight_root})
    report = IngestReport(flight_root=flight_root, ignored=scan.ignored, unreadable=len(scan.refused))
    return run_capture_stage(workspace, stage, config, report, executor)


def _read_tasks(scan: FlightScan, workspace: Workspace, config: IngestConfig) -> list[ReadTask]:
    return [ReadTask(key=str(path), file=str(path), workspace_root=workspace.root, name=name,
                     extract_thermal_raw=config.extract_thermal_raw) for path, name in scan.candidates]


def _known_file(flight_root: str, context: StageContext, task: ReadTask) -> FileProbe | str | None:
    """What the workspace knows of an unchanged file: its probe, or why it was unreadable."""
    known = context.state.get("known")
    if known is None:
        known = context.state["known"] = context.workspace.known_files(flight_root)
    previous = known.get(task.key)
    reusable = _reusable(context.workspace, previous, task.path, context.config)
    if reusable is not None and not previous["present"]:
        context.workspace.mark_file_present(task.key)
    return reusable


def _record_read(flight_root: str, context: StageContext, outcome: Outcome) -> None:
    """Commit a file's record as it arrives; keep its probe for grouping. A file whose reading
    raised is not recorded, so the next run reads it again."""
    report: IngestReport = context.report
    probes = context.state.setdefault("probes", {})
    path, read = outcome.task.path, outcome.result
    report.count(outcome)
    if read is None:
        return
    if outcome.current:
        if isinstance(read, str):
            report.issues.append(_issue(path, read))
            report.unreadable += 1
        else:
            probes[path] = read
        return
    if read.probe is None:
        context.workspace.record_unreadable(flight_root, str(path), read.size, read.mtime_ns, read.sha256, read.error)
        report.issues.append(_issue(path, read.error))
        report.unreadable += 1
    else:
        context.workspace.record_probe(flight_root, read.probe)
        probes[path] = read.probe


def _group_flight(scan: FlightScan, context: StageContext) -> None:
    """Group the flight's probes into captures and record them (not after a lost worker: the rerun
    reads the rest and groups them all)."""
    workspace, report = context.workspace, context.report
    probes = context.state.get("probes", {})
    ordered = [probes[path] for path, _ in scan.candidates if path in probes]
    file_issues = [issue for probe in ordered for issue in probe.issues]
    kept, duplicate_issues = drop_duplicates(ordered)
    report.duplicates = len(duplicate_issues)
    root = Path(report.flight_root)
    captures, capture_issues = group_captures(kept, root, context.config.timestamp_tolerance_s)
    removed_issues = _report_removed(workspace, report.flight_root, {str(p) for p, _ in scan.candidates})
    report.removed = len(removed_issues)
    unread = report.issues  # failures and unreadable files, in plan order
    report.issues = scan.issues + scan.refused + unread + file_issues + duplicate_issues + capture_issues + removed_issues
    if not report.not_run:
        workspace.replace_flight(report.flight_root, captures, report.issues, scope=report.flight_root)
    report.captures = len(captures)
    report.paired = sum(1 for c in captures if _is_pair(c))
    report.thermal_raw = sum(1 for c in captures if c.thermal_raw is not None)


def check_flight(flight_dir: str | os.PathLike[str]) -> Path:
    """The resolved flight folder, once it is known to hold at least one DJI capture.

    ``ums ingest`` calls this before it opens (and so creates) the workspace, so that a mistyped
    path or an unmounted card leaves nothing behind. Files are read until the first capture: one
    file on a DJI card, every file only when the answer is no. Raises FileNotFoundError or
    NothingToIngest, whose message says what was looked for and what was found.
    """
    root = _flight_root(flight_dir)
    scan = scan_flight(root)
    # DJI-named files first: on a real card the first one read settles it
    ordered = sorted(scan.candidates, key=lambda candidate: not candidate[1].standard)
    rejected: list[tuple[Path, str]] = []
    for path, name in ordered:
        # extract_thermal_raw=False: nothing is written, so no workspace is needed
        try:
            read = read_file(ReadTask(key=str(path), file=str(path), workspace_root=root, name=name, extract_thermal_raw=False))
        except Exception as exc:  # noqa: BLE001 - ingest itself records it; here it only is no answer
            rejected.append((path, f"{type(exc).__name__}: {exc}"))
            continue
        if read.probe is not None:
            return root
        rejected.append((path, read.error or "not a DJI capture"))
    raise _nothing_to_ingest(root, scan, rejected)


def _flight_root(flight_dir: str | os.PathLike[str]) -> Path:
    root = Path(flight_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"ingest: flight folder {printable(root)} does not exist or is not a folder")
    if not _is_utf8(str(root)):
        raise NothingToIngest(f"no DJI capture can be ingested from {printable(root)}: its path is not valid UTF-8, "
                              "which the workspace cannot record; rename the folder")
    return root


def _nothing_to_ingest(root: Path, scan: FlightScan, rejected: list[tuple[Path, str]]) -> NothingToIngest:
    if rejected:
        path, reason = rejected[0]
        others = f" and {len(rejected) - 1} more" if len(rejected) > 1 else ""
        found = (f"found {len(rejected)} JPEG file{'s' * (len(rejected) > 1)}, none a DJI capture "
                 f"({path.relative_to(root)}: {reason}{others})")
    elif scan.refused:
        first, count = scan.refused[0], len(scan.refused)
        others = f" and {count - 1} more" if count > 1 else ""
        found = f"skipped {count} unread ({Path(first.file).relative_to(root)}: {first.message}{others})"
    else:
        found = f"found no JPEG file ({scan.ignored} other file{'s' * (scan.ignored != 1)})"
    return NothingToIngest(
        f"no DJI capture in {root}: looked in it and every folder below it for DJI JPEGs "
        f"(DJI_<time>_<seq>_W, _Z or _T .JPG, as in the DCIM/DJI_* folders of the drone's SD card) and {found}. "
        "Pass the SD card, its DCIM folder or a flight folder inside it."
    )


# -- discovery -------------------------------------------------------------------------------------
@dataclass
class FlightScan:
    candidates: list[tuple[Path, CaptureName]]  # every JPEG, with what its name says
    ignored: int  # other files
    issues: list[Issue]  # symbolic links not followed, and those followed
    refused: list[Issue] = field(default_factory=list)  # files and folders skipped unread: what and why


def scan_flight(root: Path, workspace: Path | None = None) -> FlightScan:
    """Every JPEG below ``root``, following symbolic links to folders that are not walked already.

    A link is followed when its target is a new folder (a flight kept on another disk and linked in),
    and not when the target is a folder walked already, lies inside one, or holds one: that would
    ingest the same files twice or loop forever. Either way an issue names the link and its target.

    Never read: a workspace (``workspace``, or any folder holding a workspace database) inside the
    flight, since ingest would read its own outputs; names that are not UTF-8, which no record can
    hold; and anything but regular files (a FIFO blocks whoever opens it). An issue names each
    file or folder so skipped, in an escaped form where its name is not UTF-8.
    """
    scan = FlightScan([], 0, [])
    own = workspace.resolve() if workspace is not None else None
    walked: list[tuple[Path, Path]] = [(root, root)]  # (real folder, the path it is walked as)
    trees = [root]
    while trees:
        top = trees.pop(0)
        for folder, subfolders, files in os.walk(top):  # os.walk itself never follows a link
            here = Path(folder)
            if _is_workspace(here, files, own):
                if here != root:
                    subfolders[:] = []
                    continue
                subfolders[:] = [d for d in subfolders if d not in WORKSPACE_OUTPUT_FOLDERS]
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and _named_in_utf8(here / d, scan))
            for name in subfolders:
                link = here / name
                if link.is_symlink() and _follow_link(link, walked, scan.issues):
                    trees.append(link)
            for name in sorted(files):
                _scan_file(here / name, scan)
    return scan


def _is_workspace(folder: Path, files: list[str], workspace: Path | None) -> bool:
    return DATABASE_NAME in files or (workspace is not None and folder.resolve() == workspace)


def _named_in_utf8(folder: Path, scan: FlightScan) -> bool:
    if _is_utf8(folder.name):
        return True
    scan.refused.append(_issue(folder, "the folder name is not valid UTF-8: skipped with everything in it; "
                               "rename it to ingest it"))
    return False


def _scan_file(path: Path, scan: FlightScan) -> None:
    """Add a JPEG to the candidates, count another file as ignored, or refuse it with an issue."""
    if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
        scan.ignored += 1  # videos, subtitles, sidecars, hidden files
        return
    if not _is_utf8(path.name):
        scan.refused.append(_issue(path, "the file name is not valid UTF-8: skipped; rename it to ingest it"))
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = file_mode.S_IFREG  # a dangling link, say: reading it says what is wrong
    if not file_mode.S_ISREG(mode):
        scan.refused.append(_issue(path, f"{_kind(mode)}, not a regular file: skipped without opening it"))
        return
    # a JPEG not named like a capture may still be DJI's: its content decides
    scan.candidates.append((path, parse_capture_name(path.name) or fallback_capture_name(path.name)))


def _is_utf8(name: str) -> bool:
    """Whether a name from the file system is valid UTF-8 (Python carries other bytes as surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: Path | str) -> str:
    """A path (or a message naming one) as text that any record can hold: bytes of a name that are not
    UTF-8, which Python carries as surrogates, written as ``\\xff``."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _kind(mode: int) -> str:
    kinds = ((file_mode.S_ISFIFO, "a FIFO (named pipe)"), (file_mode.S_ISCHR, "a character device"),
             (file_mode.S_ISBLK, "a block device"), (file_mode.S_ISSOCK, "a socket"), (file_mode.S_ISDIR, "a folder"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def _follow_link(link: Path, walked: list[tuple[Path, Path]], issues: list[Issue]) -> bool:
    target = link.resolve()
    start = f"symbolic link to the folder {target}"
    for real, named in walked:
        if target == real or real in target.parents:
            issues.append(_issue(link, f"{start}, which is ingested as {named / target.relative_to(real)}; "
                                 "not followed", "warning"))
            return False
        if target in real.parents:
            issues.append(_issue(link, f"{start}, which holds {named} (ingested already); not followed, as it "
                                 "would loop or ingest files twice", "warning"))
            return False
    walked.append((target, link))
    issues.append(_issue(link, f"{start}: followed", "info"))
    return True


def _issue(path: Path | str, message: str, level: str = "error", capture_id: str | None = None):
    # printable: one name that is not UTF-8 (a link's target, say) must not make the flight's issues unrecordable
    return Issue(stage=STAGE, file=printable(path), message=printable(message), level=level, capture_id=capture_id)


# -- reading files ---------------------------------------------------------------------------------
class ReadTask(Task):
    """One source file to read, hash and probe (``key`` is its path)."""

    name: CaptureName
    extract_thermal_raw: bool

    @property
    def path(self) -> Path:
        return Path(self.key)


class FileRead(StageResult):
    size: int
    mtime_ns: int
    sha256: str | None
    probe: FileProbe | None
    error: str | None


def _reusable(workspace: Workspace, previous, path: Path, config: IngestConfig) -> FileProbe | str | None:
    """The stored probe (or unreadable reason) of an unchanged file; None when it must be read."""
    if previous is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    if previous["size"] != stat.st_size or previous["mtime_ns"] != stat.st_mtime_ns:
        return None
    if previous["probe_json"] is None:
        return previous["error"]
    probe = FileProbe.model_validate_json(previous["probe_json"])
    if not _checks_passed(probe):
        return None
    if config.extract_thermal_raw and not _thermal_output_ok(workspace, probe):
        return None
    return probe


def _checks_passed(probe: FileProbe) -> bool:
    """Whether a stored probe passes the checks older versions did not make: its declared frame size,
    and its XMP numbers (each implausible one named by a warning, its value kept as text). A probe
    that fails is read again, so that the file is refused or its numbers named as they are now."""
    if frame_size_problem(probe.camera, probe.width, probe.height, probe.exif.model):
        return False
    named = {issue.message for issue in probe.issues}
    problems = implausible_numbers({name: field.model_dump() for name, field in probe.xmp.items()})
    return all(message in named and not isinstance(probe.xmp[name].value, (int, float))
               for name, message in problems.items())


def _thermal_output_ok(workspace: Workspace, probe: FileProbe) -> bool:
    if probe.camera not in THERMAL_LETTERS or probe.thermal_raw is None:
        return True
    # Older versions read any block of the frame's aspect ratio (320x256 inside 640x512): read again.
    if not raw_layout_fits(probe.thermal_raw.shape, probe.width, probe.height):
        return False
    return _nonempty(workspace.absolute(probe.thermal_raw.path))


def _nonempty(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except OSError:
        return False


class SourceRefused(ValueError):
    """A file that is not read: not a regular file, or larger than any frame."""

    def __init__(self, stat: os.stat_result, reason: str):
        super().__init__(reason)
        self.stat = stat


def read_file(task: ReadTask) -> FileRead:
    """Read, hash and probe one file, and write its raw thermal PNG (runs on a worker)."""
    path = task.path
    try:
        stat, data = read_source(path)
    except SourceRefused as refused:
        return FileRead(size=refused.stat.st_size, mtime_ns=refused.stat.st_mtime_ns, sha256=None, probe=None,
                        error=str(refused))
    except OSError as exc:
        return FileRead(size=0, mtime_ns=0, sha256=None, probe=None, error=f"cannot read: {exc.strerror}")
    digest = hashlib.sha256(data).hexdigest()
    unreadable = partial(FileRead, size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest, probe=None)
    try:
        header = read_header(data)
        probe = probe_header(header, path, task.name, stat, digest)
    except (JpegError, SkipFile) as exc:
        return unreadable(error=_unreadable_reason(data, exc))
    except MemoryError:
        raise  # the machine's state, not the file's: failed now and read again by the next run
    except Exception as exc:  # noqa: BLE001 - a parser's error on malformed metadata is the file's, kept
        return unreadable(error=f"unexpected {type(exc).__name__} while reading metadata: {exc}")
    if task.extract_thermal_raw and probe.camera in THERMAL_LETTERS:
        _extract_thermal(task.workspace_root, header, probe)
    return FileRead(size=stat.st_size, mtime_ns=stat.st_mtime_ns, sha256=digest, probe=probe, error=None)


def read_source(path: Path) -> tuple[os.stat_result, bytes]:
    """The status and bytes of a regular file no larger than a frame can be (raises SourceRefused).

    Checked before opening, since opening a FIFO blocks until a writer comes and opening a device
    may act on it; and again on the open file, which O_NONBLOCK keeps from blocking should a FIFO
    have taken the file's place in between. At most the size the check saw is read."""
    _check_source(os.stat(path), "opening")
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(descriptor, "rb") as file:
        stat = os.fstat(descriptor)
        _check_source(stat, "reading")
        return stat, file.read(stat.st_size)


def _check_source(stat: os.stat_result, unread: str) -> None:
    if not file_mode.S_ISREG(stat.st_mode):
        raise SourceRefused(stat, f"{_kind(stat.st_mode)}, not a regular file: skipped without {unread} it")
    limit = max_source_bytes()
    if stat.st_size > limit:
        raise SourceRefused(stat, f"the file holds {stat.st_size:,} bytes, more than a DJI frame can (at most "
                                  f"{limit:,} bytes): skipped without reading it")


def _unreadable_reason(data: bytes, error: Exception) -> str:
    if isinstance(error, SkipFile):
        return str(error)
    if not data:
        return "empty file (0 bytes)"
    if data.startswith(_PNG_SIGNATURE):
        return "a PNG file named like a DJI JPEG; skipped"
    return f"unreadable JPEG: {error}"


def probe_header(
    header: JpegHeader, path: Path, name: CaptureName, stat: os.stat_result, digest: str
) -> FileProbe:
    """Everything ingest learns from a file's segments without decoding pixels (raises SkipFile)."""
    issues: list[Issue] = []
    app1 = header.payloads(APP1)
    exif_block = find_exif_block(app1)
    exif = ExifSummary(**read_exif(exif_block)) if exif_block else ExifSummary()
    if exif_block is None:
        issues.append(_issue(path, "no EXIF block", "warning"))
    xmp: dict[str, XmpField] = {}
    packet = find_xmp_packet(app1)
    if packet is not None:
        try:
            xmp = _read_xmp(packet, path, issues)
        except XmpError as exc:
            issues.append(_issue(path, f"XMP ignored: {exc}", "warning"))
    camera = name.camera
    if not _looks_like_dji(exif, xmp):
        if not name.standard:
            raise SkipFile(f"not a DJI file (EXIF Make {exif.make!r}, no drone-dji XMP) and not "
                           "named like a DJI capture; skipped")
        issues.append(_issue(path, f"EXIF Make is {exif.make!r} and there is no drone-dji XMP: "
                             "not a DJI file; kept, but check its origin", "warning"))
    if camera is None:
        camera = infer_camera(header, xmp)
        if camera is None:
            raise SkipFile("a DJI file with a non-standard name whose camera cannot be told "
                           "(no ImageSource, no raw thermal block); skipped")
        issues.append(_issue(path, f"non-standard DJI file name: ingested as a capture of its "
                             f"own, camera {camera} judged from its content", "info"))
    size_problem = frame_size_problem(camera, header.width, header.height, exif.model, header.coded_bytes)
    if size_problem:
        raise SkipFile(size_problem)
    if header.truncated:
        issues.append(_issue(path, "image data is truncated (no end-of-image marker); metadata "
                             "and any raw thermal block were still read", "warning"))
    return FileProbe(
        path=str(path),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        sha256=digest,
        camera=camera,
        standard_name=name.standard,
        sequence=name.sequence,
        name_timestamp=name.timestamp.isoformat() if name.timestamp else None,
        width=header.width,
        height=header.height,
        jpeg_truncated=header.truncated,
        exif=exif,
        xmp=xmp,
        issues=issues,
    )


def _read_xmp(packet: bytes, path: Path, issues: list[Issue]) -> dict[str, XmpField]:
    """The drone-dji fields; a number that cannot be a measurement is kept as its text, so that no
    stage computes with it, and named in a warning."""
    fields = parse_drone_dji(packet)
    for name, problem in implausible_numbers(fields).items():
        fields[name]["value"] = fields[name]["raw"]
        issues.append(_issue(path, problem, "warning"))
    return {key: XmpField(**value) for key, value in fields.items()}


def infer_camera(header: JpegHeader, xmp: dict[str, XmpField]) -> str | None:
    """Which camera took a file whose name does not say: XMP ImageSource, else thermal evidence."""
    source = xmp.get("ImageSource")
    if source is not None and source.raw in IMAGE_SOURCE_LETTERS:
        return IMAGE_SOURCE_LETTERS[source.raw]
    if has_raw_thermal(header) or has_flir_container(header):
        return "T"
    if (header.width, header.height) in THERMAL_FRAME_SIZES:
        return "T"
    return None


def _looks_like_dji(exif: ExifSummary, xmp: dict[str, XmpField]) -> bool:
    make = (exif.make or "").upper()
    return make.startswith("DJI") or make.startswith("HASSELBLAD") or bool(xmp)


def _extract_thermal(workspace_root: Path, header: JpegHeader, probe: FileProbe) -> None:
    try:
        raw = extract_raw_thermal(header)
    except RawThermalError as exc:
        probe.issues.append(_issue(probe.path, f"raw thermal block not used: {exc}; later stages use the "
                                   "palette preview", "warning"))
        return
    if raw is None:
        what = ("a FLIR FFF container, which is not decoded" if has_flir_container(header)
                else "a non-radiometric file")
        probe.issues.append(_issue(probe.path, f"no raw thermal block ({what}); later stages use the "
                                   "palette preview", "warning"))
        return
    relative = f"{THERMAL_RAW_DIR}/{probe.sha256[:20]}.png"
    target = workspace_root / relative
    if not _nonempty(target):  # content-addressed: same source bytes, same output
        write_image(target, raw.counts, durable=False)  # rebuilt from the source if ever lost
    probe.thermal_raw = ThermalRawRecord(
        path=relative,
        shape=raw.shape,
        min=int(raw.counts.min()),
        max=int(raw.counts.max()),
        source_marker=raw.marker,
        palette=probe.exif.image_description,
    )


# -- grouping --------------------------------------------------------------------------------------
def drop_duplicates(probes: list[FileProbe]) -> tuple[list[FileProbe], list[Issue]]:
    """Keep one file of each content hash; report the copies.

    The file kept is the one in the folder holding most captures (a stray copy beside the mission
    folder loses to the original inside it), then the first by path.
    """
    folder_sizes = Counter(str(Path(p.path).parent) for p in probes)
    first_by_hash: dict[str, FileProbe] = {}
    issues = []
    for probe in sorted(probes, key=lambda p: (-folder_sizes[str(Path(p.path).parent)], p.path)):
        original = first_by_hash.setdefault(probe.sha256, probe)
        if original is not probe:
            issues.append(_issue(probe.path, f"duplicate of {original.path}; skipped", "warning"))
    return list(first_by_hash.values()), issues


def group_captures(
    probes: list[FileProbe], root: Path, tolerance_s: float
) -> tuple[list[CaptureRecord], list[Issue]]:
    """Group by folder and sequence number, then split by capture time (± ``tolerance_s``)."""
    by_key: dict[tuple[str, int, str], list[FileProbe]] = defaultdict(list)
    for probe in probes:
        folder = str(Path(probe.path).parent.relative_to(root))
        # A file without a standard name pairs with nothing: its own name keys its group.
        own_name = "" if probe.standard_name else Path(probe.path).name
        by_key[(folder, probe.sequence, own_name)].append(probe)
    captures: list[CaptureRecord] = []
    issues: list[Issue] = []
    for (folder, sequence, own_name), members in sorted(by_key.items()):
        for cluster in _split_by_time(members, tolerance_s):
            capture, cluster_issues = _build_capture(str(root), folder, sequence, own_name, cluster)
            captures.append(capture)
            issues.extend(cluster_issues)
    return captures, issues


def _split_by_time(members: list[FileProbe], tolerance_s: float) -> list[list[FileProbe]]:
    timed = sorted(members, key=lambda p: (p.timestamp or "", p.path))
    clusters: list[list[FileProbe]] = []
    cluster_start: datetime | None = None
    for probe in timed:
        moment = datetime.fromisoformat(probe.timestamp) if probe.timestamp else None
        starts_new = (
            not clusters
            or (moment is not None and cluster_start is not None
                and (moment - cluster_start).total_seconds() > tolerance_s)
        )
        if starts_new:
            clusters.append([])
            cluster_start = moment
        clusters[-1].append(probe)
    return clusters


def capture_id_for(folder: str, sequence: int, timestamp: str | None, own_name: str = "") -> str:
    """Stable, file-name-safe and sortable: ``<YYYYMMDDHHMMSS>_<NNNN>_<folder hash>``."""
    stamp = timestamp.replace("-", "").replace(":", "").replace("T", "")[:14] if timestamp else ""
    place = f"{folder}/{own_name}" if own_name else folder
    place_hash = hashlib.sha1(place.encode("utf-8")).hexdigest()[:6]
    return f"{stamp or '00000000000000'}_{sequence:04d}_{place_hash}"


def _build_capture(
    flight_root: str, folder: str, sequence: int, own_name: str, cluster: list[FileProbe]
) -> tuple[CaptureRecord, list[Issue]]:
    timestamp = min((p.timestamp for p in cluster if p.timestamp), default=None)
    capture_id = capture_id_for(folder, sequence, timestamp, own_name)
    frames: dict[str, FrameRecord] = {}
    issues: list[Issue] = []
    for probe in sorted(cluster, key=lambda p: p.path):
        key = "T" if probe.camera in THERMAL_LETTERS else probe.camera
        if key in frames:
            issues.append(_issue(probe.path, f"a second {key} frame for capture {capture_id} "
                                 f"(first: {frames[key].path}); skipped", "warning", capture_id))
            continue
        frames[key] = FrameRecord.from_probe(probe)
    thermal_probe = next((p for p in cluster if "T" in frames and p.path == frames["T"].path), None)
    has_visible = any(letter in frames for letter in VISIBLE_LETTERS)
    if "T" in frames and not has_visible:
        issues.append(_issue(frames["T"].path, "thermal frame without a visible partner "
                             "(W, Z or V)", "warning", capture_id))
    if has_visible and "T" not in frames:
        first_visible = next(frames[k] for k in VISIBLE_LETTERS if k in frames)
        issues.append(_issue(first_visible.path, "visible frame without a thermal partner (T)",
                             "warning", capture_id))
    capture = CaptureRecord(
        capture_id=capture_id,
        flight_root=flight_root,
        folder=folder,
        sequence=sequence,
        timestamp=timestamp,
        frames=frames,
        thermal_raw=thermal_probe.thermal_raw if thermal_probe else None,
    )
    return capture, issues


def _is_pair(capture: CaptureRecord) -> bool:
    return "T" in capture.frames and any(k in capture.frames for k in VISIBLE_LETTERS)


def _report_removed(workspace: Workspace, flight_root: str, present: set[str]) -> list[Issue]:
    gone = [
        path for path, row in workspace.known_files(flight_root).items()
        if path not in present
    ]
    workspace.mark_files_missing(gone)
    return [_issue(path, "ingested before but no longer in the flight folder; its records are "
                   "kept", "warning") for path in gone]
