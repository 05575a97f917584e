// A small gSOAP service described by annotations: rpc/literal over SOAP 1.2,
// unqualified local elements. soapcpp2 (Debian gsoap) turns it into
// inventory.wsdl; see ../make-fixtures.sh.

//gsoap inv service name:      Inventory
//gsoap inv service namespace: http://example.com/gsoap/inventory
//gsoap inv service location:  http://localhost:8081/inventory
//gsoap inv service style:     rpc
//gsoap inv service encoding:  literal
// soapcpp2 2.8.124 reads the protocol directive but still writes a SOAP 1.1
// binding unless it also runs with -2, which make-fixtures.sh passes.
//gsoap inv service protocol:  SOAP1.2
//gsoap inv schema namespace:  http://example.com/gsoap/inventory/types
//gsoap inv schema form:       unqualified

/// An item in stock.
class inv__Item {
 public:
  std::string sku;
  int quantity;
  double price;
  std::string *note 0;
};

// Results are structs: a plain int& result makes soapcpp2 name an element
// inv:level its schema does not define, and a class result is flattened
// into the response message (and dropped from the schema).

/// Increase an item's stock.
//gsoap inv service method-action: Restock "urn:inventory#Restock"
struct inv__RestockResponse { int level; };
int inv__Restock(std::string sku, int quantity, struct inv__RestockResponse &result);

/// Look an item up.
//gsoap inv service method-action: Lookup "urn:inventory#Lookup"
struct inv__LookupResponse { inv__Item item; };
int inv__Lookup(std::string sku, struct inv__LookupResponse &result);

/// Replace an item (a complex rpc parameter).
//gsoap inv service method-action: Update "urn:inventory#Update"
struct inv__UpdateResponse { bool ok; };
int inv__Update(inv__Item item, struct inv__UpdateResponse &result);
