"""The official Elasticsearch client, built from the collector's configuration.

* ``api_version``: client 8.x always announces ``compatible-with=8`` in Accept and
  Content-Type, and each API method sets those headers per request (so client-level
  ``headers=`` cannot override them). A small Transport subclass rewrites the parameter just
  before the request leaves, so a 9.x server is addressed with ``compatible-with=9``.
* orjson serialization, request timeout, gzip request bodies (``elasticsearch.gzip``) at
  ``gzip_level`` (default 1) with ISA-L (``isal``): the transport would use zlib's level 9,
  ~30 us per 3 KB document in the collector's own process; ISA-L's level 1 takes ~1-2 us
  for about the size of zlib's level 1 (~9 us). A node subclass compresses instead
  and hands the transport a plain request with ``content-encoding``.
* TLS: ``ca_file`` and ``verify_certs`` (on unless turned off) for https URLs.
* Credentials: API key or user + password, read from a file or an environment variable. The
  values live only inside the client's headers; nothing here logs or formats them.
* ``max_retries=0`` and ``retry_on_timeout=False``: the shipper (tenacity) owns retries.
* Logging: the client's own loggers (elastic_transport, elasticsearch, urllib3) log every
  request at INFO and every failed node at WARNING; the collector says what matters itself,
  in one line, so they are quiet (errors only) unless the collector logs at debug.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from elastic_transport import HttpHeaders, NodeConfig, Transport, Urllib3HttpNode
from elasticsearch import Elasticsearch
from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer
from isal import isal_zlib

from collector.delivery.elasticsearch.credentials import auth_options
from collector.delivery.elasticsearch.settings import (
    ClusterConfigError,
    ClusterSettings,
    ElasticsearchConfig,
    cluster_urls,
)

_COMPAT_RE = re.compile(r"compatible-with=\d+")
CLIENT_LOGGERS = ("elastic_transport", "elasticsearch", "urllib3")
GZIP_WBITS = 16 + isal_zlib.MAX_WBITS  # a gzip stream (header and CRC-32 trailer), not zlib's


def quiet_client_logging(verbose: bool | None = None) -> None:
    """Keep the client's loggers to errors unless verbose (default: the collector logs at
    debug, i.e. `log_level: debug`)."""
    if verbose is None:
        verbose = logging.getLogger().getEffectiveLevel() <= logging.DEBUG
    for name in CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET if verbose else logging.ERROR)


def display_urls(cfg: ClusterSettings) -> list[str]:
    """The cluster URLs as they may be shown: without user or password."""
    shown = []
    for url in cluster_urls(cfg):
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc.rpartition("@")[2]
        shown.append(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))
    return shown


class _CompatTransport(Transport):
    """Sends ``compatible-with=<api_version>`` instead of the client's built-in major."""

    api_version: int = 8

    def perform_request(self, method: str, target: str, **kwargs: Any) -> Any:
        headers = kwargs.get("headers")
        if isinstance(headers, Mapping):
            kwargs["headers"] = _with_compat(headers, self.api_version)
        return super().perform_request(method, target, **kwargs)


def _with_compat(headers: Mapping[str, str], api_version: int) -> dict[str, str]:
    fixed = dict(headers)
    for name in list(fixed):
        if name.lower() in ("accept", "content-type"):
            fixed[name] = _COMPAT_RE.sub(f"compatible-with={api_version}", fixed[name])
    return fixed


def _transport_for(api_version: int) -> type[Transport]:
    return type(f"CompatTransport{api_version}", (_CompatTransport,), {"api_version": api_version})


class _GzipNode(Urllib3HttpNode):
    """Compresses request bodies at gzip_level and asks for gzip responses."""

    gzip_level: int = 1

    def __init__(self, config: NodeConfig) -> None:
        # The transport must not compress again: it only sees a finished body.
        super().__init__(dataclasses.replace(config, http_compress=False))

    def perform_request(self, method: str, target: str, body: bytes | None = None,
                        headers: HttpHeaders | None = None, **kwargs: Any) -> Any:
        sent = HttpHeaders(headers or {})
        sent["accept-encoding"] = "gzip"
        if body:
            body = gzip_body(body, self.gzip_level)
            sent["content-encoding"] = "gzip"
        return super().perform_request(method, target, body=body, headers=sent, **kwargs)


def gzip_body(body: bytes, level: int) -> bytes:
    """A standard gzip stream in one pass. ISA-L has levels 0-3: its 1 costs a fifth to a
    ninth of zlib's 1 for about the same size; gzip_level 3 to 9 all use its 3 (3-5x the
    CPU of its 1, at most ~10 % smaller)."""
    isal_level = min(level, isal_zlib.ISAL_BEST_COMPRESSION)
    deflater = isal_zlib.compressobj(isal_level, isal_zlib.DEFLATED, GZIP_WBITS)
    return deflater.compress(body) + deflater.flush()


class _BulkBodySerializer(NdjsonSerializer):
    """Passes a finished NDJSON body (the shipper's) through as it is: the stock serializer
    copies it twice (into a bytearray, then into bytes), ~10 MiB of RSS per 5 MiB batch."""

    def dumps(self, data: Any) -> bytes:
        if isinstance(data, bytes) and data.endswith(b"\n"):
            return data
        return super().dumps(data)


def _node_class_for(es: ElasticsearchConfig) -> type[Urllib3HttpNode]:
    if not es.gzip:
        return Urllib3HttpNode
    return type(f"GzipNode{es.gzip_level}", (_GzipNode,), {"gzip_level": es.gzip_level})


def _tls_options(es: ElasticsearchConfig, urls: list[str]) -> dict[str, Any]:
    if not any(url.startswith("https://") for url in urls):
        return {}
    options: dict[str, Any] = {"verify_certs": es.verify_certs}
    if es.ca_file:
        options["ca_certs"] = es.ca_file
    if not es.verify_certs:
        options["ssl_show_warn"] = False
    return options


def build_client(cfg: ClusterSettings, request_timeout_s: float | None = None) -> Elasticsearch:
    """The client for the configured cluster(s); ClusterConfigError when there is none."""
    urls = cluster_urls(cfg)
    if not urls:
        raise ClusterConfigError("outputs: no elasticsearch:URL output and no elasticsearch.hosts")
    es = cfg.elasticsearch
    quiet_client_logging()
    return Elasticsearch(
        urls,
        transport_class=_transport_for(es.api_version),
        serializers={"application/json": OrjsonSerializer(),
                     "application/x-ndjson": _BulkBodySerializer()},
        node_class=_node_class_for(es),
        request_timeout=request_timeout_s or es.request_timeout_s,
        max_retries=0,
        retry_on_timeout=False,
        retry_on_status=(),
        **auth_options(es),
        **_tls_options(es, urls),
    )
