// Package wss signs SOAP request envelopes with WS-Security X.509 token
// profile signatures and verifies signed response envelopes.
//
// Sign adds a wsse:Security header holding the profile's certificate as a
// wsse:BinarySecurityToken, a wsu:Timestamp and a ds:Signature over the
// soap:Body, the Timestamp and any header blocks the caller names. Verify
// checks such a header on a response and returns the signer's certificate.
//
// Canonicalization is exclusive XML canonicalization 1.0, implemented here
// in one pass over the etree document (c14n.go), checked against lxml's and,
// through signatures, against xmlsec1 and zeep. goxmldsig's canonicalizer
// was used first: it sorts prefixed attributes by local name where C14N
// sorts by namespace URI first (signatures with xml:lang beside xsi:nil
// failed xmlsec1), and copies the in-scope prefixes at every element (a
// small hostile document cost seconds). goxmldsig still names the
// algorithms. The package does the rest of XML Signature (references,
// digests, the signature value in r||s for ECDSA) and WS-Security's wsu:Id
// and token references itself.
//
// Algorithms. Sign uses SHA-256 digests and rsa-sha256 or ecdsa-sha256.
// Verify accepts SHA-256/384/512 digests and rsa-sha256/384/512 and
// ecdsa-sha256/384/512 signatures; SHA-1 (sha1 digests, rsa-sha1,
// ecdsa-sha1) only with VerifyOptions.AllowSHA1, for partners still on
// WCF's Basic256 suite or old WSS4J defaults. Only exclusive c14n (without
// comments) is accepted, for SignedInfo and for every reference.
package wss
