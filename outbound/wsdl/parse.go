package wsdl

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// node is an element of a parsed document: just what the WSDL and XSD
// readers need (names, attributes, the namespaces in scope to resolve QName
// attribute values, children). Text is dropped: WSDL and XSD carry their
// meaning in elements and attributes.
type node struct {
	name     xml.Name // Space is the namespace URI
	attrs    []xml.Attr
	ns       *nsFrame // the namespaces in scope
	children []*node
}

// nsFrame is the namespace declarations of one element, linked to those of
// the nearest ancestor that has any. Elements without declarations share
// their parent's frame, so parsing is linear in the declarations however
// many are in scope, and a lookup walks at most MaxDepth frames.
type nsFrame struct {
	decls  map[string]string // prefix -> URI ("" is the default namespace)
	parent *nsFrame
}

// lookup returns the URI prefix is bound to in scope.
func (f *nsFrame) lookup(prefix string) (string, bool) {
	for ; f != nil; f = f.parent {
		if uri, ok := f.decls[prefix]; ok {
			return uri, true
		}
	}
	return "", false
}

// attr returns the value of the unqualified attribute local, or "".
func (n *node) attr(local string) string {
	for _, a := range n.attrs {
		if a.Name.Space == "" && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// hasAttr reports whether the unqualified attribute local is present.
func (n *node) hasAttr(local string) bool {
	for _, a := range n.attrs {
		if a.Name.Space == "" && a.Name.Local == local {
			return true
		}
	}
	return false
}

// qname resolves a QName attribute value ("p:local" or "local") with the
// namespaces in scope; an unprefixed name takes the default namespace, as
// XSD and WSDL QName values do.
func (n *node) qname(value string) xml.Name {
	value = strings.TrimSpace(value)
	if value == "" {
		return xml.Name{}
	}
	prefix, local, ok := strings.Cut(value, ":")
	if !ok {
		def, _ := n.ns.lookup("")
		return xml.Name{Space: def, Local: value}
	}
	uri, known := n.ns.lookup(prefix)
	if !known && prefix == "xml" {
		uri, known = "http://www.w3.org/XML/1998/namespace", true
	}
	if !known {
		// An undeclared prefix: keep it visible so lookups fail and say so.
		uri = "undeclared-prefix:" + prefix
	}
	return xml.Name{Space: uri, Local: local}
}

// each returns the children in namespace space named local ("" any name).
func (n *node) each(space, local string) []*node {
	var out []*node
	for _, c := range n.children {
		if c.name.Space == space && (local == "" || c.name.Local == local) {
			out = append(out, c)
		}
	}
	return out
}

// first returns the first child in namespace space named local, or nil.
func (n *node) first(space, local string) *node {
	for _, c := range n.children {
		if c.name.Space == space && c.name.Local == local {
			return c
		}
	}
	return nil
}

// parseXML parses one document into a tree, refusing DTDs (no entity
// expansion, no external entities: XXE), nesting deeper than MaxDepth, and
// character sets other than UTF-8, US-ASCII and ISO-8859-1. Errors do not
// quote the document.
func parseXML(data []byte) (*node, error) {
	d := xml.NewDecoder(bytes.NewReader(data))
	d.Strict = true
	d.CharsetReader = charsetReader
	var (
		root  *node
		stack []*node
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, xmlError(err)
		}
		switch t := tok.(type) {
		case xml.Directive:
			// <!DOCTYPE ...> (and with it <!ENTITY ...>): a WSDL never
			// needs one, and entities are how XXE and billion laughs work.
			return nil, errors.New("the document has a DOCTYPE/ENTITY declaration, which is refused (a WSDL or schema needs none)")
		case xml.StartElement:
			if len(stack) >= MaxDepth {
				return nil, fmt.Errorf("elements nest deeper than %d levels", MaxDepth)
			}
			n := &node{name: t.Name}
			var parentNS *nsFrame
			if len(stack) > 0 {
				parentNS = stack[len(stack)-1].ns
			}
			n.ns = parentNS // shared until the element declares a namespace
			for _, a := range t.Attr {
				prefix, isDecl := "", false
				switch {
				case a.Name.Space == "xmlns":
					prefix, isDecl = a.Name.Local, true
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					isDecl = true
				}
				if !isDecl {
					n.attrs = append(n.attrs, a)
					continue
				}
				if n.ns == parentNS {
					n.ns = &nsFrame{decls: map[string]string{}, parent: parentNS}
				}
				n.ns.decls[prefix] = a.Value
			}
			if len(stack) == 0 {
				if root != nil {
					return nil, errors.New("the document has more than one root element")
				}
				root = n
			} else {
				p := stack[len(stack)-1]
				p.children = append(p.children, n)
			}
			stack = append(stack, n)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if root == nil {
		return nil, errors.New("the document has no root element")
	}
	return root, nil
}

// xmlError shortens a decoder error: the line is what a person needs, and
// the message must not carry document content.
func xmlError(err error) error {
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		// encoding/xml's messages quote element names and other bits of
		// the document; those are left out.
		msg := se.Msg
		if strings.ContainsAny(msg, "<>\"'`") {
			msg = "syntax error"
		}
		return fmt.Errorf("not well-formed XML on line %d: %s", se.Line, clip(msg, 120))
	}
	return fmt.Errorf("not readable as XML: %s", clip(err.Error(), 160))
}

// clip cuts s to at most n bytes (on a rune boundary) so an error never
// echoes much of a document.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// charsetReader accepts the encodings WSDLs use in practice besides UTF-8.
func charsetReader(charset string, in io.Reader) (io.Reader, error) {
	switch strings.ToLower(charset) {
	case "utf-8", "utf8", "us-ascii", "ascii":
		return in, nil
	case "iso-8859-1", "latin1", "latin-1":
		b, err := io.ReadAll(in)
		if err != nil {
			return nil, err
		}
		var sb strings.Builder
		for _, c := range b {
			sb.WriteRune(rune(c))
		}
		return strings.NewReader(sb.String()), nil
	}
	return nil, fmt.Errorf("the document's encoding %q is not supported (use UTF-8)", clip(charset, 40))
}
