// A small gSOAP service described by annotations: document/literal over
// SOAP 1.1. soapcpp2 (Debian gsoap) turns it into billing.wsdl; see
// ../make-fixtures.sh.

//gsoap bill service name:      Billing
//gsoap bill service namespace: http://example.com/gsoap/billing
//gsoap bill service location:  http://localhost:8082/billing
//gsoap bill service style:     document
//gsoap bill service encoding:  literal
//gsoap bill service protocol:  SOAP1.1
//gsoap bill schema form:       qualified
//gsoap cmn  schema namespace:  http://example.com/common
//gsoap cmn  schema form:       qualified

#import "stlvector.h"

/// A postal address.
class cmn__Address {
 public:
  std::string street;
  std::string city;
};

/// An invoice: nested address and a list of amounts.
class bill__Invoice {
 public:
  std::string number;
  cmn__Address billTo;
  std::vector<double> amount 1;
  time_t *due 0;
};

//gsoap bill service method-action: SendInvoice "http://example.com/gsoap/billing/SendInvoice"
int bill__SendInvoice(bill__Invoice *invoice, std::string &receipt);

//gsoap bill service method-action: Ping ""
int bill__Ping(std::string message, std::string &echo);
