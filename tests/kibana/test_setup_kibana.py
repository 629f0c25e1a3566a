"""`audit-collector setup --kibana URL` end to end against the Kibana-API test server:
install, idempotence, spaces, credentials, TLS, Kibana down or not ready, per-object
rejections, an old Kibana; every failure exit 2 with a line naming the object or cause."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from collector.cli import main
from collector.kibana import install
from tests.esserver.kibana import KibanaTestServer

REPO = Path(__file__).resolve().parents[2]
NDJSON = REPO / "kibana" / "audit-collector.ndjson"
IDS = [json.loads(line)["id"] for line in NDJSON.read_text().splitlines()]
N = len(IDS)


def setup(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], list[str]]:
    code = main(["setup", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def states(lines: list[str]) -> dict[str, str]:
    """object id -> created/updated/unchanged from the per-object lines."""
    return {line.split()[1]: line.rsplit(": ", 1)[1] for line in lines[:-1]}


def test_install_writes_every_object_as_generated(kibana_server: KibanaTestServer,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = setup(capsys, "--kibana", kibana_server.url)
    assert (code, err) == (0, [])
    assert states(out) == dict.fromkeys(IDS, "created")
    assert out[-1].startswith(f"Kibana 8.17.0 at {kibana_server.url}, space 'default': "
                              f"{N} saved objects installed ({N} created, 0 updated, 0 unchanged)")
    assert out[-1].endswith(f"dashboard: {kibana_server.url}/app/dashboards#/view/"
                            "audit-collector-overview")
    (record,) = kibana_server.imports
    assert (record.space, record.overwrite, record.objects, record.success_count) == \
        ("default", True, N, N)
    for line in NDJSON.read_text().splitlines():
        sent = json.loads(line)
        stored = kibana_server.get_object(sent["type"], sent["id"])
        assert stored is not None
        assert (stored["attributes"], stored["references"]) == \
            (sent["attributes"], sent["references"])


def test_a_second_run_changes_nothing_and_a_third_restores_an_edited_object(
        kibana_server: KibanaTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    assert setup(capsys, "--kibana", kibana_server.url)[0] == 0
    code, out, _ = setup(capsys, "--kibana", kibana_server.url)
    assert code == 0 and states(out) == dict.fromkeys(IDS, "unchanged")
    assert out[-1].endswith(f"all {N} saved objects already up to date")
    assert len(kibana_server.imports) == 1  # nothing was written the second time
    edited = json.loads(NDJSON.read_text().splitlines()[-1])
    edited["attributes"]["description"] = "changed by hand"
    edit = urllib3.request("POST", f"{kibana_server.url}/api/saved_objects/_import"
                           "?overwrite=true", headers={"kbn-xsrf": "test"},
                           fields={"file": ("edit.ndjson", json.dumps(edited).encode())})
    assert json.loads(edit.data)["success"] is True
    code, out, _ = setup(capsys, "--kibana", kibana_server.url)
    assert code == 0
    assert states(out) == {**dict.fromkeys(IDS, "unchanged"),
                           "audit-collector-overview": "updated"}
    assert f"(0 created, 1 updated, {N - 1} unchanged)" in out[-1]
    stored = kibana_server.get_object("dashboard", "audit-collector-overview")
    assert stored is not None and "[audit-collector content " in \
        stored["attributes"]["description"]


def test_space(kibana_server: KibanaTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    kibana_server.add_space("secops")
    code, out, _ = setup(capsys, "--kibana", kibana_server.url, "--space", "secops")
    assert code == 0 and "space 'secops'" in out[-1]
    assert "/s/secops/app/dashboards#/view/audit-collector-overview" in out[-1]
    assert len(kibana_server.objects("secops")) == N
    assert kibana_server.objects("default") == {}


def test_a_space_that_does_not_exist(kibana_server: KibanaTestServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = setup(capsys, "--kibana", kibana_server.url, "--space", "nope")
    assert (code, out) == (2, [])
    assert err == ["audit-collector: setup --kibana: Kibana space 'nope' does not exist "
                   "(create it first, or leave --space out for the default space)"]
    assert kibana_server.imports == []


def test_credentials(kibana_server: KibanaTestServer, capsys: pytest.CaptureFixture[str],
                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kibana_server.add_user("elastic", "s3cret-pw")
    api_key = kibana_server.add_api_key("kid", "k3y-material")
    code, out, err = setup(capsys, "--kibana", kibana_server.url)
    assert (code, out) == (2, [])
    assert err == [f"audit-collector: setup --kibana: Kibana at {kibana_server.url} needs "
                   "credentials (HTTP 401): give --api-key-file/--api-key-env, or --username "
                   "with --password-file/--password-env"]
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    code, out, err = setup(capsys, "--kibana", kibana_server.url, "--username", "elastic",
                           "--password-file", str(wrong))
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"audit-collector: setup --kibana: Kibana at {kibana_server.url} "
                             "refused the credentials (HTTP 401: ")
    assert "not-the-password" not in err[0]
    right = tmp_path / "right"
    right.write_text("s3cret-pw\n")
    assert setup(capsys, "--kibana", kibana_server.url, "--username", "elastic",
                 "--password-file", str(right))[0] == 0
    monkeypatch.setenv("KIBANA_KEY", api_key)
    code, out, _ = setup(capsys, "--kibana", kibana_server.url, "--api-key-env", "KIBANA_KEY")
    assert code == 0 and out[-1].endswith(f"all {N} saved objects already up to date")
    assert all("s3cret-pw" not in line and api_key not in line for line in out)


def test_flag_mistakes_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str],
                                               tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"
    cases = [
        (["--space", "x"], "audit-collector: --space needs --kibana URL"),
        (["--kibana", url, "--space", "Sec Ops"],
         "audit-collector: --space: 'Sec Ops' is not a Kibana space id (lowercase letters, "
         "digits, _ and -)"),
        (["--kibana", "kibana:5601"],
         "audit-collector: --kibana: 'kibana:5601': the Kibana URL must start with http:// or "
         "https:// and name a host"),
        (["--kibana", url, "--username", "u"],
         "audit-collector: --password-file: --username needs --password-file or "
         "--password-env"),
        (["--kibana", url, "--api-key-file", "a", "--api-key-env", "B"],
         "audit-collector: --api-key-file: give --api-key-file or --api-key-env, not both"),
        (["--kibana", url, "--ca-file", str(tmp_path / "none.pem")],
         f"audit-collector: --ca-file: cannot read {tmp_path / 'none.pem'}"),
        (["--kibana", url, "--api-key-file", str(tmp_path / "none")],
         f"audit-collector: setup --kibana: kibana: cannot read the API key file "
         f"{tmp_path / 'none'}: No such file or directory"),
        (["--kibana", url, "--wait", "-1"], "audit-collector: --wait: -1.0 is not in [0, 3600.0]"),
    ]
    for args, expected in cases:
        code, out, err = setup(capsys, *args)
        assert (code, out, err) == (2, [], [expected]), args


def test_kibana_down(capsys: pytest.CaptureFixture[str]) -> None:
    with KibanaTestServer() as srv:
        url = srv.url
    started = time.monotonic()
    code, out, err = setup(capsys, "--kibana", url, "--wait", "0")
    assert (code, out) == (2, [])
    assert err == [f"audit-collector: setup --kibana: Kibana at {url} is not reachable: "
                   "[Errno 111] Connection refused"]
    assert time.monotonic() - started < 5


def test_kibana_coming_up_and_not_ready_is_waited_for(
        kibana_server: KibanaTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    kibana_server.go_down(seconds=1.5)
    kibana_server.fail_requests(503, requests=2, endpoints=("status",))
    code, out, _ = setup(capsys, "--kibana", kibana_server.url, "--wait", "20")
    assert code == 0 and f"{N} saved objects installed" in out[-1]
    assert kibana_server.stats()["faults.status"] == 2


def test_kibana_never_ready(kibana_server: KibanaTestServer,
                            capsys: pytest.CaptureFixture[str]) -> None:
    kibana_server.fail_requests(503, requests=None, endpoints=("import",))
    code, out, err = setup(capsys, "--kibana", kibana_server.url, "--wait", "1")
    assert (code, out) == (2, [])
    assert err == [f"audit-collector: setup --kibana: Kibana at {kibana_server.url} is not "
                   "reachable: HTTP 503: Kibana server is not ready yet"]


def test_objects_kibana_rejects_are_named_and_nothing_claims_success(
        kibana_server: KibanaTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    kibana_server.reject_objects(ids=["audit-collector-overview"])
    kibana_server.reject_objects(types=["lens"], ids=["audit-collector-lens-losses"], error={
        "type": "missing_references",
        "references": [{"type": "index-pattern", "id": "audit-collector"}]})
    code, out, err = setup(capsys, "--kibana", kibana_server.url)
    assert (code, out) == (2, [])
    prefix = "audit-collector: setup --kibana: "
    assert err == [
        f"{prefix}lens audit-collector-lens-losses ('Losses per host') was not imported: "
        "missing references (index-pattern:audit-collector)",
        f"{prefix}dashboard audit-collector-overview ('Audit collector: overview') was not "
        "imported: unknown: [es_rejected_execution_exception] rejected execution of "
        "coordinating operation",
        f"{prefix}2 of {N} saved objects were not imported into Kibana space 'default'; the "
        "set is incomplete: fix the cause and run setup --kibana again"]
    code, out, _ = setup(capsys, "--kibana", kibana_server.url)  # the cause went away
    assert code == 0
    assert {k: v for k, v in states(out).items() if v != "unchanged"} == {
        "audit-collector-lens-losses": "created", "audit-collector-overview": "created"}


def test_an_import_refused_as_a_whole(kibana_server: KibanaTestServer,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    kibana_server.fail_requests(500, requests=None, endpoints=("import",))
    code, out, err = setup(capsys, "--kibana", kibana_server.url, "--wait", "0")
    assert (code, out) == (2, [])
    assert err == [f"audit-collector: setup --kibana: Kibana refused the import of {N} saved "
                   "objects into space 'default' (HTTP 500: injected failure with status "
                   "[500])"]


def test_a_kibana_older_than_8_14(capsys: pytest.CaptureFixture[str]) -> None:
    with KibanaTestServer(version="8.13.4") as srv:
        code, out, err = setup(capsys, "--kibana", srv.url)
        assert srv.imports == []
    assert (code, out) == (2, [])
    assert err == ["audit-collector: setup --kibana: Kibana 8.13.4 is older than 8.14.0, the "
                   "oldest version these saved objects are made for"]


def test_an_invalid_set_is_never_sent(kibana_server: KibanaTestServer,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = install.build_objects

    def broken(**kwargs: Any) -> list[dict[str, Any]]:
        objects = real(**kwargs)
        objects[1]["attributes"]["columns"].append("process.nam")
        return objects

    monkeypatch.setattr(install, "build_objects", broken)
    code, out, err = setup(capsys, "--kibana", kibana_server.url)
    assert (code, out) == (2, [])
    assert err == ["audit-collector: setup --kibana: invalid saved objects (not sent): line 2 "
                   "(search audit-collector-executions): columns: field process.nam is not in "
                   "collector/fields.py"]
    assert kibana_server.stats().get("requests", 0) == 0


def test_the_data_view_follows_the_configured_dataset(
        kibana_server: KibanaTestServer, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("elasticsearch:\n  dataset: audit_prod\n")
    code, out, _ = setup(capsys, "--config", str(config), "--kibana", kibana_server.url)
    assert code == 0 and out[0] == \
        "index-pattern audit-collector ('logs-audit_prod-*'): created"
    view = kibana_server.get_object("index-pattern", "audit-collector")
    assert view is not None and view["attributes"]["title"] == "logs-audit_prod-*"


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_kibana(tmp_path: Path) -> Iterator[tuple[KibanaTestServer, Path]]:
    """A Kibana test server on HTTPS with a certificate for 127.0.0.1 from a fresh CA."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audit-collector test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = (tmp_path / n for n in ("ca.pem", "cert.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    with KibanaTestServer(ssl_context=context) as srv:
        yield srv, ca_file


def test_tls_with_the_ca_file(tls_kibana: tuple[KibanaTestServer, Path],
                              capsys: pytest.CaptureFixture[str]) -> None:
    srv, ca_file = tls_kibana
    assert srv.url.startswith("https://")
    code, out, err = setup(capsys, "--kibana", srv.url, "--ca-file", str(ca_file))
    assert (code, err) == (0, []) and f"{N} saved objects installed" in out[-1]


def test_tls_verification_is_on_by_default(tls_kibana: tuple[KibanaTestServer, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    srv, _ = tls_kibana
    code, out, err = setup(capsys, "--kibana", srv.url)
    assert (code, out) == (2, []) and len(err) == 1
    assert err[0].startswith(f"audit-collector: setup --kibana: TLS with Kibana at {srv.url} "
                             "failed: ")
    assert "CERTIFICATE_VERIFY_FAILED" in err[0]
    assert srv.imports == []
    code, out, err = setup(capsys, "--kibana", srv.url, "--no-verify-certs")
    assert code == 0 and f"{N} saved objects installed" in out[-1]
    assert err == ["audit-collector: setup --kibana: warning: TLS certificates are not "
                   "verified (--no-verify-certs)"]


def test_the_command_line_itself(kibana_server: KibanaTestServer) -> None:
    result = subprocess.run([sys.executable, "-m", "collector", "setup", "--kibana",
                             kibana_server.url], capture_output=True, text=True, timeout=60,
                            cwd=REPO)
    assert (result.returncode, result.stderr) == (0, "")
    assert len(result.stdout.splitlines()) == N + 1  # one line per object, then the summary
    assert len(kibana_server.objects()) == N
