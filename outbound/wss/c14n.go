package wss

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/beevik/etree"
)

// xmlNS is the namespace the xml prefix is bound to.
const xmlNS = "http://www.w3.org/XML/1998/namespace"

// canonicalize returns the exclusive canonical form, without comments
// (http://www.w3.org/2001/10/xml-exc-c14n#), of el as it stands in its
// document, honouring an InclusiveNamespaces prefixList ("#default" names
// the default namespace). el is not modified.
//
// It is written here rather than taken from goxmldsig, whose exclusive
// c14n sorts prefixed attributes by local name instead of (namespace URI,
// local name), emits xmlns="" where no default namespace was rendered, and
// copies the whole in-scope prefix map at every element (quadratic in the
// namespace declarations of a hostile document). This one walks the subtree
// once, keeping the namespaces in scope and those rendered by output
// ancestors as maps with undo logs.
func canonicalize(el *etree.Element, prefixList string) ([]byte, error) {
	c := &c14n{
		inScope:  map[string]string{},
		rendered: map[string]string{},
	}
	for _, p := range strings.Fields(prefixList) {
		if p == "#default" {
			p = ""
		}
		c.inclusive = append(c.inclusive, p)
	}
	// The namespaces el inherits: its ancestors' declarations, outermost
	// first so inner ones win.
	var chain []*etree.Element
	for a := el.Parent(); a != nil; a = a.Parent() {
		chain = append(chain, a)
	}
	for i := len(chain) - 1; i >= 0; i-- {
		for _, a := range chain[i].Attr {
			if p, ok := nsDecl(a); ok && p != "xml" {
				c.inScope[p] = a.Value
			}
		}
	}
	if err := c.element(el); err != nil {
		return nil, err
	}
	return c.buf.Bytes(), nil
}

// nsDecl reports whether a is a namespace declaration and the prefix it
// declares ("" for the default namespace).
func nsDecl(a etree.Attr) (string, bool) {
	switch {
	case a.Space == "xmlns":
		return a.Key, true
	case a.Space == "" && a.Key == "xmlns":
		return "", true
	}
	return "", false
}

type c14n struct {
	buf       bytes.Buffer
	inclusive []string
	// inScope maps each prefix in scope to its URI; rendered, each prefix
	// an output ancestor declared in the output to the URI it declared.
	inScope, rendered       map[string]string
	undoScope, undoRendered []undo
}

// undo restores one map entry when an element is left.
type undo struct {
	prefix, uri string
	had         bool
}

type c14nAttr struct {
	uri, local, qname, value string
}

func set(m map[string]string, log *[]undo, prefix, uri string) {
	old, had := m[prefix]
	*log = append(*log, undo{prefix, old, had})
	m[prefix] = uri
}

func rollback(m map[string]string, log *[]undo, mark int) {
	for i := len(*log) - 1; i >= mark; i-- {
		u := (*log)[i]
		if u.had {
			m[u.prefix] = u.uri
		} else {
			delete(m, u.prefix)
		}
	}
	*log = (*log)[:mark]
}

func (c *c14n) element(e *etree.Element) error {
	scopeMark, renderedMark := len(c.undoScope), len(c.undoRendered)
	defer func() {
		rollback(c.inScope, &c.undoScope, scopeMark)
		rollback(c.rendered, &c.undoRendered, renderedMark)
	}()
	for _, a := range e.Attr {
		if p, ok := nsDecl(a); ok && p != "xml" {
			set(c.inScope, &c.undoScope, p, a.Value)
		}
	}

	// The prefixes the element visibly utilizes: its own (the default
	// namespace when it has none) and its prefixed attributes', plus the
	// InclusiveNamespaces ones in scope.
	if e.Space != "" {
		if _, ok := c.inScope[e.Space]; !ok {
			return fmt.Errorf("element <%s> uses an undeclared namespace prefix", truncate(e.FullTag(), 80))
		}
	}
	used := []string{e.Space}
	attrs := make([]c14nAttr, 0, len(e.Attr))
	for _, a := range e.Attr {
		if _, ok := nsDecl(a); ok {
			continue
		}
		at := c14nAttr{local: a.Key, qname: a.Key, value: a.Value}
		switch a.Space {
		case "":
		case "xml":
			at.uri, at.qname = xmlNS, "xml:"+a.Key
		default:
			uri, ok := c.inScope[a.Space]
			if !ok {
				return fmt.Errorf("attribute %s:%s uses an undeclared namespace prefix", truncate(a.Space, 40), truncate(a.Key, 40))
			}
			at.uri, at.qname = uri, a.Space+":"+a.Key
			used = append(used, a.Space)
		}
		attrs = append(attrs, at)
	}
	for _, p := range c.inclusive {
		if _, ok := c.inScope[p]; ok || p == "" {
			used = append(used, p)
		}
	}
	slices.Sort(used) // "" (the default namespace) sorts first, as c14n wants
	used = slices.Compact(used)

	c.buf.WriteByte('<')
	c.buf.WriteString(e.FullTag())
	for _, p := range used {
		uri := c.inScope[p] // "" for no default namespace
		if prev, ok := c.rendered[p]; ok && prev == uri || !ok && p == "" && uri == "" {
			continue // the nearest output ancestor rendered the same
		}
		set(c.rendered, &c.undoRendered, p, uri)
		if p == "" {
			c.buf.WriteString(` xmlns="`)
		} else {
			c.buf.WriteString(` xmlns:` + p + `="`)
		}
		escapeAttr(&c.buf, uri)
		c.buf.WriteByte('"')
	}
	slices.SortFunc(attrs, func(a, b c14nAttr) int {
		if n := strings.Compare(a.uri, b.uri); n != 0 {
			return n
		}
		return strings.Compare(a.local, b.local)
	})
	for _, a := range attrs {
		c.buf.WriteString(" " + a.qname + `="`)
		escapeAttr(&c.buf, a.value)
		c.buf.WriteByte('"')
	}
	c.buf.WriteByte('>')
	for _, t := range e.Child {
		switch t := t.(type) {
		case *etree.Element:
			if err := c.element(t); err != nil {
				return err
			}
		case *etree.CharData:
			escapeText(&c.buf, t.Data)
		case *etree.ProcInst:
			c.buf.WriteString("<?" + t.Target)
			if t.Inst != "" {
				c.buf.WriteString(" " + t.Inst)
			}
			c.buf.WriteString("?>")
		case *etree.Comment:
			// Exclusive c14n without comments.
		case *etree.Directive:
			return errors.New("a <!...> directive inside an element cannot be canonicalized")
		}
	}
	c.buf.WriteString("</" + e.FullTag() + ">")
	return nil
}

// escapeText escapes character data as c14n does.
func escapeText(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; ch {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '\r':
			b.WriteString("&#xD;")
		default:
			b.WriteByte(ch)
		}
	}
}

// escapeAttr escapes an attribute value as c14n does.
func escapeAttr(b *bytes.Buffer, s string) {
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; ch {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '"':
			b.WriteString("&quot;")
		case '\t':
			b.WriteString("&#x9;")
		case '\n':
			b.WriteString("&#xA;")
		case '\r':
			b.WriteString("&#xD;")
		default:
			b.WriteByte(ch)
		}
	}
}
