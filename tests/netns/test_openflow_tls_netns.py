"""OpenFlow over TLS with a real Open vSwitch, bound to one address.

Certificates are made here with ``openssl`` (a CA, the controller's and the
switches' certificates). The controller listens for OpenFlow on 127.0.0.1
only (``--openflow-listen``), with TLS (Ryu's ``--ctl-privkey``,
``--ctl-cert``, ``--ca-certs``: switches must show a certificate of that CA).
Two userspace bridges connect with ``ssl:127.0.0.1:PORT``; both must appear
in the controller's topology (Ryu 4.34 alone let only the first switch's
handshake succeed). A client without a certificate gets no OpenFlow session.

OVS's SSL settings are global to its database: the test sets them only when
none are set, and removes exactly what it set (its bridges and its SSL row).
"""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess

import pytest
import requests

from testing.procs import free_port, wait_until

pytestmark = pytest.mark.netns


def _run(*cmd: str) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=30).stdout


def _certificates(d) -> dict[str, str]:
    paths = {}
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=measure-test-ca", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name in ("controller", "switch"):
        key, csr, pem = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
        _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(csr))
        _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"),
             "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2", "-out", str(pem))
        paths[name + "_key"], paths[name + "_cert"] = str(key), str(pem)
    paths["ca"] = str(d / "ca.pem")
    return paths


def test_switches_connect_over_tls_to_the_bound_address(controller_factory, tmp_path):
    if _run("ovs-vsctl", "get-ssl").strip():
        pytest.skip("Open vSwitch already has SSL settings; not replacing another user's")
    certs = _certificates(tmp_path)
    of_port = free_port()
    rest_port = free_port()
    state = tmp_path / "state"
    ctl = controller_factory(rest_port=rest_port, of_port=of_port, args=[
        "--ofp-ssl-listen-port", str(of_port), "--openflow-listen", "127.0.0.1",
        "--ctl-privkey", certs["controller_key"], "--ctl-cert", certs["controller_cert"],
        "--ca-certs", certs["ca"], "--observe-links", "ryu_app.app"],
        env={"MEASURE_STATE_DIR": str(state), "MEASURE_AUTH": "off"})
    # bound to the loopback only: the port is not open on another local address
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.2", of_port)) != 0
    # a client without a certificate of the CA gets no session
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", of_port), timeout=5) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            with ctx.wrap_socket(raw) as tls:
                tls.sendall(b"\x04\x00\x00\x08\x00\x00\x00\x01")  # OFPT_HELLO
                assert tls.recv(8) == b""  # refused after the handshake (TLS 1.3)
                raise OSError("closed")

    tag = secrets.token_hex(2)
    bridges = {f"tls{tag}a": 0xA1, f"tls{tag}b": 0xA2}
    _run("ovs-vsctl", "set-ssl", certs["switch_key"], certs["switch_cert"], certs["ca"])
    try:
        for br, dpid in bridges.items():
            _run("ovs-vsctl", "add-br", br, "--", "set", "bridge", br, "datapath_type=netdev",
                 f"other-config:datapath-id={dpid:016x}", "protocols=OpenFlow13",
                 "--", "set-controller", br, f"ssl:127.0.0.1:{of_port}")

        def connected() -> bool:
            topo = requests.get(f"{ctl.url}/measure/v1/topology", timeout=5).json()
            dpids = {int(sw["dpid"], 16) for sw in topo["switches"]}
            return dpids >= set(bridges.values())

        wait_until(connected, timeout=30, message="both bridges connected over TLS")
        failed = [x for x in ctl.log().splitlines() if "handshake from" in x]
        # the certificate-less client; the other is the start-up port probe (no TLS at all)
        assert sum("PEER_DID_NOT_RETURN_A_CERTIFICATE" in x for x in failed) == 1, failed
        assert len(failed) <= 2, failed
    finally:
        for br in bridges:
            subprocess.run(["ovs-vsctl", "--if-exists", "del-br", br], check=False, timeout=30)
        subprocess.run(["ovs-vsctl", "del-ssl"], check=False, timeout=30)
