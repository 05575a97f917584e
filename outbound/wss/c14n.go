package wss

import (
	"github.com/beevik/etree"
	dsig "github.com/russellhaering/goxmldsig"
	"github.com/russellhaering/goxmldsig/etreeutils"
)

// canonicalize returns the exclusive canonical form (without comments) of
// el as it stands in its document, honouring an InclusiveNamespaces
// prefixList. el is not modified.
func canonicalize(el *etree.Element, prefixList string) ([]byte, error) {
	detached, err := detach(el)
	if err != nil {
		return nil, err
	}
	return dsig.MakeC14N10ExclusiveCanonicalizerWithPrefixList(prefixList).Canonicalize(detached)
}

// detach copies el out of its document with every namespace in scope
// declared on the copy, so that canonicalizing the copy alone sees the
// bindings it inherits (exclusive c14n then drops the unused ones).
//
// It does what etreeutils.NSDetatch does, without that function's limit of
// 1000 elements per subtree: a SOAP Body of a few thousand elements (a
// long list) is ordinary and must still sign and verify.
func detach(el *etree.Element) (*etree.Element, error) {
	ctx, err := etreeutils.NSBuildParentContext(el)
	if err != nil {
		return nil, err
	}
	if ctx, err = ctx.SubContext(el); err != nil {
		return nil, err
	}
	c := el.Copy()
	attrs := c.Attr[:0]
	for _, a := range c.Attr {
		if a.Space == "xmlns" || (a.Space == "" && a.Key == "xmlns") {
			continue
		}
		attrs = append(attrs, a)
	}
	for prefix, uri := range ctx.Prefixes() {
		switch {
		case prefix == "xml" || prefix == "xmlns":
			// Implicit bindings, never declared.
		case prefix == "":
			// etreeutils binds the default prefix to the XML namespace
			// to mean "no default namespace".
			if uri != etreeutils.XMLNamespace {
				attrs = append(attrs, etree.Attr{Key: "xmlns", Value: uri})
			}
		default:
			attrs = append(attrs, etree.Attr{Space: "xmlns", Key: prefix, Value: uri})
		}
	}
	c.Attr = attrs
	return c, nil
}
