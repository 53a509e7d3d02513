"""Keep API keys out of everything pvllm writes: logs, streams, exception texts, JSONL/JSON files, Hydra's
saved configs, W&B.

Redaction is by *value*: every secret pvllm reads is registered here (``register_secret``) and its value is
cut out wherever it shows up, whatever the variable holding it is called. What registers:

- ``require_env`` (pvllm.clients.credentials), the YouTube collector and the pseudonymization key, as they
  read a key;
- ``register_config_secrets`` on the composed config at start-up (the Hydra callback ``HydraSecrets`` runs it
  before Hydra writes ``.hydra/``): the value of the variable every ``*key_env``/``*token_env`` field names
  (``api_key_env: LLM_AUTH``), a secret-named field's own value, and the credentials inside any URL
  (``https://user:KEY@host/v1``, ``?key=KEY``);
- ``protect_argv``: a credential inside a URL on the command line is moved into an environment variable and
  the override refers to it (``${oc.env:PVLLM_SECRET_...}``), so Hydra's saved configs, ``multirun.yaml`` and
  submitit's pickles hold the reference, never the value.

Values shorter than 8 characters or common placeholders (``not-needed``, sent when no key is set) are not
secrets. The values of environment variables whose *name* says secret (``OPENAI_API_KEY``, ``HF_TOKEN``) are
cut out too, and logs also lose URL ``key=`` parameters, auth headers and bearer tokens by pattern.

Where the cut happens: every log record (``install_redaction``), ``sys.stdout``/``sys.stderr`` (tracebacks
printed by Python or Hydra included), ``pvllm.utils.jsonl`` writers, ``pvllm.identity.write_json``, configs
and tables sent to W&B (``redact_obj``), and Hydra's files (``HydraSecrets``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDACTED = "<redacted>"
MIN_SECRET_LEN = 8
# values that are sent as keys but guard nothing (servers without auth), or that are too common to cut out of
# text without damage
COMMON_VALUES = frozenset({
    "not-needed", "notneeded", "not_needed", "no-key", "no_key", "nokey", "none", "null", "empty", "dummy",
    "changeme", "change-me", "placeholder", "password", "secret", "sk-no-key-required", "your-api-key",
    "your_api_key", "api-key", "api_key", "apikey", "token", "anonymous", "localhost", "undefined", "xxxxxxxx",
})  # fmt: skip
# config keys / env var names that hold a secret: whole name parts, so `max_new_tokens`, `tokenizer`,
# `tokens_per_s` are not secrets while `api_key`, `hf_token`, `access_token`, `client_secret` are
_SECRET_PART = r"(?:api[_-]?key|apikey|key|token|secret|password|passwd|credentials?|bearer)"
_SECRET_NAME = re.compile(rf"(?:^|[_\-.]){_SECRET_PART}(?:$|[_\-.])", re.I)
_URL_KEY = re.compile(r"([?&;](?:key|api_key|apikey|access_token|token|sig)=)[^&\s'\"<>]+", re.I)
_HEADER = re.compile(r"((?:authorization|x-goog-api-key|api-key|x-api-key)['\"]?\s*[:=]\s*['\"]?)"
                     r"(?:bearer\s+)?[^\s'\",}]+", re.I)
_BEARER = re.compile(r"(\bbearer\s+)[A-Za-z0-9._\-~+/]{8,}=*", re.I)
_URL_PARAM_NAMES = frozenset({"sig", "signature", "auth", "code"})  # secret query parameters besides *key*/*token*
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")
# environment variables that may hold a URL with credentials in it (the SDKs read them when base_url is null)
URL_ENV_VARS = ("OPENAI_BASE_URL", "GOOGLE_GEMINI_BASE_URL")
ARGV_ENV_PREFIX = "PVLLM_SECRET_"

_registry: set[str] = set()
_lock = threading.Lock()


@functools.lru_cache(maxsize=4096)  # asked for every environment variable at every redaction
def is_secret_name(name: str) -> bool:
    """True for a config key or variable name that holds a secret value.

    A name ending in ``_env`` holds the *name* of an environment variable (``api_key_env: GEMINI_API_KEY``),
    which is not secret; ``*_tokens``, ``tokenizer`` are hyperparameters.
    """
    n = str(name)
    if n.lower().endswith("_env"):
        return False
    return bool(_SECRET_NAME.search(n))


def _is_secret_value(value: Any) -> bool:
    # an unresolved interpolation (``${oc.env:PVLLM_SECRET_...}``, see protect_argv) refers to a secret
    return (isinstance(value, str) and len(value.strip()) >= MIN_SECRET_LEN and "${" not in value
            and value.strip().lower() not in COMMON_VALUES)


def register_secret(value: Any) -> bool:
    """Add a value to the registry of secrets to cut out; False (and nothing kept) when it is too short or
    too common to be a secret."""
    if not _is_secret_value(value):
        return False
    with _lock:
        _registry.add(value.strip())
    return True


def register_env_secret(var: str | None) -> str | None:
    """Register the value of environment variable ``var`` (if set) and return it."""
    value = os.environ.get(var) if var else None
    register_secret(value)
    return value


def url_secrets(url: str | None) -> list[str]:
    """The credentials inside a URL: user and password of ``scheme://user:password@host``, and the values of
    secret-named query parameters (``?key=``, ``access_token=``, ``sig=``)."""
    if not url or "://" not in url:
        return []
    try:
        parts = urlsplit(url)
        found = [parts.password, parts.username]
        found += [v for k, v in parse_qsl(parts.query, keep_blank_values=False)
                  if is_secret_name(k) or k.lower() in _URL_PARAM_NAMES]
    except ValueError:  # not a URL after all (e.g. a bad port): nothing to take from it
        return []
    return [v for v in found if _is_secret_value(v)]


def register_url_secrets(url: str | None) -> list[str]:
    """Register the credentials inside ``url`` (see ``url_secrets``) and return them."""
    found = url_secrets(url)
    for v in found:
        register_secret(v)
    return found


def public_url(url: str | None) -> str | None:
    """``url`` with its credentials replaced by <redacted> (e.g. for a cache key or a log line)."""
    if url is None:
        return None
    for v in sorted(url_secrets(url), key=len, reverse=True):
        url = url.replace(v, REDACTED)
    return url


def strip_credentials(url: str | None) -> str | None:
    """``url`` without its user info and secret query parameters: the server itself (e.g. a cache key's)."""
    if not url or "://" not in url:
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)
                       if not (is_secret_name(k) or k.lower() in _URL_PARAM_NAMES)])
    return urlunsplit((parts.scheme, host, parts.path, query, parts.fragment))


def _leaves(obj: Any, path: tuple = ()) -> Iterator[tuple[tuple, Any]]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _leaves(v, (*path, str(k)))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _leaves(v, (*path, i))
    else:
        yield path, obj


def register_config_secrets(cfg: Any) -> None:
    """Register every secret a (composed, possibly unresolved) config refers to: the value of the variable
    each ``*key_env``/``*token_env`` field names, a secret-named field's own value, the credentials inside any
    URL in it; also those inside ``$OPENAI_BASE_URL``/``$GOOGLE_GEMINI_BASE_URL``. Interpolations that cannot
    be resolved yet (``${hydra:...}`` before the job starts) are skipped."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    is_conf = isinstance(cfg, (DictConfig, ListConfig))
    tree = OmegaConf.to_container(cfg, resolve=False) if is_conf else cfg
    for path, value in _leaves(tree):
        if not isinstance(value, str):
            continue
        if is_conf and "${" in value and all(isinstance(p, str) for p in path):
            try:
                value = OmegaConf.select(cfg, ".".join(path), throw_on_resolution_failure=True)
            except Exception:  # noqa: BLE001 - resolvable only later (hydra:, missing env): not a secret now
                continue
            if not isinstance(value, str):
                continue
        key = path[-1] if path and isinstance(path[-1], str) else ""
        if key.lower().endswith("_env") and is_secret_name(key[:-4]):
            register_env_secret(value)
        elif is_secret_name(key):
            register_secret(value)
        for url in _URL.findall(value) if "://" in value else ():
            register_url_secrets(url)
    for var in URL_ENV_VARS:
        register_url_secrets(os.environ.get(var))


def secret_env_values() -> dict[str, str]:
    """Values of the environment variables whose name says they hold a secret (not placeholders)."""
    return {k: v.strip() for k, v in os.environ.items() if is_secret_name(k) and _is_secret_value(v)}


def secret_values() -> set[str]:
    """Every value to cut out: the registered secrets and the secret-named environment variables' values."""
    with _lock:
        out = set(_registry)
    return out | set(secret_env_values().values())


_pattern_cache: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)


def _values_pattern() -> re.Pattern[str] | None:
    """One regex matching every secret value, also as it appears JSON-escaped or percent-encoded."""
    global _pattern_cache
    values = frozenset(secret_values())
    if values != _pattern_cache[0]:
        forms = set(values)
        forms |= {json.dumps(v)[1:-1] for v in values} | {quote(v, safe="") for v in values}
        alts = sorted(forms, key=len, reverse=True)
        _pattern_cache = (values, re.compile("|".join(map(re.escape, alts))) if alts else None)
    return _pattern_cache[1]


def values_redactor() -> Callable[[str], str]:
    """``redact_values`` with the secrets of this moment looked up once (writers of many lines)."""
    pattern = _values_pattern()
    return (lambda text: text) if pattern is None else (lambda text: pattern.sub(REDACTED, text))


def redact_values(text: str) -> str:
    """``text`` with every secret *value* (registered or secret-named env) replaced by <redacted>; nothing
    else changes (safe on data: comments that mention ``bearer`` or ``?key=`` stay as they are)."""
    if not text or not isinstance(text, str):
        return text
    pattern = _values_pattern()
    return text if pattern is None else pattern.sub(REDACTED, text)


def redact_text(text: str) -> str:
    """``redact_values``, plus URL keys, auth headers and bearer tokens by pattern (logs, configs)."""
    if not text:
        return text
    text = redact_values(text)
    text = _URL_KEY.sub(rf"\1{REDACTED}", text)
    text = _HEADER.sub(rf"\1{REDACTED}", text)
    return _BEARER.sub(rf"\1{REDACTED}", text)


def redact_url(url: str | None) -> str | None:
    return None if url is None else _URL_KEY.sub(rf"\1{REDACTED}", redact_values(url))


def redact_obj(obj: Any) -> Any:
    """A copy of a (resolved) config, record or table row with every value under a secret key (``api_key``,
    ``hf_token``; not ``max_new_tokens`` or ``tokenizer``) replaced, and every secret in a string cut out."""
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_name(str(k)) and v is not None else redact_obj(v)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [redact_obj(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def protect_argv(argv: list[str]) -> list[str]:
    """Command-line overrides with each URL credential moved into an environment variable
    (``PVLLM_SECRET_<digest>``) and replaced by ``${oc.env:...}``: Hydra then saves, sweeps and pickles the
    reference, and the job (same environment, also under submitit/SLURM) resolves the value."""
    out = []
    for arg in argv:
        if "=" in arg and "://" in arg:
            for url in _URL.findall(arg):
                for value in sorted(register_url_secrets(url), key=len, reverse=True):
                    var = ARGV_ENV_PREFIX + hashlib.sha256(value.encode()).hexdigest()[:12].upper()
                    os.environ[var] = value
                    arg = arg.replace(value, "${oc.env:" + var + "}")
        out.append(arg)
    return out


class _RedactingStream:
    """A text stream whose writes lose every secret value (tracebacks, prints, progress bars)."""

    def __init__(self, stream: Any):
        self._stream = stream

    def write(self, s: Any) -> int:
        n = len(s) if isinstance(s, str) else 0
        self._stream.write(redact_values(s) if isinstance(s, str) else s)
        return n

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


_installed = False


def install_redaction() -> None:
    """Redact every log record of this process (message, arguments, traceback) and every write to
    ``sys.stdout``/``sys.stderr``; idempotent."""
    global _installed
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, _RedactingStream):
            setattr(sys, name, _RedactingStream(stream))
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def factory(*args, **kwargs) -> logging.LogRecord:
        rec = make(*args, **kwargs)
        try:
            msg = rec.getMessage()
        except Exception:  # a bad format string: leave it to logging's own error report
            return rec
        rec.msg, rec.args = redact_text(msg), None
        if rec.exc_info and rec.exc_info[0] is not None:
            rec.exc_text = redact_text("".join(traceback.format_exception(*rec.exc_info)).rstrip("\n"))
        return rec

    logging.setLogRecordFactory(factory)
    _installed = True


def scrub_file(path: str | os.PathLike) -> bool:
    """Rewrite a text file with every secret value cut out (atomically); True if it changed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, UnicodeDecodeError):
        return False
    clean = redact_values(text)
    if clean == text:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(clean, encoding="utf-8")
    os.replace(tmp, path)
    return True


class HydraSecrets:
    """Hydra callback (``hydra.callbacks`` in conf/hydra/*.yaml): registers the secrets the composed config
    names before Hydra writes anything, and scrubs what Hydra wrote (``.hydra/*.yaml``, ``multirun.yaml``)
    from a secret that a config *file* carries inside a URL. (Hydra calls the hooks by name; not subclassing
    ``hydra.experimental.callback.Callback`` keeps this module free of Hydra's import time.)"""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        register_config_secrets(config)
        install_redaction()

    on_multirun_start = on_run_start

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        register_config_secrets(config)
        install_redaction()
        h = config.hydra
        if h.output_subdir is not None:
            for f in (Path(h.runtime.output_dir) / h.output_subdir).glob("*.yaml"):
                scrub_file(f)
        if h.mode is not None and str(h.mode).endswith("MULTIRUN"):
            scrub_file(Path(h.sweep.dir) / "multirun.yaml")

    def on_run_end(self, config: Any, **kwargs: Any) -> None:
        pass

    on_multirun_end = on_job_end = on_run_end
