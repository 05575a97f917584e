// Package vault reads the secrets of mTLS profiles from HashiCorp Vault:
// fields of KV version 2 secrets (vault: references) and client
// certificates issued by the PKI engine (vault-pki: references).
//
//	vault:secret/partners/a#keystore       field "keystore" of secret/partners/a, latest version
//	vault:secret/partners/a#keystore@3     the same field of version 3
//	vault-pki:pki/issue/client?common_name=relay.example&ttl=24h
//
// A keystore field holds the keystore as base64 text (base64 -w0 client.p12)
// or as PEM; a password field holds the password; a truststore field holds
// PEM certificates or a base64 PKCS#12/JKS truststore. All go through the
// same vault: source.
//
// New logs in (token, AppRole, Kubernetes or TLS certificate), keeps the
// token renewed and logs in again when it ends; Register adds the vault:
// and vault-pki: schemes to a *secrets.Sources. Only the MPL-licensed
// github.com/hashicorp/vault/api module is used, never Vault's server code.
//
// Failures follow the secrets.Source contract: Vault unreachable, sealed or
// answering 5xx is a retryable secret_unavailable (profiles already loaded
// keep working from the Resolver's cache); a missing secret or field is a
// secret_unavailable that is not retried, wrapping secrets.ErrNotFound; a
// 403 says which path the token's policy lacks. No message or log holds a
// token or a secret value.
//
// docs/SECRETS-VAULT.md describes every configuration key.
package vault
