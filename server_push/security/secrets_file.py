"""The server's own secrets (the console session key), kept in a 0600 file
under the state directory and made on first start."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from epns.errors import ConfigError


def session_secret(path: Path) -> str:
    """The session signing key, made on first use."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = data["session_secret"]
        if isinstance(value, str) and len(value) >= 32:
            return value
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the server secrets in {path}: {exc}; "
                          "delete the file to make new ones (console sessions end)") from exc
    value = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"session_secret": value}, handle)
    return value
