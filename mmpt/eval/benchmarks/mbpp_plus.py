"""MBPP+ (EvalPlus): 378 of MBPP's problems (sanitized MBPP's, ids across all splits) judged by EvalPlus's base and plus inputs (`evalplus`)."""

from __future__ import annotations

from mmpt.eval.benchmarks import evalplus, mbpp
from mmpt.eval.benchmarks.problem import Problem

# EvalPlus picks a task's oracle by the name of its reference's function (see evalplus_rules.ORACLES)
ORACLES = {
    **dict.fromkeys(
        [
            "similar_elements",  # MBPP/2
            "find_char_long",  # MBPP/7
            "common_in_nested_lists",  # MBPP/111
            "extract_singly",  # MBPP/140
            "larg_nnum",  # MBPP/232
            "intersection_array",  # MBPP/249
            "find_dissimilar",  # MBPP/579
            "Diff",  # MBPP/769
        ],
        "set_equal",
    ),
    **dict.fromkeys(["check_str", "text_match_three", "text_starta_endb"], "not_none"),  # regex matches
    "are_equivalent": "any",  # MBPP/164
    "sum_div": "or_zero",  # MBPP/295
    "surface_Area": "surface_area",  # MBPP/581
    "digit_distance_nums": "digit_distance",  # MBPP/558
}

# How MBPP+'s release file stores inputs its functions take as tuples, sets or complex numbers (JSON
# has none), by task number; each is turned back as EvalPlus's loader does, quirks included (some
# drop arguments past the ones they convert; MBPP/115 turns an empty list into {}).
INPUT_TYPES = {
    **dict.fromkeys(
        [2, 116, 132, 143, 222, 261, 273, 394, 399, 421, 424, 429, 470, 560, 579, 596, 616, 630, 726, 740, 744, 809],
        "args_tuples",
    ),
    **dict.fromkeys([63, 64, 70, 94, 120, 237, 272, 299, 400, 409, 417, 438, 473, 614, 780], "args_lists_of_tuples"),
    **dict.fromkeys([75, 413, 444, 753], "first_list_of_tuples"),
    **dict.fromkeys([106, 750], "second_tuple"),
    115: "first_list_of_sets",
    124: "float_complex",
    **dict.fromkeys([250, 405, 446, 617, 720, 763, 808], "first_tuple"),
    **dict.fromkeys([259, 401, 445], "args_tuples_of_tuples"),
    278: "first_tuple_of_tuples",
    307: "first_tuple_three",
    722: "first_dict_of_tuples",
    252: "complex",
    **dict.fromkeys([580, 615, 791], "all_tuples"),
}


def _tuples(x):
    return tuple(_tuples(i) for i in x) if isinstance(x, list) else x


def release_input(kind: str | None, args: list):
    """One MBPP+ release input (a JSON list of arguments) with the Python types its function takes."""
    if kind is None:
        return args
    if kind == "args_tuples":
        return [tuple(a) for a in args]
    if kind == "args_lists_of_tuples":
        return [[tuple(x) for x in a] for a in args]
    if kind == "first_list_of_tuples":
        return [[tuple(x) for x in args[0]], args[1]]
    if kind == "second_tuple":
        return [args[0], tuple(args[1])]
    if kind == "first_list_of_sets":
        return [[set(x) if isinstance(x, list) and x else {} for x in args[0]]]
    if kind == "float_complex":
        return (float(args[0]), complex(args[1]))
    if kind == "first_tuple":
        return [tuple(args[0]), args[1]]
    if kind == "args_tuples_of_tuples":
        return [tuple(tuple(x) for x in a) for a in args]
    if kind == "first_tuple_of_tuples":
        return [tuple(tuple(x) if isinstance(x, list) else x for x in args[0])]
    if kind == "first_tuple_three":
        return [tuple(args[0]), args[1], args[2]]
    if kind == "first_dict_of_tuples":
        return [{k: tuple(v) for k, v in args[0].items()}, *args[1:]]
    if kind == "complex":
        return [complex(args[0])]
    if kind == "all_tuples":
        return _tuples(args)
    raise ValueError(f"unknown MBPP+ input kind {kind!r}")


def _number(task: str) -> int:
    return int(str(task).rsplit("/", 1)[-1])


def _task(task_id: object) -> tuple[str, object]:
    """(MBPP/N, the input conversion of task N) of a row's `Mbpp/N`."""
    try:
        number = _number(task_id)
    except ValueError:
        raise ValueError("must be an MBPP task number (Mbpp/N)") from None
    kind = INPUT_TYPES.get(number)
    return f"MBPP/{number}", lambda args: release_input(kind, args)


def _hub_reference(row: dict, function: str) -> tuple[object, object]:
    return row.get("code"), function


def _all_of_mbpp() -> list[Problem]:
    return mbpp.problems(split="all")


PLUS = evalplus.PlusBenchmark(
    name="mbpp+",
    hub="evalplus/mbppplus",
    release="MbppPlus-v0.2.0.jsonl.gz",
    release_repo="mbppplus_release",
    base="mbpp",
    base_problems=_all_of_mbpp,
    oracles=ORACLES,
    task=_task,
    hub_reference=_hub_reference,
)
