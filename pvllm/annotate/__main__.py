"""``python -m pvllm.annotate --predictions RUN_DIR ... --out annotations.jsonl [--annotator NAME]``
``python -m pvllm.annotate users add|list|remove ... --dir DIR`` (logins; docs/annotate.md)."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pvllm.annotate",
        description="Serve the human annotation tool (paper Fig. 9): score each model's comment against the "
        "ground truth on emotion, style and relevance. Resumes from --out. Logins: `python -m "
        "pvllm.annotate users add NAME --dir DIR` (DIR = the folder of --out), or --annotator NAME.",
    )
    p.add_argument(
        "--predictions",
        nargs="+",
        required=True,
        metavar="RUN_DIR",
        help="evaluation run directories (each with predictions.jsonl); samples in all of them are shown",
    )
    p.add_argument(
        "--annotator",
        default=None,
        help="one-person use: log in as this pseudonym with a token made for this start (printed); "
        "users in the folder's users.json can log in too",
    )
    p.add_argument(
        "--out", required=True, help="annotations.jsonl shared by the annotators (appended to, resumed from)"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one; the link names it)")
    p.add_argument(
        "--dataset", default=None, help="dataset directory (videos.jsonl + videos): video player and 8 frames"
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


def parse_users_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pvllm.annotate users",
        description="Manage logins (users.json in the annotation store directory: the folder of --out). "
        "Only a hash of each token is stored; `add` prints the token once, in a login link.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a user and print its login link")
    add.add_argument("name", help="a pseudonym (written into every row; not a real name)")
    add.add_argument("--admin", action="store_true", help="an admin: progress, agreement and export")
    add.add_argument("--reset", action="store_true", help="replace the token of an existing user")
    add.add_argument(
        "--url", default="http://127.0.0.1:8765", help="the server's address, for the printed link"
    )
    rm = sub.add_parser("remove", help="remove a user (its token stops working at once)")
    rm.add_argument("name")
    sub.add_parser("list", help="list users and roles")
    for s in (add, rm, sub.choices["list"]):
        s.add_argument("--dir", required=True, help="annotation store directory (the folder of --out)")
    return p.parse_args(argv)


def users_main(argv: list[str]) -> int:
    from pvllm.annotate import auth

    args = parse_users_args(argv)
    try:
        if args.action == "add":
            role = "admin" if args.admin else "annotator"
            token = auth.add_user(args.dir, args.name, role, reset=args.reset)
            print(
                f"{role} {args.name!r} added to {auth.users_path(args.dir)}; send them this link:",
                file=sys.stderr,
            )
            print(f"{args.url.rstrip('/')}/login?token={token}")
        elif args.action == "remove":
            auth.remove_user(args.dir, args.name)
            print(f"removed {args.name!r}", file=sys.stderr)
        else:
            for u in auth.list_users(args.dir):
                print(f"{u.name}\t{u.role}")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str] | None:
    """Host headers a loopback-bound server accepts (stops DNS rebinding); None (any) otherwise."""
    return ["127.0.0.1", "localhost", "[::1]"] if is_loopback(host) else None


def bind(host: str, port: int) -> socket.socket:
    """The listening socket (bound here so that ``--port 0`` can print the port it got)."""
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(addr)
    sock.listen(128)  # connections wait in the backlog from now on, before uvicorn has started
    return sock


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["users"]:
        return users_main(argv[1:])
    args = parse_args(argv)
    from pvllm.utils.secrets import install_redaction

    install_redaction()
    from pvllm.annotate.app import build_app

    try:
        app = build_app(
            args.predictions,
            args.out,
            annotator=args.annotator,
            seed=args.seed,
            dataset=args.dataset,
            allowed_hosts=allowed_hosts(args.host),
            users=args.users,
            users_seed=args.users_seed,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    db, a = app.state.users, app.state.annotator
    stored = db.stored_count()
    if not is_loopback(args.host) and stored == 0:
        print(
            f"error: refusing to listen on {args.host} (reachable from other machines) without logins: "
            f"{db.path} has no users. Add them first with `python -m pvllm.annotate users add NAME --dir "
            f"{db.path.parent}` (each gets a login link), or bind 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    if stored == 0 and args.annotator is None:
        print(
            f"error: nobody can log in: pass --annotator NAME, or add users with `python -m pvllm.annotate "
            f"users add NAME --dir {db.path.parent}`",
            file=sys.stderr,
        )
        return 2
    if a.store.repaired:
        print(
            f"warning: {args.out} ended in an incomplete line (a killed write); it was cut", file=sys.stderr
        )
    try:
        sock = bind(args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"{len(a.samples)} samples; {stored} users in {db.path}; writing to {args.out} "
        f"(every save is on disk before the page confirms it)",
        file=sys.stderr,
    )
    for name, token in app.state.session_tokens.items():
        print(
            f"{name} ({a.done_count(name)} done): open http://{url_host}:{port}/login?token={token}",
            file=sys.stderr,
        )
    print(f"listening on http://{url_host}:{port}/ (Ctrl-C to stop)", file=sys.stderr, flush=True)
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
