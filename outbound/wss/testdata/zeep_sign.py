"""Sign a SOAP envelope with zeep's WS-Security BinarySignature.

Usage: zeep_sign.py ENVELOPE_FILE KEY_PEM CERT_PEM SIGNATURE_METHOD DIGEST_METHOD

SIGNATURE_METHOD and DIGEST_METHOD are xmlsec.Transform names (RSA_SHA256,
ECDSA_SHA256, SHA256, RSA_SHA1, SHA1, ...). zeep 4.2.1 signs the soap:Body
and a wsu:Timestamp already in the wsse:Security header, puts the
certificate in a wsse:BinarySecurityToken and points KeyInfo at it: the
shape a zeep-based partner sends. The signed envelope goes to stdout. The
Go tests use it to check Verify against a signer nobody here wrote.
"""

import sys

import xmlsec
from lxml import etree
from zeep.wsse.signature import BinarySignature


def main():
    env_file, key_file, cert_file, sig_method, digest_method = sys.argv[1:6]
    with open(env_file, "rb") as f:
        envelope = etree.fromstring(f.read())
    signer = BinarySignature(
        key_file,
        cert_file,
        signature_method=getattr(xmlsec.Transform, sig_method),
        digest_method=getattr(xmlsec.Transform, digest_method),
    )
    envelope, _ = signer.apply(envelope, {})
    sys.stdout.buffer.write(etree.tostring(envelope, xml_declaration=True, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
