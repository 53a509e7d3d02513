"""pvllm on real people: the danmaku comments of ../shared/data (comments only), text-only PV-LLM-small.

    python scripts/real_danmaku_text.py [--stages all] [--max-steps 600] [--model-samples-per-user 25]
        [--out outputs/real_danmaku_text] [--doc docs/real_danmaku_text.md] [--split test|val]
        [--dataset DIR] [--score-dtype float32|bfloat16]

Stages (each is the real entry point run as a subprocess; a finished stage is recorded in
``OUT/stages.json`` and skipped on a rerun, and an interrupted ranking run continues where it stopped):
1. ``import``, ``build``: the 300 pseudonymized users' comments (one-tap preset "easy" comments dropped) ->
   a dataset directory (>= 11 videos per user, ψ skipped, user split 60/15/25);
2. ``baselines``: the no-training rankers (``generator=baseline_ranker``: random, length, tfidf, bm25,
   popularity) on the TEST users, history own / none / others, on two target sets: every comment of
   every test user (``samples_per_user=all``) and the model target set (``samples_per_user=M``);
3. ``zeroshot``: SmolLM2-135M-Instruct (the LLM inside PV-LLM-small, untrained here; ``generator=text_only``)
   ranks the model target set, history own / none / others;
4. ``train``: ``python train.py experiment=real_danmaku_text`` for ``--max-steps`` (the training budget;
   ``--train-override`` adds Hydra overrides, e.g. ``data.train_samples_per_user=4``);
5. ``trained``: the trained model ranks the model target set, own / none / others;
6. ``report``: writes ``--doc``: every row (raw log-likelihood and PMI = own - none per candidate), 95%
   intervals over users (bootstrap by user), paired permutation tests (own vs none, own vs others, model vs
   the best baseline). Rows of stages not run yet are marked pending, with the command.
Every choice was made on validation users; the test users are ranked once, here. Choices are measured with
``--split val`` (the same stages on the validation users, under ``OUT/rank_val/``, with their own stage
records) and ``--dataset DIR`` (one build shared by several tries, so every try sees the same users), e.g.
``--out outputs/rdt_try --dataset outputs/real_danmaku_text/dataset --split val --doc outputs/rdt_try.md
--train-override data.train_samples_per_user=4``.
A shrunk run (``--users 12 --model tiny --max-steps 2``) is tests/test_real_danmaku.py.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data" / "comments"
STAGES = ("import", "build", "baselines", "zeroshot", "train", "trained", "report")
MODES = (("k", "own (k=5)"), ("none", "none"), ("others", "another user's (k=5)"))
RANKERS = ("random", "length", "tfidf", "bm25", "popularity")
RANKER_LABELS = {
    "random": "random",
    "length": "length closest to the history's median",
    "tfidf": "char 1-3-gram TF-IDF cosine to the history",
    "bm25": "char 1-3-gram BM25 to the history",
    "popularity": "popularity in training comments",
}


def run(args: list[str], env: dict, times: dict, stage: str) -> None:
    print(f"\n=== {stage}: {' '.join(args)}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, env=env)
    times[stage] = times.get(stage, 0.0) + time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"stage {stage!r} failed (exit {proc.returncode})")


def subset(src: Path, dst: Path, users: int) -> Path:
    """The comments of the first ``users`` authors (sorted pseudonyms): the shrunk test run."""
    rows = [json.loads(x) for x in src.open(encoding="utf-8")]
    keep = set(sorted({r["author"] for r in rows})[:users])
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8") as f:
        for r in rows:
            if r["author"] in keep:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    return dst


class Plan:
    """Where every stage writes, and the evaluate.py arguments shared by every ranking run."""

    def __init__(self, args: argparse.Namespace, out: Path):
        self.args, self.out, self.split = args, out, args.split
        self.dataset = args.dataset.resolve() if args.dataset else out / "dataset"
        self.raw, self.train_dir = out / "raw", out / "train"
        self.sets = {"all": "all", "models": str(args.model_samples_per_user)}
        # the test users' runs keep the first layout (OUT/rank/); another split has its own tree
        self.rank = out / ("rank" if self.split == "test" else f"rank_{self.split}")

    def key(self, stage: str) -> str:
        """The stage's record in stages.json: the ranking stages are per split; import/build/train are not."""
        return stage if self.split == "test" or stage in ("import", "build", "train") else f"{stage}:{self.split}"

    def candidates(self, tset: str) -> Path:
        return self.out / "candidates" / f"{self.split}_{tset}_N{self.args.n_candidates}.jsonl"

    def common(self, tset: str, mode: str) -> list[str]:
        return [
            f"data.root={self.dataset}", "data.name=danmaku_text", "video.mode=none", "data.include_title=true",
            f"split={self.split}", f"samples_per_user={self.sets[tset]}", "history.k=5", f"history.mode={mode}",
            "stage=rank", "~rater", f"ranking.n_candidates={self.args.n_candidates}",
            f"paths.output_root={self.out.parent}",
            f"histories_file={self.out / 'histories' / f'{self.split}_{tset}_${{history.mode}}.jsonl'}",
            f"ranking.candidates_file={self.candidates(tset)}",
        ]


# One multirun per target set and system, over the history modes (own first: its run draws the candidates
# file the others read): one process start instead of one per mode; each job writes rank/SET/SYSTEM_MODE/.
ALL_MODES = ",".join(m for m, _ in MODES)


def stage_baselines(plan: Plan, env: dict, times: dict) -> None:
    for tset in plan.sets:
        run(["evaluate.py", "-m", "generator=baseline_ranker", f"generator.ranker={','.join(RANKERS)}",
             *plan.common(tset, ALL_MODES), "ranking.batch_size=512",  # cheap scorers: one fsync per 512
             f"hydra.sweep.dir={plan.rank / tset}",
             "hydra.sweep.subdir=baseline-${generator.ranker}_${history.mode}"], env, times, "baselines")


def stage_model(plan: Plan, env: dict, times: dict, system: str) -> None:
    if system == "zeroshot":
        gen = ["generator=text_only", "generator.greedy=true", f"generator.batch_size={plan.args.batch_size}"]
        if plan.args.zeroshot_model:
            gen.append(f"generator.model_path={plan.args.zeroshot_model}")
    else:
        gen = ["experiment=real_danmaku_text_eval", f"generator.pretrained={plan.train_dir / 'hf_model'}"]
    gen.append(f"generator.dtype={plan.args.score_dtype}")
    run(["evaluate.py", "-m", *gen, *plan.common("models", ALL_MODES),
         f"hydra.sweep.dir={plan.rank / 'models'}", f"hydra.sweep.subdir={system}_${{history.mode}}"],
        env, times, system)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=None,
                   help="default: $PVLLM_OUTPUTS or outputs/, /real_danmaku_text")
    p.add_argument("--doc", type=Path, default=ROOT / "docs" / "real_danmaku_text.md")
    p.add_argument("--stages", default="all", help=f"comma list of {', '.join(STAGES)}, or all")
    p.add_argument("--redo", default="", help="comma list of stages to run again even if recorded done")
    p.add_argument("--comments", type=Path, default=SHARED,
                   help="directory of danmaku_sample.jsonl (default ../shared/data/comments)")
    p.add_argument("--max-steps", type=int, default=600, help="the training budget (optimizer steps)")
    p.add_argument("--train-override", action="append", default=[], help="extra train.py override")
    p.add_argument("--model", default="pvllm_small", help="conf/model/ option (tiny for the shrunk test)")
    p.add_argument("--zeroshot-model", default=None, help="text_only model_path (default: SmolLM2)")
    p.add_argument("--users", type=int, default=None, help="only the first N users (shrunk test run)")
    p.add_argument("--n-candidates", type=int, default=20)
    p.add_argument("--model-samples-per-user", type=int, default=25,
                   help="targets per user (distinct episodes) that the models rank (25: > 1,000 test targets)")
    p.add_argument("--split", default="test", choices=("test", "val"),
                   help="whose comments are ranked: test (the final table, once) or val (to make choices)")
    p.add_argument("--dataset", type=Path, default=None,
                   help="an existing build (OUT/dataset of an earlier run) instead of import + build: tries "
                        "that share it rank the same users")
    p.add_argument("--score-dtype", default="bfloat16", choices=("float32", "bfloat16"),
                   help="dtype the models rank in (generator.dtype; bfloat16: 1.9x faster on the CPU, MRR within "
                        "0.01 of float32: benchmarks/RESULTS.md P12)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples and permutations")
    args = p.parse_args(argv)
    stages = STAGES if args.stages == "all" else tuple(s.strip() for s in args.stages.split(","))
    bad = [s for s in stages if s not in STAGES]
    if bad:
        sys.exit(f"unknown stage(s) {bad}; valid: {', '.join(STAGES)}")
    out_root = Path(os.environ.get("PVLLM_OUTPUTS", ROOT / "outputs"))
    out = (args.out or out_root / "real_danmaku_text").resolve()
    out.mkdir(parents=True, exist_ok=True)
    plan = Plan(args, out)
    env = dict(os.environ, WANDB_MODE=os.environ.get("WANDB_MODE", "offline"), PYTHONWARNINGS="ignore",
               PVLLM_ROOT=str(ROOT))
    # pseudonyms are re-keyed at import; a fresh random key when none is set (never written anywhere)
    env.setdefault("PVLLM_PSEUDONYM_KEY", secrets.token_hex(16))
    state_file = out / "stages.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    redo = {s.strip() for s in args.redo.split(",") if s.strip()}
    comments = args.comments / "danmaku_sample.jsonl"
    if args.dataset and not (plan.dataset / "build_summary.json").is_file():
        sys.exit(f"--dataset {args.dataset}: no build_summary.json there (the OUT/dataset of an earlier run)")
    if not args.dataset and "import" in stages and not comments.is_file():
        sys.exit(f"{comments} is absent: the danmaku comments live in ../shared/data beside the repo "
                 "(or pass --comments DIR)")
    for stage in stages:
        key = plan.key(stage)
        if args.dataset and stage in ("import", "build"):
            print(f"=== {stage}: skipped, --dataset {plan.dataset}")
            continue
        if key in state and stage not in redo and stage != "report":
            print(f"=== {stage}: done {state[key]['finished']} ({state[key]['seconds']:.0f} s), skipped")
            continue
        times: dict[str, float] = {}
        t0 = time.perf_counter()
        if stage == "import":
            src = subset(comments, out / "subset" / "danmaku_sample.jsonl", args.users) if args.users else comments
            run(["-m", "pvllm.data.collect", "import", "--comments", str(src), "--videos",
                 str(args.comments / "danmaku_sample_videos.jsonl"), "--exclude", "fork=easy", "--out",
                 str(plan.raw)], env, times, stage)
        elif stage == "build":
            run(["-m", "pvllm.data.build", "--raw", str(plan.raw), "--out", str(plan.dataset), "--unknown-likes",
                 "keep", "--psi-threshold", "-1", "--undefined-psi", "keep", "--skip-psi", "--name",
                 "danmaku comments (text-only run)", "--source", "../shared/data/comments/danmaku_sample.jsonl"],
                env, times, stage)
        elif stage == "baselines":
            stage_baselines(plan, env, times)
        elif stage in ("zeroshot", "trained"):
            stage_model(plan, env, times, stage)
        elif stage == "train":
            run(["train.py", "experiment=real_danmaku_text", f"model={args.model}",
                 f"trainer.max_steps={args.max_steps}", f"hydra.run.dir={plan.train_dir}",
                 f"data.root={plan.dataset}", f"paths.output_root={out.parent}", *args.train_override],
                env, times, stage)
        elif stage == "report":
            text = render(plan, state)
            args.doc.parent.mkdir(parents=True, exist_ok=True)
            args.doc.write_text(text)
            print("\n" + text + f"\n\nwritten: {args.doc}")
        if stage != "report":
            state[key] = {"finished": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "seconds": round(time.perf_counter() - t0, 1),
                            **({"max_steps": args.max_steps, "model": args.model,
                                "overrides": args.train_override} if stage == "train" else {})}
            state_file.write_text(json.dumps(state, indent=2) + "\n")
    return 0


def command(args: argparse.Namespace, stages: str) -> str:
    extra = "".join(f" --{k.replace('_', '-')} {v}" for k, v in (
        ("users", args.users), ("model", None if args.model == "pvllm_small" else args.model),
        ("n_candidates", None if args.n_candidates == 20 else args.n_candidates),
        ("model_samples_per_user", None if args.model_samples_per_user == 25 else args.model_samples_per_user),
        ("zeroshot_model", args.zeroshot_model), ("split", None if args.split == "test" else args.split),
        ("dataset", args.dataset), ("score_dtype", None if args.score_dtype == "bfloat16" else args.score_dtype),
        ("max_steps", None if args.max_steps == 600 or "--max-steps" in stages else args.max_steps),
        *(("train_override", o) for o in args.train_override))
        if v is not None)
    return f"python scripts/real_danmaku_text.py --stages {stages}{extra}"


VAL_TRIES = ROOT / "docs" / "real_danmaku_text_val"  # the validation tries' docs (--split val), one per try


def val_tries() -> list[str]:
    """One line per committed validation try: its file, its command and its models' goal verdicts (the
    lines its report wrote)."""
    out = []
    for f in sorted(VAL_TRIES.glob("*.md")):
        text = " ".join(f.read_text().split())
        cmd = text.split("by `", 1)[1].split("`", 1)[0] if "by `" in text else "?"
        verdicts = re.findall(r"Goal \(issue 22\) for (.*?): own-history MRR above [\d.]+ .*? p < 0\.01\. "
                              r"(.*?(?:MET|not met)\.)(?= |$)", text)
        out.append(f"- [`{f.name}`](real_danmaku_text_val/{f.name}): `{cmd}`. "
                   + (" ".join(f"{label}: {verdict}" for label, verdict in verdicts) or "no model ranked."))
    return out


def render(plan: Plan, state: dict) -> str:
    """docs/real_danmaku_text.md from the run directories (pvllm.reports.real_people)."""
    from pvllm.reports.real_people import systems, table, tests

    args = plan.args
    build = json.loads((plan.dataset / "build_summary.json").read_text())
    labels = {f"baseline-{r}": f"{RANKER_LABELS[r]} (no training)" for r in RANKERS}
    zeroshot = (f"{Path(args.zeroshot_model).name} zero-shot (--zeroshot-model)" if args.zeroshot_model else
                "SmolLM2-135M-Instruct zero-shot (PV-LLM-small's LLM, untrained)")
    labels_models = {**labels, "zeroshot": zeroshot,
                     "trained": f"PV-LLM-small trained text-only ({args.max_steps} steps)"}
    pending = {"zeroshot": command(args, "zeroshot,report"),
               "trained": command(args, f"train,trained,report --max-steps {args.max_steps}")}
    tr = state.get("train")
    budget = (f"trained for {tr['max_steps']} steps in {tr['seconds'] / 60:.0f} min ({tr['finished']}; "
              f"overrides: {' '.join(tr['overrides']) or 'none'})" if tr else
              f"not trained yet: the budget is {args.max_steps} optimizer steps at batch 1 (experiment="
              "real_danmaku_text: lr 1e-4, history k ~ U[5, 15], one target per user and epoch; 1.85 s per "
              f"step on the idle 2-core machine, so ~{args.max_steps * 1.85 / 60:.0f} min), then ranking "
              f"{len(MODES)} history modes of the model target set (0.78 s per target and mode in bfloat16)")
    lines = [
        "# pvllm on real people: danmaku comments, the trained model against no-training baselines",
        "",
        f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by `{command(args, 'all')}` "
        "(stages done: " + ", ".join(f"{k} {v['finished']} ({v['seconds']:.0f} s)" for k, v in state.items())
        + "). Each stage resumes where it stopped; `--stages` runs some of them.",
        "",
        f"Data: {build['final']['users']} real users (pseudonymized), {build['final']['comments']} comments on "
        f"{build['final']['videos']} anime episodes (niconico danmaku, `../shared/data/comments`; one-tap preset "
        f"comments dropped; no video files; ψ not computed). Users split {build['split_users']}. Every row ranks "
        + ("TEST users' comments (unseen in training; no setting was tuned on them): the true " if plan.split ==
           "test" else "VALIDATION users' comments (unseen in training; the users every choice is made on): the true ")
        + 
        f"comment among N={args.n_candidates} candidates (the truth and {args.n_candidates - 1} other users' "
        "comments on the same episode, one candidates file per target set that every system ranks). History: "
        "5 of the user's comments on other episodes (own), none, or 5 of another user's (others). Recall/MRR "
        "x100; 95% intervals: percentile bootstrap over users. Ties count in expectation (a scorer that cannot "
        "tell the candidates apart gets exactly chance).",
        "",
        f"Model: {args.model}, {budget}; the models rank in {args.score_dtype} (generator.dtype). PMI: each "
        "candidate's score with the history minus its score "
        "with no history (log p(c | history) - log p(c | none), per token): removes the pull of generic lines.",
        "",
    ]
    found_stats: dict[str, dict] = {}
    who = "test" if plan.split == "test" else "validation"
    for tset, title, lab in (
        ("all", f"Every comment of every {who} user (`samples_per_user=all`): the no-training baselines", labels),
        ("models", f"The model target set (`samples_per_user={args.model_samples_per_user}`: up to "
         f"{args.model_samples_per_user} comments per {who} user, on distinct episodes)", labels_models),
    ):
        found = systems(plan.rank, tset)
        rows, stats = table(found, lab, pending, args.resamples)
        found_stats[tset] = stats
        lines += [f"## {title}", "", *rows, "", "Paired permutation tests on MRR over users (A vs B; p two-sided):",
                  "", *tests(stats, lab, args.resamples), ""]
        cand = plan.candidates(tset)
        summ = next(iter(sorted((plan.rank / tset).glob("*_k/ranking_summary.json"))), None)
        if summ is not None:
            s = json.loads(summ.read_text())
            lines += [f"Candidates file `{cand.name}` sha256 {s['candidates_sha256'][:16]}; "
                      f"{s['n_samples_filled_from_other_videos']} targets needed candidates from other episodes; "
                      f"{s.get('n_distractors_equal_history', '-')} distractors (in "
                      f"{s.get('n_samples_with_distractor_equal_history', '-')} targets) equal a comment of the "
                      f"own history and {s.get('n_truths_equal_history', '-')} truths do (danmaku repeat short "
                      "lines such as www).", ""]
    lines += ["## What it shows", "", findings(found_stats, labels_models, args), ""]
    tries = val_tries() if plan.split == "test" else []
    if tries:
        lines += ["## Choices tried on the validation users", "",
                  "Each try ranks the validation users' model target set (every row and test in its own doc, "
                  "generated by `--split val`); the verdicts below apply the issue's goal to those users:", "",
                  *tries, ""]
    return wrap(lines)


def findings(stats: dict[str, dict], labels: dict[str, str], args: argparse.Namespace) -> str:
    """The paragraph under the tables, every number read from ``stats``."""
    from pvllm.metrics.bootstrap import paired_test
    from pvllm.metrics.ranking import chance_levels
    from pvllm.reports.real_people import goal, per_item

    out = []
    a = stats.get("all", {})
    base = {k[0]: v for k, v in a.items() if k[1] == "raw" and k[2] == "k" and k[0].startswith("baseline-")}
    if base:
        best, b = max(base.items(), key=lambda kv: kv[1]["MRR"])
        ch = chance_levels(args.n_candidates)["MRR"]
        who = "test" if args.split == "test" else "validation"
        out.append(f"On every comment of the {b['users']} {who} users ({b['n']} targets), the best no-training "
                   f"scorer is the {labels[best].replace(' (no training)', '')}: MRR {b['MRR']:.1f} "
                   f"[{b['lo']:.1f}, {b['hi']:.1f}] with the user's own five comments, against chance "
                   f"{ch:.1f}.")
        oth = a.get((best, "raw", "others"))
        if oth:
            users = {sid: r["user_id"] for sid, r in b["rows"].items()}
            t = paired_test(per_item(oth["rows"])["MRR"], per_item(b["rows"])["MRR"], users,
                            resamples=args.resamples)
            out.append(f"Another user's five comments give {oth['MRR']:.1f} [{oth['lo']:.1f}, {oth['hi']:.1f}] "
                       f"(own - others {t['diff']:.1f}, p {t['p_permutation']:.4f}): the signal is this "
                       "person's, not danmaku in general.")
        pop = a.get(("baseline-popularity", "raw", "k"))
        popm = stats.get("models", {}).get(("baseline-popularity", "raw", "k"))
        if pop:
            out.append(f"Popularity in the training comments ignores the history: MRR {pop['MRR']:.1f} "
                       f"[{pop['lo']:.1f}, {pop['hi']:.1f}] on every comment"
                       + (f", {popm['MRR']:.1f} on the model target set." if popm else "."))
        ln = a.get(("baseline-length", "raw", "k"))
        tf = a.get(("baseline-tfidf", "raw", "k"))
        if ln and tf and args.split == "test":
            out.append("The issue's independent recomputation (69 test users drawn under another pseudonym key, "
                       "8,899 targets) found TF-IDF 29.1 [25.1, 35.3], length 23.3 [22.1, 24.6] and chance 18.0; "
                       f"here TF-IDF {tf['MRR']:.1f} falls {'inside' if 25.1 <= tf['MRR'] <= 35.3 else 'outside'} "
                       f"its interval and length {ln['MRR']:.1f} "
                       f"{'inside' if 22.1 <= ln['MRR'] <= 24.6 else 'outside'} it. The test users differ (the "
                       "split follows the pseudonyms, re-keyed at every import; the issue does not say how its "
                       "length scorer measured or broke ties). tests/test_real_danmaku.py recomputes the length "
                       "and TF-IDF rows of a shrunk run of this script independently (scikit-learn) and checks "
                       "this TF-IDF row against the issue's interval.")
        out.append(f"p = {1 / (args.resamples + 1):.4f} is the smallest value {args.resamples} random sign "
                   "patterns can give (exact tests enumerate all patterns up to 16 users).")
    m = stats.get("models", {})
    mb = m.get(("baseline-random", "raw", "k"))
    if mb:
        out.append(f"The model target set has {mb['n']} targets of {mb['users']} users"
                   + (" (at least 1,000, as the issue asks)." if mb["n"] >= 1000 else
                      ": FEWER than the 1,000 the issue asks for (raise --model-samples-per-user)."))
    for system in ("zeroshot", "trained"):
        verdict = goal(m, system, labels[system], args.resamples)
        if verdict:
            out.append(verdict)
        if system == "trained" and verdict and ": MET" not in verdict and args.split == "test":
            out.append("The goal is NOT met: the trained model, with the recipe chosen on the validation users, "
                       "does not beat the bar on the test users under either scoring. Every choice tried is "
                       "listed at the end, each with its validation figures.")
    if not any(k[0] in ("zeroshot", "trained") for k in m):
        out.append("The model rows are pending: the zero-shot and training stages have not run yet on this "
                   "build (the commands are in the table). A model that reads a person's history must beat the "
                   "best baseline's row on the same targets, and own must beat none and others at p < 0.01.")
    return " ".join(out)


def wrap(lines: list[str]) -> str:
    return "\n".join(x if x.startswith("|") else textwrap.fill(x, 110, break_on_hyphens=False) for x in lines)


if __name__ == "__main__":
    sys.exit(main())
