// Package wsdl reads a WSDL 1.1 description (with its wsdl:import,
// xsd:import and xsd:include documents) into what a SOAP call needs: the
// services and their SOAP 1.1/1.2 ports, each operation's SOAPAction, style
// and use, and a skeleton of the request's soap:Body built from the XSD
// types, so that a flow author can name an operation instead of writing the
// envelope by hand.
//
// WSDLs are partner-controlled, so the reader is defensive: a bounded number
// and size of documents, no DTDs or entities, bounded nesting, no file access
// from a document that was read from a URL, and a bounded skeleton.
package wsdl

import (
	"context"
	"fmt"
)

// Limits against hostile or runaway documents.
const (
	// MaxDocuments is how many documents (the WSDL and everything it
	// imports or includes) one Load reads at most.
	MaxDocuments = 32
	// MaxDocumentSize is the largest document, in bytes, Load accepts.
	MaxDocumentSize = 4 << 20
	// MaxDepth is the deepest element nesting Load accepts in a document.
	MaxDepth = 128
	// maxSkeletonDepth bounds how deep a skeleton expands nested types.
	maxSkeletonDepth = 10
	// maxSkeletonSize bounds one operation's skeleton, in bytes, comments
	// included.
	maxSkeletonSize = 256 << 10
	// maxSkeletonWork bounds the schema nodes one operation's skeleton
	// visits: nested group references and types used many times over grow
	// exponentially with the nesting, whatever the byte size.
	maxSkeletonWork = 200_000
	// maxTotalSkeletonSize and maxTotalSkeletonWork bound the skeletons of
	// all operations of one Load together.
	maxTotalSkeletonSize = 16 << 20
	maxTotalSkeletonWork = 4_000_000
	// MaxOperations is the most operations Load accepts over all ports
	// (an operation of a binding that two ports use counts twice), and
	// MaxPorts the most SOAP ports.
	MaxOperations = 10_000
	MaxPorts      = 1_000
)

// Fetch returns the bytes of the document at an absolute https (or http)
// URL. The caller's Fetch goes through the connection (mTLS, egress rules).
type Fetch func(ctx context.Context, url string) ([]byte, error)

// Description is what Load reads from a WSDL: its services with their SOAP
// ports.
type Description struct {
	TargetNamespace string    `json:"target_namespace"`
	Services        []Service `json:"services"`
}

// Service is a wsdl:service.
type Service struct {
	Name  string `json:"name"`
	Ports []Port `json:"ports"`
}

// Port is a wsdl:port whose binding is a SOAP 1.1 or SOAP 1.2 binding
// (other bindings, e.g. http:binding, are left out).
type Port struct {
	Name        string      `json:"name"`
	Binding     string      `json:"binding"`      // the binding's local name
	Address     string      `json:"address"`      // soap:address location
	SOAPVersion string      `json:"soap_version"` // "1.1" or "1.2"
	Operations  []Operation `json:"operations"`
}

// Operation is one operation of a SOAP binding.
type Operation struct {
	Name       string `json:"name"`
	SOAPAction string `json:"soap_action"` // "" when the binding gives none
	// Style is "document" or "rpc": the operation's soap:operation style,
	// else the binding's, else "document".
	Style string `json:"style"`
	// Use is "literal" or "encoded" (the input soap:body use).
	Use string `json:"use"`
	// Namespace is, for rpc, the input soap:body namespace: the namespace of
	// the wrapper element.
	Namespace string `json:"namespace,omitempty"`
	// Input is a skeleton of the soap:Body content of the request: the
	// elements with the XSD type names as text, namespaces declared on the
	// top element(s).
	Input string `json:"input"`
}

// Load reads the WSDL at location: an http(s) URL (read with fetch) or a
// file path (or file: URL). It follows wsdl:import, and xsd:import /
// xsd:include that have a schemaLocation, resolved relative to the document
// naming them, each document once (cycles are fine). A WSDL read from a URL
// may only import URLs (never file paths: the WSDL is partner-controlled); a
// file may import files or URLs.
//
// Limits against hostile documents: at most MaxDocuments documents, each at
// most MaxDocumentSize bytes, a DOCTYPE/ENTITY is refused (no XXE), nesting
// depth bounded by MaxDepth.
func Load(ctx context.Context, location string, fetch Fetch) (*Description, error) {
	l := newLoader(fetch)
	loc, err := rootLocation(location)
	if err != nil {
		return nil, err
	}
	root, err := l.read(ctx, loc)
	if err != nil {
		return nil, err
	}
	return l.describe(ctx, loc, root)
}

// Parse is Load for a document already in memory (base is where relative
// imports resolve; "" means imports are refused).
func Parse(ctx context.Context, data []byte, base string, fetch Fetch) (*Description, error) {
	l := newLoader(fetch)
	loc := location{}
	if base != "" {
		var err error
		if loc, err = rootLocation(base); err != nil {
			return nil, err
		}
	}
	root, err := l.parse(loc, data)
	if err != nil {
		return nil, err
	}
	return l.describe(ctx, loc, root)
}

// describe reads the root document and everything it names, then builds the
// Description.
func (l *loader) describe(ctx context.Context, loc location, root *node) (*Description, error) {
	if err := l.document(ctx, loc, root, ""); err != nil {
		return nil, err
	}
	if !isWSDL(root) {
		return nil, fmt.Errorf("%s: the root element is not a WSDL 1.1 <definitions> (%s)", loc, nsWSDL)
	}
	return l.defs.description(ctx, root.attr("targetNamespace"))
}
