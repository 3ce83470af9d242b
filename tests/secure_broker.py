"""A private mosquitto as docs/broker/ ships it (TLS, a password file, the ACL), with a throwaway CA, for tests."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgevae.demo.broker import free_port, wait_for_port

DOCS_BROKER = Path(__file__).resolve().parents[1] / "docs" / "broker"
HOST = "127.0.0.1"
# The server certificate names this host only, not 127.0.0.1, so that a client connecting by address sees
# a hostname mismatch.
CERT_NAME = "localhost"


@dataclass(frozen=True)
class SecureBroker:
    port: int
    ca: Path  # signed the broker's certificate
    wrong_ca: Path  # an unrelated CA: a client trusting only this one must refuse the broker

    def url(self, host: str = CERT_NAME) -> str:
        return f"mqtts://{host}:{self.port}"


def _openssl(openssl: str, *args: str) -> None:
    subprocess.run([openssl, *args], check=True, capture_output=True)


def make_ca(openssl: str, root: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA: (certificate, key). The extensions are the ones a strict X.509 check asks for."""
    cert, key = root / f"{name}.crt", root / f"{name}.key"
    _openssl(
        openssl,
        *("req", "-x509", "-new", "-nodes", "-days", "2", "-subj", f"/CN=edgevae test {name}"),
        *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(cert)),
        *("-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )
    return cert, key


def make_server_cert(openssl: str, root: Path, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    """A server certificate for CERT_NAME signed by `ca`: (certificate, key)."""
    cert, key, request, extensions = (root / f"server.{ext}" for ext in ("crt", "key", "csr", "ext"))
    extensions.write_text(
        f"subjectAltName=DNS:{CERT_NAME}\nbasicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
    )
    _openssl(
        openssl,
        *("req", "-new", "-nodes", "-subj", f"/CN={CERT_NAME}", "-newkey", "ec"),
        *("-pkeyopt", "ec_paramgen_curve:P-256", "-keyout", str(key), "-out", str(request)),
    )
    _openssl(
        openssl,
        *("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-set_serial", "2"),
        *("-days", "2", "-extfile", str(extensions), "-out", str(cert)),
    )
    return cert, key


def write_passwords(mosquitto_passwd: str, path: Path, accounts: Mapping[str, str]) -> Path:
    for i, (user, password) in enumerate(accounts.items()):
        create = ["-c"] if i == 0 else []  # -c starts a new file; without it the account is added
        subprocess.run([mosquitto_passwd, "-b", *create, str(path), user, password], check=True, capture_output=True)
    return path


def broker_config(template: str, values: Mapping[str, str]) -> str:
    """`template` with the value of each option in `values` replaced; every one of them must be there, so a
    shipped config that loses one fails here instead of being quietly completed."""
    lines, missing = [], set(values)
    for line in template.splitlines():
        option = line.split(maxsplit=1)[0] if line.strip() and not line.lstrip().startswith("#") else ""
        if option in values:
            line = f"{option} {values[option]}"
            missing.discard(option)
        lines.append(line)
    if missing:
        msg = f"the broker config has no {', '.join(sorted(missing))} line"
        raise ValueError(msg)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Tools:
    mosquitto: str
    mosquitto_passwd: str
    openssl: str


@contextmanager
def secure_broker(root: Path, accounts: Mapping[str, str], tools: Tools) -> Iterator[SecureBroker]:
    """Run docs/broker/mosquitto.conf with docs/broker/acl.conf verbatim on a free loopback port, until the
    block exits; raises RuntimeError, with mosquitto's output, if it does not start."""
    openssl, mosquitto = tools.openssl, tools.mosquitto
    ca = make_ca(openssl, root, "ca")
    wrong_ca, _ = make_ca(openssl, root, "wrong-ca")
    cert, key = make_server_cert(openssl, root, ca)
    (root / "persistence").mkdir()
    port = free_port(HOST)
    values = {
        "listener": f"{port} {HOST}",
        "certfile": str(cert),
        "keyfile": str(key),
        "password_file": str(write_passwords(tools.mosquitto_passwd, root / "passwd", accounts)),
        "acl_file": str(DOCS_BROKER / "acl.conf"),
        "persistence_location": f"{root / 'persistence'}/",
    }
    config = broker_config((DOCS_BROKER / "mosquitto.conf").read_text(), values)
    # Started as root, mosquitto would switch to user `mosquitto`, who cannot read this test's private
    # files; naming the current user keeps it as it is (the option is ignored when not root).
    config += f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
    (root / "mosquitto.conf").write_text(config)
    log = root / "mosquitto.log"
    with log.open("wb") as out:
        # A file, not a pipe: a pipe nobody reads would fill up and stall the broker.
        process = subprocess.Popen([mosquitto, "-c", str(root / "mosquitto.conf")], stdout=out, stderr=out)
        try:
            try:
                wait_for_port(HOST, port, timeout=20.0, process=process)
            except (RuntimeError, TimeoutError) as exc:
                msg = f"{exc}; mosquitto said:\n{log.read_text(errors='replace')[-2000:]}"
                raise RuntimeError(msg) from exc
            yield SecureBroker(port, ca[0], wrong_ca)
        finally:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
