package partner

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
)

// Pattern returns n bytes that never repeat within 2^64 bytes: each 8-byte
// word is its own offset, big-endian. A body that lost, doubled or swapped
// a chunk on the way has another SHA-256, which a body of one repeated
// byte would not show.
func Pattern(n int64) io.Reader { return &pattern{left: n} }

type pattern struct {
	off, left int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(b) && p.left > 0 {
		var word [8]byte
		binary.BigEndian.PutUint64(word[:], uint64(p.off/8*8))
		k := copy(b[n:], word[p.off%8:])
		k = int(min(int64(k), p.left))
		n += k
		p.off += int64(k)
		p.left -= int64(k)
	}
	return n, nil
}

// PatternSHA256 is the hex SHA-256 of Pattern(n).
func PatternSHA256(n int64) string {
	h := sha256.New()
	_, _ = io.Copy(h, Pattern(n))
	return hex.EncodeToString(h.Sum(nil))
}

// BodyDigest is the JSON body of /sha256.
type BodyDigest struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// sha256 streams the request body through SHA-256 and answers its size and
// digest, holding none of it: the check of a large request body.
func (s *Server) sha256(w http.ResponseWriter, r *http.Request) {
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	if err != nil {
		http.Error(w, "reading the request body: "+err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(BodyDigest{Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
}
