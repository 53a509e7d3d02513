"""``python -m pvllm.annotate --predictions RUN_DIR ... --annotator NAME --out annotations.jsonl``."""

from __future__ import annotations

import argparse
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pvllm.annotate",
        description="Serve the human annotation tool (paper Fig. 9): score each model's comment against the "
        "ground truth on emotion, style and relevance. Resumes from --out.",
    )
    p.add_argument(
        "--predictions",
        nargs="+",
        required=True,
        metavar="RUN_DIR",
        help="evaluation run directories (each with predictions.jsonl); samples in all of them are shown",
    )
    p.add_argument(
        "--annotator", required=True, help="your pseudonym (written into every row; not your real name)"
    )
    p.add_argument("--out", required=True, help="annotations.jsonl to append to (and resume from)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument(
        "--dataset", default=None, help="dataset directory (videos.jsonl + videos) to show 8 frames"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the per-sample blind model order")
    p.add_argument(
        "--users",
        type=int,
        default=None,
        help="annotate N random users, one sample each (paper: 50 per split); all annotators use the same N",
    )
    p.add_argument(
        "--users-seed", type=int, default=0, help="seed of the --users draw (same for all annotators)"
    )
    return p.parse_args(argv)


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(host: str) -> list[str] | None:
    """Host headers a loopback-bound server accepts (stops DNS rebinding); None (any) otherwise."""
    return ["127.0.0.1", "localhost", "[::1]"] if host in LOOPBACK else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from pvllm.annotate.app import build_app

    try:
        app = build_app(
            args.predictions,
            args.annotator,
            args.out,
            seed=args.seed,
            dataset=args.dataset,
            allowed_hosts=allowed_hosts(args.host),
            users=args.users,
            users_seed=args.users_seed,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    a = app.state.annotator
    if a.store.repaired:
        print(
            f"warning: {args.out} ended in an incomplete line (a killed write); it was cut", file=sys.stderr
        )
    print(
        f"{len(a.samples)} samples, {a.done_count()} already annotated by {args.annotator!r}; "
        f"writing to {args.out}",
        file=sys.stderr,
    )
    print(
        f"open http://{args.host}:{args.port}/ in a browser (Ctrl-C to stop; progress is saved per submit)",
        file=sys.stderr,
    )
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
