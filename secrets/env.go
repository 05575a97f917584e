package secrets

import (
	"context"
	"os"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

var _ Source = envSource{}

// envSource reads env: references from the environment.
type envSource struct {
	lookup func(string) (string, bool)
	v      versioner
}

// NewEnvSource returns the Source for env: references. lookup reads a
// variable; nil means os.LookupEnv. A variable that is set but empty is an
// empty secret (a keystore without a password), not a missing one.
func NewEnvSource(lookup func(string) (string, bool)) Source {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	return envSource{lookup: lookup, v: newVersioner()}
}

// Fetch reads the variable that ref names.
func (s envSource) Fetch(_ context.Context, ref Ref) (Secret, error) {
	val, ok := s.lookup(ref.Body)
	if !ok {
		return Secret{}, jobs.Wrap(ErrNotFound, jobs.CodeSecretUnavailable,
			"environment variable %s is not set on this worker; set it in the worker's environment", ref.Body).WithRetryable(false)
	}
	data := []byte(val)
	return Secret{Data: data, Version: "env-" + s.v.sum(data)}, nil
}
