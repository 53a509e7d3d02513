"""Annotator logins for the annotation tool: random tokens, stored only as hashes, and CSRF tokens.

``users.json`` (in the annotation store directory, the folder of ``--out``) lists the users:
``{"users": [{"name", "role", "token_sha256", "created_at"}]}``; ``role`` is ``annotator`` (rates
samples) or ``admin`` (progress, agreement, export). A token is 32 random bytes (``secrets``), so a plain
SHA-256 is enough to store it (no password stretching needed: nobody can guess 256 random bits). The
server re-reads the file when it changes, so ``users add`` works while it runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

ROLES = ("annotator", "admin")
USERS_FILE = "users.json"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def users_path(store_dir: str | Path) -> Path:
    return Path(store_dir) / USERS_FILE


@dataclass(frozen=True)
class User:
    name: str
    role: str  # "annotator" or "admin"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise ValueError(
            f"user name {name!r}: use a pseudonym of letters, digits, '-', '_' or '.' (at most 64)"
        )
    return name


def _read(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    data = json.loads(path.read_text(encoding="utf-8"))
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, list):
        raise ValueError(f"{path}: expected {{'users': [...]}}")
    for i, u in enumerate(users):
        if (
            not isinstance(u, dict)
            or u.get("role") not in ROLES
            or not u.get("name")
            or not u.get("token_sha256")
        ):
            raise ValueError(f"{path}: user {i} needs name, role ({'/'.join(ROLES)}) and token_sha256")
    return users


def _write(path: Path, users: list[dict]) -> None:
    """Atomic (temp file + fsync + rename), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".users.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"users": users}, f, indent=1)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def add_user(store_dir: str | Path, name: str, role: str = "annotator", reset: bool = False) -> str:
    """Register ``name`` and return its new token (shown once; only its hash is stored)."""
    from pvllm.annotate.store import now_iso

    name = check_name(name)
    if role not in ROLES:
        raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
    path = users_path(store_dir)
    users = _read(path)
    old = [u for u in users if u["name"] == name]
    if old and not reset:
        raise ValueError(f"user {name!r} exists in {path}; pass --reset to give it a new token")
    token = new_token()
    users = [u for u in users if u["name"] != name]
    users.append({"name": name, "role": role, "token_sha256": hash_token(token), "created_at": now_iso()})
    _write(path, users)
    return token


def remove_user(store_dir: str | Path, name: str) -> None:
    path = users_path(store_dir)
    users = _read(path)
    if not any(u["name"] == name for u in users):
        raise ValueError(f"no user {name!r} in {path}")
    _write(path, [u for u in users if u["name"] != name])


def list_users(store_dir: str | Path) -> list[User]:
    return [User(u["name"], u["role"]) for u in _read(users_path(store_dir))]


class UserDB:
    """Token -> user, from ``users.json`` (re-read when it changes) plus in-memory session users.

    ``session_users`` are the ``--annotator NAME`` logins of a one-person server: their tokens live only
    in memory for this server start.
    """

    def __init__(self, path: str | Path | None, session_users: dict[str, User] | None = None):
        self.path = None if path is None else Path(path)
        self._session = {hash_token(t): u for t, u in (session_users or {}).items()}
        self._stored: dict[str, User] = {}
        self._stamp: tuple | None = None
        self._lock = threading.Lock()
        self.csrf_key = secrets.token_bytes(32)  # per server start
        self._reload()

    def _reload(self) -> None:
        stamp = None
        if self.path is not None and self.path.is_file():
            st = self.path.stat()
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        users = _read(self.path) if stamp is not None else []
        self._stored = {u["token_sha256"]: User(u["name"], u["role"]) for u in users}
        self._stamp = stamp

    def stored_count(self) -> int:
        with self._lock:
            self._reload()
            return len(self._stored)

    def list_annotators(self) -> list[User]:
        with self._lock:
            self._reload()
            return [u for u in (*self._stored.values(), *self._session.values()) if u.role == "annotator"]

    def authenticate(self, token: str | None) -> User | None:
        if not token:
            return None
        h = hash_token(token)
        with self._lock:
            self._reload()
            table = {**self._stored, **self._session}
        for stored_hash, user in table.items():  # constant-time compare per entry
            if hmac.compare_digest(stored_hash, h):
                return user
        return None

    def csrf_token(self, user: User) -> str:
        """The CSRF token of ``user``'s forms for this server start (HMAC of the name, per-start key)."""
        return hmac.new(self.csrf_key, f"{user.role}:{user.name}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, user: User, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token, self.csrf_token(user))
