package wsdl

import "encoding/xml"

// decl is a schema component with the schema context it was declared in,
// which decides the namespace of its local elements.
type decl struct {
	n         *node
	tns       string // the declaring schema's targetNamespace
	qualified bool   // the schema's elementFormDefault is "qualified"
}

// schemas indexes the global components of every schema read: elements,
// types (complex and simple) and model groups, by qualified name. The first
// declaration of a name wins, like most SOAP stacks.
type schemas struct {
	elements map[xml.Name]decl
	types    map[xml.Name]decl
	groups   map[xml.Name]decl
}

func newSchemas() *schemas {
	return &schemas{
		elements: map[xml.Name]decl{},
		types:    map[xml.Name]decl{},
		groups:   map[xml.Name]decl{},
	}
}

// add registers the global components of schema s, whose targetNamespace is
// tns (an included schema without one takes the includer's).
func (s *schemas) add(schema *node, tns string) {
	qualified := schema.attr("elementFormDefault") == "qualified"
	for _, c := range schema.children {
		if c.name.Space != nsXSD {
			continue
		}
		var into map[xml.Name]decl
		switch c.name.Local {
		case "element":
			into = s.elements
		case "complexType", "simpleType":
			into = s.types
		case "group":
			into = s.groups
		case "redefine":
			// A redefine's components replace the redefined schema's;
			// registering them first makes them win.
			s.add(c, tns)
			continue
		default:
			continue
		}
		name := xml.Name{Space: tns, Local: c.attr("name")}
		if name.Local == "" {
			continue
		}
		if _, dup := into[name]; !dup {
			into[name] = decl{n: c, tns: tns, qualified: qualified}
		}
	}
}

// child returns d's node's child as a decl in the same schema context.
func (d decl) child(n *node) decl {
	return decl{n: n, tns: d.tns, qualified: d.qualified}
}
