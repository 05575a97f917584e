package wsdl

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"slices"
	"strings"
)

// skeleton writes the request body skeleton of one operation, SoapUI-like:
// every element the types allow (optional ones too, repeated ones once),
// the XSD simple type's name as text, the first branch of a choice with a
// comment naming the others. Namespace prefixes (tns, ns1, ...) are declared
// on each top element so every top element stands on its own.
type skeleton struct {
	schemas   *schemas
	budget    *budget
	work      int // schema nodes visited for this skeleton
	buf       bytes.Buffer
	prefixes  map[string]string // namespace -> prefix, for the current top element
	order     []string          // namespaces in the order they got a prefix
	expanding []xml.Name        // named types and groups being expanded (recursion guard)
	// cut says why the skeleton stopped early ("" while it has not).
	cut string
}

// budget bounds the skeletons of one Load: the work (schema nodes visited)
// and bytes of each operation's skeleton, their totals over the Load, and
// the Load's context. Nested group references, types that use each other
// many times over, or thousands of operations make a small WSDL expand
// exponentially otherwise.
type budget struct {
	ctx        context.Context
	work       int   // total schema nodes visited
	bytes      int   // total skeleton bytes written
	err        error // the context's error, once it ended
	sinceCheck int
}

func newBudget(ctx context.Context) *budget { return &budget{ctx: ctx} }

// exhausted says why no more skeleton may be built in this Load, "" when
// it may.
func (b *budget) exhausted() string {
	switch {
	case b.err != nil:
		return "the WSDL took too long to read"
	case b.work >= maxTotalSkeletonWork:
		return fmt.Sprintf("the WSDL's skeletons took more than %d steps in all", maxTotalSkeletonWork)
	case b.bytes >= maxTotalSkeletonSize:
		return fmt.Sprintf("the WSDL's skeletons exceed %d bytes in all", maxTotalSkeletonSize)
	}
	return ""
}

// declMark stands, in the buffer, where the top element's namespace
// declarations go once they are known. NUL cannot occur in XML text, so it
// cannot collide with anything the schemas contribute.
const declMark = "\x00"

func newSkeleton(s *schemas, b *budget) *skeleton {
	return &skeleton{schemas: s, budget: b}
}

// step counts one schema node visited and reports whether the skeleton may
// go on: false once this skeleton's or the Load's budget is spent or the
// context has ended. Every expanding function calls it first, so once it
// returns false no function recurses any further.
func (s *skeleton) step() bool {
	if s.cut != "" {
		return false
	}
	s.work++
	b := s.budget
	b.work++
	if b.sinceCheck++; b.sinceCheck >= 1024 {
		b.sinceCheck = 0
		if b.err == nil {
			b.err = b.ctx.Err()
		}
	}
	switch {
	case s.work > maxSkeletonWork:
		s.cut = fmt.Sprintf("skeleton cut: expanding it took more than %d steps", maxSkeletonWork)
	case s.buf.Len() > maxSkeletonSize:
		s.cut = fmt.Sprintf("skeleton cut at %d bytes", maxSkeletonSize)
	default:
		if why := b.exhausted(); why != "" {
			s.cut = "skeleton cut: " + why
		}
	}
	return s.cut == ""
}

// room reports whether n more bytes fit in this skeleton's budget; when
// not, the skeleton is cut.
func (s *skeleton) room(n int) bool {
	if s.cut != "" {
		return false
	}
	if s.buf.Len()+n > maxSkeletonSize {
		s.cut = fmt.Sprintf("skeleton cut at %d bytes", maxSkeletonSize)
		return false
	}
	if s.budget.bytes+s.buf.Len()+n > maxTotalSkeletonSize {
		s.cut = "skeleton cut: " + fmt.Sprintf("the WSDL's skeletons exceed %d bytes in all", maxTotalSkeletonSize)
		return false
	}
	return true
}

// document writes one element per part: the part's element, or for a part
// with a type= (not WS-I, but seen) an unqualified element named after the
// part.
func (s *skeleton) document(parts []*node) string {
	for _, p := range parts {
		s.top(func() { s.part(p, 0) })
	}
	return s.finish()
}

// rpc writes the rpc wrapper: an element named after the operation in the
// soap:body namespace, one child per part (unqualified for type= parts, the
// global element for element= parts).
func (s *skeleton) rpc(operation, namespace string, parts []*node) string {
	s.top(func() {
		s.write(xml.Name{Space: namespace, Local: operation}, true, func() {
			for _, p := range parts {
				s.part(p, 1)
			}
		})
	})
	return s.finish()
}

// part writes the element for one message part.
func (s *skeleton) part(p *node, depth int) {
	if !s.step() {
		return
	}
	if el := p.attr("element"); el != "" {
		q := p.qname(el)
		d, ok := s.schemas.elements[q]
		if !ok {
			s.comment(fmt.Sprintf("part %s: element %s is not declared in any schema read", p.attr("name"), q.Local))
			return
		}
		s.element(d, true, depth)
		return
	}
	q := p.qname(p.attr("type"))
	s.write(xml.Name{Local: p.attr("name")}, depth == 0, func() { s.typeContent(q, depth) })
}

// top writes one top-level element and then puts the namespace
// declarations it needs on its start tag.
func (s *skeleton) top(write func()) {
	s.prefixes, s.order = map[string]string{}, nil
	start := s.buf.Len()
	write()
	var decls strings.Builder
	for _, ns := range s.order {
		fmt.Fprintf(&decls, ` xmlns:%s="`, s.prefixes[ns])
		xml.EscapeText(&decls, []byte(ns))
		decls.WriteByte('"')
	}
	out := s.buf.Bytes()[start:]
	if i := bytes.Index(out, []byte(declMark)); i >= 0 {
		fixed := slices.Concat(out[:i], []byte(decls.String()), out[i+1:])
		s.buf.Truncate(start)
		s.buf.Write(fixed)
	}
}

// finish returns the skeleton, ending with a comment saying why when it
// was cut, and counts its bytes against the Load's budget.
func (s *skeleton) finish() string {
	if s.cut != "" {
		// Written past the budget: the comment is short, and says why
		// the skeleton is incomplete.
		s.buf.WriteString("<!-- " + commentSafe(s.cut) + " -->")
	}
	s.budget.bytes += s.buf.Len()
	return s.buf.String()
}

// prefix returns the prefix for namespace ns, allocating one.
func (s *skeleton) prefix(ns string) string {
	if p, ok := s.prefixes[ns]; ok {
		return p
	}
	p := "tns"
	if len(s.order) > 0 {
		p = fmt.Sprintf("ns%d", len(s.order))
	}
	s.prefixes[ns] = p
	s.order = append(s.order, ns)
	return p
}

// write writes element name with content; an element with no content is
// written empty-tagged. isTop marks where the declarations go.
func (s *skeleton) write(name xml.Name, isTop bool, content func()) {
	if !s.step() {
		return
	}
	tag := name.Local
	if name.Space != "" {
		tag = s.prefix(name.Space) + ":" + name.Local
	}
	// The start tag and, later, the end tag; the end tag is written even
	// when the content cuts the skeleton, to keep it well-formed.
	if !s.room(2*len(tag) + 5 + len(declMark)) {
		return
	}
	s.buf.WriteString("<" + tag)
	if isTop {
		s.buf.WriteString(declMark)
	}
	s.buf.WriteByte('>')
	mark := s.buf.Len()
	content()
	if s.buf.Len() == mark {
		s.buf.Truncate(mark - 1)
		s.buf.WriteString("/>")
		return
	}
	s.buf.WriteString("</" + tag + ">")
}

func (s *skeleton) text(t string) {
	if !s.room(6 * len(t)) { // escaping at most sextuples a byte (&quot;)
		return
	}
	xml.EscapeText(&s.buf, []byte(t))
}

func (s *skeleton) comment(c string) {
	c = "<!-- " + commentSafe(c) + " -->"
	if !s.step() || !s.room(len(c)) {
		return
	}
	s.buf.WriteString(c)
}

// commentSafe makes c fit in an XML comment (no "--", no trailing "-") and
// short.
func commentSafe(c string) string {
	c = clip(c, 200)
	for strings.Contains(c, "--") {
		c = strings.ReplaceAll(c, "--", "- -")
	}
	return strings.TrimSuffix(c, "-")
}

// element writes an xsd:element: a global one (always in its schema's
// namespace) or a local one (qualified by form or elementFormDefault).
func (s *skeleton) element(d decl, global bool, depth int) {
	if !s.step() {
		return
	}
	n := d.n
	if ref := n.attr("ref"); ref != "" {
		q := n.qname(ref)
		target, ok := s.schemas.elements[q]
		if !ok {
			s.comment("element " + q.Local + " is not declared in any schema read")
			return
		}
		s.element(target, true, depth)
		return
	}
	if n.attr("maxOccurs") == "0" {
		return // prohibited
	}
	name := xml.Name{Local: n.attr("name")}
	switch {
	case global, n.attr("form") == "qualified":
		name.Space = d.tns
	case n.attr("form") == "unqualified":
	case d.qualified:
		name.Space = d.tns
	}
	if depth > maxSkeletonDepth {
		s.write(name, depth == 0, func() {})
		return
	}
	s.write(name, depth == 0, func() {
		switch {
		case n.hasAttr("type"):
			s.typeContent(n.qname(n.attr("type")), depth)
		case n.first(nsXSD, "complexType") != nil:
			s.complexType(d.child(n.first(nsXSD, "complexType")), depth)
		case n.first(nsXSD, "simpleType") != nil:
			s.text(s.simpleText(d.child(n.first(nsXSD, "simpleType")), 0))
		default:
			s.text("anyType")
		}
	})
}

// typeContent writes the content of an element of the named type q.
func (s *skeleton) typeContent(q xml.Name, depth int) {
	if !s.step() {
		return
	}
	if q.Space == nsXSD {
		s.text(q.Local)
		return
	}
	d, ok := s.schemas.types[q]
	if !ok {
		s.comment("type " + q.Local + " is not declared in any schema read")
		return
	}
	if d.n.name.Local == "simpleType" {
		s.text(s.simpleText(d, 0))
		return
	}
	s.named(q, func() { s.complexType(d, depth) })
}

// named runs expand unless the named type or group q is already being
// expanded: a type that contains itself shows its element once, empty.
func (s *skeleton) named(q xml.Name, expand func()) {
	if slices.Contains(s.expanding, q) {
		return
	}
	s.expanding = append(s.expanding, q)
	expand()
	s.expanding = s.expanding[:len(s.expanding)-1]
}

// complexType writes the content of a complexType: its particles, its
// base type's content first for an extension, the base's text for simple
// content. Attributes are left out: the skeleton shows elements.
func (s *skeleton) complexType(d decl, depth int) {
	if !s.step() {
		return
	}
	for _, c := range d.n.children {
		if c.name.Space != nsXSD {
			continue
		}
		switch c.name.Local {
		case "sequence", "all", "choice", "group":
			s.particle(d.child(c), depth)
		case "simpleContent":
			for _, dr := range c.children {
				if dr.name.Space == nsXSD && (dr.name.Local == "extension" || dr.name.Local == "restriction") {
					s.simpleContent(d.child(dr))
					break
				}
			}
		case "complexContent":
			for _, dr := range c.children {
				if dr.name.Space != nsXSD || (dr.name.Local != "extension" && dr.name.Local != "restriction") {
					continue
				}
				if dr.name.Local == "extension" {
					// A restriction restates the content it keeps; an
					// extension appends to its base's.
					base := dr.qname(dr.attr("base"))
					if bd, ok := s.schemas.types[base]; ok && bd.n.name.Local == "complexType" {
						s.named(base, func() { s.complexType(bd, depth) })
					}
				}
				for _, p := range dr.children {
					if p.name.Space == nsXSD && (p.name.Local == "sequence" || p.name.Local == "all" || p.name.Local == "choice" || p.name.Local == "group") {
						s.particle(d.child(p), depth)
					}
				}
				break
			}
		}
	}
}

// simpleContent writes the text of a complexType with simple content: the
// base type's name (or, for a complex base, its own simple content).
func (s *skeleton) simpleContent(d decl) {
	if !s.step() {
		return
	}
	base := d.n.qname(d.n.attr("base"))
	if base.Space == nsXSD {
		s.text(base.Local)
		return
	}
	bd, ok := s.schemas.types[base]
	switch {
	case !ok:
		s.text(base.Local)
	case bd.n.name.Local == "simpleType":
		s.text(s.simpleText(bd, 0))
	default:
		s.named(base, func() { s.complexType(bd, 0) })
	}
}

// particle writes a model group (sequence, all, choice) or a group
// reference at the given element depth.
func (s *skeleton) particle(d decl, depth int) {
	if !s.step() {
		return
	}
	n := d.n
	if n.attr("maxOccurs") == "0" {
		return
	}
	switch n.name.Local {
	case "group":
		q := n.qname(n.attr("ref"))
		g, ok := s.schemas.groups[q]
		if !ok {
			s.comment("group " + q.Local + " is not declared in any schema read")
			return
		}
		s.named(q, func() {
			for _, c := range g.n.children {
				if c.name.Space == nsXSD && (c.name.Local == "sequence" || c.name.Local == "all" || c.name.Local == "choice") {
					s.particle(g.child(c), depth)
				}
			}
		})
	case "sequence", "all":
		for _, c := range n.children {
			s.member(d.child(c), depth)
		}
	case "choice":
		var branches []*node
		var labels []string
		for _, c := range n.children {
			if c.name.Space != nsXSD {
				continue
			}
			switch c.name.Local {
			case "element", "sequence", "choice", "group", "any":
				branches = append(branches, c)
				labels = append(labels, branchLabel(c))
			}
		}
		if len(branches) == 0 {
			return
		}
		if len(branches) > 1 {
			s.comment("choice: " + strings.Join(labels, " | "))
		}
		s.member(d.child(branches[0]), depth)
	}
}

// member writes one member of a model group.
func (s *skeleton) member(d decl, depth int) {
	if !s.step() {
		return
	}
	if d.n.name.Space != nsXSD {
		return
	}
	switch d.n.name.Local {
	case "element":
		s.element(d, false, depth+1)
	case "sequence", "all", "choice", "group":
		s.particle(d, depth)
	case "any":
		s.comment("any element")
	}
}

// branchLabel names a choice branch in the choice comment.
func branchLabel(n *node) string {
	switch n.name.Local {
	case "element":
		if r := n.attr("ref"); r != "" {
			return n.qname(r).Local
		}
		return n.attr("name")
	case "group":
		return "group " + n.qname(n.attr("ref")).Local
	case "any":
		return "any element"
	}
	return n.name.Local
}

// simpleText returns the text a simple type shows: its first enumeration
// value, else the name of the XSD built-in type it derives from.
func (s *skeleton) simpleText(d decl, hops int) string {
	if hops > maxSkeletonDepth || !s.step() {
		return "string"
	}
	for _, c := range d.n.children {
		if c.name.Space != nsXSD {
			continue
		}
		switch c.name.Local {
		case "restriction":
			if e := c.first(nsXSD, "enumeration"); e != nil {
				return e.attr("value")
			}
			if c.hasAttr("base") {
				return s.simpleName(c.qname(c.attr("base")), hops)
			}
			if st := c.first(nsXSD, "simpleType"); st != nil {
				return s.simpleText(d.child(st), hops+1)
			}
		case "list":
			if c.hasAttr("itemType") {
				return s.simpleName(c.qname(c.attr("itemType")), hops)
			}
			if st := c.first(nsXSD, "simpleType"); st != nil {
				return s.simpleText(d.child(st), hops+1)
			}
		case "union":
			if m := strings.Fields(c.attr("memberTypes")); len(m) > 0 {
				return s.simpleName(c.qname(m[0]), hops)
			}
			if st := c.first(nsXSD, "simpleType"); st != nil {
				return s.simpleText(d.child(st), hops+1)
			}
		}
	}
	return "string"
}

// simpleName returns the text for the simple type named q.
func (s *skeleton) simpleName(q xml.Name, hops int) string {
	if q.Space == nsXSD {
		return q.Local
	}
	if d, ok := s.schemas.types[q]; ok && d.n.name.Local == "simpleType" {
		return s.simpleText(d, hops+1)
	}
	return q.Local
}
