package secrets

import (
	"context"

	"github.com/mtlsrelay/mtlsrelay/jobs"
)

var _ Source = inlineSource{}

// inlineSource returns the secrets written into a reference itself:
// base64:, value: and inline PEM blocks.
type inlineSource struct{ v versioner }

func newInlineSource() Source { return inlineSource{v: newVersioner()} }

// Fetch decodes the reference's body. The Version changes only when the
// profile's text does.
func (s inlineSource) Fetch(_ context.Context, ref Ref) (Secret, error) {
	var data []byte
	switch ref.Scheme {
	case SchemeBase64:
		d, err := decodeBase64(ref.Body)
		if err != nil {
			return Secret{}, jobs.Errorf(jobs.CodeKeystoreInvalid, "secret reference base64:%s is not valid base64; paste the output of `base64 -w0 FILE`", redacted)
		}
		data = d
	case SchemeValue, SchemePEM:
		data = []byte(ref.Body)
	default:
		return Secret{}, jobs.Errorf(jobs.CodeInternal, "inline source registered for scheme %s:, which is not inline", ref.Scheme)
	}
	return Secret{Data: data, Version: "inline-" + s.v.sum(data)}, nil
}
