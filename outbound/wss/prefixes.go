package wss

import (
	"strconv"

	"github.com/beevik/etree"
)

// prefixes are the namespace prefixes Sign writes. Each is the customary
// one unless the envelope already binds it to another namespace somewhere,
// in which case a numbered variant is used: a new declaration of a taken
// prefix could change the meaning of the elements under it.
type prefixes struct {
	wsse, wsu, ds string
	declared      map[string]map[string]bool // prefix -> URIs bound to it
}

func newPrefixes(root *etree.Element) *prefixes {
	p := &prefixes{declared: map[string]map[string]bool{}}
	var walk func(el *etree.Element)
	walk = func(el *etree.Element) {
		for _, a := range el.Attr {
			if a.Space == "xmlns" {
				if p.declared[a.Key] == nil {
					p.declared[a.Key] = map[string]bool{}
				}
				p.declared[a.Key][a.Value] = true
			}
		}
		for _, c := range el.ChildElements() {
			walk(c)
		}
	}
	walk(root)
	p.wsse = p.pick("wsse", wsseNS)
	p.wsu = p.pick("wsu", wsuNS)
	p.ds = p.pick("ds", dsNS)
	return p
}

// pick returns want, or want1, want2, ..., the first that is bound to
// nothing but uri anywhere in the document, and reserves it for uri.
func (p *prefixes) pick(want, uri string) string {
	for i := 0; ; i++ {
		name := want
		if i > 0 {
			name += strconv.Itoa(i)
		}
		if name == "xml" || name == "xmlns" {
			continue
		}
		uris := p.declared[name]
		if len(uris) == 0 || (len(uris) == 1 && uris[uri]) {
			p.declared[name] = map[string]bool{uri: true}
			return name
		}
	}
}

// soapPrefix returns a prefix bound to the envelope's SOAP namespace for
// the mustUnderstand attribute: the Envelope's own when it has one, else a
// new one that Sign declares on the Security header (an envelope in the
// default namespace has no prefix to qualify an attribute with).
func (p *prefixes) soapPrefix(env *envelope) string {
	if env.root.Space != "" {
		return env.root.Space
	}
	return p.pick("soapenv", env.soapNS)
}
