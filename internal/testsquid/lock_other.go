//go:build !unix

package testsquid

// lockFile does nothing where flock is missing (and apt-get too).
func lockFile(string) (func(), error) { return func() {}, nil }
