package wsdl

import (
	"fmt"
	"slices"
	"strings"
)

// maxListed is how many operation names an "unknown operation" error lists.
const maxListed = 30

// Find returns the port and operation a call names. name is "Operation",
// "Port/Operation" or "Service/Port/Operation". version ("1.1", "1.2" or ""
// for any) narrows the ports. When several ports have the operation and
// they differ in SOAP version, SOAPAction or address, and the call did not
// narrow it, Find returns an error that names the qualified choices; when
// they are the same, the first wins. An unknown name gives an error that
// lists the operations that exist (sorted, unique, at most 30 names, then
// "and N more").
func (d *Description) Find(name, version string) (Port, Operation, error) {
	if version != "" && version != "1.1" && version != "1.2" {
		return Port{}, Operation{}, fmt.Errorf("SOAP version %q: use \"1.1\", \"1.2\" or leave it empty", clip(version, 20))
	}
	segs := strings.Split(name, "/")
	var service, port, op string
	switch len(segs) {
	case 1:
		op = segs[0]
	case 2:
		port, op = segs[0], segs[1]
	case 3:
		service, port, op = segs[0], segs[1], segs[2]
	default:
		return Port{}, Operation{}, fmt.Errorf("operation %q: give \"Operation\", \"Port/Operation\" or \"Service/Port/Operation\"", clip(name, 200))
	}
	if op == "" {
		return Port{}, Operation{}, fmt.Errorf("operation %q: the operation name is empty", clip(name, 200))
	}

	type match struct {
		service string
		port    Port
		op      Operation
	}
	var found []match
	for _, s := range d.Services {
		if service != "" && s.Name != service {
			continue
		}
		for _, p := range s.Ports {
			if port != "" && p.Name != port {
				continue
			}
			if version != "" && p.SOAPVersion != version {
				continue
			}
			for _, o := range p.Operations {
				if o.Name == op {
					found = append(found, match{s.Name, p, o})
				}
			}
		}
	}
	if len(found) == 0 {
		narrowed := ""
		if version != "" {
			narrowed = " over SOAP " + version
		}
		return Port{}, Operation{}, fmt.Errorf("the WSDL has no operation %q%s; it has: %s", clip(name, 200), narrowed, d.operationList())
	}
	first := found[0]
	var choices []string
	differ := false
	for _, m := range found {
		if m.port.SOAPVersion != first.port.SOAPVersion || m.op.SOAPAction != first.op.SOAPAction || m.port.Address != first.port.Address {
			differ = true
		}
		choices = append(choices, fmt.Sprintf("%s/%s/%s (SOAP %s, %s)", m.service, m.port.Name, m.op.Name, m.port.SOAPVersion, m.port.Address))
	}
	if differ {
		if len(choices) > maxListed {
			choices = append(choices[:maxListed], fmt.Sprintf("and %d more", len(choices)-maxListed))
		}
		return Port{}, Operation{}, fmt.Errorf("operation %q is on %d ports that differ in SOAP version, SOAPAction or address; name one of: %s (or give the SOAP version)", clip(name, 200), len(found), strings.Join(choices, ", "))
	}
	return first.port, first.op, nil
}

// operationList lists the names of the operations of all SOAP ports:
// sorted, unique, at most maxListed.
func (d *Description) operationList() string {
	var names []string
	for _, s := range d.Services {
		for _, p := range s.Ports {
			for _, o := range p.Operations {
				names = append(names, o.Name)
			}
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	if len(names) == 0 {
		return "no SOAP operations at all"
	}
	if len(names) > maxListed {
		return strings.Join(names[:maxListed], ", ") + fmt.Sprintf(" and %d more", len(names)-maxListed)
	}
	return strings.Join(names, ", ")
}
