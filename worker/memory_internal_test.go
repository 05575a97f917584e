package worker

import "testing"

// The budget admits calls by the bytes they may hold and refuses the one
// that does not fit until another is released; a call larger than the
// whole budget still runs, alone.
func TestMemoryBudget(t *testing.T) {
	const inline = 256 << 10
	per := int64(3*inline + streamBuffers)
	m := newMemoryBudget(3*per, inline)
	var held []int64
	for i := range 3 {
		n, ok := m.tryAdmit(0)
		if !ok || n != per {
			t.Fatalf("call %d: admitted %v with %d bytes; want %d", i, ok, n, per)
		}
		held = append(held, n)
	}
	if _, ok := m.tryAdmit(0); ok {
		t.Fatal("a fourth call fit in a budget of three")
	}
	m.release(held[0])
	if n, ok := m.tryAdmit(1000); ok {
		t.Fatalf("a call of a 1000-byte message (%d bytes) fit where only %d were free", n, per)
	}
	if n, ok := m.tryAdmit(0); !ok || n != per {
		t.Fatal("a released call's bytes were not admitted again")
	}
	// A call larger than the budget costs the whole budget.
	big := newMemoryBudget(per, inline)
	if n, ok := big.tryAdmit(10 << 20); !ok || n != per {
		t.Fatalf("an oversized call: admitted %v with %d bytes; want the whole budget %d", ok, n, per)
	}
	if _, ok := big.tryAdmit(0); ok {
		t.Fatal("a call fit beside one that took the whole budget")
	}
	var none *memoryBudget
	if _, ok := none.tryAdmit(1 << 30); !ok {
		t.Fatal("no budget refused a call")
	}
}
