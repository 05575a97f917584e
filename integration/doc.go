// Package integration holds mtlsrelay's end-to-end tests: real NATS servers,
// real mTLS partner servers, keystores made by OpenSSL and keytool, the
// built mtlsrelay binary, and (for secrets) a real Vault. It has no code of
// its own; see the _test.go files and the tools folder.
package integration
