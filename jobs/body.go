package jobs

import (
	"strings"
	"unicode/utf8"
)

// BucketBodies is the JetStream Object Store bucket of bodies too large for
// a message: request bodies flows upload, response bodies workers store.
const BucketBodies = "mtlsrelay_bodies"

// TenantBucketBodies is BucketBodies of a relay with tenants: each tenant
// has a bucket of its own, mtlsrelay_bodies_<tenant>, so that NATS
// permissions can give a tenant its own bodies and nobody else's (an
// Object Store's subjects carry no part of an object's name a permission
// could match). "" gives BucketBodies.
func TenantBucketBodies(tenant string) string {
	if tenant == "" {
		return BucketBodies
	}
	return BucketBodies + "_" + tenant
}

// RequestBodyRef is a call's body_ref: the name of the object in
// BucketBodies (a tenant's: TenantBucketBodies) that holds the request
// body.
type RequestBodyRef struct {
	Name string `json:"name"`
}

// BodyRef is a result's body_ref: where the response body is kept.
type BodyRef struct {
	// Bucket is the Object Store bucket: BucketBodies, or with tenants the
	// call's tenant's, TenantBucketBodies.
	Bucket string `json:"bucket"`
	// Name is the object's name.
	Name string `json:"name"`
	// Size is the body's length in bytes.
	Size int64 `json:"size"`
	// SHA256 is the hex SHA-256 of the body, to check it was read whole.
	SHA256 string `json:"sha256"`
	// ContentType is the response's Content-Type.
	ContentType string `json:"content_type,omitempty"`
}

// maxObjectName bounds an object name.
const maxObjectName = 1024

// CheckObjectName checks the name of a body_ref: 1-1024 bytes of UTF-8,
// no control characters, not starting or ending with "/".
func CheckObjectName(name string) *Error {
	switch {
	case name == "" || len(name) > maxObjectName:
		return Errorf(CodeInvalidCall, "body_ref.name must be 1-%d bytes", maxObjectName)
	case !utf8.ValidString(name) || strings.IndexFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return Errorf(CodeInvalidCall, "body_ref.name must be UTF-8 without control characters")
	case strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/"):
		return Errorf(CodeInvalidCall, "body_ref.name must not start or end with /")
	}
	return nil
}
