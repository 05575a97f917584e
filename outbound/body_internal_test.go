package outbound

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestReadBody(t *testing.T) {
	cases := []struct {
		name          string
		body          string
		contentLength int64
		limit         int64
		want          string
		wantErr       error
	}{
		{"announced length", "hello", 5, 10, "hello", nil},
		{"announced empty", "", 0, 10, "", nil},
		{"unknown length", "hello", -1, 10, "hello", nil},
		{"unknown length over the limit reads one byte more", "hello world", -1, 5, "hello ", nil},
		{"announced over the limit reads one byte more", "hello world", 11, 5, "hello ", nil},
		{"shorter than announced", "hel", 5, 10, "hel", io.ErrUnexpectedEOF},
		{"longer than announced", "hello world", 5, 20, "hello world", nil},
		{"longer than announced, over the limit", "hello world", 5, 8, "hello wor", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := &eofReader{r: strings.NewReader(c.body)}
			got, err := readBody(r, c.contentLength, c.limit)
			if string(got) != c.want || !errors.Is(err, c.wantErr) {
				t.Errorf("readBody = %q, %v; want %q, %v", got, err, c.want, c.wantErr)
			}
			// Reading to the end lets HTTP/2 see END_STREAM: closing the
			// body earlier resets the stream.
			if err == nil && len(got) <= int(c.limit) && !r.sawEOF {
				t.Error("readBody stopped before the end of the body")
			}
		})
	}
}

// eofReader records whether its reader reported the end.
type eofReader struct {
	r      io.Reader
	sawEOF bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.sawEOF = true
	}
	return n, err
}
