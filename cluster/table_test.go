package cluster

import (
	"math/rand/v2"
	"testing"
)

// TestTable checks the table against a map through random sets and
// deletes. Keys are drawn from small ranges, so they repeat, collide, wrap
// around the end and are shifted back often, and spread by a multiplicative
// hash as the view's seeded hashes are.
func TestTable(t *testing.T) {
	for _, space := range []uint64{50, 1000, 1 << 20} {
		var tb table
		ref := map[uint64]uint32{}
		r := rand.New(rand.NewPCG(1, space))
		for step := range 100000 {
			k := r.Uint64N(space) * 0x9E3779B97F4A7C15
			switch r.IntN(3) {
			case 0, 1:
				v := r.Uint32()
				tb.set(k, v)
				ref[nonZero(k)] = v
			case 2:
				tb.del(k)
				delete(ref, nonZero(k))
			}
			if step%997 != 0 {
				continue
			}
			if tb.len() != len(ref) {
				t.Fatalf("space %d step %d: len %d, want %d", space, step, tb.len(), len(ref))
			}
			for rk, rv := range ref {
				if v, ok := tb.get(rk); !ok || v != rv {
					t.Fatalf("space %d step %d: get %d = %d %v, want %d", space, step, rk, v, ok, rv)
				}
			}
			n := 0
			tb.each(func(k uint64, v uint32) {
				n++
				if ref[k] != v {
					t.Fatalf("each: %d = %d, want %d", k, v, ref[k])
				}
			})
			if n != len(ref) {
				t.Fatalf("each saw %d entries, want %d", n, len(ref))
			}
		}
		absent := uint64(12345)
		if _, ok := tb.get(absent * 0x9E3779B97F4A7C15); ok && space < absent {
			t.Fatal("absent key found")
		}
	}
	var tb table
	tb.set(0, 7)
	if v, ok := tb.get(0); !ok || v != 7 {
		t.Fatal("key 0")
	}
}
