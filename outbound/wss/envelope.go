package wss

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/beevik/etree"
)

// envelope is a parsed SOAP envelope and its parts.
type envelope struct {
	doc    *etree.Document
	root   *etree.Element
	soapNS string
	header *etree.Element // nil when absent
	body   *etree.Element
}

// Limits on the envelopes Sign and Verify read. A SOAP message that
// exceeds them is refused before any canonicalization or digest work: the
// flow's body (for Sign) and the partner's response (for Verify) are
// untrusted input, and namespace-heavy or huge documents are how XML
// signature processing is made to burn CPU.
const (
	// MaxElements is the most elements an envelope may have.
	MaxElements = 100_000
	// MaxNamespaceDecls is the most namespace declarations that may be in
	// scope at any element (counting every declaration on the path from
	// the root).
	MaxNamespaceDecls = 256
	// MaxDepth is the deepest element nesting accepted.
	MaxDepth = 512
)

// ErrLimits marks envelopes refused for exceeding MaxElements,
// MaxNamespaceDecls or MaxDepth.
var ErrLimits = errors.New("wss: the envelope exceeds the limits for signing and verifying")

// parseEnvelope parses a SOAP 1.1 or 1.2 envelope. A DOCTYPE is refused:
// SOAP forbids one, and it is where entity tricks hide. So is anything
// after the root element but whitespace, comments and processing
// instructions (a second root, text), duplicate attributes, and an
// envelope over the limits above. Literal tabs and line breaks in
// attribute values are normalized to spaces first, as every conforming XML
// parser does (etree, on encoding/xml, keeps them).
func parseEnvelope(b []byte) (*envelope, error) {
	b = normalizeAttrWhitespace(b)
	doc := etree.NewDocument()
	doc.ReadSettings.MaxDepth = MaxDepth
	doc.ReadSettings.PreserveDuplicateAttrs = true
	if err := doc.ReadFromBytes(b); err != nil {
		if errors.Is(err, etree.ErrMaxDepth) {
			return nil, fmt.Errorf("%w: elements nest deeper than %d levels", ErrLimits, MaxDepth)
		}
		return nil, fmt.Errorf("wss: the envelope is not well-formed XML: %v", err)
	}
	var root *etree.Element
	for _, t := range doc.Child {
		switch t := t.(type) {
		case *etree.Directive:
			return nil, errors.New("wss: the envelope has a DOCTYPE, which SOAP forbids")
		case *etree.Element:
			if root != nil {
				return nil, errors.New("wss: the document has content after the envelope (a second root element)")
			}
			root = t
		case *etree.CharData:
			if strings.TrimLeft(t.Data, " \t\r\n") != "" {
				return nil, errors.New("wss: the document has text outside the envelope")
			}
		}
	}
	if root == nil {
		return nil, errors.New("wss: the envelope has no root element")
	}
	if err := checkTree(root); err != nil {
		return nil, err
	}
	ns := root.NamespaceURI()
	if root.Tag != tagEnvelope || (ns != soap11NS && ns != soap12NS) {
		return nil, fmt.Errorf("wss: the root element is {%s}%s, not a SOAP 1.1 or 1.2 Envelope", ns, root.Tag)
	}
	env := &envelope{doc: doc, root: root, soapNS: ns}
	for _, c := range root.ChildElements() {
		if c.NamespaceURI() != ns {
			continue
		}
		switch c.Tag {
		case tagHeader:
			if env.header != nil {
				return nil, errors.New("wss: the envelope has more than one soap:Header")
			}
			env.header = c
		case tagBody:
			if env.body != nil {
				return nil, errors.New("wss: the envelope has more than one soap:Body")
			}
			env.body = c
		}
	}
	if env.body == nil {
		return nil, errors.New("wss: the envelope has no soap:Body")
	}
	return env, nil
}

// childrenNamed returns el's child elements named {ns}local.
func childrenNamed(el *etree.Element, ns, local string) []*etree.Element {
	if el == nil {
		return nil
	}
	var out []*etree.Element
	for _, c := range el.ChildElements() {
		if c.Tag == local && c.NamespaceURI() == ns {
			out = append(out, c)
		}
	}
	return out
}

// oneChild returns el's only child named {ns}local, nil when there is
// none, and an error when there are several.
func oneChild(el *etree.Element, ns, local, what string) (*etree.Element, error) {
	cs := childrenNamed(el, ns, local)
	switch len(cs) {
	case 0:
		return nil, nil
	case 1:
		return cs[0], nil
	}
	return nil, fmt.Errorf("wss: %s appears %d times", what, len(cs))
}

// serialize writes doc so that it parses back to the same infoset: the
// canonical escapes keep a carriage return in text or a tab or newline in
// an attribute from being normalized away on the receiver's side, which
// would change what the digests cover.
func serialize(doc *etree.Document) ([]byte, error) {
	doc.WriteSettings = etree.WriteSettings{CanonicalText: true, CanonicalAttrVal: true}
	return doc.WriteToBytes()
}

// checkTree checks the limits and well-formedness rules etree does not:
// element count, namespace declarations in scope, duplicate attributes,
// empty prefixed namespace declarations, directives inside elements.
func checkTree(root *etree.Element) error {
	type item struct {
		el    *etree.Element
		decls int
	}
	stack := []item{{root, 0}}
	count := 0
	seen := map[[2]string]bool{}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		count++
		if count > MaxElements {
			return fmt.Errorf("%w: more than %d elements", ErrLimits, MaxElements)
		}
		decls := it.decls
		clear(seen)
		for _, a := range it.el.Attr {
			k := [2]string{a.Space, a.Key}
			if seen[k] {
				return fmt.Errorf("wss: element <%s> has the attribute %s twice", truncate(it.el.FullTag(), 80), truncate(a.FullKey(), 80))
			}
			seen[k] = true
			if p, ok := nsDecl(a); ok {
				decls++
				if p != "" && a.Value == "" {
					return fmt.Errorf("wss: element <%s> undeclares the prefix %s, which XML 1.0 namespaces do not allow", truncate(it.el.FullTag(), 80), truncate(p, 40))
				}
			}
		}
		if decls > MaxNamespaceDecls {
			return fmt.Errorf("%w: more than %d namespace declarations in scope at <%s>", ErrLimits, MaxNamespaceDecls, truncate(it.el.FullTag(), 80))
		}
		for _, t := range it.el.Child {
			switch t := t.(type) {
			case *etree.Element:
				stack = append(stack, item{t, decls})
			case *etree.Directive:
				return errors.New("wss: the envelope holds a <!...> directive inside an element")
			}
		}
	}
	return nil
}

// normalizeAttrWhitespace returns b with literal tabs, line feeds and
// carriage returns (a CR LF pair as one) inside attribute values replaced
// by spaces: XML's attribute-value normalization, which encoding/xml (and
// so etree) skips. Character references (&#9;) are untouched: they stand
// for the character itself. Comments, CDATA sections, processing
// instructions and end tags are copied as they are. b is returned as is
// when there is nothing to change.
func normalizeAttrWhitespace(b []byte) []byte {
	var out []byte // nil until a change is needed
	last := 0      // b[last:i] not yet copied to out
	skipTo := func(i int, end string) int {
		j := bytes.Index(b[i:], []byte(end))
		if j < 0 {
			return len(b)
		}
		return i + j + len(end)
	}
	for i := 0; i < len(b); {
		if b[i] != '<' {
			i++
			continue
		}
		rest := b[i:]
		switch {
		case bytes.HasPrefix(rest, []byte("<!--")):
			i = skipTo(i+4, "-->")
			continue
		case bytes.HasPrefix(rest, []byte("<![CDATA[")):
			i = skipTo(i+9, "]]>")
			continue
		case bytes.HasPrefix(rest, []byte("<?")):
			i = skipTo(i+2, "?>")
			continue
		case bytes.HasPrefix(rest, []byte("<!")), bytes.HasPrefix(rest, []byte("</")):
			i = skipTo(i+2, ">")
			continue
		}
		// A start tag: up to the '>' outside quotes.
		var quote byte
		i++
		for i < len(b) {
			ch := b[i]
			if quote == 0 {
				if ch == '"' || ch == '\'' {
					quote = ch
				} else if ch == '>' {
					break
				}
				i++
				continue
			}
			switch ch {
			case quote:
				quote = 0
			case '\t', '\n', '\r':
				out = append(out, b[last:i]...)
				out = append(out, ' ')
				if ch == '\r' && i+1 < len(b) && b[i+1] == '\n' {
					i++
				}
				last = i + 1
			}
			i++
		}
	}
	if out == nil {
		return b
	}
	return append(out, b[last:]...)
}
