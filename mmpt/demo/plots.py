"""The demo report's PNG plots (matplotlib, from the `demo` extra): loss, pass@k, incremental, similarity.

Each function takes the numbers and the words to show (legend labels, titles) and writes one PNG.
"""

from __future__ import annotations

from pathlib import Path

from mmpt.eval.passk import FRACTION_BINS, bin_name

COLORS = {"separated": "tab:orange", "baseline": "tab:blue", "nl": "tab:green", "code": "tab:purple"}


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("the demo's plots need matplotlib: pip install 'mmpt[demo]'") from None

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.spines.top": False, "axes.spines.right": False, "font.size": 10})
    return plt


def _integer_steps(*axes) -> None:
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_loss(
    backbone: list[dict], further: dict[str, list[dict]], labels: dict[str, str], titles: tuple[str, str], path: Path
) -> None:
    """Left: the backbone's NL and code loss; right: code loss of the further pre-trainings."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label, color in (("loss_nl", "NL tokens", COLORS["nl"]), ("loss_code", "code tokens", COLORS["code"])):
        points = [(r["step"], r[key]) for r in backbone if key in r]
        if points:
            left.plot(*zip(*points), label=label, color=color, lw=2)
    left.set(title=titles[0], xlabel="optimizer step", ylabel="cross-entropy (nats/token)")
    left.legend()
    for model, records in further.items():
        points = [(r["step"], r["loss_code"]) for r in records if "loss_code" in r]
        if points:
            right.plot(*zip(*points), label=labels[model], color=COLORS[model], lw=2)
    right.set(title=titles[1], xlabel="optimizer step", ylabel="code cross-entropy")
    right.legend()
    _integer_steps(left, right)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _bars(ax, groups: list[str], values: dict[str, list[float | None]], labels: dict[str, str]) -> None:
    """Grouped bars, one colour per model, each annotated; None is drawn as a missing bar."""
    width = 0.8 / len(values)
    for j, (model, vals) in enumerate(values.items()):
        xs = [i + (j - (len(values) - 1) / 2) * width for i in range(len(groups))]
        heights = [v or 0.0 for v in vals]
        bars = ax.bar(xs, heights, width, label=labels[model], color=COLORS[model])
        for bar, v in zip(bars, vals):
            text = "n/a" if v is None else f"{100 * v:.1f}%"
            ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")  # fmt: skip
    ax.set_xticks(range(len(groups)), groups)
    top = max([v for vals in values.values() for v in vals if v] + [0.01])
    ax.set_ylim(0, top * 1.3)
    ax.yaxis.set_major_formatter(lambda y, _: f"{100 * y:.1f}%" if top < 0.05 else f"{100 * y:.0f}%")


def plot_passk(plain: dict[str, dict[str, dict]], columns: list[tuple[str, str, str]], labels: dict[str, str],
               title: str, path: Path) -> None:  # fmt: skip
    """pass@k bars of plain tasks: one group per (label, kind, metric key) column."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    values = {m: [plain[m][kind].get(key) for _, kind, key in columns] for m in plain}
    _bars(ax, [label for label, _, _ in columns], values, labels)
    ax.set(title=title, ylabel="pass rate")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fraction_label(lo: float, hi: float) -> str:
    """How a fraction bin reads in tables and plots: "75–100%"."""
    return f"{100 * lo:.0f}–{100 * hi:.0f}%"


def plot_incremental(incremental: dict[str, dict], parse_rates: dict[str, dict[str, float]], labels: dict[str, str],
                     path: Path) -> None:  # fmt: skip
    """Left: incremental pass@1 by fraction given; right: the share of completions that parse."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4))
    bins = [bin_name(lo, hi) for lo, hi in FRACTION_BINS]
    groups = [fraction_label(lo, hi) for lo, hi in FRACTION_BINS] + ["all"]
    values = {
        m: [metrics.get("by_fraction", {}).get(b, {}).get("pass@1") for b in bins] + [metrics.get("pass@1")]
        for m, metrics in incremental.items()
    }
    _bars(left, groups, values, labels)
    left.set(title="incremental pass@1 (greedy)", xlabel="fraction of the reference body given", ylabel="pass rate")
    left.legend(loc="upper left")
    rates = {m: [parse_rates[m].get(b) for b in [*bins, "all"]] for m in parse_rates}
    _bars(right, groups, rates, labels)
    right.set(title="completions that parse (run to the tests)", xlabel="fraction of the reference body given",
              ylabel="share of completions")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_similarity(curve, final: list[tuple[str, float]], path: Path) -> None:
    """Left: the NL/code cosine over training (a `report.SimilarityCurve`); right: its histogram at the end."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    # step 0: every code copy is its NL row's exact copy (cosine 1), by construction
    steps, mean, low, high = [0, *curve.steps], [1.0, *curve.mean], [1.0, *curve.low], [1.0, *curve.high]
    left.fill_between(steps, low, high, color=COLORS["separated"], alpha=0.2, label="min–max over tokens")
    left.plot(steps, mean, color=COLORS["separated"], lw=2, marker="o", ms=3, label="mean")
    left.axhline(1.0, color="gray", lw=1, ls="--")
    left.set(
        title=f"NL row vs code copy of the {len(final)} separated tokens", xlabel="optimizer step", ylabel="cosine similarity"
    )
    left.legend(loc="lower left")
    _integer_steps(left)
    right.hist([c for _, c in final], bins=30, color=COLORS["separated"])
    right.set(title="after further pre-training", xlabel="cosine similarity", ylabel="tokens")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_watch(curves: dict[str, list[dict]], labels: dict[str, str], title: str, path: Path) -> None:
    """Left: pass@1 at each checkpoint (`mmpt watch`); right: the share of those completions that parse.
    `curves`: model -> [{"step", "pass@1", "parses"}] by step."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for model, points in curves.items():
        steps = [p["step"] for p in points]
        left.plot(steps, [p["pass@1"] for p in points], label=labels[model], color=COLORS[model], lw=2, marker="o")
        right.plot(steps, [p["parses"] for p in points], label=labels[model], color=COLORS[model], lw=2, marker="o")
    top = max([p["pass@1"] for points in curves.values() for p in points] + [0.01])
    left.set(title=title, xlabel="optimizer step (checkpoint)", ylabel="pass@1", ylim=(0, top * 1.3))
    right.set(title="completions that parse (run to the tests)", xlabel="optimizer step (checkpoint)",
              ylabel="share of completions", ylim=(0, 1.05))  # fmt: skip
    left.yaxis.set_major_formatter(lambda y, _: f"{100 * y:.1f}%" if top < 0.05 else f"{100 * y:.0f}%")
    right.yaxis.set_major_formatter(lambda y, _: f"{100 * y:.0f}%")
    for ax in (left, right):
        ax.legend(loc="best")
        ax.set_xticks(sorted({p["step"] for points in curves.values() for p in points}))  # the checkpoints
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
