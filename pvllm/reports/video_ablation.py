"""Markdown tables of the video test (``python -m pvllm.video_test``, statistics of
:mod:`pvllm.metrics.video_ablation`)."""

from __future__ import annotations

from typing import Any


def _ci(d: dict[str, Any], fmt: str) -> str:
    return f"{d['mean']:+{fmt}} [{d['lo']:+{fmt}}, {d['hi']:+{fmt}}]"


def _yes(d: dict[str, Any]) -> str:
    return "yes" if d["excludes_zero"] else "no"


def format_video_test(s: dict[str, Any], title: str = "Video test") -> str:
    """(a), (b) and (c) (when generated) as three titled tables."""
    n, u = s["n_samples"], s["n_users"]
    who = f"{n} samples of {u} users; 95% percentile bootstrap interval over samples"
    lp = s["logp_mean"]
    names = {"across": "a video of the other source", "within": "another clip of the same source",
             "none": "no video"}
    lines = [f"### {title} (a): the true comment's log-probability, own video minus another ({who})", "",
             "| shown instead of the own video | logp own | logp other | own − other [95% CI] | CI excludes 0 |",
             "|---|---|---|---|---|"]
    for c in s["a"]:
        lines.append(f"| {names[c]} | {lp['own']:.3f} | {lp[c]:.3f} | {_ci(s['a'][c], '.3f')} | {_yes(s['a'][c])} |")
    b = s["b"]
    lines += ["", f"### {title} (b): which video? The own video ranked among {b['n_candidates']} candidate videos by "
              f"log p(true comment | video, history) ({who})", "",
              "| | value | chance | value − chance [95% CI] | CI excludes 0 |", "|---|---|---|---|---|",
              f"| R@1 | {b['R@1']:.1f} | {b['chance_R@1']:.1f} | {_ci(b['R@1_minus_chance'], '.1f')} | "
              f"{_yes(b['R@1_minus_chance'])} |",
              f"| MRR | {b['MRR']:.1f} | {b['chance_MRR']:.1f} | {_ci(b['MRR_minus_chance'], '.1f')} | "
              f"{_yes(b['MRR_minus_chance'])} |"]
    if "c" in s:
        lines += ["", f"### {title} (c): content accuracy, % of generations naming more content words of the "
                  f"target's video than of the mismatched one ({who})", "",
                  "| mismatched video | own video shown | mismatched shown | own − mismatched [95% CI] | CI excludes 0 "
                  "| mismatched-video generations fitting the video shown | ground truth fits | identical "
                  "generations |", "|---|---|---|---|---|---|---|---|"]
        for kind, name in (("across", "other source (source word lists)"),
                           ("within", "same source (per-clip word lists)")):
            c = s["c"][kind]
            lines.append(f"| {name} | {c['own_video']:.1f} | {c['mismatched_video']:.1f} | "
                         f"{_ci(c['difference'], '.1f')} | {_yes(c['difference'])} | "
                         f"{c['mismatched_fits_shown']:.1f} | "
                         f"{c['reference']:.1f} | {c['identical_generations']} of {n} |")
    return "\n".join(lines)
