"""TriPosT's interactive trajectory editing (``edit_trajectories.py``): attempt -> feedback -> improved attempt.

For every sampled attempt (a sampling run's results.json, ``pred``): the verifier marks the first wrong step; the
improver keeps the steps before it and writes the rest; the verifier checks the update; at most ``max_updates``
updates. A trajectory is kept only if it ends correct. If an update's error step does not move strictly forward,
only the attempt and its first feedback are kept (``feedback_only``), as the official code does. Attempts over
``max_words`` words and duplicate trajectory texts (per question) are dropped. Every attempt ends in one status:

    correct (right at once)  improved  feedback_only  |  not_fixed  too_long  duplicate  unparsable_feedback

Questions are processed in windows of ``window_size``; after each window ``trajectories.json`` and then
``edit_state.json`` are written atomically, so a crash (a teacher that stops answering, a kill) keeps every
finished window and a rerun with the same inputs continues at the first unfinished one.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from src.records import RecordError, read_json_or_jsonl, write_json
from src.tripost.feedback import FEEDBACK_MARKER, UPDATE_MARKER, example_text, first_attempt, word_count

KEPT = ("correct", "improved", "feedback_only")
STATUSES = (*KEPT, "not_fixed", "too_long", "duplicate", "unparsable_feedback")
TRAJECTORIES_FILE = "trajectories.json"
STATE_FILE = "edit_state.json"


@dataclass
class EditConfig:
    cur_sampled_data_path: list[str] = field(metadata={
        "help": "sampling results of the current model (inference.py): results.json files or folders holding them"})
    output_path: str = field(metadata={"help": "output folder: trajectories.json, edit_state.json"})
    verifier: str = field(default="process", metadata={
        "help": "process (this project's step and chain check + grader) or teacher (the teacher model at "
                "temperature 0)", "choices": ["process", "teacher"]})
    improver: str = field(default="scripted", metadata={
        "help": "scripted (gold steps from the first error on) or teacher", "choices": ["scripted", "teacher"]})
    dataset_name: list[str] | None = field(default=None, metadata={
        "help": "data set of results without a sampling_stats.json (one, or one per --cur_sampled_data_path)"})
    max_updates: int = field(default=5, metadata={"help": "updates per trajectory at most (official: 5)"})
    max_words: int = field(default=512, metadata={"help": "drop attempts longer than this many words (official)"})
    window_size: int = field(default=32, metadata={"help": "questions per window; results written after each"})
    samples_per_question: int | None = field(default=None, metadata={
        "help": "edit the first N samples of each question (default: all of pred)"})
    improver_temperature: float = field(default=0.7, metadata={"help": "teacher improver temperature (official)"})


class EditInterrupted(RuntimeError):
    """The teacher failed mid-run; the finished windows are on disk."""


@dataclass
class _Track:
    item: dict
    record: dict
    no_progress: bool = False


def _new_record(dataset: str, item: dict, j: int, window: int) -> dict:
    rec = {"trajectory_id": f"{item['item_id']}#{j}", "item_id": item["item_id"], "dataset": dataset,
           "question": item["question"], "answer_cot": item["answer_cot"], "answer_value": item["answer_value"],
           "sample_index": j, "window": window, "status": "", "attempts": [], "feedbacks": [], "error_steps": []}
    if item.get("level") is not None:
        rec["level"] = item["level"]
    return rec


def _record_verdicts(tracks: list[_Track], verdicts, log: list) -> list[_Track]:
    """Append each verdict; return the tracks still wrong (unparsable ones are closed and logged)."""
    still = []
    for t, v in zip(tracks, verdicts):
        rec = t.record
        if v is None:
            rec["status"] = "unparsable_feedback"
            log.append(rec["trajectory_id"])
            print(f"edit_trajectories: unparsable feedback for {rec['trajectory_id']} (dropped)", file=sys.stderr)
            continue
        prev = rec["error_steps"][-1] if rec["error_steps"] else None
        if prev is not None and not v.correct and v.step <= prev:
            t.no_progress = True
        rec["feedbacks"].append(v.feedback)
        rec["error_steps"].append(v.step)
        if not v.correct:
            still.append(t)
    return still


def _finish(t: _Track) -> None:
    rec = t.record
    if rec["status"]:
        return
    if rec["error_steps"][-1] is not None:
        rec["status"] = "not_fixed"
    elif len(rec["attempts"]) == 1:
        rec["status"] = "correct"
    elif t.no_progress:
        rec["status"] = "feedback_only"
        rec["kept_attempts"], rec["kept_feedbacks"] = rec["attempts"][:1], rec["feedbacks"][:1]
    else:
        rec["status"] = "improved"


def edit_window(units: list[tuple[str, dict, int, str]], window: int, verifiers: dict, improver,
                cfg: EditConfig, log: list) -> list[dict]:
    """Edit one window's attempts ``(dataset, item, sample index, response)``; return their records."""
    tracks, records = [], []
    for dataset, item, j, response in units:
        rec = _new_record(dataset, item, j, window)
        records.append(rec)
        attempt = first_attempt(response)
        if word_count(attempt) > cfg.max_words:
            rec["status"] = "too_long"
            continue
        rec["attempts"].append(attempt)
        tracks.append(_Track(item, rec))
    active = _verify(tracks, verifiers, log)
    for _ in range(cfg.max_updates):
        if not active:
            break
        updates = improver.improve_many([(t.item, t.record["attempts"][-1], _last_verdict(t)) for t in active])
        checked = []
        for t, update in zip(active, updates):
            if word_count(update) > cfg.max_words:
                t.record["status"] = "too_long"
                continue
            t.record["attempts"].append(update)
            checked.append(t)
        active = _verify(checked, verifiers, log)
    for t in tracks:
        _finish(t)
    _mark_duplicates(records)
    return records


def _last_verdict(t: _Track):
    from src.tripost.verify import Verdict

    return Verdict(False, t.record["error_steps"][-1], t.record["feedbacks"][-1])


def _verify(tracks: list[_Track], verifiers: dict, log: list) -> list[_Track]:
    still = []
    for dataset, verifier in verifiers.items():
        mine = [t for t in tracks if t.record["dataset"] == dataset]
        if mine:
            verdicts = verifier.verify_many([(t.item, t.record["attempts"][-1]) for t in mine])
            still += _record_verdicts(mine, verdicts, log)
    return still


def trajectory_text(rec: dict) -> str:
    """The kept part of a trajectory as one text (attempt, feedback, updated attempt, feedback, ...)."""
    attempts = rec.get("kept_attempts", rec["attempts"])
    feedbacks = rec.get("kept_feedbacks", rec["feedbacks"])
    text = example_text(attempts[0], feedbacks[0])
    for attempt, feedback in zip(attempts[1:], feedbacks[1:]):
        text += f"\n{UPDATE_MARKER}\n{attempt.strip()}\n{FEEDBACK_MARKER} {feedback.strip()}"
    return text


def _mark_duplicates(records: list[dict], seen: set | None = None) -> None:
    seen = set() if seen is None else seen
    for rec in records:
        if rec["status"] in KEPT:
            key = (rec["item_id"], trajectory_text(rec))
            if key in seen:
                rec["status"] = "duplicate"
            seen.add(key)


# ---------------------------------------------------------------------------------------------------------------
# The resumable run behind edit_trajectories.py.
def load_units(cfg: EditConfig) -> list[list[tuple[str, dict, int, str]]]:
    """The attempts to edit, in windows of ``window_size`` questions (fixed order: a rerun sees the same ones)."""
    from src.filtering import load_sampled

    windows: list[list[tuple[str, dict, int, str]]] = []
    for sset in load_sampled(cfg.cur_sampled_data_path, cfg.dataset_name):
        if sset.dataset is None:
            raise RecordError(f"{sset.source}: data set unknown (no sampling_stats.json beside it): give "
                              "--dataset_name")
        for start in range(0, len(sset.items), cfg.window_size):
            window = []
            for item in sset.items[start:start + cfg.window_size]:
                preds = item["pred"][:cfg.samples_per_question] if cfg.samples_per_question else item["pred"]
                window += [(sset.dataset, item, j, p) for j, p in enumerate(preds) if isinstance(p, str)]
            windows.append(window)
    return windows


def fingerprint(cfg: EditConfig, teacher_model: str, windows: list) -> str:
    """What the results depend on: the attempts, the questions and every setting but the output path."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("output_path", "cur_sampled_data_path")}
    digest = hashlib.sha256(json.dumps([settings, teacher_model], sort_keys=True).encode())
    for window in windows:
        for dataset, item, j, response in window:
            digest.update(json.dumps([dataset, item["item_id"], item["question"], item["answer_cot"],
                                      item["answer_value"], j, response]).encode())
    return digest.hexdigest()


def _resume(out: Path, digest: str) -> tuple[list[dict], int, list]:
    """The records of the windows a previous run with the same fingerprint finished, and how many."""
    state_file, traj_file = out / STATE_FILE, out / TRAJECTORIES_FILE
    if not state_file.is_file() or not traj_file.is_file():
        return [], 0, []
    state = read_json_or_jsonl(state_file)
    if not isinstance(state, dict) or state.get("fingerprint") != digest:
        return [], 0, []  # another input or setting: start over (the old files are replaced)
    done = int(state.get("windows_done", 0))
    records = [r for r in read_json_or_jsonl(traj_file) if r.get("window", done) < done]
    return records, done, list(state.get("unparsable", []))


def stats_of(records: list[dict], n_windows: int, done: int, unparsable: list) -> dict:
    counts = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    improvements = sum(len(r["attempts"]) - 1 for r in records if r["status"] == "improved")
    return {"attempts": len(records), "questions": len({r["item_id"] for r in records}), "status": counts,
            "kept": sum(counts[s] for s in KEPT), "improvement_steps": improvements,
            "unparsable_feedback": len(unparsable), "unparsable_ids": unparsable[:50],
            "windows_done": done, "n_windows": n_windows, "complete": done == n_windows}


def build_workers(cfg: EditConfig, teacher_cfg, datasets: set[str]):
    """(verifiers by data set, improver); a teacher is checked (preflight) once, here."""
    from src.tripost.improve import ScriptedImprover, TeacherImprover
    from src.tripost.verify import ProcessVerifier, TeacherVerifier

    verifiers: dict = {}
    client = None
    for name in sorted(datasets):
        if cfg.verifier == "teacher":
            verifiers[name] = TeacherVerifier(name, teacher_cfg, client)
            client = verifiers[name].client
        else:
            verifiers[name] = ProcessVerifier(name)
    improver = TeacherImprover(teacher_cfg, cfg.improver_temperature) if cfg.improver == "teacher" \
        else ScriptedImprover()
    return verifiers, improver


def run_edit(cfg: EditConfig, teacher_cfg=None, workers=None) -> dict:
    """Edit every window not finished yet; write trajectories.json and edit_state.json after each; return stats.

    ``workers``: (verifiers by data set, improver) to use instead of building them (tests)."""
    from src.sampling.teacher import TeacherError

    windows = load_units(cfg)
    out = Path(cfg.output_path)
    digest = fingerprint(cfg, getattr(teacher_cfg, "teacher_model", ""), windows)
    records, done, unparsable = _resume(out, digest)
    if done < len(windows):
        try:
            verifiers, improver = workers or build_workers(cfg, teacher_cfg, {u[0] for w in windows for u in w})
            for w in range(done, len(windows)):
                records += edit_window(windows[w], w, verifiers, improver, cfg, unparsable)
                write_json(out / TRAJECTORIES_FILE, records)
                done = w + 1
                write_json(out / STATE_FILE, {"fingerprint": digest, "windows_done": done,
                                              "n_windows": len(windows), "unparsable": unparsable})
        except TeacherError as err:
            raise EditInterrupted(f"{err}; {done} of {len(windows)} windows finished and kept in {out} "
                                  f"({len(records)} attempts); rerun the same command to continue") from err
    stats = stats_of(records, len(windows), done, unparsable)
    write_json(out / TRAJECTORIES_FILE, records)
    write_json(out / "edit_stats.json", stats)
    return stats
