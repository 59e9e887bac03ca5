"""Stage bookkeeping for the iteration scripts: done markers, timings and resume after a crash or ``kill -9``.

    python -m src.stages run --stage eval --marker EXP/iter_0/stages/eval.json --log EXP/iter_0/logs/eval.log \\
        --inputs EXP/iter_0/model data/test/gsm8k.json --outputs EXP/iter_0/eval_data -- python eval.py ...
    python -m src.stages report EXP            # where the time of every iteration went

``run`` skips the stage when its marker exists, the command (settings) is the same, every input still has the
recorded fingerprint and every output still exists with the recorded fingerprint (sha256 of data files; weight
files by size and modification time, so model folders are never re-read: :func:`fingerprint_path`). Otherwise
it deletes the outputs (a half-written folder of a killed run never mixes with the new one: the original scripts
appended to result files, so retries duplicated records), runs the command (output to the terminal and the log),
and on success writes the marker atomically: inputs and outputs with their fingerprints, wall seconds and, for
vLLM stages, the engine start-up seconds read from the outputs (``metrics.json``/``sampling_stats.json``). A
stage killed before its marker is written is simply redone, and because every later stage lists the earlier
outputs as inputs, a redone stage whose outputs changed makes the later stages run again too.

``--resumable`` paths (the trainer's checkpoints) survive a rerun when the interrupted attempt consumed the same
inputs, so a long training job continues where it stopped; with other inputs they are deleted too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from src.records import sha256_file, write_json

ENGINE_FILES = ("metrics.json", "sampling_stats.json")  # files whose engine_start_seconds a stage reports
STAGE_ORDER = ("data", "train", "eval", "sample", "generate")  # order of the stages within an iteration
PROG = "python -m src.stages"


# Weight and optimizer-state files (GBs each) are fingerprinted by size and modification time instead of their
# bytes: hashing a 16 GB model folder on every run and skip check reads tens of GB per iteration on NFS/Lustre.
# A rewrite changes the mtime (and usually the size); the small files beside them (config.json, the safetensors
# index, tokenizer files) and every data file are still hashed in full.
STAT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".pkl", ".npy", ".msgpack", ".h5")


def file_fingerprint(path: Path) -> str:
    """``stat:<size>:<mtime_ns>`` for a weight file (never read), else the file's sha256."""
    if path.name.endswith(STAT_SUFFIXES):
        st = path.stat()
        return f"stat:{st.st_size}:{st.st_mtime_ns}"
    return sha256_file(path)


def fingerprint_path(path: str | Path) -> str:
    """Fingerprint of a file (:func:`file_fingerprint`), or of a folder: sha256 of the sorted list of
    (relative path, file fingerprint) of the files under it."""
    path = Path(path)
    if path.is_file():
        return file_fingerprint(path)
    if path.is_dir():
        h = hashlib.sha256(b"dir\n")
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            h.update(f"{file.relative_to(path).as_posix()}\0{file_fingerprint(file)}\n".encode())
        return h.hexdigest()
    raise FileNotFoundError(f"{path}: not found")


def path_key(path: str | Path, root: str | Path | None) -> str:
    """How a path is named in a marker: relative to ``root`` when inside it (so a copied experiment folder keeps
    valid markers), else as given."""
    if root is not None:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if not rel.startswith(".."):
            return rel
    return str(path)


def hashes(paths: list[str], root: str | Path | None = None) -> dict[str, str]:
    return {path_key(p, root): fingerprint_path(p) for p in paths}


def _resolve(key: str, root: str | Path | None) -> Path:
    return Path(root) / key if root is not None and not os.path.isabs(key) else Path(key)


def remove(path: str | Path) -> None:
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


@dataclass
class StageRecord:
    """The marker file of a finished stage."""

    stage: str
    command: list[str]
    consumed: dict[str, str]  # input path -> fingerprint (fingerprint_path)
    produced: dict[str, str]  # output path -> fingerprint
    wall_seconds: float
    engine_start_seconds: float | None = None
    attempts: int = 1
    started_at: str = ""
    finished_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def load_marker(marker: str | Path) -> StageRecord | None:
    marker = Path(marker)
    if not marker.is_file():
        return None
    try:
        return StageRecord(**json.loads(marker.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError):
        return None  # a marker we cannot read proves nothing: redo the stage


def normalize_command(command: list[str], root: str | Path | None) -> list[str]:
    """The command as a marker records it: the experiment folder written as ``{root}`` (copies stay valid)."""
    if root is None:
        return list(command)
    spellings = sorted({str(root), os.path.abspath(root)}, key=len, reverse=True)
    out = []
    for arg in command:
        for spelling in spellings:
            arg = arg.replace(spelling, "{root}")
        out.append(arg)
    return out


def why_not_done(marker: str | Path, inputs: list[str], outputs: list[str], root: str | Path | None = None,
                 command: list[str] | None = None) -> str | None:
    """None when the stage finished with these inputs (and ``command``, when given) and its outputs are intact,
    else the reason to run it."""
    record = load_marker(marker)
    if record is None:
        return "no completion marker"
    if command is not None and record.command != normalize_command(command, root):
        return "the stage's command (settings) changed since it ran"
    if sorted(record.consumed) != sorted(path_key(p, root) for p in inputs) or \
            sorted(record.produced) != sorted(path_key(p, root) for p in outputs):
        return "the stage's list of inputs or outputs changed since it ran"
    for key, digest in {**record.consumed, **record.produced}.items():
        path = _resolve(key, root)
        if not path.exists():
            return f"{path} is missing"
        if fingerprint_path(path) != digest:
            return f"{path} changed since the stage ran"
    return None


def engine_start_seconds(outputs: list[str]) -> float | None:
    """The largest ``engine_start_seconds`` any metrics.json / sampling_stats.json under ``outputs`` reports."""
    found: list[float] = []
    for out in map(Path, outputs):
        files = [out] if out.is_file() else [p for name in ENGINE_FILES for p in out.rglob(name)] if out.is_dir() \
            else []
        for file in files:
            if file.name not in ENGINE_FILES:
                continue
            try:
                value = json.loads(file.read_text(encoding="utf-8")).get("engine_start_seconds")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(value, (int, float)):
                found.append(float(value))
    return max(found) if found else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _run_logged(command: list[str], log: Path) -> int:
    """Run ``command``, copying its output to the terminal and (appended, one header per attempt) to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as fh:
        fh.write(f"\n===== {_now()} $ {' '.join(command)}\n".encode())
        fh.flush()
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        try:
            for line in iter(proc.stdout.readline, b""):
                fh.write(line)
                fh.flush()
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            raise
        return proc.wait()


def run_stage(stage: str, marker: str | Path, command: list[str], inputs: list[str], outputs: list[str],
              log: str | Path, resumable: list[str] | None = None, retries: int = 0,
              root: str | Path | None = None) -> StageRecord:
    """Skip the stage if it is done, else clear its outputs, run it (retrying), and write its marker.

    ``root``: the experiment folder; paths inside it are recorded relative to it.
    """
    marker, log = Path(marker), Path(log)
    reason = why_not_done(marker, inputs, outputs, root, command)
    if reason is None:
        record = load_marker(marker)
        assert record is not None
        print(f"[stages] skip {stage}: done at {record.finished_at} ({record.wall_seconds:.1f} s)", flush=True)
        return record
    missing = [p for p in inputs if not Path(p).exists()]
    if missing:
        raise FileNotFoundError(f"stage {stage}: input {missing[0]} does not exist (did an earlier stage fail?)")
    consumed = hashes(inputs, root)
    attempt_file = marker.with_name(marker.name + ".attempt")
    previous = json.loads(attempt_file.read_text()) if attempt_file.is_file() else None
    keep_resumable = previous is not None and previous.get("consumed") == consumed
    print(f"[stages] run {stage}: {reason}", flush=True)
    remove(marker)
    for path in outputs + ([] if keep_resumable else list(resumable or [])):
        remove(path)
    for path in outputs:  # commands such as cp expect the folder they write into
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_json(attempt_file, {"stage": stage, "consumed": consumed, "started_at": _now()})
    started_at, start = _now(), time.perf_counter()
    rc = 1
    for attempt in range(1, retries + 2):
        rc = _run_logged(command, log)
        if rc == 0:
            break
        print(f"[stages] {stage}: attempt {attempt} failed with exit code {rc}", flush=True)
        for path in outputs:  # a retry starts clean: no partial or appended results
            remove(path)
    if rc != 0:
        raise StageFailed(stage, rc, log)
    absent = [p for p in outputs if not Path(p).exists()]
    if absent:
        raise StageFailed(stage, 0, log, f"exited 0 but did not produce {absent[0]}")
    record = StageRecord(stage=stage, command=normalize_command(command, root), consumed=consumed,
                         produced=hashes(outputs, root),
                         wall_seconds=round(time.perf_counter() - start, 3),
                         engine_start_seconds=engine_start_seconds(outputs), attempts=attempt,
                         started_at=started_at, finished_at=_now())
    write_json(marker, asdict(record))
    remove(attempt_file)
    eng = f", engine start {record.engine_start_seconds:.1f} s" if record.engine_start_seconds is not None else ""
    print(f"[stages] done {stage}: {record.wall_seconds:.1f} s{eng}", flush=True)
    return record


class StageFailed(RuntimeError):
    def __init__(self, stage: str, rc: int, log: Path, why: str = ""):
        self.rc = rc or 1
        super().__init__(f"stage {stage} failed ({why or f'exit code {rc}'}); log: {log}")


def report(exp_dir: str | Path) -> list[dict[str, Any]]:
    """One row per finished stage under ``exp_dir`` (iteration, stage, wall and engine start-up seconds)."""
    rows = []
    def order(marker: Path) -> tuple[int, int, str]:
        stem = marker.stem
        return (int(marker.parts[-3].split("_")[1]),
                STAGE_ORDER.index(stem) if stem in STAGE_ORDER else len(STAGE_ORDER), stem)

    for marker in sorted(Path(exp_dir).glob("iter_*/stages/*.json"), key=order):
        record = load_marker(marker)
        if record is not None:
            rows.append({"iteration": int(marker.parts[-3].split("_")[1]), "stage": record.stage,
                         "wall_seconds": record.wall_seconds, "engine_start_seconds": record.engine_start_seconds})
    return rows


# ------------------------------------------------------------------------------ in-process stages (demo.py)
def settings_key(settings: Any) -> str:
    """A short digest of a stage's settings (JSON-able; other values by their str)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Stage:
    """A stage run inside the calling process (the demo's): finished when ``<dir>/stage.json`` holds its key.
    The marker is written last and atomically, so a stage cut short is redone; a changed key redoes it too."""

    name: str
    dir: Path
    key: str

    @property
    def marker(self) -> Path:
        return self.dir / "stage.json"

    def done(self) -> dict | None:
        if not self.marker.is_file():
            return None
        saved = json.loads(self.marker.read_text())
        return saved if saved.get("key") == self.key else None

    def finish(self, seconds: float, **info: Any) -> dict:
        saved = {"stage": self.name, "key": self.key, "seconds": round(seconds, 3), **info}
        write_json(self.marker, saved)
        return saved


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    return argv[:i], argv[i + 1:]


def main(argv: list[str] | None = None) -> int:
    """The scripts' plumbing; exit 0 done, 1 a failed stage (or ``done``: not done), 2 bad input (src/cli.py)."""
    from src.cli import run_cli

    return run_cli(PROG, lambda: _main(list(sys.argv[1:] if argv is None else argv)))


def _main(argv: list[str]) -> int:
    from src.cli import UsageError, one_line_errors

    own, command = _split_command(argv)
    ap = one_line_errors(argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0]), PROG)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run a stage unless done (command after --)")
    r.add_argument("--stage", required=True, help="stage name, e.g. train, eval, sample, generate")
    r.add_argument("--marker", required=True, help="completion marker (JSON) of this stage")
    r.add_argument("--log", required=True, help="log file (appended, one header per attempt)")
    r.add_argument("--inputs", nargs="*", default=[], help="files/folders the stage consumes")
    r.add_argument("--outputs", nargs="+", required=True, help="files/folders the stage produces")
    r.add_argument("--resumable", nargs="*", default=[], help="kept across a rerun with the same inputs")
    r.add_argument("--retries", type=int, default=int(os.environ.get("STAGE_RETRIES", "0")),
                   help="reruns after a failure (env STAGE_RETRIES)")
    r.add_argument("--root", help="experiment folder: paths inside it are recorded relative to it")
    d = sub.add_parser("done", help="exit 0 when the stage is done, 1 (and why) otherwise (command after --)")
    d.add_argument("--marker", required=True)
    d.add_argument("--root")
    d.add_argument("--inputs", nargs="*", default=[])
    d.add_argument("--outputs", nargs="+", required=True)
    f = sub.add_parser("files", help="print the test or pool file of each data set (names from src.registry)")
    f.add_argument("kind", choices=["test", "pool"])
    f.add_argument("--data_dir", required=True)
    f.add_argument("--mode", default="cot", choices=["cot", "pot"])
    f.add_argument("datasets", nargs="+")
    rep = sub.add_parser("report", help="wall and engine start-up seconds per stage of an experiment")
    rep.add_argument("exp_dir")
    rep.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    args = ap.parse_args(own)
    if args.cmd == "run":
        if not command:
            ap.error("run needs the stage's command after --")
        try:
            run_stage(args.stage, args.marker, command, args.inputs, args.outputs, args.log, args.resumable,
                      args.retries, args.root)
        except (StageFailed, FileNotFoundError) as err:
            print(f"[stages] error: {err}", file=sys.stderr, flush=True)
            return getattr(err, "rc", 1)
        return 0
    if args.cmd == "done":
        why = why_not_done(args.marker, args.inputs, args.outputs, args.root, command or None)
        print("done" if why is None else why)
        return 0 if why is None else 1
    if args.cmd == "files":
        from src.registry import get_dataset

        for name in args.datasets:
            try:
                spec = get_dataset(name)
            except ValueError as err:
                raise UsageError(str(err)) from None
            print(spec.test_file(args.data_dir) if args.kind == "test" else spec.pool_file(args.mode, args.data_dir))
        return 0
    rows = report(args.exp_dir)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'iter':>4}  {'stage':<10} {'wall_s':>9} {'engine_start_s':>15}")
        for row in rows:
            eng = "" if row["engine_start_seconds"] is None else f"{row['engine_start_seconds']:.1f}"
            print(f"{row['iteration']:>4}  {row['stage']:<10} {row['wall_seconds']:>9.1f} {eng:>15}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
