package worker

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
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := readBody(strings.NewReader(c.body), c.contentLength, c.limit)
			if string(got) != c.want || !errors.Is(err, c.wantErr) {
				t.Errorf("readBody = %q, %v; want %q, %v", got, err, c.want, c.wantErr)
			}
		})
	}
}
