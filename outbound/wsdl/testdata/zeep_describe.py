#!/usr/bin/python3
"""zeep_describe.py prints, as JSON, what zeep (python3-zeep 4.2) reads from a
WSDL: the reference the Go tests of outbound/wsdl compare wsdl.Load with.

  /usr/bin/python3 zeep_describe.py path/to/service.wsdl

Only local files are read (imports resolve relative to the file); a network
access fails instead of being made. Output:

  {"services": [{"name", "ports": [{"name", "binding", "soap_version",
    "address", "operations": [{"name", "soap_action", "style",
    "input": [{"name": "{ns}local", "children": [{"name", "children"}...]}]
    }]}]}]}

input lists the elements directly under soap:Body of a request (one per
document/literal part, or the rpc wrapper) with, DEPTH levels deep, the
elements their types contain; "{}local" is an unqualified name.
"""

import json
import sys

from lxml import etree
from zeep.transports import Transport
from zeep.wsdl import Document
from zeep.wsdl.bindings.soap import Soap11Binding, Soap12Binding


class LocalOnly(Transport):
    """A transport that refuses the network: the fixtures are all local."""

    def _load_remote_data(self, url):
        raise IOError("zeep_describe: refusing to fetch %s (fixtures are local)" % url)


def clark(qname):
    q = etree.QName(qname)
    return "{%s}%s" % (q.namespace or "", q.localname)


# How deep the element tree goes; deep enough for the fixtures' nesting
# (Order > ship_to > street), shallow enough for recursive types.
DEPTH = 4


def tree(element, depth=0):
    """The element's name and, recursively, its type's child elements."""
    node = {"name": clark(element.qname), "children": []}
    typ = getattr(element, "type", None)
    elements = getattr(typ, "elements", None) if typ is not None else None
    if elements and depth < DEPTH:
        node["children"] = [tree(child, depth + 1) for _, child in elements]
    return node


def body_elements(message):
    """The elements right under soap:Body for a request message."""
    body = getattr(message, "body", None)
    if body is None:
        return []
    if etree.QName(body.qname).localname == "Body" and message._is_body_wrapped:
        tops = [child for _, child in body.type.elements]
    else:
        tops = [body]
    return [tree(t) for t in tops]


def version(binding):
    if isinstance(binding, Soap12Binding):
        return "1.2"
    if isinstance(binding, Soap11Binding):
        return "1.1"
    return None


def describe(path):
    doc = Document(path, LocalOnly())
    services = []
    for service in doc.services.values():
        ports = []
        for port in service.ports.values():
            v = version(port.binding)
            if v is None:
                continue
            ops = []
            for op in port.binding._operations.values():
                ops.append({
                    "name": op.name,
                    "soap_action": op.soapaction or "",
                    "style": op.style or "document",
                    "input": body_elements(op.input),
                })
            ports.append({
                "name": port.name,
                "binding": etree.QName(port.binding.name).localname,
                "soap_version": v,
                "address": port.binding_options.get("address", ""),
                "operations": ops,
            })
        services.append({"name": service.name, "ports": ports})
    return {"services": services}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: zeep_describe.py WSDL")
    json.dump(describe(sys.argv[1]), sys.stdout, indent=1)
    sys.stdout.write("\n")
