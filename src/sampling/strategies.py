"""The five sampling strategies, by name. They differ only in the prompt they build for a query that is still
below ``min_correct_num`` correct samples, and in what they keep of the completion (SPEC.md "Prompts").

    vanilla            the plain student prompt again (max_resample_num > 0: brute force, unguided)
    answer_driven      the question with the gold answer appended after one space
    rationale_driven   the gold rationale shown under "Reference Answer"
    state_reset        the plain prompt followed by a prefix of the gold rationale; kept = prefix + continuation
    teacher_help       a teacher critiques the latest wrong sample; the student writes a revised solution

Adding a strategy: subclass :class:`Strategy`, register it in :data:`STRATEGIES`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from src import prompts
from src.registry import ResetCut
from src.sampling.query import QueryState

TOKEN_FRACTIONS = (0.2, 0.4, 0.6, 0.8, 0.8)  # SPEC.md: 80% twice (the original's cap), then back to 20%


@dataclass
class Request:
    """One prompt for one query in a resampling round."""

    query: QueryState
    prompt: str
    strategy: str  # recorded with the sample (correct_strategy / training item "strategy")
    prefix: str = ""  # kept in front of the continuation (state reset's gold prefix)
    exchange: dict[str, Any] | None = None  # interactive: the teacher exchange, completed after grading


@dataclass
class StrategyContext:
    """What a strategy may need besides the queries: the data set's cut rule, the student's tokenizer, a teacher."""

    reset_cut: ResetCut = "lines"
    tokenizer: Any = None  # the STUDENT's tokenizer (llm.get_tokenizer()), for token-fraction cuts
    teacher: Any = None  # src.sampling.teacher.TeacherClient, for teacher_help
    round: int = 0


class Strategy:
    name: ClassVar[str]

    def requests(self, queries: list[QueryState], ctx: StrategyContext) -> list[Request]:
        return [Request(q, self.prompt(q, ctx), self.name) for q in queries]

    def prompt(self, query: QueryState, ctx: StrategyContext) -> str:
        raise NotImplementedError


class Vanilla(Strategy):
    name = "vanilla"

    def prompt(self, query: QueryState, ctx: StrategyContext) -> str:
        return prompts.student_prompt(query.question)


class AnswerDriven(Strategy):
    name = "answer_driven"

    def prompt(self, query: QueryState, ctx: StrategyContext) -> str:
        return prompts.answer_driven_prompt(query.question, query.record["answer_value"])


class RationaleDriven(Strategy):
    name = "rationale_driven"

    def prompt(self, query: QueryState, ctx: StrategyContext) -> str:
        return prompts.rationale_driven_prompt(query.question, query.record["answer_cot"])


def line_prefix_count(n_lines: int, position: int) -> int:
    """Lines kept at the ``position``-th reset: 1, 2, ..., n-1, n-1 again, then back to 1 (never all n)."""
    if n_lines <= 1:
        return 0  # a one-line rationale has no proper prefix: the plain prompt
    cycle = list(range(1, n_lines)) + [n_lines - 1]
    return cycle[position % len(cycle)]


def token_prefix_count(n_tokens: int, position: int) -> int:
    """Tokens kept at the ``position``-th reset: 20%, 40%, 60%, 80%, 80% of the rationale, then 20% again."""
    return int(n_tokens * TOKEN_FRACTIONS[position % len(TOKEN_FRACTIONS)])


def reset_prefix(rationale: str, position: int, cut: ResetCut, tokenizer: Any = None) -> str:
    """The gold-rationale prefix state reset puts after the plain prompt at the ``position``-th reset."""
    if cut == "lines":
        lines = rationale.rstrip("\n").split("\n")
        k = line_prefix_count(len(lines), position)
        return "".join(line + "\n" for line in lines[:k])
    if tokenizer is None:
        raise ValueError("token-fraction state reset needs the student's tokenizer (llm.get_tokenizer())")
    # The student's own tokenizer (the original always used a Llama-3 tokenizer fetched from a hub).
    enc = tokenizer(rationale, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    k = token_prefix_count(len(ids), position)
    # Cut the string at the k-th token's end so the prefix is exactly a prefix of the gold text
    # (decoding a token slice can split a multi-byte character).
    return rationale[: offsets[k - 1][1]] if k > 0 else ""


class StateReset(Strategy):
    name = "state_reset"

    def requests(self, queries: list[QueryState], ctx: StrategyContext) -> list[Request]:
        out = []
        for q in queries:
            prefix = reset_prefix(q.record["answer_cot"], q.reset_position, ctx.reset_cut, ctx.tokenizer)
            q.reset_position += 1  # each query advances its own position each time it is resampled
            out.append(Request(q, prompts.state_reset_prompt(q.question, prefix), self.name, prefix=prefix))
        return out


class TeacherHelp(Strategy):
    name = "teacher_help"

    def requests(self, queries: list[QueryState], ctx: StrategyContext) -> list[Request]:
        if ctx.teacher is None:
            raise ValueError("teacher_help needs a teacher (--teacher_model / --teacher_base_url)")
        # Only a WRONG sample is sent for critique (the original sent the last sample even when correct).
        wrong = {id(q): q.latest_wrong() for q in queries}
        asking = [q for q in queries if wrong[id(q)] is not None]
        feedback = ctx.teacher.critique_many([
            prompts.teacher_messages(q.question, wrong[id(q)].response, q.record["answer_cot"]) for q in asking])
        by_query = {id(q): f for q, f in zip(asking, feedback)}
        out = []
        for q in queries:
            if id(q) not in by_query:
                # No wrong sample to critique (sample_num < min_correct_num, all correct): plain prompt.
                out.append(Request(q, prompts.student_prompt(q.question), Vanilla.name))
                continue
            wrong_answer, fb = wrong[id(q)].response, by_query[id(q)]
            exchange = {"round": ctx.round, "wrong_answer": wrong_answer, "teacher_feedback": fb}
            out.append(Request(q, prompts.student_revision_prompt(q.question, wrong_answer, fb), self.name,
                               exchange=exchange))
        return out


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (Vanilla(), AnswerDriven(), RationaleDriven(), StateReset(),
                                                      TeacherHelp())}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


# Brute force is no strategy of its own: the vanilla strategy given resampling rounds (the paper's unguided
# control at the same token budget; the original scripts call its experiment "uniform"). It is named here once,
# for every reader of sampling runs (src/analysis) and every experiment that trains it (src/demo.py).
BRUTE_FORCE = "brute_force"
ARM_ALIASES = {"uniform": BRUTE_FORCE, "brute": BRUTE_FORCE}  # experiment-folder prefixes that mean brute force


def arm_of(strategy: str, max_resample_num: int) -> str:
    """The arm a sampling run belongs to: its strategy, except vanilla with resampling rounds (brute force)."""
    return BRUTE_FORCE if strategy == Vanilla.name and max_resample_num > 0 else strategy


def strategy_of_arm(arm: str) -> str:
    """The strategy that samples for an arm (a strategy name, or brute force)."""
    return Vanilla.name if arm == BRUTE_FORCE else get_strategy(arm).name
