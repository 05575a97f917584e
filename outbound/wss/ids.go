package wss

import (
	"crypto/rand"
	"encoding/hex"

	"github.com/beevik/etree"
)

// newID returns a fresh random xsd:ID value (an NCName: it starts with a
// letter) with a prefix that tells what it names, e.g. "TS-3f…".
func newID(kind string) string {
	var b [16]byte
	// crypto/rand.Read never fails (it panics on a broken kernel source).
	_, _ = rand.Read(b[:])
	return kind + "-" + hex.EncodeToString(b[:])
}

// isIDAttr reports whether a, whose namespace URI is uri, names an
// element: wsu:Id, or an unprefixed Id, ID or id as xmlsec1, WCF and
// others resolve "#..." URIs by. Verify treats all of them as ids so that
// no element can hide behind a second attribute kind with the signed
// value.
func isIDAttr(a *etree.Attr, uri string) bool {
	switch a.Space {
	case "":
		return a.Key == "Id" || a.Key == "ID" || a.Key == "id"
	case "xmlns":
		return false
	}
	return a.Key == "Id" && uri == wsuNS
}

// idIndex maps each id value in a document to the element it names.
type idIndex struct {
	byID map[string]*etree.Element
	// dup is an id value carried more than once, if any; dups are all of
	// them.
	dup  string
	dups map[string]bool
}

// indexIDs indexes every id attribute under root. It resolves prefixes
// with a scope it keeps while walking, not etree's NamespaceURI, which
// walks up the ancestors at each call.
func indexIDs(root *etree.Element) *idIndex {
	ix := &idIndex{byID: map[string]*etree.Element{}, dups: map[string]bool{}}
	scope := map[string]string{}
	for a := root.Parent(); a != nil; a = a.Parent() {
		for _, at := range a.Attr {
			if p, ok := nsDecl(at); ok {
				if _, inner := scope[p]; !inner {
					scope[p] = at.Value
				}
			}
		}
	}
	var log []undo
	var walk func(el *etree.Element)
	walk = func(el *etree.Element) {
		mark := len(log)
		for _, a := range el.Attr {
			if p, ok := nsDecl(a); ok {
				set(scope, &log, p, a.Value)
			}
		}
		for i := range el.Attr {
			a := &el.Attr[i]
			if !isIDAttr(a, scope[a.Space]) {
				continue
			}
			if _, seen := ix.byID[a.Value]; seen {
				if ix.dup == "" {
					ix.dup = a.Value
				}
				ix.dups[a.Value] = true
			}
			ix.byID[a.Value] = el
		}
		for _, c := range el.ChildElements() {
			walk(c)
		}
		rollback(scope, &log, mark)
	}
	walk(root)
	return ix
}

// wsuID returns el's wsu:Id value, or "".
func wsuID(el *etree.Element) string {
	for i := range el.Attr {
		a := &el.Attr[i]
		if a.Key == "Id" && a.Space != "" && a.Space != "xmlns" && a.NamespaceURI() == wsuNS {
			return a.Value
		}
	}
	return ""
}
