#!/usr/bin/python3
"""An mTLS SOAP partner for mtlsrelay's integration tests, built from stacks
nobody in this project wrote: a spyne (python3-spyne) WSGI application,
served over TLS that requires and verifies a client certificate, optionally
signing its responses with WS-Security by zeep (python3-zeep, python3-xmlsec).

    partner.py --app service.py --port 0 --cert server.pem --key server.key \
        --ca client-ca.pem --log requests.jsonl \
        [--sign-key key.pem --sign-cert cert.pem [--tamper]]

--app names a Python file whose application() returns a spyne Application.
Each request is appended to --log as one JSON line: method, path, query,
SOAPAction header, Content-Type and the body as received (the tests verify
WS-Security signatures in it with xmlsec1 and zeep). With --sign-key, each
2xx XML response gets a wsu:Timestamp (5 minutes) and a BinarySecurityToken
signature (RSA-SHA256 or ECDSA-SHA256 by the key, SHA-256 digests) made by
zeep.wsse.signature; --tamper then changes the Body after signing, as a
man in the middle would. Prints "listening PORT" once it accepts.
"""
import argparse
import datetime
import importlib.util
import io
import json
import socketserver
import ssl
import sys
import threading
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


def load_app(path):
    """The WSGI application of the spyne service in path: its
    application() returns the spyne Application."""
    from spyne.server.wsgi import WsgiApplication
    spec = importlib.util.spec_from_file_location("partner_app", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return WsgiApplication(mod.application())


class ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


def sign_response(body, key_file, cert_file, tamper):
    from lxml import etree
    import xmlsec
    from zeep import ns
    from zeep.wsse.signature import BinarySignature
    from zeep.wsse.utils import get_security_header, ensure_id

    envelope = etree.fromstring(body)
    security = get_security_header(envelope)
    now = datetime.datetime.now(datetime.timezone.utc)
    ts = etree.SubElement(security, etree.QName(ns.WSU, "Timestamp"))
    etree.SubElement(ts, etree.QName(ns.WSU, "Created")).text = now.strftime("%Y-%m-%dT%H:%M:%SZ")
    etree.SubElement(ts, etree.QName(ns.WSU, "Expires")).text = (now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    ensure_id(ts)
    with open(key_file, "rb") as f:
        key_pem = f.read()
    method = xmlsec.Transform.RSA_SHA256
    if b"EC PRIVATE KEY" in key_pem or _is_ec(key_pem):
        method = xmlsec.Transform.ECDSA_SHA256
    sig = BinarySignature(key_file, cert_file, signature_method=method, digest_method=xmlsec.Transform.SHA256)
    envelope, _ = sig.apply(envelope, {})
    out = etree.tostring(envelope, xml_declaration=True, encoding="utf-8")
    if tamper:
        # One character of the Body's text changes after signing.
        out = out.replace(b">3<", b">4<", 1) if b">3<" in out else out.replace(b"</", b"x</", 1)
    return out


def _is_ec(key_pem):
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.hazmat.primitives.asymmetric import ec
    return isinstance(load_pem_private_key(key_pem, None), ec.EllipticCurvePrivateKey)


def middleware(app, args):
    lock = threading.Lock()

    def wrapped(environ, start_response):
        environ["wsgi.url_scheme"] = "https"
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        if args.log:
            entry = {
                "method": environ.get("REQUEST_METHOD"),
                "path": environ.get("PATH_INFO"),
                "query": environ.get("QUERY_STRING"),
                "soap_action": environ.get("HTTP_SOAPACTION"),
                "content_type": environ.get("CONTENT_TYPE"),
                "body": body.decode("utf-8", "replace"),
            }
            with lock, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")
        captured = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        chunks = b"".join(app(environ, capture))
        status, headers = captured["status"], captured["headers"]
        ctype = dict((k.lower(), v) for k, v in headers).get("content-type", "")
        if args.sign_key and status.startswith("2") and "xml" in ctype and environ["REQUEST_METHOD"] == "POST":
            chunks = sign_response(chunks, args.sign_key, args.sign_cert, args.tamper)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(chunks))))
        start_response(status, headers)
        return [chunks]

    return wrapped


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--app", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--log")
    p.add_argument("--sign-key")
    p.add_argument("--sign-cert")
    p.add_argument("--tamper", action="store_true")
    args = p.parse_args()

    app = middleware(load_app(args.app), args)
    server = make_server("127.0.0.1", args.port, app, server_class=ThreadingWSGIServer, handler_class=QuietHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    ctx.load_verify_locations(args.ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print("listening %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
