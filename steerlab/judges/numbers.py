"""The 0-100 score a judge's next-token log-probabilities imply, for any tokenizer.

A logprob judge answers "a number from 0 to 100" and we read its whole belief: the expected value over the
integers 0..100, normalised by the probability it puts on them (persona_vectors, the emergent-misalignment
evaluations). With a tokenizer that has a token for every number up to 100 (OpenAI's, Llama 3's) the first
token's distribution is all there is to read. Many open models (Qwen2.5, SmolLM2, Gemma, Mistral) have
tokens for the digits 0-9 only: "73" is "7" then "3", and the first token alone gives the expected *first
digit* — every score in 0..9 — which is the bug this module exists to prevent.

The reading here is a tree over digit prefixes. ``P(n)`` for ``n = 73`` is ``P("7") * P("3" | "7") *
P(end | "73")``; the distributions at the prefixes come from the judge itself:

* the first request generates up to three tokens greedily, so the distributions along its greedy path
  (e.g. after "7", and after "1", "10") come for free;
* a prefix off that path (say "6", holding 20%) needs a follow-up request that makes the judge continue
  after "6" (``Continuation``, in ``openai_judge``: an assistant prefill or a llama.cpp grammar).

Only prefixes that can still grow into a valid number need their continuation: "1".."9" (-> 10..99) and
"10" (-> 100). Every other digit string is read as complete — a judge asked for 0..100 does not write "735"
— and strings above 100, or with a leading zero ("07"), are not valid answers and drop out like words. A
tokenizer seen to have multi-digit tokens (any top-logprob token of two or more digits) writes 50 as "50",
so its single-digit tokens are read as complete too, exactly the classic single-token reading.

Until every prefix is known the score is only known to lie in an interval (each unknown prefix's mass could
end there, continue to any of its numbers, or drop out). Prefixes are resolved, largest possible effect
first, until the interval is at most ``2 * tolerance`` wide; the score is its midpoint, so it is within
``tolerance`` of the exact expected value. A confident judge ("7" then "3" at 0.99) needs no follow-up at
all. Probability outside the top-k tokens is unknown and read as "not a digit", as in the classic reading.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

TopLogprobs = Sequence[tuple[str, float]]
DEFAULT_TOLERANCE = 0.5  # score points: the reported score is within this of the exact expected value
MAX_SCORE = 100
GREEDY_TOKENS = 3  # "1", "0", "0": enough to see the distribution after "10" on the greedy path


class NumberReadError(RuntimeError):
    """The judge's answer cannot be read to within the tolerance (a needed continuation is unavailable)."""


def _probabilities(top: TopLogprobs | Mapping[str, float]) -> list[tuple[str, float]]:
    items = top.items() if isinstance(top, Mapping) else top
    out = []
    for token, logprob in items:
        if logprob is None or math.isnan(logprob):
            continue
        out.append((token, math.exp(logprob)))
    return out


def split_first(token: str) -> tuple[str, bool] | None:
    """A first answer token as (digits, open): ``" 7"`` -> ("7", True), ``"7\\n"`` -> ("7", False).

    Leading whitespace is allowed; trailing non-digits close the number; None when it starts with no digit.
    """
    return _split(token.lstrip())


def split_next(token: str) -> tuple[str, bool] | None:
    """A continuation token: digits that extend the number, or None (anything else ends it)."""
    return _split(token)


def _split(text: str) -> tuple[str, bool] | None:
    n = 0
    while n < len(text) and text[n].isascii() and text[n].isdigit():
        n += 1
    if n == 0:
        return None
    return text[:n], n == len(text)


def valid_number(digits: str) -> int | None:
    """The score a complete digit string means: 0..100 without leading zeros, else None."""
    if not digits or (len(digits) > 1 and digits[0] == "0") or len(digits) > 3:
        return None
    value = int(digits)
    return value if value <= MAX_SCORE else None


def can_grow(digits: str) -> bool:
    """Whether appending digits can still give a valid number: "1".."9" and "10"."""
    value = valid_number(digits)
    return value is not None and 1 <= value <= 10


def _growth_values(prefix: str) -> list[int]:
    """The valid numbers a prefix can end as (itself included)."""
    out = []
    for n in range(MAX_SCORE + 1):
        s = str(n)
        if s.startswith(prefix):
            out.append(n)
    return out


def has_multi_digit_tokens(tops: Iterable[TopLogprobs]) -> bool:
    """Whether any token spells two or more digits (then the tokenizer writes numbers whole)."""
    for top in tops:
        for token, _ in top:
            s = token.strip()
            if len(s) >= 2 and s.isascii() and s.isdigit():
                return True
    return False


@dataclass
class NumberTree:
    """Digit-prefix tree of one judgment; ``root`` is the first answer token's top log-probabilities.

    ``add(prefix, top)`` records the distribution after ``prefix``; ``interval()`` bounds the score;
    ``next_prefix()`` names the unknown prefix that would narrow it most.
    """

    root: TopLogprobs
    whole_number_tokens: bool = False
    known: dict[str, list[tuple[str, float]]] = field(default_factory=dict)

    def add(self, prefix: str, top: TopLogprobs) -> None:
        """Record the top log-probs the server gave after the digit ``prefix`` (first answer kept)."""
        if prefix not in self.known:
            self.known[prefix] = _probabilities(top)

    # -- the tree --------------------------------------------------------------------------------------
    def _walk(self) -> tuple[dict[int, float], dict[str, float], float]:
        """(mass per valid number, mass per unresolved open prefix, mass on digit answers in all)."""
        numbers: dict[int, float] = {}
        open_: dict[str, float] = {}
        total = 0.0
        stack: list[tuple[str, float, bool]] = []
        for token, p in _probabilities(self.root):
            split = split_first(token)
            if split is None:
                continue
            total += p
            stack.append((split[0], p, split[1]))
        while stack:
            digits, mass, is_open = stack.pop()
            if is_open and can_grow(digits) and digits in self.known:
                rest = mass
                for token, p in self.known[digits]:
                    split = split_next(token)
                    if split is None:
                        continue
                    rest -= mass * p
                    stack.append((digits + split[0], mass * p, split[1]))
                digits_mass = max(rest, 0.0)
                value = valid_number(digits)
                if value is not None and digits_mass > 0:
                    numbers[value] = numbers.get(value, 0.0) + digits_mass
                continue
            if is_open and can_grow(digits) and not self.whole_number_tokens:
                open_[digits] = open_.get(digits, 0.0) + mass
                continue
            value = valid_number(digits)
            if value is not None:
                numbers[value] = numbers.get(value, 0.0) + mass
        return numbers, open_, total

    def digit_mass(self) -> float:
        """Probability that the answer starts with a digit (valid or not)."""
        return self._walk()[2]

    def interval(self) -> tuple[float, float] | None:
        """(lowest, highest) score consistent with what is known; None when no mass can be a number."""
        numbers, open_, _ = self._walk()
        mass = sum(numbers.values())
        weighted = sum(v * m for v, m in numbers.items())
        unknown = [(min(_growth_values(p)), max(_growth_values(p)), m) for p, m in open_.items()]
        if mass <= 0 and not unknown:
            return None
        lo = _extreme(weighted, mass, [(low, m) for low, _, m in unknown], lowest=True)
        hi = _extreme(weighted, mass, [(high, m) for _, high, m in unknown], lowest=False)
        return lo, hi

    def next_prefix(self) -> str | None:
        """The unresolved prefix whose resolution could move the score most (None when none is open)."""
        _, open_, _ = self._walk()
        if not open_:
            return None
        spans = {p: m * (max(_growth_values(p)) - min(_growth_values(p))) for p, m in open_.items()}
        return max(sorted(spans), key=lambda p: spans[p])

    def number_mass(self) -> float:
        """Probability on valid numbers, counting unresolved prefixes as numbers (they can end as one)."""
        numbers, open_, _ = self._walk()
        return sum(numbers.values()) + sum(open_.values())


def _extreme(weighted: float, mass: float, options: list[tuple[float, float]], *, lowest: bool) -> float:
    """Min (or max) of ``(weighted + sum a_i m_i v_i) / (mass + sum a_i m_i)`` over ``a_i`` in [0, 1].

    A ratio of this form is optimised at a vertex: include option i iff its value beats the running ratio;
    going through the options from the most extreme value inward finds it in one pass.
    """
    order = sorted(options, key=lambda o: o[0], reverse=not lowest)
    w, m = weighted, mass
    for value, om in order:
        ratio = w / m if m > 0 else None
        if ratio is None or (value < ratio if lowest else value > ratio):
            w += value * om
            m += om
    return w / m


def read_score(
    tree: NumberTree,
    continue_after,
    *,
    min_mass: float,
    tolerance: float = DEFAULT_TOLERANCE,
    max_follow_ups: int = 12,
) -> tuple[float | None, int]:
    """Resolve ``tree`` with ``continue_after(prefix) -> top logprobs`` until the score is within
    ``tolerance``; returns (score or None when less than ``min_mass`` is on numbers, follow-up count).

    ``continue_after`` may raise ``NumberReadError`` (no way to continue a prefix on this server).
    """
    follow_ups = 0
    while True:
        if tree.number_mass() < min_mass:
            return None, follow_ups
        bounds = tree.interval()
        if bounds is None:
            return None, follow_ups
        lo, hi = bounds
        prefix = tree.next_prefix()
        if hi - lo <= 2 * tolerance or prefix is None:
            return (lo + hi) / 2, follow_ups
        if follow_ups >= max_follow_ups:
            raise NumberReadError(
                f"the score is still between {lo:.1f} and {hi:.1f} after {follow_ups} follow-up requests"
            )
        tree.add(prefix, continue_after(prefix))
        follow_ups += 1


def format_top(top: TopLogprobs, k: int = 8) -> str:
    """``'7' 0.61, '6' 0.20, ...`` — the most likely tokens, for error messages."""
    items = sorted(_probabilities(top), key=lambda t: -t[1])[:k]
    return ", ".join(f"{token!r} {p:.2f}" for token, p in items)
