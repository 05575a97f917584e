package cyberark

import (
	"strings"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// DefaultProperty is the property a reference without "#property" reads:
// the password object's content.
const DefaultProperty = "Content"

// Locator is a parsed cyberark: reference, "<safe>/<object>#<property>".
type Locator struct {
	// Safe is the Safe that holds the object.
	Safe string
	// Object is the name of the password object (the account's Name).
	Object string
	// Property is the property of the answer to return: Content (the
	// password, the default), another account property such as UserName or
	// Address, or a custom property of the object.
	Property string
}

// String returns the reference body, "Safe/Object#Property". It holds no
// secret.
func (l Locator) String() string { return l.Safe + "/" + l.Object + "#" + l.Property }

// ParseLocator parses the body of a cyberark: reference. The Safe is what
// comes before the first "/" (CyberArk Safe names cannot hold one), the
// property what follows the last "#"; an object whose name holds "#" is
// written with its property, e.g. "Safe/a#b#Content". Errors carry
// jobs.CodeKeystoreInvalid.
func ParseLocator(body string) (Locator, error) {
	rest, prop := body, DefaultProperty
	if i := strings.LastIndexByte(body, '#'); i >= 0 {
		rest, prop = body[:i], body[i+1:]
	}
	safe, object, ok := strings.Cut(rest, "/")
	l := Locator{Safe: safe, Object: object, Property: prop}
	switch {
	case !ok || strings.TrimSpace(safe) == "" || strings.TrimSpace(object) == "":
		return Locator{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference cyberark:%s does not name a Safe and an object; write cyberark:SAFE/OBJECT or cyberark:SAFE/OBJECT#PROPERTY", body)
	case strings.TrimSpace(prop) == "":
		return Locator{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference cyberark:%s has an empty property after #; write #Content for the password or the name of a property", body)
	case strings.ContainsAny(rest, unsupportedChars):
		return Locator{}, jobs.Errorf(jobs.CodeKeystoreInvalid,
			"secret reference cyberark:%s holds one of the characters + & %%, which the CCP does not support in requests; rename the Safe or object", body)
	}
	return l, nil
}

// locate parses ref, which must be of scheme cyberark.
func locate(ref secrets.Ref) (Locator, error) {
	if ref.Scheme != secrets.SchemeCyberArk {
		return Locator{}, jobs.Errorf(jobs.CodeInternal, "the CyberArk source was asked for a %s: reference", ref.Scheme)
	}
	return ParseLocator(ref.Body)
}
