package wsdl_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/testdeb"
	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
)

// zeepDepth is how deep testdata/zeep_describe.py describes the input
// elements (its DEPTH): the comparison cuts the skeleton at the same depth.
const zeepDepth = 4

// The fixtures made by real stacks (testdata/make-fixtures.sh).
var zeepFixtures = []string{
	"spyne/orders.wsdl",
	"gsoap/inventory.wsdl",
	"gsoap/billing.wsdl",
	"imports/billing.wsdl",
}

// zeepDescription is what testdata/zeep_describe.py prints.
type zeepDescription struct {
	Services []struct {
		Name  string `json:"name"`
		Ports []struct {
			Name        string `json:"name"`
			Binding     string `json:"binding"`
			SOAPVersion string `json:"soap_version"`
			Address     string `json:"address"`
			Operations  []struct {
				Name       string     `json:"name"`
				SOAPAction string     `json:"soap_action"`
				Style      string     `json:"style"`
				Input      []elemTree `json:"input"`
			} `json:"operations"`
		} `json:"ports"`
	} `json:"services"`
}

// elemTree is an element's Clark name ("{ns}local") and its child elements.
type elemTree struct {
	Name     string     `json:"name"`
	Children []elemTree `json:"children"`
}

func (e elemTree) String() string {
	if len(e.Children) == 0 {
		return e.Name
	}
	parts := make([]string, len(e.Children))
	for i, c := range e.Children {
		parts[i] = c.String()
	}
	return e.Name + "(" + strings.Join(parts, " ") + ")"
}

// zeepDescribe runs zeep (Debian's python3-zeep, installed when missing) on
// a fixture.
func zeepDescribe(t *testing.T, path string) zeepDescription {
	t.Helper()
	python := testdeb.PythonModules(t, []string{"zeep", "lxml"}, "python3-zeep", "python3-lxml")
	cmd := exec.Command(python, filepath.Join("testdata", "zeep_describe.py"), path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("zeep_describe.py %s: %v\n%s", path, err, stderr.String())
	}
	var d zeepDescription
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatalf("zeep_describe.py %s printed no JSON: %v", path, err)
	}
	return d
}

// TestMatchesZeep compares what Load reads with what zeep reads from the
// same WSDLs: services, ports, bindings, SOAP versions, addresses,
// operations, SOAPActions, styles, and the element tree of each request
// skeleton against zeep's input body elements.
func TestMatchesZeep(t *testing.T) {
	for _, f := range zeepFixtures {
		t.Run(f, func(t *testing.T) {
			path := filepath.Join("testdata", f)
			want := zeepDescribe(t, path)
			got, err := wsdl.Load(context.Background(), path, nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			for _, diff := range compareWithZeep(got, want) {
				t.Error(diff)
			}
		})
	}
}

// TestZeepComparisonCatchesDifferences makes sure the comparison above can
// fail: each deliberate change to what Load read must be reported.
func TestZeepComparisonCatchesDifferences(t *testing.T) {
	path := filepath.Join("testdata", "spyne", "orders.wsdl")
	want := zeepDescribe(t, path)
	changes := []struct {
		name   string
		change func(d *wsdl.Description)
	}{
		{"service renamed", func(d *wsdl.Description) { d.Services[0].Name = "Other" }},
		{"port dropped", func(d *wsdl.Description) { d.Services[1].Ports = nil }},
		{"SOAP version", func(d *wsdl.Description) { d.Services[0].Ports[0].SOAPVersion = "1.2" }},
		{"address", func(d *wsdl.Description) { d.Services[0].Ports[0].Address = "http://elsewhere/" }},
		{"operation renamed", func(d *wsdl.Description) { d.Services[0].Ports[0].Operations[0].Name = "Sum" }},
		{"SOAPAction", func(d *wsdl.Description) { d.Services[0].Ports[0].Operations[1].SOAPAction = "x" }},
		{"style", func(d *wsdl.Description) { d.Services[0].Ports[0].Operations[0].Style = "rpc" }},
		{"skeleton child missing", func(d *wsdl.Description) {
			op := &d.Services[0].Ports[0].Operations[0]
			op.Input = strings.Replace(op.Input, "<tns:b>integer</tns:b>", "", 1)
		}},
		{"skeleton nested child unqualified", func(d *wsdl.Description) {
			op := &d.Services[0].Ports[0].Operations[2]
			op.Input = strings.Replace(op.Input, "<tns:city>string</tns:city>", "<city>string</city>", 1)
		}},
	}
	for _, c := range changes {
		t.Run(c.name, func(t *testing.T) {
			got, err := wsdl.Load(context.Background(), path, nil)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diffs := compareWithZeep(got, want); len(diffs) != 0 {
				t.Fatalf("the unchanged description already differs: %v", diffs)
			}
			c.change(got)
			if diffs := compareWithZeep(got, want); len(diffs) == 0 {
				t.Fatal("the comparison did not notice the change")
			}
		})
	}
}

// compareWithZeep lists the differences between Load's and zeep's reading.
func compareWithZeep(got *wsdl.Description, want zeepDescription) []string {
	var diffs []string
	add := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if len(got.Services) != len(want.Services) {
		add("%d services, zeep reads %d", len(got.Services), len(want.Services))
		return diffs
	}
	for i, ws := range want.Services {
		gs := got.Services[i]
		if gs.Name != ws.Name {
			add("service %d is %q, zeep reads %q", i, gs.Name, ws.Name)
		}
		if len(gs.Ports) != len(ws.Ports) {
			add("service %s: %d SOAP ports, zeep reads %d", ws.Name, len(gs.Ports), len(ws.Ports))
			continue
		}
		for j, wp := range ws.Ports {
			gp := gs.Ports[j]
			where := ws.Name + "/" + wp.Name
			if gp.Name != wp.Name || gp.Binding != wp.Binding || gp.SOAPVersion != wp.SOAPVersion || gp.Address != wp.Address {
				add("%s: port %q binding %q SOAP %s at %q, zeep reads port %q binding %q SOAP %s at %q",
					where, gp.Name, gp.Binding, gp.SOAPVersion, gp.Address, wp.Name, wp.Binding, wp.SOAPVersion, wp.Address)
			}
			if len(gp.Operations) != len(wp.Operations) {
				add("%s: %d operations, zeep reads %d", where, len(gp.Operations), len(wp.Operations))
				continue
			}
			for k, wo := range wp.Operations {
				gop := gp.Operations[k]
				if gop.Name != wo.Name || gop.SOAPAction != wo.SOAPAction || gop.Style != wo.Style {
					add("%s: operation %q SOAPAction %q style %s, zeep reads %q %q %s",
						where, gop.Name, gop.SOAPAction, gop.Style, wo.Name, wo.SOAPAction, wo.Style)
				}
				trees, err := skeletonTrees(gop.Input, zeepDepth)
				if err != nil {
					add("%s/%s: the skeleton is not well-formed XML: %v", where, wo.Name, err)
					continue
				}
				if g, w := fmt.Sprint(trees), fmt.Sprint(wo.Input); g != w {
					add("%s/%s: skeleton elements\n  %s\nzeep reads\n  %s", where, wo.Name, g, w)
				}
			}
		}
	}
	return diffs
}

// skeletonTrees parses a skeleton (a sequence of top elements) into element
// trees, cut below depth like zeep_describe.py's.
func skeletonTrees(skeleton string, depth int) ([]elemTree, error) {
	d := xml.NewDecoder(strings.NewReader(skeleton))
	var (
		tops  []elemTree
		stack []*elemTree
	)
	for {
		tok, err := d.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			e := elemTree{Name: "{" + t.Name.Space + "}" + t.Name.Local, Children: []elemTree{}}
			if len(stack) == 0 {
				tops = append(tops, e)
				stack = append(stack, &tops[len(tops)-1])
				continue
			}
			parent := stack[len(stack)-1]
			if len(stack) > depth {
				stack = append(stack, nil) // below the cut: not compared
				continue
			}
			if parent == nil {
				stack = append(stack, nil)
				continue
			}
			parent.Children = append(parent.Children, e)
			stack = append(stack, &parent.Children[len(parent.Children)-1])
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		}
	}
	if len(stack) != 0 {
		return nil, errors.New("unclosed elements")
	}
	return tops, nil
}
