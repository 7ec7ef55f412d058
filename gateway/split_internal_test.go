package gateway

import (
	"testing"

	"jim/dispatch"
)

// A cached split is found again for the same slice only: not for another
// slice, not for the same one grown, and not after a close (whose
// generation it predates). The cache stays within its bound.
func TestSplitCache(t *testing.T) {
	var sc splitCache
	a := make([]dispatch.Conn, 3)
	b := make([]dispatch.Conn, 3)
	sp := &split{key: a, gen: 7}
	sc.put(sp)
	if sc.get(a, 7) != sp {
		t.Fatal("cached split not found")
	}
	if sc.get(b, 7) != nil || sc.get(a[:2], 7) != nil {
		t.Fatal("split found for another slice")
	}
	if sc.get(a, 8) != nil {
		t.Fatal("split made before a close was reused")
	}
	big := make([]dispatch.Conn, maxCachedConns)
	sc.put(&split{key: big, gen: 8})
	if sc.conns > maxCachedConns {
		t.Fatalf("cache holds %d connections, bound %d", sc.conns, maxCachedConns)
	}
	if sc.get(a, 7) != nil {
		t.Fatal("stale split kept over the bound")
	}
}
