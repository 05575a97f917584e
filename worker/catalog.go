package worker

import (
	"sync/atomic"

	"github.com/mtlsrelay/mtlsrelay/catalog"
)

// catalogHolder holds the catalog in use; SetCatalog swaps it whole.
type catalogHolder struct {
	p atomic.Pointer[catalog.Catalog]
}

func (h *catalogHolder) load() *catalog.Catalog { return h.p.Load() }

func (h *catalogHolder) store(c *catalog.Catalog) { h.p.Store(c) }
