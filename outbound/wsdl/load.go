package wsdl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
)

// Namespaces of WSDL 1.1, its SOAP bindings and XSD.
const (
	nsWSDL   = "http://schemas.xmlsoap.org/wsdl/"
	nsWSDL20 = "http://www.w3.org/ns/wsdl"
	nsSOAP11 = "http://schemas.xmlsoap.org/wsdl/soap/"
	nsSOAP12 = "http://schemas.xmlsoap.org/wsdl/soap12/"
	nsXSD    = "http://www.w3.org/2001/XMLSchema"
)

// location is where a document comes from: a URL (http or https) or a file
// path. The zero location is "in memory, no base": it cannot resolve
// imports.
type location struct {
	url  *url.URL // set for http(s)
	path string   // set for a file
}

// String names the location for error messages: a URL without its
// password or query values (see RedactURL).
func (l location) String() string {
	switch {
	case l.url != nil:
		return redactURL(l.url)
	case l.path != "":
		return l.path
	}
	return "the WSDL given in memory"
}

// key identifies a document so each is read once.
func (l location) key() string {
	if l.url != nil {
		u := *l.url
		u.Fragment = ""
		return u.String()
	}
	return "file:" + l.path
}

// rootLocation reads the location a caller gives Load or Parse: an http(s)
// URL, a file: URL or a file path.
func rootLocation(s string) (location, error) {
	if u, err := url.Parse(s); err == nil {
		switch strings.ToLower(u.Scheme) {
		case "http", "https":
			if u.Host == "" {
				return location{}, fmt.Errorf("WSDL location %q has no host", clip(s, 200))
			}
			return location{url: u}, nil
		case "file":
			p := u.Path
			if p == "" {
				p = u.Opaque
			}
			return filePath(p)
		case "":
		default:
			if len(u.Scheme) > 1 { // a one-letter scheme is a Windows drive
				return location{}, fmt.Errorf("WSDL location %q: scheme %q is not supported (use https://, http://, file: or a path)", clip(u.Redacted(), 200), u.Scheme)
			}
		}
	}
	return filePath(s)
}

func filePath(p string) (location, error) {
	if p == "" {
		return location{}, errors.New("the WSDL location is empty")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return location{}, fmt.Errorf("WSDL location %q: %w", clip(p, 200), err)
	}
	return location{path: abs}, nil
}

// resolve resolves ref (a wsdl:import location or an xsd schemaLocation)
// against base, the document naming it. A document read from a URL may only
// name URLs: the partner controls it, and must not make the relay read local
// files.
func resolve(base location, ref string) (location, error) {
	ref = strings.TrimSpace(ref)
	u, err := url.Parse(ref)
	if err != nil {
		return location{}, fmt.Errorf("%s names %q, which is not a valid location: %v", base, clip(ref, 200), err)
	}
	scheme := strings.ToLower(u.Scheme)
	switch {
	case base.url != nil:
		if scheme != "" && scheme != "http" && scheme != "https" {
			return location{}, fmt.Errorf("%s imports %q: a WSDL read from a URL may only import http(s) URLs, not files or other schemes", base, clip(ref, 200))
		}
		return location{url: base.url.ResolveReference(u)}, nil
	case base.path != "":
		switch {
		case scheme == "http" || scheme == "https":
			return location{url: u}, nil
		case scheme == "file":
			p := u.Path
			if p == "" {
				p = u.Opaque
			}
			return filePath(p)
		case scheme != "" && len(scheme) > 1:
			return location{}, fmt.Errorf("%s imports %q: scheme %q is not supported", base, clip(ref, 200), u.Scheme)
		}
		p := ref
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(base.path), filepath.FromSlash(p))
		}
		return location{path: filepath.Clean(p)}, nil
	}
	return location{}, fmt.Errorf("the WSDL given in memory imports %q, but it has no base location to resolve imports against", clip(ref, 200))
}

// loader reads the documents of one Load and collects their definitions.
type loader struct {
	fetch Fetch
	seen  map[string]bool // location keys read (or being read)
	count int             // documents read
	defs  *definitions
}

func newLoader(fetch Fetch) *loader {
	return &loader{fetch: fetch, seen: map[string]bool{}, defs: newDefinitions()}
}

// read reads and parses the document at loc, counting it against
// MaxDocuments.
func (l *loader) read(ctx context.Context, loc location) (*node, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", loc, err)
	}
	if l.count >= MaxDocuments {
		// Checked before fetching too: a refused document is not read at all.
		return nil, fmt.Errorf("reading %s: the WSDL needs more than %d documents (WSDL and schema imports), which is refused", loc, MaxDocuments)
	}
	var data []byte
	if loc.url != nil {
		if l.fetch == nil {
			return nil, fmt.Errorf("reading %s: no fetch function to read URLs with", loc)
		}
		b, err := l.fetch(ctx, loc.url.String())
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", loc, err)
		}
		data = b
	} else {
		b, err := readFile(loc.path)
		if err != nil {
			return nil, err
		}
		data = b
	}
	return l.parse(loc, data)
}

// parse counts and parses one document's bytes.
func (l *loader) parse(loc location, data []byte) (*node, error) {
	l.count++
	if l.count > MaxDocuments {
		return nil, fmt.Errorf("reading %s: the WSDL needs more than %d documents (WSDL and schema imports), which is refused", loc, MaxDocuments)
	}
	if len(data) > MaxDocumentSize {
		return nil, fmt.Errorf("reading %s: the document is %d bytes, more than the %d allowed", loc, len(data), MaxDocumentSize)
	}
	l.seen[loc.key()] = true
	root, err := parseXML(data)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", loc, err)
	}
	return root, nil
}

// readFile reads at most MaxDocumentSize bytes of a regular file.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("reading %s: not a regular file", path)
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, nil
}

// follow reads the document ref names from base, unless it was read
// already (which makes import cycles harmless). chameleonNS is the
// including schema's targetNamespace for xsd:include (a schema without a
// targetNamespace takes the includer's), "" otherwise.
func (l *loader) follow(ctx context.Context, base location, ref, chameleonNS string) error {
	loc, err := resolve(base, ref)
	if err != nil {
		return err
	}
	if l.seen[loc.key()] {
		return nil
	}
	root, err := l.read(ctx, loc)
	if err != nil {
		return err
	}
	return l.document(ctx, loc, root, chameleonNS)
}

// document collects the definitions of one parsed document and follows its
// imports: a WSDL 1.1 definitions or an XSD schema.
func (l *loader) document(ctx context.Context, loc location, root *node, chameleonNS string) error {
	switch {
	case isWSDL(root):
		return l.wsdlDocument(ctx, loc, root)
	case root.name.Space == nsXSD && root.name.Local == "schema":
		return l.schema(ctx, loc, root, chameleonNS)
	case root.name.Space == nsWSDL20:
		return fmt.Errorf("%s is a WSDL 2.0 description, which is not supported (only WSDL 1.1)", loc)
	}
	// The document's own names are not quoted: errors must not echo
	// what a partner's server returned.
	return fmt.Errorf("%s: the root element is neither a WSDL 1.1 definitions nor an XSD schema", loc)
}

func isWSDL(n *node) bool {
	return n.name.Space == nsWSDL && n.name.Local == "definitions"
}

// wsdlDocument collects a WSDL's messages, port types, bindings, services
// and inline schemas, following wsdl:import.
func (l *loader) wsdlDocument(ctx context.Context, loc location, root *node) error {
	tns := root.attr("targetNamespace")
	for _, c := range root.children {
		if c.name.Space != nsWSDL {
			continue
		}
		switch c.name.Local {
		case "import":
			if ref := c.attr("location"); ref != "" {
				if err := l.follow(ctx, loc, ref, ""); err != nil {
					return err
				}
			}
		case "types":
			for _, s := range c.each(nsXSD, "schema") {
				if err := l.schema(ctx, loc, s, ""); err != nil {
					return err
				}
			}
		case "message", "portType", "binding", "service":
			l.defs.add(loc, tns, c)
		}
	}
	return nil
}

// schema registers a schema's global components and follows its imports
// and includes that have a schemaLocation.
func (l *loader) schema(ctx context.Context, loc location, s *node, chameleonNS string) error {
	tns := s.attr("targetNamespace")
	if !s.hasAttr("targetNamespace") && chameleonNS != "" {
		tns = chameleonNS
	}
	l.defs.schemas.add(s, tns)
	for _, c := range s.children {
		if c.name.Space != nsXSD {
			continue
		}
		ref := c.attr("schemaLocation")
		if ref == "" {
			continue
		}
		switch c.name.Local {
		case "import":
			if err := l.follow(ctx, loc, ref, ""); err != nil {
				return err
			}
		case "include", "redefine":
			if err := l.follow(ctx, loc, ref, tns); err != nil {
				return err
			}
		}
	}
	return nil
}

// RedactURL writes a URL for an error message: without its password or
// fragment, and with the values of its query parameters (which may carry a
// token) replaced by "...": "https://h/svc?wsdl", "https://h/x?token=...".
// A string that is not an absolute URL (a file path) is returned as is.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(a URL that does not parse)"
	}
	if u.Scheme == "" || u.Host == "" {
		return raw
	}
	return redactURL(u)
}

func redactURL(u *url.URL) string {
	c := *u
	c.RawQuery, c.ForceQuery, c.Fragment, c.RawFragment = "", false, "", ""
	out := c.Redacted()
	if u.RawQuery == "" {
		return out
	}
	var names []string
	for _, kv := range strings.Split(u.RawQuery, "&") {
		k, v, _ := strings.Cut(kv, "=")
		if v != "" {
			k += "=..."
		}
		names = append(names, clip(k, 60))
	}
	return out + "?" + strings.Join(names, "&")
}
