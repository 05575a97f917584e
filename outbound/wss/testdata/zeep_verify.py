"""Verify a WS-Security signed SOAP envelope the way a zeep-based service does.

Usage: zeep_verify.py ENVELOPE_FILE CERT_PEM_FILE

zeep.wsse.signature.verify_envelope (zeep 4.2.1) finds soap:Header/
wsse:Security/ds:Signature, registers wsu:Id on every element a Reference
names and has xmlsec verify the signature (digests and SignatureValue) with
the key of the certificate given. It does not look at the wsu:Timestamp, so
this script also checks wsu:Expires (and wsu:Created) against now, as a
receiving service would, allowing 60 seconds of clock skew.

Exit status 0 when all holds; otherwise non-zero with the reason on stderr.
"""

import datetime
import sys

from lxml import etree
from zeep.exceptions import SignatureVerificationFailed
from zeep.wsse.signature import verify_envelope

WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
SKEW = datetime.timedelta(seconds=60)


def parse_time(text):
    text = text.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    t = datetime.datetime.fromisoformat(text)
    if t.tzinfo is None:
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t


def main():
    if len(sys.argv) != 3:
        print("usage: zeep_verify.py ENVELOPE_FILE CERT_PEM_FILE", file=sys.stderr)
        return 2
    with open(sys.argv[1], "rb") as f:
        envelope = etree.fromstring(f.read())
    try:
        verify_envelope(envelope, sys.argv[2])
    except SignatureVerificationFailed:
        print("zeep: signature verification failed", file=sys.stderr)
        return 1

    now = datetime.datetime.now(datetime.timezone.utc)
    stamps = envelope.findall(".//{%s}Security/{%s}Timestamp" % (WSSE, WSU))
    if len(stamps) != 1:
        print("zeep_verify: want one wsu:Timestamp, found %d" % len(stamps), file=sys.stderr)
        return 1
    expires = stamps[0].find("{%s}Expires" % WSU)
    if expires is None or parse_time(expires.text) + SKEW < now:
        print("zeep_verify: wsu:Timestamp expired or without Expires", file=sys.stderr)
        return 1
    created = stamps[0].find("{%s}Created" % WSU)
    if created is not None and parse_time(created.text) - SKEW > now:
        print("zeep_verify: wsu:Timestamp created in the future", file=sys.stderr)
        return 1
    print("zeep: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
