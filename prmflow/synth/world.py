"""A seeded generator of arithmetic word problems whose every solution step can be checked exactly.

The world exists so that a tiny LM can be trained as a policy that makes real mistakes, while
`prmflow.synth.checker` still knows the truth about each step. A problem is a start sentence,
one sentence per operation, and a question. Each sentence type maps to fixed computation lines
(r is the running total):

    start  "Mia has 23 marbles."                                  r = 23, no line
    add    "She finds 14 more marbles."                           r + 14 = ...
    sub    "She gives 9 marbles to Leo."                          r - 9 = ...      (result >= 1)
    mul    "Then her marbles become 3 times as many."             r * 3 = ...      (result <= max_value)
    div    "She splits her marbles equally into 4 groups and keeps one group."
                                                                  r / 4 = ...      (only if exact)
    group  "She buys 3 bags with 6 marbles in each bag."          3 * 6 = 18, then r + 18 = ...
    question "How many marbles does Mia have now?"

A real problem, the first one for seed 0:

    >>> p = generate_problems(1, seed=0, cfg=WorldConfig())[0]
    >>> p.id
    'synth-000000'
    >>> print(p.problem)  # doctest: +NORMALIZE_WHITESPACE
    Nora has 4 toys. She gets 9 boxes of 8 toys each. She buys 7 bags with 7 toys in each bag.
    How many toys does Nora have now?
    >>> print(p.solution)
    9 * 8 = 72
    4 + 72 = 76
    7 * 7 = 49
    76 + 49 = 125
    The answer is 125
    >>> p.to_row()["answer"]
    '125'

Numbers are always digits, so every operand of a canonical step is either written in the text
or the result of an earlier step (the checker relies on this). Only `random.Random(seed)` is
used: the same seed and config give identical problems, on any machine.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields

from prmflow.synth.format import format_solution

# (name, subject pronoun, possessive, object pronoun)
NAMES = [
    ("Mia", "She", "her", "her"), ("Leo", "He", "his", "him"), ("Ava", "She", "her", "her"),
    ("Noah", "He", "his", "him"), ("Emma", "She", "her", "her"), ("Liam", "He", "his", "him"),
    ("Zoe", "She", "her", "her"), ("Omar", "He", "his", "him"), ("Lily", "She", "her", "her"),
    ("Ravi", "He", "his", "him"), ("Sara", "She", "her", "her"), ("Ben", "He", "his", "him"),
    ("Nora", "She", "her", "her"), ("Max", "He", "his", "him"), ("Ivy", "She", "her", "her"),
    ("Jack", "He", "his", "him"), ("Ella", "She", "her", "her"), ("Tom", "He", "his", "him"),
    ("Ana", "She", "her", "her"), ("Sam", "He", "his", "him"),
]  # fmt: skip
ITEMS = [
    "marbles", "stickers", "apples", "cookies", "coins", "pencils", "books", "stamps", "cards",
    "shells", "beads", "balloons", "candies", "toys", "crayons", "buttons", "rocks", "flowers",
    "eggs", "grapes",
]  # fmt: skip

# Sentence templates per operation. {S}/{P}/{O}: subject/possessive/object pronoun of the
# entity, {other}: another name, {x}: the operand, {n}/{m}: count and size of a group.
TEMPLATES = {
    "add": [
        "{S} finds {x} more {item}.",
        "{S} buys {x} more {item}.",
        "{other} gives {O} {x} {item}.",
    ],
    "sub": [
        "{S} gives {x} {item} to {other}.",
        "{S} loses {x} {item}.",
        "{S} sells {x} {item}.",
    ],
    "mul": [
        "Then {P} {item} become {x} times as many.",
        "{S} ends up with {x} times as many {item} as before.",
    ],
    "div": [
        "{S} splits {P} {item} equally into {x} groups and keeps one group.",
        "{S} divides {P} {item} into {x} equal piles and keeps one pile.",
    ],
    "group": [
        "{S} buys {n} bags with {m} {item} in each bag.",
        "{S} gets {n} boxes of {m} {item} each.",
    ],
}
OPS = tuple(TEMPLATES)


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of the generator; the defaults suit a ~1M-parameter policy."""

    # --- length
    min_steps: int = 2
    """fewest arithmetic lines in a solution (the answer line not counted)"""
    max_steps: int = 8
    """most arithmetic lines in a solution; the count is uniform in [min_steps, max_steps]"""
    # --- numbers
    start_min: int = 2
    """smallest starting quantity (>= 1, so a total never reaches 0)"""
    start_max: int = 40
    """largest starting quantity"""
    add_max: int = 40
    """operands of + and - are drawn from 1..add_max"""
    mul_max: int = 9
    """multipliers, and the count and size of a group, are drawn from 2..mul_max"""
    div_max: int = 9
    """divisors are drawn from 2..div_max (only those that divide the total)"""
    max_value: int = 999
    """no total or product exceeds this; totals stay >= 1"""
    # --- how often each sentence type is picked among the feasible ones
    w_add: float = 3.0
    """weight of "finds 14 more"-style sentences"""
    w_sub: float = 3.0
    """weight of "gives 9 to Leo"-style sentences"""
    w_mul: float = 1.0
    """weight of "becomes 3 times as many" sentences"""
    w_div: float = 1.0
    """weight of "splits into 4 groups and keeps one" sentences"""
    w_group: float = 1.0
    """weight of "buys 3 bags with 6 in each bag" sentences (two lines)"""

    def __post_init__(self) -> None:
        def require(ok: bool, field: str, msg: str) -> None:
            if not ok:
                raise ValueError(f"WorldConfig.{field}={getattr(self, field)!r}: {msg}")

        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("w_"):
                require(
                    isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                    and value >= 0, f.name, "must be a finite number >= 0",
                )  # fmt: skip
            else:
                require(isinstance(value, int) and not isinstance(value, bool), f.name, "must be an int")
        require(self.min_steps >= 1, "min_steps", "must be >= 1")
        require(self.max_steps >= self.min_steps, "max_steps", f"must be >= min_steps={self.min_steps}")
        require(self.start_min >= 1, "start_min", "must be >= 1")
        require(self.start_max >= self.start_min, "start_max", f"must be >= start_min={self.start_min}")
        require(self.add_max >= 1, "add_max", "must be >= 1")
        require(self.mul_max >= 2, "mul_max", "must be >= 2")
        require(self.div_max >= 2, "div_max", "must be >= 2")
        require(self.max_value >= max(2, self.start_max), "max_value", "must be >= 2 and >= start_max")
        weights = [getattr(self, f"w_{op}") for op in OPS]
        require(sum(weights) > 0, "w_add", "the weights w_add..w_group must not all be 0")


@dataclass(frozen=True)
class Step:
    """One computation line `a op b = result`; op is one of + - * /."""

    a: int
    op: str
    b: int
    result: int

    @property
    def text(self) -> str:
        """The computation line, e.g. '23 + 14 = 37'."""
        return f"{self.a} {self.op} {self.b} = {self.result}"


@dataclass(frozen=True)
class Problem:
    """A word problem, its integer answer and the steps of its canonical solution."""

    id: str
    problem: str
    answer: int
    steps: tuple[Step, ...]

    @property
    def solution(self) -> str:
        """The canonical solution: one line per step, then 'The answer is {answer}'."""
        return format_solution([s.text for s in self.steps], self.answer)

    def to_row(self) -> dict[str, str]:
        """The row written to JSONL; `answer` is a string, as in every row of prmflow."""
        return {"id": self.id, "problem": self.problem, "answer": str(self.answer), "solution": self.solution}


def _options(cfg: WorldConfig, r: int, steps_left: int) -> dict[str, list]:
    """Every operand each operation could take from total r; an empty list means infeasible."""
    span = range(2, cfg.mul_max + 1)
    return {
        "add": list(range(1, min(cfg.add_max, cfg.max_value - r) + 1)),
        "sub": list(range(1, min(cfg.add_max, r - 1) + 1)),  # keeps the total >= 1
        "mul": [k for k in span if r * k <= cfg.max_value],
        "div": [d for d in range(2, cfg.div_max + 1) if r % d == 0],
        "group": [(n, m) for n in span for m in span if r + n * m <= cfg.max_value] if steps_left >= 2 else [],
    }


def _steps_for(op: str, r: int, x) -> list[Step]:
    """The computation lines one sentence maps to."""
    if op == "add":
        return [Step(r, "+", x, r + x)]
    if op == "sub":
        return [Step(r, "-", x, r - x)]
    if op == "mul":
        return [Step(r, "*", x, r * x)]
    if op == "div":
        return [Step(r, "/", x, r // x)]
    n, m = x  # group: the product first, then add it to the total
    return [Step(n, "*", m, n * m), Step(r, "+", n * m, r + n * m)]


def generate_problem(rng: random.Random, cfg: WorldConfig, id: str) -> Problem:
    """One problem drawn from `rng` (which advances); same rng state and cfg -> same problem."""
    name, subj, poss, obj = rng.choice(NAMES)
    item = rng.choice(ITEMS)
    r = rng.randint(cfg.start_min, cfg.start_max)
    num_steps = rng.randint(cfg.min_steps, cfg.max_steps)
    sentences = [f"{name} has {r} {item}."]
    steps: list[Step] = []
    while len(steps) < num_steps:
        options = _options(cfg, r, num_steps - len(steps))
        feasible = [op for op in OPS if options[op] and getattr(cfg, f"w_{op}") > 0]
        if feasible:
            op = rng.choices(feasible, weights=[getattr(cfg, f"w_{op}") for op in feasible])[0]
        else:  # r < max_value allows add; r >= 2 allows sub; one of them always holds
            op = "add" if options["add"] else "sub"
        x = rng.choice(options[op])
        other = rng.choice([n for n, *_ in NAMES if n != name])
        template = rng.choice(TEMPLATES[op])
        n, m = x if op == "group" else (None, None)
        sentences.append(template.format(S=subj, P=poss, O=obj, other=other, item=item, x=x, n=n, m=m))
        steps += _steps_for(op, r, x)
        r = steps[-1].result
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(id=id, problem=" ".join(sentences), answer=r, steps=tuple(steps))


def generate_problems(n: int, seed: int, cfg: WorldConfig = WorldConfig(), id_prefix: str = "synth") -> list[Problem]:
    """`n` problems from `random.Random(seed)`, with ids like 'synth-000042'.

    Problem i depends only on (seed, cfg, i), so a longer list extends a shorter one.
    """
    if n < 0:
        raise ValueError(f"n={n}: must be >= 0")
    rng = random.Random(seed)
    return [generate_problem(rng, cfg, f"{id_prefix}-{i:06d}") for i in range(n)]
