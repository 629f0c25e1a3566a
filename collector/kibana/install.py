"""`audit-collector setup --kibana URL`: the saved objects of `collector.kibana.content`,
imported through Kibana's saved-objects import API, as the Beats' ``setup --dashboards``.

1. The objects are generated for the configured dataset and validated (`validate`) before
   anything is sent: a broken set is never half-installed.
2. ``GET /api/status``: Kibana answers, accepts the credentials, and is 8.14 or later.
3. With ``--space``: ``GET /api/spaces/space/<id>``: the space exists.
4. Each object is read back (``GET /s/<space>/api/saved_objects/<type>/<id>``): missing,
   current (its description carries this set's content hash; the data view's title, time
   field and formats are ours) or different. All current: nothing is written.
5. Otherwise ``POST /s/<space>/api/saved_objects/_import?overwrite=true`` with the whole
   set (one multipart ``file``, NDJSON) with ``kbn-xsrf``; every object must come back in
   ``successResults``.

Each object is printed with what happened to it (created, updated, unchanged). Any failure
(Kibana unreachable, 401/403, no such space, an object Kibana rejects) ends in lines on
stderr naming the object and the reason, exit code 2, and no line claiming success.
Kibana not ready (502/503/504) or unreachable is retried for up to ``--wait`` seconds.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TextIO

import urllib3
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from urllib3.exceptions import HTTPError as TransportError
from urllib3.exceptions import InsecureRequestWarning, SSLError

from collector import __version__
from collector.delivery.elasticsearch.credentials import read_secret
from collector.delivery.elasticsearch.settings import ClusterConfigError
from collector.delivery.settings import redacted
from collector.kibana.content import DASHBOARD_ID, build_objects
from collector.kibana.generate import to_ndjson
from collector.kibana.settings import KibanaSettings
from collector.kibana.validate import KIBANA_VERSION, validate, version_tuple

EXIT_OK = 0
EXIT_FAILED = 2
NOT_READY = (502, 503, 504)
FILENAME = "audit-collector.ndjson"


class KibanaError(Exception):
    """Why the install failed: one line per object or cause."""

    def __init__(self, *lines: str) -> None:
        super().__init__(lines[0])
        self.lines = list(lines)


class _NotReady(Exception):
    """Kibana unreachable or not ready yet: worth another try within --wait."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any

    def message(self) -> str:
        """Kibana's error text (its ``{"statusCode", "error", "message"}`` shape)."""
        text = str(self.body.get("message") or self.body.get("error") or self.body) \
            if isinstance(self.body, dict) else str(self.body)
        return " ".join(text.split())[:300]  # one line: Kibana's messages hold newlines


class KibanaClient:
    """Kibana's HTTP API with the settings' credentials, TLS options and retries."""

    def __init__(self, settings: KibanaSettings) -> None:
        self.settings = settings
        auth = _auth_header(settings)
        self.has_credentials = bool(auth)
        headers = {"kbn-xsrf": "audit-collector", "Accept": "application/json",
                   "User-Agent": f"audit-collector/{__version__}", **auth}
        tls: dict[str, Any] = {"cert_reqs": "CERT_REQUIRED", "ca_certs": settings.ca_file} \
            if settings.verify_certs else {"cert_reqs": "CERT_NONE"}
        self.http = urllib3.PoolManager(
            headers=headers, retries=False,
            timeout=urllib3.Timeout(connect=min(10.0, settings.timeout_s),
                                    read=settings.timeout_s), **tls)

    def call(self, method: str, path: str, fields: dict[str, Any] | None = None) -> Answer:
        """One request, retried while Kibana is unreachable or not ready (up to --wait)."""
        stop = stop_after_delay(self.settings.wait_s) if self.settings.wait_s > 0 \
            else stop_after_attempt(1)
        retrying = Retrying(stop=stop, wait=wait_exponential(multiplier=0.5, max=5),
                            retry=retry_if_exception_type(_NotReady), reraise=True)
        try:
            return retrying(self._once, method, path, fields)
        except _NotReady as exc:
            raise KibanaError(f"Kibana at {redacted(self.settings.url)} is not reachable: "
                              f"{exc.reason}") from None

    def _once(self, method: str, path: str, fields: dict[str, Any] | None) -> Answer:
        url = self.settings.url + path
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)  # said once, below
                resp = self.http.request(method, url, fields=fields) if fields else \
                    self.http.request(method, url)
        except SSLError as exc:
            raise KibanaError(f"TLS with Kibana at {redacted(self.settings.url)} failed: "
                              f"{_reason(exc)}") from None
        except TransportError as exc:
            raise _NotReady(_reason(exc)) from None
        answer = Answer(resp.status, _json(resp.data))
        if answer.status in NOT_READY:
            raise _NotReady(f"HTTP {answer.status}: {answer.message()}")
        if answer.status == 401:
            raise KibanaError(self._unauthorized(answer))
        return answer

    def _unauthorized(self, answer: Answer) -> str:
        if not self.has_credentials:
            return (f"Kibana at {redacted(self.settings.url)} needs credentials (HTTP 401): "
                    "give --api-key-file/--api-key-env, or --username with "
                    "--password-file/--password-env")
        return (f"Kibana at {redacted(self.settings.url)} refused the credentials (HTTP 401: "
                f"{answer.message()})")


def _auth_header(settings: KibanaSettings) -> dict[str, str]:
    api_key = read_secret(settings.api_key_file, settings.api_key_env, "API key", "kibana")
    if api_key:
        return {"Authorization": f"ApiKey {api_key}"}
    password = read_secret(settings.password_file, settings.password_env, "password",
                           "kibana")
    if settings.username and password:
        return urllib3.make_headers(basic_auth=f"{settings.username}:{password}")
    return {}


def _json(data: bytes) -> Any:
    try:
        return json.loads(data) if data else None
    except ValueError:
        return data.decode("utf-8", "replace")


def _reason(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Failed to establish a new connection: ", "): "):
        if marker in text:
            text = text.split(marker, 1)[1]
            break
    return text[:300]


# --------------------------------------------------------------------------- the steps


def check_version(client: KibanaClient) -> str:
    answer = client.call("GET", "/api/status")
    if answer.status != 200:
        raise KibanaError(f"Kibana status at {redacted(client.settings.url)}/api/status: "
                          f"HTTP {answer.status}: {answer.message()}")
    version = ((answer.body or {}).get("version") or {}).get("number") \
        if isinstance(answer.body, dict) else None
    if not isinstance(version, str):
        return "unknown"  # an anonymous status page does not tell the version
    numeric = version.split("-")[0]
    try:
        too_old = version_tuple(numeric) < version_tuple(KIBANA_VERSION)
    except ValueError:
        return version
    if too_old:
        raise KibanaError(f"Kibana {version} is older than {KIBANA_VERSION}, the oldest "
                          "version these saved objects are made for")
    return version


def check_space(client: KibanaClient) -> None:
    space = client.settings.space
    if not space:
        return
    answer = client.call("GET", f"/api/spaces/space/{space}")
    if answer.status == 404:
        raise KibanaError(f"Kibana space {space!r} does not exist (create it first, or leave "
                          "--space out for the default space)")
    if answer.status != 200:
        raise KibanaError(f"Kibana space {space!r}: HTTP {answer.status}: {answer.message()}")


def describe(obj: dict[str, Any]) -> str:
    return f"{obj['type']} {obj['id']} ({obj['attributes'].get('title', '')!r})"


def installed_state(client: KibanaClient, obj: dict[str, Any]) -> str:
    """"created" (missing), "unchanged" (ours, current) or "updated" (to be replaced)."""
    answer = client.call("GET", f"{client.settings.space_prefix}/api/saved_objects/"
                                f"{obj['type']}/{obj['id']}")
    if answer.status == 404:
        return "created"
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise KibanaError(f"{describe(obj)} could not be read back: HTTP {answer.status}: "
                          f"{answer.message()}")
    return "unchanged" if _same(obj, answer.body.get("attributes") or {}) else "updated"


def _same(obj: dict[str, Any], stored: dict[str, Any]) -> bool:
    ours = obj["attributes"]
    if obj["type"] == "index-pattern":
        return all(stored.get(k) == ours[k] for k in ("title", "timeFieldName")) and \
            _json_equal(stored.get("fieldFormatMap"), ours["fieldFormatMap"])
    return stored.get("description") == ours.get("description")


def _json_equal(a: Any, b: Any) -> bool:
    try:
        return bool(json.loads(a) == json.loads(b))
    except (TypeError, ValueError):
        return False


def import_objects(client: KibanaClient, objects: list[dict[str, Any]], text: str) -> None:
    answer = client.call("POST", f"{client.settings.space_prefix}/api/saved_objects/_import"
                                 "?overwrite=true",
                         fields={"file": (FILENAME, text.encode(), "application/ndjson")})
    space = client.settings.space_shown
    if answer.status == 403:
        raise KibanaError(f"not allowed to import saved objects into Kibana space {space!r} "
                          f"(HTTP 403: {answer.message()})")
    if answer.status != 200 or not isinstance(answer.body, dict):
        raise KibanaError(f"Kibana refused the import of {len(objects)} saved objects into "
                          f"space {space!r} (HTTP {answer.status}: {answer.message()})")
    rejected = [_rejection(error, objects) for error in answer.body.get("errors") or []]
    done = {(r.get("type"), r.get("id")) for r in answer.body.get("successResults") or []}
    missing = [describe(o) for o in objects if (o["type"], o["id"]) not in done]
    if rejected or missing:
        lines = rejected or [f"{m} was not imported (Kibana did not report it)" for m in missing]
        raise KibanaError(*lines, f"{len(missing)} of {len(objects)} saved objects were not "
                                  f"imported into Kibana space {space!r}; the set is "
                                  "incomplete: fix the cause and run setup --kibana again")


def _rejection(error: Any, objects: Iterable[dict[str, Any]]) -> str:
    if not isinstance(error, dict):
        return f"Kibana reported an error it did not explain: {error!r}"[:300]
    known = {(o["type"], o["id"]): o for o in objects}
    obj = known.get((error.get("type"), error.get("id")))
    name = describe(obj) if obj else f"{error.get('type')} {error.get('id')}"
    cause = error.get("error") or {}
    kind = cause.get("type", "unknown")
    if kind == "missing_references":
        refs = ", ".join(f"{r.get('type')}:{r.get('id')}" for r in cause.get("references", []))
        detail = f"missing references ({refs})"
    elif cause.get("message"):
        detail = f"{kind}: {cause['message']}"
    else:
        detail = kind
    return f"{name} was not imported: {detail}"[:500]


def setup_kibana(settings: KibanaSettings, index_pattern: str, out: TextIO | None = None,
                 err: TextIO | None = None) -> int:
    """Install the saved objects; one line per object on ``out``; 0, or 2 on any failure
    with the reasons on ``err``."""
    out, err = out or sys.stdout, err or sys.stderr
    try:
        lines = _install(settings, index_pattern, err)
    except (KibanaError, ClusterConfigError) as exc:
        for line in getattr(exc, "lines", [str(exc)]):
            print(f"audit-collector: setup --kibana: {line}", file=err)
        return EXIT_FAILED
    print("\n".join(lines), file=out)
    return EXIT_OK


def _install(settings: KibanaSettings, index_pattern: str, err: TextIO) -> list[str]:
    objects = build_objects(index_pattern=index_pattern)
    text = to_ndjson(objects)
    report = validate(text)
    if not report.ok:
        raise KibanaError(*(f"invalid saved objects (not sent): {p}" for p in report.problems))
    if not settings.verify_certs:
        print("audit-collector: setup --kibana: warning: TLS certificates are not verified "
              "(--no-verify-certs)", file=err)
    client = KibanaClient(settings)
    version = check_version(client)
    check_space(client)
    states = [installed_state(client, obj) for obj in objects]
    where = f"Kibana {version} at {redacted(settings.url)}, space {settings.space_shown!r}"
    lines = [f"{describe(o)}: {state}" for o, state in zip(objects, states)]
    if all(state == "unchanged" for state in states):
        return [*lines, f"{where}: all {len(objects)} saved objects already up to date"]
    import_objects(client, objects, text)
    counts = ", ".join(f"{states.count(s)} {s}" for s in ("created", "updated", "unchanged"))
    dashboard = f"{settings.url}{settings.space_prefix}/app/dashboards#/view/{DASHBOARD_ID}"
    return [*lines, f"{where}: {len(objects)} saved objects installed ({counts}); "
                    f"dashboard: {redacted(dashboard)}"]
