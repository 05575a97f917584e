package outbound

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// assertionLifetime is how long a private_key_jwt client assertion is
// valid: it is made for one token request, sent at once.
const assertionLifetime = 60 * time.Second

// KeyID returns the kid of the client assertions signed with the key of
// cert: the base64url (unpadded) SHA-256 thumbprint of the DER certificate,
// as JWK's x5t#S256 (RFC 7517 section 4.9). The authorization server must
// hold the certificate's public key under this kid.
func KeyID(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// SigningAlgorithm returns the JWS algorithm of client assertions signed
// with key: RS256 for RSA, ES256, ES384 or ES512 for ECDSA on P-256,
// P-384 or P-521, EdDSA for Ed25519; "" for any other key.
func SigningAlgorithm(key crypto.PublicKey) string {
	switch k := key.(type) {
	case *rsa.PublicKey:
		return "RS256"
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return "ES256"
		case elliptic.P384():
			return "ES384"
		case elliptic.P521():
			return "ES512"
		}
	case ed25519.PublicKey:
		return "EdDSA"
	}
	return ""
}

// clientAssertion returns a client assertion of RFC 7523 section 2.2 for
// private_key_jwt (OpenID Connect Core section 9): iss and sub the
// client_id, aud the token_url, a random jti, iat now and exp
// assertionLifetime later, signed with the profile's private key (the
// algorithm from its type) and kid the certificate's thumbprint.
func clientAssertion(name, clientID, tokenURL string, mat *secrets.Material, now time.Time) (string, *jobs.Error) {
	if mat == nil || mat.Config == nil || len(mat.Config.Certificates) == 0 || mat.Leaf == nil {
		return "", jobs.Errorf(jobs.CodeInternal, "connection %s: private_key_jwt without the profile's certificate; see the worker log", name)
	}
	key := mat.Config.Certificates[0].PrivateKey
	var method jwt.SigningMethod
	switch SigningAlgorithm(mat.Leaf.PublicKey) {
	case "RS256":
		method = jwt.SigningMethodRS256
	case "ES256":
		method = jwt.SigningMethodES256
	case "ES384":
		method = jwt.SigningMethodES384
	case "ES512":
		method = jwt.SigningMethodES512
	case "EdDSA":
		method = jwt.SigningMethodEdDSA
	default:
		return "", jobs.Errorf(jobs.CodeKeystoreInvalid,
			"connection %s: private_key_jwt signs with the key of profile %s, a %T, but only RSA, ECDSA (P-256, P-384, P-521) and Ed25519 keys can sign a client assertion",
			name, mat.Profile, mat.Leaf.PublicKey)
	}
	jti := make([]byte, 18)
	_, _ = rand.Read(jti)
	claims := jwt.RegisteredClaims{
		Issuer:    clientID,
		Subject:   clientID,
		Audience:  jwt.ClaimStrings{tokenURL},
		ID:        base64.RawURLEncoding.EncodeToString(jti),
		IssuedAt:  jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(now.Add(assertionLifetime)),
	}
	t := jwt.NewWithClaims(method, claims)
	t.Header["kid"] = KeyID(mat.Leaf)
	s, err := t.SignedString(key)
	if err != nil {
		// The error names the key's type, never its bytes.
		return "", jobs.Errorf(jobs.CodeKeystoreInvalid,
			"connection %s: the key of profile %s could not sign the client assertion (%s, %T); check that the keystore holds the certificate's own private key",
			name, mat.Profile, method.Alg(), key)
	}
	return s, nil
}
