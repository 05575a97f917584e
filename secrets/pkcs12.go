package secrets

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"strings"
	"unicode/utf16"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

// decodePKCS12 decodes a PKCS#12 keystore made by OpenSSL (default and
// -legacy), Java's keytool, Windows or any library using the same
// algorithms.
//
// go-pkcs12's DecodeChain returns a single key, and keytool writes one key
// per alias, so the first attempt is ToPEM, which returns every bag with its
// friendlyName and localKeyId. ToPEM refuses some valid files (an
// authenticated safe of other than two parts, attributes it does not know
// such as Java's trusted-certificate marker or Windows' key-set flags, keys
// other than RSA and ECDSA); for those DecodeChain (one key) and then
// DecodeTrustStore (certificates only) take over.
func decodePKCS12(data, password []byte) (*Keystore, error) {
	pw := string(password)
	//lint:ignore SA1019 ToPEM is the one go-pkcs12 call that returns every key bag with its alias; its PEM labels are not used, the blocks are parsed here
	blocks, err := pkcs12.ToPEM(data, pw)
	if err == nil {
		return pkcs12FromBlocks(blocks)
	}
	if e := pkcs12Fatal(err); e != nil {
		return nil, e
	}
	firstErr := err

	key, leaf, cas, err := pkcs12.DecodeChain(data, pw)
	if err == nil {
		keys := []keyItem{{alias: pkcs12PlainKeyAlias(data), key: key}}
		certs := []certItem{{cert: leaf}}
		for _, c := range cas {
			certs = append(certs, certItem{cert: c})
		}
		entries, err := assembleEntries(FormatPKCS12, keys, certs)
		if err != nil {
			return nil, err
		}
		return &Keystore{Format: FormatPKCS12, Entries: entries}, nil
	}
	if e := pkcs12Fatal(err); e != nil {
		return nil, e
	}
	if strings.Contains(err.Error(), "expected exactly one key bag") {
		return nil, jobs.Wrap(firstErr, jobs.CodeKeystoreInvalid,
			"the PKCS#12 keystore holds several keys together with trusted certificates or attributes this build cannot read; "+
				"export the key entry you need to a keystore of its own (keytool -importkeystore -srcalias ALIAS)")
	}

	trusted, err := pkcs12.DecodeTrustStore(data, pw)
	if err == nil {
		certs := make([]certItem, len(trusted))
		for i, c := range trusted {
			certs[i] = certItem{cert: c}
		}
		entries, err := assembleEntries(FormatPKCS12, nil, certs)
		if err != nil {
			return nil, err
		}
		return &Keystore{Format: FormatPKCS12, Entries: entries}, nil
	}
	if e := pkcs12Fatal(err); e != nil {
		return nil, e
	}
	if strings.Contains(err.Error(), "not marked as trusted") {
		return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid,
			"the PKCS#12 file holds certificates without a private key and without Java's trusted-certificate marker "+
				"(as openssl pkcs12 -export -nokeys writes before OpenSSL 3.2), which this build does not read; "+
				"use the CA certificates as a PEM file, or build the truststore with keytool -importcert")
	}
	return nil, jobs.Wrap(firstErr, jobs.CodeKeystoreInvalid,
		"the PKCS#12 keystore opened but its contents could not be read (%s); re-export it with openssl pkcs12 -export or keytool", pkcs12Reason(firstErr))
}

// pkcs12Fatal returns the error to report when err ends the decoding (a
// wrong password, data that is not PKCS#12), or nil when a fallback may
// still read the file.
func pkcs12Fatal(err error) *jobs.Error {
	msg := err.Error()
	switch {
	case errors.Is(err, pkcs12.ErrIncorrectPassword), errors.Is(err, pkcs12.ErrDecryption),
		// Key bag failures arrive as text, not wrapped.
		strings.Contains(msg, "decryption password incorrect"), strings.Contains(msg, "decryption error"):
		return jobs.Wrap(err, jobs.CodeKeystorePasswordWrong, msgPasswordWrong)
	case strings.Contains(msg, "UCS-2"):
		return jobs.Wrap(err, jobs.CodeKeystorePasswordWrong,
			"the configured password has characters a PKCS#12 password cannot hold (outside the Basic Multilingual Plane), so it cannot be this keystore's; check the profile's password reference")
	case strings.Contains(msg, "no MAC in data"):
		return jobs.Wrap(err, jobs.CodeKeystorePasswordWrong,
			"the PKCS#12 keystore has no integrity MAC, so it opens only without a password; remove the profile's password or re-export the keystore with one")
	case strings.Contains(msg, "error reading P12 data"):
		return jobs.Wrap(err, jobs.CodeKeystoreInvalid,
			"the data is not a readable PKCS#12 keystore: its DER structure is truncated or corrupt; copy the keystore again, in binary mode")
	case strings.Contains(msg, "can only decode v3 PFX"), strings.Contains(msg, "only password-protected PFX"):
		return jobs.Wrap(err, jobs.CodeKeystoreInvalid,
			"the PKCS#12 keystore uses a structure this build does not read (%s); re-export it with openssl pkcs12 -export", pkcs12Reason(err))
	case strings.Contains(msg, "is not supported"), strings.Contains(msg, "algorithm not supported"):
		return jobs.Wrap(err, jobs.CodeKeystoreInvalid,
			"the PKCS#12 keystore uses an algorithm this build does not support (%s); re-export it with AES-256 and a SHA-256 MAC (the OpenSSL 3 defaults)", pkcs12Reason(err))
	}
	return nil
}

// pkcs12Reason shortens a go-pkcs12 error for a message. Its texts name
// structures and algorithms, never the password or key bytes.
func pkcs12Reason(err error) string {
	return strings.TrimPrefix(err.Error(), "pkcs12: ")
}

// pkcs12FromBlocks pairs the bags ToPEM returned into entries.
func pkcs12FromBlocks(blocks []*pem.Block) (*Keystore, error) {
	var keys []keyItem
	var certs []certItem
	for _, b := range blocks {
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "the PKCS#12 keystore holds a certificate that does not parse; re-export it")
			}
			certs = append(certs, certItem{alias: b.Headers["friendlyName"], localKeyID: b.Headers["localKeyId"], cert: c})
		case "PRIVATE KEY":
			// ToPEM labels RSA keys in PKCS#1 and EC keys in SEC1 form as
			// "PRIVATE KEY"; parsePrivateKeyDER reads all three forms.
			k, err := parsePrivateKeyDER(b.Bytes)
			if err != nil {
				return nil, jobs.Wrap(err, jobs.CodeKeystoreInvalid, "the PKCS#12 keystore holds a private key that does not parse; re-export it")
			}
			keys = append(keys, keyItem{alias: b.Headers["friendlyName"], localKeyID: b.Headers["localKeyId"], key: k})
		}
	}
	entries, err := assembleEntries(FormatPKCS12, keys, certs)
	if err != nil {
		return nil, err
	}
	if len(entries) == 0 {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "the PKCS#12 keystore is empty: it holds no key and no certificate")
	}
	return &Keystore{Format: FormatPKCS12, Entries: entries}, nil
}

// ASN.1 shapes of RFC 7292, only as deep as pkcs12PlainKeyAlias reads.
type p12PFX struct {
	Version  int
	AuthSafe p12ContentInfo
	MacData  asn1.RawValue `asn1:"optional"`
}

type p12ContentInfo struct {
	ContentType asn1.ObjectIdentifier
	Content     asn1.RawValue `asn1:"tag:0,explicit,optional"`
}

type p12SafeBag struct {
	ID         asn1.ObjectIdentifier
	Value      asn1.RawValue  `asn1:"tag:0,explicit"`
	Attributes []p12Attribute `asn1:"set,optional"`
}

type p12Attribute struct {
	ID     asn1.ObjectIdentifier
	Values asn1.RawValue `asn1:"set"`
}

var (
	oidP12Data           = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidP12ShroudedKeyBag = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 2}
	oidP12KeyBag         = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 12, 10, 1, 1}
	oidP12FriendlyName   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 20}
)

// pkcs12PlainKeyAlias returns the friendlyName of the file's only key bag
// when that bag sits in an unencrypted part of the file, as OpenSSL and
// keytool write keys (the key itself is shrouded; its attributes are not).
// DecodeChain drops aliases, so this keeps key_alias working on files only
// DecodeChain reads. It returns "" when there is no single such name.
func pkcs12PlainKeyAlias(data []byte) string {
	var pfx p12PFX
	if _, err := asn1.Unmarshal(data, &pfx); err != nil || !pfx.AuthSafe.ContentType.Equal(oidP12Data) {
		return ""
	}
	var authSafeBytes []byte
	if _, err := asn1.Unmarshal(pfx.AuthSafe.Content.Bytes, &authSafeBytes); err != nil {
		return ""
	}
	var parts []p12ContentInfo
	if _, err := asn1.Unmarshal(authSafeBytes, &parts); err != nil {
		return ""
	}
	var names []string
	for _, ci := range parts {
		if !ci.ContentType.Equal(oidP12Data) {
			continue
		}
		var contents []byte
		if _, err := asn1.Unmarshal(ci.Content.Bytes, &contents); err != nil {
			continue
		}
		var bags []p12SafeBag
		if _, err := asn1.Unmarshal(contents, &bags); err != nil {
			continue
		}
		for _, b := range bags {
			if b.ID.Equal(oidP12ShroudedKeyBag) || b.ID.Equal(oidP12KeyBag) {
				names = append(names, bagFriendlyName(b))
			}
		}
	}
	if len(names) != 1 {
		return ""
	}
	return names[0]
}

// bagFriendlyName decodes a bag's friendlyName attribute (a BMPString).
func bagFriendlyName(b p12SafeBag) string {
	for _, a := range b.Attributes {
		if !a.ID.Equal(oidP12FriendlyName) {
			continue
		}
		var v asn1.RawValue
		if _, err := asn1.Unmarshal(a.Values.Bytes, &v); err != nil || v.Tag != asn1.TagBMPString || len(v.Bytes)%2 != 0 {
			return ""
		}
		u := make([]uint16, len(v.Bytes)/2)
		for i := range u {
			u[i] = uint16(v.Bytes[2*i])<<8 | uint16(v.Bytes[2*i+1])
		}
		return strings.TrimRight(string(utf16.Decode(u)), "\x00")
	}
	return ""
}
