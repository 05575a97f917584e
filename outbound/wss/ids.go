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

// isIDAttr reports whether a names an element: wsu:Id, or an unprefixed
// Id, ID or id as xmlsec1, WCF and others resolve "#..." URIs by.
// Verify treats all of them as ids so that no element can hide behind a
// second attribute kind with the signed value.
func isIDAttr(a *etree.Attr) bool {
	switch a.Space {
	case "":
		return a.Key == "Id" || a.Key == "ID" || a.Key == "id"
	case "xmlns":
		return false
	}
	return a.Key == "Id" && a.NamespaceURI() == wsuNS
}

// idIndex maps each id value in a document to the element it names.
type idIndex struct {
	byID map[string]*etree.Element
	// dup is an id value carried more than once, if any.
	dup string
}

// indexIDs indexes every id attribute under root.
func indexIDs(root *etree.Element) *idIndex {
	ix := &idIndex{byID: map[string]*etree.Element{}}
	var walk func(el *etree.Element)
	walk = func(el *etree.Element) {
		for i := range el.Attr {
			a := &el.Attr[i]
			if !isIDAttr(a) {
				continue
			}
			if _, seen := ix.byID[a.Value]; seen && ix.dup == "" {
				ix.dup = a.Value
			}
			ix.byID[a.Value] = el
		}
		for _, c := range el.ChildElements() {
			walk(c)
		}
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
