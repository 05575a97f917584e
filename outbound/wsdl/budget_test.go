package wsdl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// budgetWSDL is a document/literal WSDL with one operation (Op) whose input
// is the element Root of the schema content types; ops renames it into
// that many operations over the same message, ports adds ports on the
// same binding.
func budgetWSDL(types string, ops, ports int) string {
	var pt, bops, ps strings.Builder
	for i := 0; i < ops; i++ {
		fmt.Fprintf(&pt, `<operation name="Op%d"><input message="tns:In"/></operation>`, i)
		fmt.Fprintf(&bops, `<operation name="Op%d"><soap:operation soapAction="x"/><input><soap:body use="literal"/></input></operation>`, i)
	}
	for i := 0; i < ports; i++ {
		fmt.Fprintf(&ps, `<port name="P%d" binding="tns:B"><soap:address location="https://h.example/x"/></port>`, i)
	}
	return `<?xml version="1.0"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/" xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:tns="urn:t" targetNamespace="urn:t">
<types><xs:schema targetNamespace="urn:t" elementFormDefault="qualified">` + types + `</xs:schema></types>
<message name="In"><part name="p" element="tns:Root"/></message>
<portType name="PT">` + pt.String() + `</portType>
<binding name="B" type="tns:PT"><soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>` + bops.String() + `</binding>
<service name="S">` + ps.String() + `</service>
</definitions>`
}

// groupChain is Root referencing G0, each Gi referencing G(i+1) ten times,
// the last holding an xs:any: 10^(n-1) "any element" comments from a few
// hundred bytes of schema. Group references did not count depth, and
// comments bypassed the size cap: n=9 ran 101 s and built 2 GB.
func groupChain(n int) string {
	var b strings.Builder
	b.WriteString(`<xs:element name="Root"><xs:complexType><xs:sequence><xs:group ref="tns:G0"/></xs:sequence></xs:complexType></xs:element>`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, `<xs:group name="G%d"><xs:sequence>`, i)
		if i == n-1 {
			b.WriteString(`<xs:any/>`)
		} else {
			for j := 0; j < 10; j++ {
				fmt.Fprintf(&b, `<xs:group ref="tns:G%d"/>`, i+1)
			}
		}
		b.WriteString(`</xs:sequence></xs:group>`)
	}
	return b.String()
}

func TestSkeletonBudgetCutsExponentialGroups(t *testing.T) {
	for _, n := range []int{7, 12} { // 10^6 and 10^11 expansions
		d, err := Parse(context.Background(), []byte(budgetWSDL(groupChain(n), 1, 1)), "", nil)
		if err != nil {
			t.Fatal(err)
		}
		in := d.Services[0].Ports[0].Operations[0].Input
		if len(in) > maxSkeletonSize+1024 {
			t.Errorf("n=%d: skeleton is %d bytes, over the %d budget", n, len(in), maxSkeletonSize)
		}
		if !strings.Contains(in, "skeleton cut") || !strings.HasPrefix(in, "<tns:Root") {
			t.Errorf("n=%d: skeleton does not start with Root or say it was cut: %.200s ... %s", n, in, in[max(0, len(in)-200):])
		}
	}
}

func TestSkeletonTotalBudgetOverOperations(t *testing.T) {
	// Each operation's skeleton is about 190 KB of comments (10^4 of
	// them); 120 operations would be 23 MB.
	d, err := Parse(context.Background(), []byte(budgetWSDL(groupChain(5), 120, 1)), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ops := d.Services[0].Ports[0].Operations
	total := 0
	for _, o := range ops {
		total += len(o.Input)
	}
	if total > maxTotalSkeletonSize+len(ops)*1024 {
		t.Errorf("skeletons total %d bytes, over the %d budget", total, maxTotalSkeletonSize)
	}
	if last := ops[len(ops)-1].Input; !strings.Contains(last, "in all") {
		t.Errorf("the last operation's skeleton does not say the total budget cut it: %.300s", last)
	}
}

func TestSkeletonStopsWhenContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Parse(ctx, []byte(budgetWSDL(groupChain(12), 1, 1)), "", nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
}

// TestOperationsSharedAcrossPortsAndCapped: ports on one binding share its
// operations (skeletons built once, not per port), and more than
// MaxOperations operations over all ports is refused.
func TestOperationsSharedAcrossPortsAndCapped(t *testing.T) {
	types := `<xs:element name="Root"><xs:complexType><xs:sequence><xs:element name="f" type="xs:string"/></xs:sequence></xs:complexType></xs:element>`
	d, err := Parse(context.Background(), []byte(budgetWSDL(types, 200, 40)), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	ports := d.Services[0].Ports
	if len(ports) != 40 || len(ports[0].Operations) != 200 {
		t.Fatalf("%d ports, %d operations", len(ports), len(ports[0].Operations))
	}
	if &ports[0].Operations[0] != &ports[39].Operations[0] {
		t.Error("ports on the same binding do not share its operations")
	}
	_, err = Parse(context.Background(), []byte(budgetWSDL(types, 200, 2000)), "", nil)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("more than %d operations", MaxOperations)) {
		t.Fatalf("2000 ports x 200 operations: err %v, want the operation cap", err)
	}
}

// TestParseNamespaceScopesLinear: namespace declarations are stored once,
// in frames elements share, not copied into every element (10,000
// declarations on the root and one more on each of 10,000 children made
// 10^8 map entries).
func TestParseNamespaceScopesLinear(t *testing.T) {
	const n = 10000
	var b strings.Builder
	b.WriteString(`<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"`)
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ` xmlns:p%d="urn:p%d"`, i, i)
	}
	b.WriteString(`>`)
	for i := 0; i < n; i++ {
		b.WriteString(`<x xmlns:q="urn:q"><y/></x>`)
	}
	b.WriteString(`</definitions>`)
	root, err := parseXML([]byte(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	frames := map[*nsFrame]bool{}
	entries := 0
	var walk func(n *node)
	walk = func(nd *node) {
		if !frames[nd.ns] {
			frames[nd.ns] = true
			entries += len(nd.ns.decls)
		}
		for _, c := range nd.children {
			walk(c)
		}
	}
	walk(root)
	if want := 2*n + 1; entries != want {
		t.Errorf("%d namespace entries stored for %d declarations", entries, want)
	}
	y := root.children[n-1].children[0]
	if q := y.qname("p9999:t"); q.Space != "urn:p9999" {
		t.Errorf("p9999:t resolves to %q", q.Space)
	}
	if q := y.qname("q:t"); q.Space != "urn:q" {
		t.Errorf("q:t resolves to %q", q.Space)
	}
}
