package worker

import (
	"context"
	"os"
	"path/filepath"

	"github.com/mtlsrelay/mtlsrelay/catalog"
	"github.com/mtlsrelay/mtlsrelay/outbound"
	"github.com/mtlsrelay/mtlsrelay/outbound/wsdl"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// DescribeWSDL reads the WSDL of connection name as a worker does: from
// the connection's wsdl (default "?wsdl", relative to base_url), fetched
// through the connection (its client certificate, proxy, egress rules and
// credentials), or from location when it is given: a file that exists on
// this machine, else a URL fetched through the connection. Nothing is
// cached. When opts.Secrets is nil, secrets are read through resolver.
func DescribeWSDL(ctx context.Context, cat *catalog.Catalog, resolver *secrets.Resolver, opts outbound.ExecutorOptions, name, location string) (*wsdl.Description, error) {
	conn, prof, err := cat.Lookup(name)
	if err != nil {
		return nil, err
	}
	c := *conn
	switch {
	case location != "":
		c.WSDL = location
		if st, err := os.Stat(location); err == nil && !st.IsDir() {
			abs, err := filepath.Abs(location)
			if err != nil {
				return nil, err
			}
			c.WSDL = "file:" + abs
		}
	case c.WSDL == "":
		c.WSDL = "?wsdl"
	}
	mat, err := resolver.Resolve(ctx, c.Profile, *prof)
	if err != nil {
		return nil, err
	}
	if opts.Secrets == nil {
		opts.Secrets = resolver.Secret
	}
	x := outbound.NewExecutor(opts)
	defer x.Close()
	desc, jerr := x.ConnectionWSDL(ctx, outbound.LaneQueued, name, &c, mat, true)
	if jerr != nil {
		return nil, jerr
	}
	return desc, nil
}
