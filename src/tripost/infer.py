"""TriPosT inference (``eval.py --self_improve_rounds N``): attempt -> own feedback -> updated attempt.

Round 0 is the plain greedy answer, cut before any "Feedback:" the model writes. Each round then continues
``prompt + attempt + "\\nFeedback:"``: the model writes its feedback and, when that reports an error, an
"Updated Answer:", which becomes the next attempt (the official inference shows the model only the latest
attempt). A model stops at its all-correct feedback, an unparsable one, or a missing/unchanged update; at
most N rounds. The last attempt is graded; metrics add the first attempt's accuracy and fixed/broken counts.
"""

from __future__ import annotations

from typing import Any

from src.tripost.feedback import FEEDBACK_MARKER, UPDATE_MARKER, FeedbackParseError, first_attempt, parse_feedback


def _next_attempt(text: str, attempt: str) -> tuple[str, str | None]:
    """(the feedback line, the updated attempt or None when the model stops) of one round's continuation."""
    lines = text.strip().splitlines()
    feedback = lines[0].strip() if lines else ""
    try:
        if parse_feedback(feedback).correct:
            return feedback, None
    except FeedbackParseError:
        return feedback, None
    pos = text.find(UPDATE_MARKER)
    update = first_attempt(text[pos + len(UPDATE_MARKER):]) if pos >= 0 else ""
    return feedback, (update if update and update != attempt else None)


def self_improve_generate(llm, prompts: list[str], max_tokens: int, temperature: float, rounds: int):
    """(attempts per prompt, feedbacks per prompt, Generation of the final attempts with all rounds' cost)."""
    from src.engine import Generation, generate, sampling_params

    params = sampling_params(1, temperature, 1.0, max_tokens, stop=["\n" + FEEDBACK_MARKER])
    gen = generate(llm, prompts, params)
    attempts = [[first_attempt(texts[0])] for texts in gen.texts]
    feedbacks: list[list[str]] = [[] for _ in prompts]
    tokens, seconds = list(gen.tokens), gen.seconds
    active = list(range(len(prompts)))
    for _ in range(rounds):
        if not active:
            break
        g = generate(llm, [f"{prompts[i]}{attempts[i][-1]}\n{FEEDBACK_MARKER}" for i in active], params)
        seconds += g.seconds
        still = []
        for i, texts, n in zip(active, g.texts, g.tokens):
            tokens[i] += n
            feedback, update = _next_attempt(texts[0], attempts[i][-1])
            feedbacks[i].append(feedback)
            if update is not None:
                attempts[i].append(update)
                still.append(i)
        active = still
    return attempts, feedbacks, Generation([[a[-1]] for a in attempts], tokens, seconds)


def evaluate_self_improve(llm, records: list[dict], dataset: str, mode: str = "cot", max_tokens: int = 1024,
                          temperature: float = 0.0, executor: Any = None, grader: str = "project",
                          rounds: int = 1) -> tuple[list[dict], dict]:
    """src.evaluation.evaluate_dataset on the last attempt, plus first-attempt accuracy and fixed/broken."""
    from src.evaluation import evaluate_dataset
    from src.grading import grade_batch

    runs: dict[str, list] = {}

    def respond(llm_, prompts, params):
        attempts, feedbacks, gen = self_improve_generate(llm_, prompts, params.max_tokens, params.temperature,
                                                         rounds)
        runs.update(attempts=attempts, feedbacks=feedbacks)
        return gen

    items, metrics = evaluate_dataset(llm, records, dataset, mode, max_tokens, temperature, executor, grader,
                                      respond=respond)
    first = grade_batch([a[0] for a in runs["attempts"]], [r["answer_value"] for r in records], dataset,
                        mode=mode, executor=executor, options=[r.get("options") for r in records], grader=grader)
    levels: dict[str, dict[str, int]] = {}
    for item, grade, attempts, feedbacks in zip(items, first, runs["attempts"], runs["feedbacks"]):
        item["first_attempt_correct"] = grade.correct
        item["self_improve"] = {"attempts": attempts, "feedbacks": feedbacks}
        bucket = levels.setdefault(str(item.get("level", "all")), {"n": 0, "first_correct": 0, "correct": 0,
                                                                    "fixed": 0, "broken": 0})
        bucket["n"] += 1
        bucket["first_correct"] += grade.correct
        bucket["correct"] += item["correct"]
        bucket["fixed"] += (not grade.correct) and item["correct"]
        bucket["broken"] += grade.correct and not item["correct"]
    n = len(items)
    metrics["self_improve"] = {
        "rounds": rounds, "first_attempt_correct": sum(g.correct for g in first),
        "first_attempt_accuracy": sum(g.correct for g in first) / n if n else 0.0,
        "fixed": sum(b["fixed"] for b in levels.values()), "broken": sum(b["broken"] for b in levels.values()),
        "updated": sum(len(a) > 1 for a in runs["attempts"]), "by_level": dict(sorted(levels.items()))}
    return items, metrics
