package wsdl

import (
	"context"
	"encoding/xml"
	"fmt"
	"strings"
)

// definitions collects the WSDL components of every document read, by
// qualified name, so that a binding in one document can name a port type
// and messages in an imported one.
type definitions struct {
	messages  map[xml.Name]*node
	portTypes map[xml.Name]*node
	bindings  map[xml.Name]wsdlDecl
	services  []wsdlDecl // in reading order: the root document's first
	schemas   *schemas
	// ops are the operations of each SOAP binding, read once however many
	// ports use the binding (they share the slice).
	ops map[xml.Name][]Operation
}

// wsdlDecl is a WSDL component with the document and targetNamespace it
// was declared in.
type wsdlDecl struct {
	n   *node
	loc location
	tns string
}

func newDefinitions() *definitions {
	return &definitions{
		messages:  map[xml.Name]*node{},
		portTypes: map[xml.Name]*node{},
		bindings:  map[xml.Name]wsdlDecl{},
		schemas:   newSchemas(),
		ops:       map[xml.Name][]Operation{},
	}
}

// add registers one top-level WSDL component (message, portType, binding,
// service) of the document at loc whose targetNamespace is tns.
func (d *definitions) add(loc location, tns string, n *node) {
	name := xml.Name{Space: tns, Local: n.attr("name")}
	switch n.name.Local {
	case "message":
		if _, dup := d.messages[name]; !dup {
			d.messages[name] = n
		}
	case "portType":
		if _, dup := d.portTypes[name]; !dup {
			d.portTypes[name] = n
		}
	case "binding":
		if _, dup := d.bindings[name]; !dup {
			d.bindings[name] = wsdlDecl{n: n, loc: loc, tns: tns}
		}
	case "service":
		d.services = append(d.services, wsdlDecl{n: n, loc: loc, tns: tns})
	}
}

// description builds the Description: every service with its SOAP ports.
// Skeletons share one budget (see budget); ctx ending stops the work and
// fails the whole description with ctx's error. More than MaxPorts SOAP
// ports or MaxOperations operations over all ports is an error.
func (d *definitions) description(ctx context.Context, tns string) (*Description, error) {
	b := newBudget(ctx)
	desc := &Description{TargetNamespace: tns, Services: []Service{}}
	ports, ops := 0, 0
	for _, s := range d.services {
		svc := Service{Name: s.n.attr("name"), Ports: []Port{}}
		for _, p := range s.n.each(nsWSDL, "port") {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("reading the WSDL's operations: %w", err)
			}
			port, ok, err := d.port(s, p, b)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			ports++
			ops += len(port.Operations)
			if ports > MaxPorts {
				return nil, fmt.Errorf("the WSDL has more than %d SOAP ports, which is refused", MaxPorts)
			}
			if ops > MaxOperations {
				return nil, fmt.Errorf("the WSDL has more than %d operations over all its ports, which is refused", MaxOperations)
			}
			svc.Ports = append(svc.Ports, port)
		}
		desc.Services = append(desc.Services, svc)
	}
	if b.err != nil {
		return nil, fmt.Errorf("building the WSDL's skeletons: %w", b.err)
	}
	return desc, nil
}

// soapVersion returns "1.1" or "1.2" for a soap:* / soap12:* element's
// namespace, "" for anything else.
func soapVersion(space string) string {
	switch space {
	case nsSOAP11:
		return "1.1"
	case nsSOAP12:
		return "1.2"
	}
	return ""
}

// port reads one wsdl:port; ok is false when its binding is not SOAP.
func (d *definitions) port(s wsdlDecl, p *node, bud *budget) (Port, bool, error) {
	bname := p.qname(p.attr("binding"))
	b, found := d.bindings[bname]
	if !found {
		return Port{}, false, fmt.Errorf("%s: service %q port %q names binding %q, which no document defines", s.loc, s.n.attr("name"), p.attr("name"), clip(p.attr("binding"), 100))
	}
	var soapBinding *node
	for _, c := range b.n.children {
		if c.name.Local == "binding" && soapVersion(c.name.Space) != "" {
			soapBinding = c
			break
		}
	}
	if soapBinding == nil {
		return Port{}, false, nil // e.g. an http:binding
	}
	ns := soapBinding.name.Space
	port := Port{
		Name:        p.attr("name"),
		Binding:     bname.Local,
		SOAPVersion: soapVersion(ns),
		Operations:  []Operation{},
	}
	for _, c := range p.children {
		if c.name.Local == "address" && soapVersion(c.name.Space) != "" {
			port.Address = c.attr("location")
			break
		}
	}
	if ops, done := d.ops[bname]; done {
		port.Operations = ops
		return port, true, nil
	}
	pt := d.portTypes[b.n.qname(b.n.attr("type"))]
	bindingStyle := soapBinding.attr("style")
	for _, bo := range b.n.each(nsWSDL, "operation") {
		if len(port.Operations) >= MaxOperations {
			return Port{}, false, fmt.Errorf("binding %q has more than %d operations, which is refused", clip(bname.Local, 100), MaxOperations)
		}
		op, err := d.operation(b, pt, bo, ns, bindingStyle, bud)
		if err != nil {
			return Port{}, false, err
		}
		port.Operations = append(port.Operations, op)
	}
	d.ops[bname] = port.Operations
	return port, true, nil
}

// operation reads one binding operation: its SOAP attributes from the
// binding, its input message from the port type.
func (d *definitions) operation(b wsdlDecl, pt *node, bo *node, ns, bindingStyle string, bud *budget) (Operation, error) {
	op := Operation{Name: bo.attr("name"), Use: "literal"}
	style := bindingStyle
	if so := bo.first(ns, "operation"); so != nil {
		op.SOAPAction = so.attr("soapAction")
		if s := so.attr("style"); s != "" {
			style = s
		}
	}
	op.Style = "document"
	if style == "rpc" {
		op.Style = "rpc"
	}
	msgName, msg := d.inputMessage(pt, op.Name)
	var body *node
	var headerParts []string
	if in := bo.first(nsWSDL, "input"); in != nil {
		body = in.first(ns, "body")
		for _, h := range in.each(ns, "header") {
			// Only a header bound to a part of the input message itself
			// takes that part out of the body.
			if h.qname(h.attr("message")) == msgName {
				headerParts = append(headerParts, h.attr("part"))
			}
		}
	}
	if body != nil {
		if body.attr("use") == "encoded" {
			op.Use = "encoded"
		}
		if op.Style == "rpc" {
			op.Namespace = body.attr("namespace")
			if op.Namespace == "" {
				// WS-I requires the namespace; without one, stacks use the
				// WSDL's targetNamespace.
				op.Namespace = b.tns
			}
		}
	}
	if msg == nil {
		op.Input = fmt.Sprintf("<!-- no input message found for operation %s -->", commentSafe(op.Name))
		return op, nil
	}
	parts := selectParts(msg, body, headerParts)
	sk := newSkeleton(d.schemas, bud)
	if op.Style == "rpc" {
		op.Input = sk.rpc(op.Name, op.Namespace, parts)
	} else {
		op.Input = sk.document(parts)
	}
	return op, nil
}

// inputMessage returns the name and message of the port type operation's
// input; the message is nil when the port type, operation or message is
// missing.
func (d *definitions) inputMessage(pt *node, name string) (xml.Name, *node) {
	if pt == nil {
		return xml.Name{}, nil
	}
	for _, o := range pt.each(nsWSDL, "operation") {
		if o.attr("name") != name {
			continue
		}
		in := o.first(nsWSDL, "input")
		if in == nil {
			return xml.Name{}, nil
		}
		q := in.qname(in.attr("message"))
		return q, d.messages[q]
	}
	return xml.Name{}, nil
}

// selectParts returns the message parts that go into the soap:Body: those
// soap:body parts="..." names (all when absent, none when empty), less those
// bound to a soap:header. gSOAP writes parts="Body" on rpc messages whose
// parts have other names; when parts names none of the message's parts it
// is ignored, as zeep and gSOAP itself do.
func selectParts(msg *node, body *node, headerParts []string) []*node {
	all := msg.each(nsWSDL, "part")
	var keep []*node
	if body != nil && body.hasAttr("parts") {
		want := map[string]bool{}
		for _, p := range strings.Fields(body.attr("parts")) {
			want[p] = true
		}
		if len(want) == 0 {
			return nil
		}
		for _, p := range all {
			if want[p.attr("name")] {
				keep = append(keep, p)
			}
		}
	}
	if keep == nil {
		keep = all
	}
	header := map[string]bool{}
	for _, h := range headerParts {
		header[h] = true
	}
	var out []*node
	for _, p := range keep {
		if !header[p.attr("name")] {
			out = append(out, p)
		}
	}
	return out
}
