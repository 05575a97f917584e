package registry

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"strings"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// sealedPrefix starts a sealed value: "sealed:v1:<key id>:<base64url(nonce|ciphertext)>".
const sealedPrefix = "sealed:v1:"

// keySize is the size of an AES-256 key.
const keySize = 32

// keyHowTo tells a person how to give the registry a key.
const keyHowTo = "make a key with `openssl rand -base64 32`, give it to every worker as registry.key " +
	"(e.g. key: env:MTLSRELAY_REGISTRY_KEY) and to the command line with --key-env, --key-file or --config"

// keyring fetches the registry key through a secret reference each time it
// is needed, so a rotated key file or Vault secret is picked up.
type keyring struct {
	sources *secrets.Sources
	ref     secrets.Ref
}

func newKeyring(sources *secrets.Sources, text string) (keyring, error) {
	k := keyring{sources: sources}
	if strings.TrimSpace(text) == "" {
		return k, nil
	}
	ref, err := secrets.ParseRef(text)
	if err != nil {
		je := jobs.AsError(err)
		return k, jobs.Wrap(err, je.Code, "registry key reference: %s", je.Message)
	}
	k.ref = ref
	return k, nil
}

// sealKey is a registry key ready to seal and open.
type sealKey struct {
	aead cipher.AEAD
	id   string
}

// get fetches and decodes the key; errNoKey when none is configured.
func (k keyring) get(ctx context.Context) (*sealKey, error) {
	if k.ref.IsZero() {
		return nil, errNoKey
	}
	sec, err := k.sources.Fetch(ctx, k.ref)
	if err != nil {
		je := jobs.AsError(err)
		out := jobs.Wrap(err, je.Code, "registry key %s: %s", k.ref, je.Message)
		out.Retryable = je.Retryable
		return nil, out
	}
	raw, ok := decodeKey(sec.Data)
	clear(sec.Data)
	if !ok {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"registry key %s is not a 32-byte key written in base64 or hex; %s", k.ref, keyHowTo)
	}
	defer clear(raw)
	return newSealKey(raw)
}

// errNoKey is returned by keyring.get when no key is configured.
var errNoKey = jobs.Errorf(jobs.CodeSecretUnavailable, "no registry key is configured; %s", keyHowTo).WithRetryable(false)

func newSealKey(raw []byte) (*sealKey, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, jobs.Wrap(err, jobs.CodeInternal, "registry key: AES-256 rejected a 32-byte key")
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, jobs.Wrap(err, jobs.CodeInternal, "registry key: AES-GCM unavailable")
	}
	// The key id names the key in sealed values and messages without
	// revealing it: a keyed hash of a constant.
	m := hmac.New(sha256.New, raw)
	m.Write([]byte("mtlsrelay registry key id"))
	return &sealKey{aead: aead, id: hex.EncodeToString(m.Sum(nil)[:4])}, nil
}

// decodeKey reads a 32-byte key written as 64 hex digits or in base64
// (either alphabet, padded or not), ignoring surrounding white space.
func decodeKey(data []byte) ([]byte, bool) {
	s := strings.TrimSpace(string(data))
	if len(s) == 2*keySize {
		if b, err := hex.DecodeString(s); err == nil {
			return b, true
		}
	}
	s = strings.TrimRight(s, "=")
	for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(s); err == nil && len(b) == keySize {
			return b, true
		}
	}
	return nil, false
}

// sealAAD is the associated data of a sealed field: the profile's key and
// the field, so a sealed value opens only where it was sealed.
func sealAAD(profile, field string) []byte {
	return []byte(prefixProfiles + profile + "/" + field)
}

// seal encrypts plaintext for field of profile.
func (k *sealKey) seal(profile, field string, plaintext []byte) string {
	nonce := make([]byte, k.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := k.aead.Seal(nonce, nonce, plaintext, sealAAD(profile, field))
	return sealedPrefix + k.id + ":" + base64.RawURLEncoding.EncodeToString(out)
}

// isSealed reports whether s is a sealed value.
func isSealed(s string) bool { return strings.HasPrefix(s, sealedPrefix) }

// open decrypts the sealed value s of field of profile. Errors never show s.
func (k *sealKey) open(profile, field, s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(s, sealedPrefix)
	id, body, ok2 := strings.Cut(rest, ":")
	data, err := base64.RawURLEncoding.DecodeString(body)
	if !ok || !ok2 || err != nil || len(data) < k.aead.NonceSize()+k.aead.Overhead() {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the %s of registry profile %q is not a well-formed sealed value; put the profile again with mtlsrelay profile put", field, profile)
	}
	if id != k.id {
		return nil, jobs.Errorf(jobs.CodeSecretUnavailable,
			"the %s of registry profile %q was sealed under registry key id %s, but this process's registry key has id %s; "+
				"give every worker and the command line the same registry key, or put the profile's password again", field, profile, id, k.id).WithRetryable(false)
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, data[:n], data[n:], sealAAD(profile, field))
	if err != nil {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"the sealed %s of registry profile %q does not open: it was sealed for another profile or altered; put the profile's password again", field, profile)
	}
	return plain, nil
}
