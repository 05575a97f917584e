// Package filelock serializes, across test binaries and processes, the
// slow one-time work of the test helpers that build or install a real
// server (Vault, Hydra, Squid) into a shared cache.
package filelock
