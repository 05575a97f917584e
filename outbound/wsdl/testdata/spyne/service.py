#!/usr/bin/python3
"""A small spyne SOAP 1.1 document/literal service: a calculator and an order
service whose Order type nests a complex Address and an array of Line.

Run with Debian's interpreter (/usr/bin/python3, python3-spyne 2.14):

  service.py --wsdl [--url URL]        print the WSDL (soap:address is URL)
  service.py --port 8080               serve HTTP (WSDL at /?wsdl)
  service.py --port 8443 --cert srv.pem --key srv.key --ca ca.pem
                                       serve HTTPS and require a client
                                       certificate signed by ca.pem (mTLS)

The tests of outbound/wsdl only use --wsdl (see ../make-fixtures.sh); the
serving mode is meant for tests that call the service through the relay.
"""

import argparse
import socketserver
import ssl
import sys
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from spyne import Application, ComplexModel, Integer, Iterable, Unicode, \
    Decimal, DateTime, ServiceBase, rpc, Array
from spyne.protocol.soap import Soap11
from spyne.server.wsgi import WsgiApplication

TNS = "http://example.com/spyne/orders"


class Address(ComplexModel):
    __namespace__ = TNS
    street = Unicode
    city = Unicode
    zip = Unicode(min_occurs=0)


class Line(ComplexModel):
    __namespace__ = TNS
    sku = Unicode
    quantity = Integer
    price = Decimal


class Order(ComplexModel):
    __namespace__ = TNS
    id = Unicode
    placed = DateTime
    ship_to = Address
    lines = Array(Line)


class Confirmation(ComplexModel):
    __namespace__ = TNS
    order_id = Unicode
    total = Decimal


class CalculatorService(ServiceBase):
    @rpc(Integer, Integer, _returns=Integer)
    def Add(ctx, a, b):
        return a + b

    @rpc(Integer, Integer, _returns=Integer)
    def Subtract(ctx, a, b):
        return a - b


class OrderService(ServiceBase):
    @rpc(Order, _returns=Confirmation)
    def PlaceOrder(ctx, order):
        total = sum((l.price or 0) * (l.quantity or 0) for l in (order.lines or []))
        return Confirmation(order_id=order.id, total=total)

    @rpc(Unicode, _returns=Iterable(Unicode))
    def ListOrderIds(ctx, customer):
        yield customer + "-1"
        yield customer + "-2"


def application():
    """The spyne application: both services on one SOAP 1.1 endpoint."""
    return Application([CalculatorService, OrderService], tns=TNS,
                       name="OrderApp",
                       in_protocol=Soap11(validator="lxml"),
                       out_protocol=Soap11())


def wsdl(url):
    """The WSDL spyne publishes, with url as soap:address."""
    app = WsgiApplication(application())
    app.doc.wsdl11.build_interface_document(url)
    return app.doc.wsdl11.get_interface_document()


class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("spyne: " + (fmt % args) + "\n")


class Server(socketserver.ThreadingMixIn, WSGIServer):
    """A threaded WSGI server; with tls set, each connection is wrapped and
    its handshake runs in the connection's thread, so a client that fails or
    stalls the handshake does not hold up the others."""

    daemon_threads = True
    tls = None

    def get_request(self):
        conn, addr = super().get_request()
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True,
                                        do_handshake_on_connect=False)
        return conn, addr

    def finish_request(self, request, client_address):
        if self.tls is not None:
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as e:
                sys.stderr.write("spyne: TLS handshake with %s failed: %s\n" % (client_address[0], e))
                return
        super().finish_request(request, client_address)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--wsdl", action="store_true", help="print the WSDL and exit")
    p.add_argument("--url", default="http://localhost:8080/",
                   help="soap:address of the printed WSDL")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--cert", help="server certificate (PEM); enables TLS")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--ca", help="CA (PEM) client certificates must chain to")
    a = p.parse_args(argv)

    if a.wsdl:
        sys.stdout.buffer.write(wsdl(a.url))
        return 0

    httpd = make_server(a.host, a.port, WsgiApplication(application()),
                        server_class=Server, handler_class=QuietHandler)
    scheme = "http"
    if a.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.cert, a.key)
        if a.ca:
            ctx.load_verify_locations(a.ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        httpd.tls = ctx
        scheme = "https"
    # The port actually bound (0 picks a free one); a test reads this line.
    print("serving %s://%s:%d/" % (scheme, a.host, httpd.server_address[1]),
          flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
