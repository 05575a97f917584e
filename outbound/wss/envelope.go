package wss

import (
	"errors"
	"fmt"

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

// parseEnvelope parses a SOAP 1.1 or 1.2 envelope. A DOCTYPE is refused:
// SOAP forbids one, and it is where entity tricks hide.
func parseEnvelope(b []byte) (*envelope, error) {
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(b); err != nil {
		return nil, fmt.Errorf("wss: the envelope is not well-formed XML: %v", err)
	}
	for _, t := range doc.Child {
		if _, ok := t.(*etree.Directive); ok {
			return nil, errors.New("wss: the envelope has a DOCTYPE, which SOAP forbids")
		}
	}
	root := doc.Root()
	if root == nil {
		return nil, errors.New("wss: the envelope has no root element")
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
