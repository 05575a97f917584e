package wsdl_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
)

// twoPorts is a calculator with a SOAP 1.1 and a SOAP 1.2 port (as WCF and
// CXF publish), an http:binding port that must be left out, and a second
// service whose Echo port matches the first's exactly.
const twoPorts = `<?xml version="1.0"?>
<definitions xmlns="http://schemas.xmlsoap.org/wsdl/"
  xmlns:soap="http://schemas.xmlsoap.org/wsdl/soap/"
  xmlns:soap12="http://schemas.xmlsoap.org/wsdl/soap12/"
  xmlns:http="http://schemas.xmlsoap.org/wsdl/http/"
  xmlns:xs="http://www.w3.org/2001/XMLSchema"
  xmlns:tns="http://example.com/calc" targetNamespace="http://example.com/calc">
 <types>
  <xs:schema targetNamespace="http://example.com/calc" elementFormDefault="qualified">
   <xs:element name="Add"><xs:complexType><xs:sequence>
     <xs:element name="a" type="xs:int"/><xs:element name="b" type="xs:int"/>
   </xs:sequence></xs:complexType></xs:element>
   <xs:element name="Echo" type="xs:string"/>
  </xs:schema>
 </types>
 <message name="AddIn"><part name="parameters" element="tns:Add"/></message>
 <message name="EchoIn"><part name="parameters" element="tns:Echo"/></message>
 <portType name="Calc">
  <operation name="Add"><input message="tns:AddIn"/></operation>
  <operation name="Echo"><input message="tns:EchoIn"/></operation>
 </portType>
 <binding name="Calc11" type="tns:Calc">
  <soap:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
  <operation name="Add"><soap:operation soapAction="urn:calc/Add"/><input><soap:body use="literal"/></input></operation>
  <operation name="Echo"><soap:operation soapAction="urn:calc/Echo"/><input><soap:body use="literal"/></input></operation>
 </binding>
 <binding name="Calc12" type="tns:Calc">
  <soap12:binding style="document" transport="http://schemas.xmlsoap.org/soap/http"/>
  <operation name="Add"><soap12:operation soapAction="urn:calc/Add"/><input><soap12:body use="literal"/></input></operation>
 </binding>
 <binding name="CalcHTTP" type="tns:Calc">
  <http:binding verb="POST"/>
  <operation name="Add"><http:operation location="/add"/><input/></operation>
 </binding>
 <service name="Calculator">
  <port name="Calc11" binding="tns:Calc11"><soap:address location="https://calc.example.com/soap11"/></port>
  <port name="Calc12" binding="tns:Calc12"><soap12:address location="https://calc.example.com/soap12"/></port>
  <port name="CalcHTTP" binding="tns:CalcHTTP"><http:address location="https://calc.example.com/http"/></port>
 </service>
 <service name="Mirror">
  <port name="Calc11" binding="tns:Calc11"><soap:address location="https://calc.example.com/soap11"/></port>
 </service>
</definitions>`

func parseString(t *testing.T, doc string) *wsdl.Description {
	t.Helper()
	d, err := wsdl.Parse(context.Background(), []byte(doc), "", nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return d
}

func TestFind(t *testing.T) {
	d := parseString(t, twoPorts)
	if n := len(d.Services[0].Ports); n != 2 {
		t.Fatalf("Calculator has %d SOAP ports, want 2 (the http:binding port left out)", n)
	}
	tests := []struct {
		name, op, version string
		wantPort          string
		wantAddress       string
		wantErr           []string // substrings of the error
	}{
		{name: "plain name, same port in two services: first wins", op: "Echo", wantPort: "Calc11", wantAddress: "https://calc.example.com/soap11"},
		{name: "port qualified", op: "Calc12/Add", wantPort: "Calc12", wantAddress: "https://calc.example.com/soap12"},
		{name: "service qualified", op: "Calculator/Calc11/Add", wantPort: "Calc11"},
		{name: "version narrows", op: "Add", version: "1.2", wantPort: "Calc12"},
		{name: "version narrows to 1.1", op: "Add", version: "1.1", wantPort: "Calc11"},
		{name: "ambiguous across 1.1 and 1.2", op: "Add", wantErr: []string{
			`"Add" is on 3 ports`, "Calculator/Calc11/Add (SOAP 1.1", "Calculator/Calc12/Add (SOAP 1.2", "Mirror/Calc11/Add"}},
		{name: "unknown operation lists the existing", op: "Multiply", wantErr: []string{`no operation "Multiply"`, "it has: Add, Echo"}},
		{name: "unknown over a version", op: "Echo", version: "1.2", wantErr: []string{`no operation "Echo" over SOAP 1.2`}},
		{name: "unknown port", op: "Nope/Add", wantErr: []string{`no operation "Nope/Add"`}},
		{name: "too many segments", op: "a/b/c/d", wantErr: []string{"Service/Port/Operation"}},
		{name: "bad version", op: "Add", version: "2", wantErr: []string{`SOAP version "2"`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			port, op, err := d.Find(tc.op, tc.version)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("Find(%q, %q) = %s/%s, want an error", tc.op, tc.version, port.Name, op.Name)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("Find(%q, %q): %v", tc.op, tc.version, err)
			}
			if port.Name != tc.wantPort {
				t.Errorf("port %q, want %q", port.Name, tc.wantPort)
			}
			if tc.wantAddress != "" && port.Address != tc.wantAddress {
				t.Errorf("address %q, want %q", port.Address, tc.wantAddress)
			}
			if want := tc.op[strings.LastIndex(tc.op, "/")+1:]; op.Name != want {
				t.Errorf("operation %q, want %q", op.Name, want)
			}
		})
	}
}

func TestFindListsAtMost30(t *testing.T) {
	d := &wsdl.Description{Services: []wsdl.Service{{Name: "S", Ports: []wsdl.Port{{Name: "P", SOAPVersion: "1.1"}}}}}
	for i := 40; i > 0; i-- {
		op := wsdl.Operation{Name: fmt.Sprintf("Op%02d", i)}
		// Duplicates must be listed once.
		d.Services[0].Ports[0].Operations = append(d.Services[0].Ports[0].Operations, op, op)
	}
	_, _, err := d.Find("Missing", "")
	if err == nil {
		t.Fatal("Find found a missing operation")
	}
	msg := err.Error()
	if !strings.Contains(msg, "Op01, Op02,") || !strings.Contains(msg, "Op30 and 10 more") || strings.Contains(msg, "Op31") {
		t.Errorf("error %q should list Op01..Op30 sorted, then \"and 10 more\"", msg)
	}
}
