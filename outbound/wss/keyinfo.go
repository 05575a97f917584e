package wss

import (
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/beevik/etree"
)

// keyInfoCerts returns the certificates KeyInfo gives: the
// wsse:BinarySecurityToken its SecurityTokenReference points to, or the
// X509Certificate elements of an X509Data (directly in KeyInfo, or inside
// the SecurityTokenReference as zeep writes it).
func keyInfoCerts(ki *etree.Element, ids *idIndex) ([]*x509.Certificate, error) {
	if str, err := oneChild(ki, wsseNS, tagSTR, "wsse:SecurityTokenReference"); err != nil {
		return nil, err
	} else if str != nil {
		if ref, err := oneChild(str, wsseNS, "Reference", "wsse:Reference"); err != nil {
			return nil, err
		} else if ref != nil {
			return tokenCert(ref, ids)
		}
		if xd := childrenNamed(str, dsNS, "X509Data"); len(xd) > 0 {
			return x509DataCerts(xd)
		}
		return nil, errors.New("wss: the SecurityTokenReference has neither a wsse:Reference to a BinarySecurityToken nor X509Data (key identifiers are not supported)")
	}
	if xd := childrenNamed(ki, dsNS, "X509Data"); len(xd) > 0 {
		return x509DataCerts(xd)
	}
	return nil, errors.New("wss: KeyInfo has neither a wsse:SecurityTokenReference nor ds:X509Data with the signer's certificate")
}

// tokenCert resolves a wsse:Reference to an X.509 BinarySecurityToken.
func tokenCert(ref *etree.Element, ids *idIndex) ([]*x509.Certificate, error) {
	uri := ref.SelectAttrValue("URI", "")
	if len(uri) < 2 || uri[0] != '#' {
		return nil, fmt.Errorf("wss: the SecurityTokenReference URI %q is not a same-document \"#id\"", truncate(uri, 80))
	}
	tok := ids.byID[uri[1:]]
	if tok == nil || tok.Tag != tagBST || tok.NamespaceURI() != wsseNS {
		return nil, fmt.Errorf("wss: the SecurityTokenReference URI %s names no wsse:BinarySecurityToken", truncate(uri, 80))
	}
	if vt := tok.SelectAttrValue("ValueType", ""); vt != valueTypeX509v3 {
		return nil, fmt.Errorf("wss: the BinarySecurityToken's ValueType is %q; only X509v3 is supported", truncate(vt, 120))
	}
	if et := tok.SelectAttrValue("EncodingType", encodingBase64); et != encodingBase64 {
		return nil, fmt.Errorf("wss: the BinarySecurityToken's EncodingType is %q; only Base64Binary is supported", truncate(et, 120))
	}
	c, err := parseCert(tok.Text())
	if err != nil {
		return nil, fmt.Errorf("wss: the BinarySecurityToken: %v", err)
	}
	return []*x509.Certificate{c}, nil
}

// x509DataCerts reads every X509Certificate of the X509Data elements.
func x509DataCerts(xds []*etree.Element) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for _, xd := range xds {
		for _, ce := range childrenNamed(xd, dsNS, "X509Certificate") {
			c, err := parseCert(ce.Text())
			if err != nil {
				return nil, fmt.Errorf("wss: X509Certificate: %v", err)
			}
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("wss: X509Data holds no X509Certificate (issuer-serial or SKI alone cannot be resolved)")
	}
	return out, nil
}

func parseCert(b64 string) (*x509.Certificate, error) {
	der, err := decodeBase64(b64)
	if err != nil {
		return nil, errors.New("not base64")
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("not an X.509 certificate: %v", err)
	}
	return c, nil
}
