package wss

import (
	dsig "github.com/russellhaering/goxmldsig"
)

// Namespaces of the SOAP and WS-Security vocabularies.
const (
	soap11NS = "http://schemas.xmlsoap.org/soap/envelope/"
	soap12NS = "http://www.w3.org/2003/05/soap-envelope"
	wsseNS   = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
	wsuNS    = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
	dsNS     = dsig.Namespace
	excC14N  = string(dsig.CanonicalXML10ExclusiveAlgorithmId)

	// valueTypeX509v3 and encodingBase64 are the X.509 token profile's
	// ValueType of a single DER certificate and its base64 EncodingType.
	valueTypeX509v3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
	encodingBase64  = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
)

// Local names used more than once.
const (
	tagEnvelope  = "Envelope"
	tagHeader    = "Header"
	tagBody      = "Body"
	tagSecurity  = "Security"
	tagTimestamp = "Timestamp"
	tagBST       = "BinarySecurityToken"
	tagSTR       = "SecurityTokenReference"
)
