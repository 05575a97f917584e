#!/bin/sh
# make-fixtures.sh regenerates the WSDL fixtures of outbound/wsdl from real
# SOAP stacks. Re-runnable: it overwrites the generated files in place.
#
#   cd outbound/wsdl/testdata && ./make-fixtures.sh
#
# Needs the Debian packages python3-spyne (2.14), python3-lxml and gsoap
# (soapcpp2 2.8.124): sudo apt-get install -y python3-spyne python3-lxml gsoap
# It uses /usr/bin/python3, the interpreter those packages install into
# (a pyenv or virtualenv python3 earlier on PATH does not see them).
#
# What it makes:
#
#   spyne/orders.wsdl       spyne's WSDL of spyne/service.py: SOAP 1.1,
#                           document/literal (wrapped), a calculator and an
#                           order service (Order nests Address and an array of
#                           Line).
#   gsoap/inventory.wsdl    soapcpp2's WSDL of gsoap/inventory.h: rpc/literal
#                           over SOAP 1.2, unqualified local elements.
#   gsoap/billing.wsdl      soapcpp2's WSDL of gsoap/billing.h: document/literal
#                           over SOAP 1.1, types in two namespaces (bill, cmn).
#   imports/                the billing service split the way WCF (?wsdl=wsdl0,
#                           ?xsd=xsd0) and Java stacks publish it:
#       billing.wsdl            concrete part (binding, service); wsdl:import
#                               of the abstract part
#       billing-abstract.wsdl   types, messages, portType; its schema only
#                               xsd:imports bill.xsd with a schemaLocation
#       bill.xsd                gSOAP's bill schema; xsd:include of
#                               bill-invoice.xsd, xsd:import of cmn.xsd
#       bill-invoice.xsd        the Invoice type, moved out of bill.xsd
#       cmn.xsd                 gSOAP's cmn schema; it xsd:imports bill.xsd
#                               back (an import cycle, as gSOAP declares it)
#
# Honest note on imports/: none of the stacks installed here (spyne, gSOAP)
# publishes a WSDL split with wsdl:import and schemaLocation. The schemas
# bill.xsd and cmn.xsd are soapcpp2's own output, but the split itself (moving
# the binding and service into billing.wsdl, the Invoice type into
# bill-invoice.xsd, and adding the schemaLocation attributes) is done below
# by this script with lxml, mirroring what WCF publishes.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- spyne -----------------------------------------------------------------
"$py" "$here/spyne/service.py" --wsdl --url http://localhost:8080/ \
	| "$py" -c 'import sys; from lxml import etree
doc = etree.fromstring(sys.stdin.buffer.read())
sys.stdout.buffer.write(etree.tostring(doc, pretty_print=True, xml_declaration=True, encoding="UTF-8"))' \
	>"$here/spyne/orders.wsdl"

# --- gSOAP -----------------------------------------------------------------
# -2: SOAP 1.2 (soapcpp2 2.8.124 ignores "service protocol: SOAP1.2" when
# writing the WSDL binding); -S -L: server side only, no libs; -x: no sample
# messages. Only the .wsdl and .xsd files are kept.
mkdir "$tmp/inv" "$tmp/bill"
soapcpp2 -2 -S -L -x -d "$tmp/inv" "$here/gsoap/inventory.h" >"$tmp/inv.log" 2>&1 \
	|| { cat "$tmp/inv.log"; exit 1; }
soapcpp2 -1 -S -L -x -I/usr/share/gsoap/import -d "$tmp/bill" "$here/gsoap/billing.h" >"$tmp/bill.log" 2>&1 \
	|| { cat "$tmp/bill.log"; exit 1; }
cp "$tmp/inv/Inventory.wsdl" "$here/gsoap/inventory.wsdl"
cp "$tmp/bill/Billing.wsdl" "$here/gsoap/billing.wsdl"

# --- the import/include split of the billing service -----------------------
mkdir -p "$here/imports"
"$py" - "$tmp/bill" "$here/imports" <<'PY'
import copy, sys
from lxml import etree

src, out = sys.argv[1], sys.argv[2]
WSDL = "http://schemas.xmlsoap.org/wsdl/"
XSD = "http://www.w3.org/2001/XMLSchema"
BILL = "http://example.com/gsoap/billing"
CMN = "http://example.com/common"


def q(ns, name):
    return "{%s}%s" % (ns, name)


def save(tree, name):
    etree.indent(tree, space="  ")
    tree.getroottree().write("%s/%s" % (out, name), xml_declaration=True,
                             encoding="UTF-8", pretty_print=True)


def locate(schema, ns, location):
    """Give the schema's <import namespace=ns> a schemaLocation."""
    for imp in schema.findall(q(XSD, "import")):
        if imp.get("namespace") == ns:
            imp.set("schemaLocation", location)


parser = etree.XMLParser(remove_blank_text=True)
wsdl = etree.parse("%s/Billing.wsdl" % src, parser).getroot()

# Abstract part: the definitions with types, messages and portType only.
abstract = copy.deepcopy(wsdl)
for el in list(abstract):
    if el.tag in (q(WSDL, "binding"), q(WSDL, "service")):
        abstract.remove(el)
types = abstract.find(q(WSDL, "types"))
for el in list(types):
    types.remove(el)
schema = etree.SubElement(types, q(XSD, "schema"),
                          nsmap={None: XSD},
                          attrib={"targetNamespace": BILL + "/wsdl-types"})
etree.SubElement(schema, q(XSD, "import"),
                 attrib={"namespace": BILL, "schemaLocation": "bill.xsd"})
save(abstract, "billing-abstract.wsdl")

# Concrete part: a wsdl:import of the abstract part, then binding, service.
for el in list(wsdl):
    if el.tag not in (q(WSDL, "binding"), q(WSDL, "service")):
        wsdl.remove(el)
imp = etree.Element(q(WSDL, "import"),
                    attrib={"namespace": wsdl.get("targetNamespace"),
                            "location": "billing-abstract.wsdl"})
wsdl.insert(0, imp)
save(wsdl, "billing.wsdl")

# bill.xsd: the Invoice type moves to bill-invoice.xsd (xsd:include);
# cmn gets a schemaLocation.
bill = etree.parse("%s/bill.xsd" % src, parser).getroot()
locate(bill, CMN, "cmn.xsd")
invoice = [el for el in bill if el.tag == q(XSD, "complexType") and el.get("name") == "Invoice"][0]
included = etree.Element(bill.tag, nsmap=bill.nsmap,
                         attrib={k: v for k, v in bill.attrib.items()})
bill.remove(invoice)
included.append(invoice)
inc = etree.Element(q(XSD, "include"), attrib={"schemaLocation": "bill-invoice.xsd"})
bill.insert(0, inc)
save(bill, "bill.xsd")
save(included, "bill-invoice.xsd")

# cmn.xsd imports bill back: gSOAP declares that import; a location makes
# it a real cycle a reader must survive.
cmn = etree.parse("%s/cmn.xsd" % src, parser).getroot()
locate(cmn, BILL, "bill.xsd")
save(cmn, "cmn.xsd")
PY

echo "fixtures written under $here"
