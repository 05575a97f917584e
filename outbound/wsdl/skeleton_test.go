package wsdl_test

import (
	"fmt"
	"strings"
	"testing"
)

// features exercises the XSD constructs the skeleton handles, across two
// schemas with different targetNamespace and elementFormDefault, in
// document/literal and rpc/literal operations.
const features = `<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/"
  xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:xs="http://www.w3.org/2001/XMLSchema"
  xmlns:a="urn:a" xmlns:b="urn:b" targetNamespace="urn:a">
 <wsdl:types>
  <xs:schema targetNamespace="urn:b" elementFormDefault="unqualified">
   <xs:element name="Shared"><xs:complexType><xs:sequence>
    <xs:element name="x" type="xs:string"/>
   </xs:sequence></xs:complexType></xs:element>
   <xs:element name="Token" type="xs:string"/>
  </xs:schema>
  <xs:schema targetNamespace="urn:a" elementFormDefault="qualified">
   <xs:import namespace="urn:b"/>
   <xs:simpleType name="Kind"><xs:restriction base="xs:string">
    <xs:enumeration value="RED"/><xs:enumeration value="BLUE"/>
   </xs:restriction></xs:simpleType>
   <xs:simpleType name="Code"><xs:restriction base="a:Short"/></xs:simpleType>
   <xs:simpleType name="Short"><xs:restriction base="xs:short"/></xs:simpleType>
   <xs:complexType name="Base"><xs:sequence><xs:element name="name" type="xs:string"/></xs:sequence></xs:complexType>
   <xs:complexType name="Derived"><xs:complexContent><xs:extension base="a:Base">
    <xs:sequence><xs:element name="extra" type="xs:int"/></xs:sequence>
   </xs:extension></xs:complexContent></xs:complexType>
   <xs:complexType name="Money"><xs:simpleContent><xs:extension base="xs:decimal">
    <xs:attribute name="currency" type="xs:string"/>
   </xs:extension></xs:simpleContent></xs:complexType>
   <xs:complexType name="Node"><xs:sequence>
    <xs:element name="value" type="xs:string"/>
    <xs:element name="child" type="a:Node" minOccurs="0"/>
   </xs:sequence></xs:complexType>
   <xs:group name="G"><xs:sequence><xs:element name="g1" type="xs:string"/></xs:sequence></xs:group>
   <xs:element name="Req"><xs:complexType><xs:sequence>
    <xs:element name="id" type="xs:long" minOccurs="0"/>
    <xs:element ref="b:Shared"/>
    <xs:element name="kind" type="a:Kind"/>
    <xs:element name="code" type="a:Code"/>
    <xs:choice><xs:element name="email" type="xs:string"/><xs:element name="phone" type="xs:string"/></xs:choice>
    <xs:element name="derived" type="a:Derived"/>
    <xs:element name="money" type="a:Money"/>
    <xs:element name="node" type="a:Node"/>
    <xs:group ref="a:G"/>
    <xs:element name="local" form="unqualified" type="xs:string"/>
    <xs:element name="never" type="xs:string" maxOccurs="0"/>
    <xs:element name="text" type="xs:string"/>
   </xs:sequence></xs:complexType></xs:element>
  </xs:schema>
 </wsdl:types>
 <wsdl:message name="ReqIn"><wsdl:part name="body" element="a:Req"/><wsdl:part name="auth" element="b:Token"/></wsdl:message>
 <wsdl:message name="CallIn">
  <wsdl:part name="s" type="xs:string"/>
  <wsdl:part name="shared" element="b:Shared"/>
  <wsdl:part name="node" type="a:Node"/>
  <wsdl:part name="auth" element="b:Token"/>
 </wsdl:message>
 <wsdl:portType name="P">
  <wsdl:operation name="Doc"><wsdl:input message="a:ReqIn"/></wsdl:operation>
  <wsdl:operation name="DocHeader"><wsdl:input message="a:ReqIn"/></wsdl:operation>
  <wsdl:operation name="Call"><wsdl:input message="a:CallIn"/></wsdl:operation>
 </wsdl:portType>
 <wsdl:binding name="B" type="a:P">
  <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
  <wsdl:operation name="Doc">
   <soap:operation soapAction="urn:a/Doc"/>
   <wsdl:input><soap:body use="literal" parts="body"/></wsdl:input>
  </wsdl:operation>
  <wsdl:operation name="DocHeader">
   <wsdl:input><soap:header message="a:ReqIn" part="auth" use="literal"/><soap:body use="literal"/></wsdl:input>
  </wsdl:operation>
  <wsdl:operation name="Call">
   <soap:operation soapAction="urn:a/Call" style="rpc"/>
   <wsdl:input><soap:header message="a:CallIn" part="auth" use="literal"/><soap:body use="literal" namespace="urn:a/rpc"/></wsdl:input>
  </wsdl:operation>
 </wsdl:binding>
 <wsdl:service name="S"><wsdl:port name="P" binding="a:B"><soap:address location="https://x.example/"/></wsdl:port></wsdl:service>
</wsdl:definitions>`

func TestSkeleton(t *testing.T) {
	d := parseString(t, features)
	req := `<tns:Req xmlns:tns="urn:a" xmlns:ns1="urn:b">` +
		`<tns:id>long</tns:id>` +
		`<ns1:Shared><x>string</x></ns1:Shared>` +
		`<tns:kind>RED</tns:kind>` +
		`<tns:code>short</tns:code>` +
		`<!-- choice: email | phone --><tns:email>string</tns:email>` +
		`<tns:derived><tns:name>string</tns:name><tns:extra>int</tns:extra></tns:derived>` +
		`<tns:money>decimal</tns:money>` +
		`<tns:node><tns:value>string</tns:value><tns:child/></tns:node>` +
		`<tns:g1>string</tns:g1>` +
		`<local>string</local>` +
		`<tns:text>string</tns:text>` +
		`</tns:Req>`
	tests := []struct {
		op, style, namespace, want string
	}{
		{op: "Doc", style: "document", want: req},
		{op: "DocHeader", style: "document", want: req},
		{op: "Call", style: "rpc", namespace: "urn:a/rpc", want: `<tns:Call xmlns:tns="urn:a/rpc" xmlns:ns1="urn:b" xmlns:ns2="urn:a">` +
			`<s>string</s>` +
			`<ns1:Shared><x>string</x></ns1:Shared>` +
			`<node><ns2:value>string</ns2:value><ns2:child/></node>` +
			`</tns:Call>`},
	}
	for _, tc := range tests {
		t.Run(tc.op, func(t *testing.T) {
			_, op, err := d.Find(tc.op, "")
			if err != nil {
				t.Fatal(err)
			}
			if op.Style != tc.style || op.Namespace != tc.namespace || op.Use != "literal" {
				t.Errorf("style %q namespace %q use %q, want %q %q literal", op.Style, op.Namespace, op.Use, tc.style, tc.namespace)
			}
			if op.Input != tc.want {
				t.Errorf("skeleton\n  %s\nwant\n  %s", op.Input, tc.want)
			}
			if _, err := skeletonTrees(op.Input, 100); err != nil {
				t.Errorf("skeleton is not well-formed: %v", err)
			}
		})
	}
}

// TestSkeletonBounded: types recursive through each other, and a type tree
// that would expand to 20^8 elements, must give a bounded, well-formed
// skeleton.
func TestSkeletonBounded(t *testing.T) {
	var levels strings.Builder
	for i := range 8 {
		fmt.Fprintf(&levels, `<xs:complexType name="L%d"><xs:sequence>`, i)
		for j := range 20 {
			fmt.Fprintf(&levels, `<xs:element name="e%d" type="a:L%d"/>`, j, i+1)
		}
		levels.WriteString(`</xs:sequence></xs:complexType>`)
	}
	levels.WriteString(`<xs:simpleType name="L8"><xs:restriction base="xs:string"/></xs:simpleType>`)
	doc := strings.NewReplacer("{LEVELS}", levels.String()).Replace(`<?xml version="1.0"?>
<wsdl:definitions xmlns:wsdl="http://schemas.xmlsoap.org/wsdl/" xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:xs="http://www.w3.org/2001/XMLSchema" xmlns:a="urn:a" targetNamespace="urn:a">
 <wsdl:types><xs:schema targetNamespace="urn:a">
  <xs:complexType name="Ping"><xs:sequence><xs:element name="pong" type="a:Pong"/></xs:sequence></xs:complexType>
  <xs:complexType name="Pong"><xs:sequence><xs:element name="ping" type="a:Ping"/></xs:sequence></xs:complexType>
  {LEVELS}
  <xs:element name="Req"><xs:complexType><xs:sequence>
   <xs:element name="ping" type="a:Ping"/><xs:element name="big" type="a:L0"/>
  </xs:sequence></xs:complexType></xs:element>
 </xs:schema></wsdl:types>
 <wsdl:message name="In"><wsdl:part name="p" element="a:Req"/></wsdl:message>
 <wsdl:portType name="P"><wsdl:operation name="Op"><wsdl:input message="a:In"/></wsdl:operation></wsdl:portType>
 <wsdl:binding name="B" type="a:P"><soap:binding/><wsdl:operation name="Op"><wsdl:input><soap:body use="literal"/></wsdl:input></wsdl:operation></wsdl:binding>
 <wsdl:service name="S"><wsdl:port name="P" binding="a:B"><soap:address location="https://x.example/"/></wsdl:port></wsdl:service>
</wsdl:definitions>`)
	d := parseString(t, doc)
	_, op, err := d.Find("Op", "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(op.Input, `<tns:Req xmlns:tns="urn:a"><ping><pong><ping/></pong></ping><big>`) {
		t.Errorf("the mutually recursive types should stop at their first repetition: %.200s", op.Input)
	}
	if len(op.Input) > 300<<10 {
		t.Errorf("skeleton is %d bytes, want it bounded", len(op.Input))
	}
	if !strings.HasSuffix(op.Input, "<!-- skeleton cut at 262144 bytes -->") {
		t.Errorf("a cut skeleton should say so at its end: ...%s", op.Input[max(0, len(op.Input)-100):])
	}
	if _, err := skeletonTrees(op.Input, 1000); err != nil {
		t.Errorf("skeleton is not well-formed: %v", err)
	}
}
