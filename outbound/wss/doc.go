// Package wss signs SOAP request envelopes with WS-Security X.509 token
// profile signatures and verifies signed response envelopes.
//
// Sign adds a wsse:Security header holding the profile's certificate as a
// wsse:BinarySecurityToken, a wsu:Timestamp and a ds:Signature over the
// soap:Body, the Timestamp and any header blocks the caller names. Verify
// checks such a header on a response and returns the signer's certificate.
//
// Canonicalization is exclusive XML canonicalization 1.0 as implemented by
// github.com/russellhaering/goxmldsig; the package does the rest of XML
// Signature (references, digests, the signature value) itself because that
// library signs ECDSA in ASN.1 DER, while XML Signature wants r||s, and it
// knows nothing of WS-Security's wsu:Id and token references.
//
// Algorithms. Sign uses SHA-256 digests and rsa-sha256 or ecdsa-sha256.
// Verify accepts SHA-256/384/512 digests and rsa-sha256/384/512 and
// ecdsa-sha256/384/512 signatures; SHA-1 (sha1 digests, rsa-sha1,
// ecdsa-sha1) only with VerifyOptions.AllowSHA1, for partners still on
// WCF's Basic256 suite or old WSS4J defaults. Only exclusive c14n (without
// comments) is accepted, for SignedInfo and for every reference.
package wss
