"""Authentication and write privileges, as Elasticsearch's security answers them.

Security is off until a credential is added.  Then every request (the ``/_test`` admin API
aside) needs ``Authorization: ApiKey <base64(id:key)>`` or ``Basic <base64(user:pw)>``;
otherwise 401 ``security_exception`` with the ``WWW-Authenticate`` challenges.  Each
principal may write to the index patterns it was given (default: all); a bulk item outside
them fails with 403 ``security_exception``, like a role without the index privilege.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import threading
from dataclasses import dataclass
from typing import Any

from .errors import ESError

WRITE_PRIVILEGES = "create_doc,create,delete,index,write,all"


@dataclass(frozen=True)
class Principal:
    name: str  # user name, or the owner of the API key
    roles: tuple[str, ...]
    write: tuple[str, ...]  # index patterns this principal may write to
    api_key_id: str | None = None

    def may_write(self, *names: str) -> bool:
        return any(fnmatch.fnmatchcase(n, p) for n in names if n for p in self.write)

    def unauthorized(self, action: str, index: str, privileges: str = WRITE_PRIVILEGES
                     ) -> dict[str, Any]:
        who = (f"API key id [{self.api_key_id}] of user [{self.name}]" if self.api_key_id
               else f"user [{self.name}]")
        return {"type": "security_exception",
                "reason": f"action [{action}] is unauthorized for {who} with effective roles "
                f"[{','.join(self.roles)}] on indices [{index}], this action is granted by the "
                f"index privileges [{privileges}]"}


def api_key_header(key_id: str, key: str) -> str:
    """The encoded form clients send (``ApiKey <this>``) and Elasticsearch returns."""
    return base64.b64encode(f"{key_id}:{key}".encode()).decode()


def challenges(major: int) -> list[str]:
    basic = ('Basic realm="security", charset="UTF-8"' if major >= 8
             else 'Basic realm="security" charset="UTF-8"')
    return [basic, 'Bearer realm="security"', "ApiKey"]


class Security:
    def __init__(self, major: int) -> None:
        self.major = major
        self._lock = threading.Lock()
        self._users: dict[str, tuple[str, Principal]] = {}
        self._api_keys: dict[str, tuple[str, Principal]] = {}

    @property
    def enabled(self) -> bool:
        return bool(self._users or self._api_keys)

    def add_user(self, name: str, password: str, *, roles: tuple[str, ...] = ("writer",),
                 write: tuple[str, ...] = ("*",)) -> None:
        with self._lock:
            self._users[name] = (password, Principal(name, roles, tuple(write)))

    def add_api_key(self, key_id: str, key: str, *, owner: str = "collector",
                    roles: tuple[str, ...] = ("writer",), write: tuple[str, ...] = ("*",)
                    ) -> str:
        with self._lock:
            self._api_keys[key_id] = (key, Principal(owner, roles, tuple(write), key_id))
        return api_key_header(key_id, key)

    def clear(self) -> None:
        with self._lock:
            self._users.clear()
            self._api_keys.clear()

    def authenticate(self, authorization: str | None, path: str) -> Principal | None:
        """The principal of a request; None with security off; ESError 401 otherwise."""
        if not self.enabled:
            return None
        scheme, _, token = (authorization or "").strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return self._basic(token.strip(), path)
        if scheme == "apikey":
            return self._api_key(token.strip())
        raise self._unauthenticated(f"missing authentication credentials for REST request "
                                    f"[{path}]")

    def _basic(self, token: str, path: str) -> Principal:
        user, password = _decode_pair(token)
        with self._lock:
            known = self._users.get(user) if user is not None else None
        if known is None or password is None or not hmac.compare_digest(known[0], password):
            raise self._unauthenticated(f"unable to authenticate user [{user}] for REST "
                                        f"request [{path}]")
        return known[1]

    def _api_key(self, token: str) -> Principal:
        key_id, key = _decode_pair(token)
        with self._lock:
            known = self._api_keys.get(key_id) if key_id is not None else None
        if known is None:
            detail = (f"unable to find apikey with id {key_id}" if key_id is not None
                      else "invalid ApiKey value")
        elif key is None or not hmac.compare_digest(known[0], key):
            detail = f"invalid credentials for API key [{key_id}]"
        else:
            return known[1]
        raise self._unauthenticated(
            "unable to authenticate with provided credentials and anonymous access is not "
            "allowed for this request", additional_unsuccessful_credentials=f"API key: {detail}")

    def _unauthenticated(self, reason: str, **extra: str) -> ESError:
        err = {"type": "security_exception", "reason": reason, **extra,
               "header": {"WWW-Authenticate": challenges(self.major)}}
        return ESError(401, err)


def _decode_pair(token: str) -> tuple[str | None, str | None]:
    try:
        text = base64.b64decode(token, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, None
    first, sep, second = text.partition(":")
    return (first, second) if sep else (first, None)
