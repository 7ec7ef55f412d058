package jimtest

import "math/rand/v2"

// Cuts splits a stream of n bytes into random chunks, reproducibly from
// seed, as a socket might deliver it: the offsets where one read ends and
// the next begins. Fuzz targets of stream parsers feed a stream whole and
// at these cuts and expect the same result. (codec keeps a copy of its own:
// this package imports codec.)
func Cuts(n int, seed uint64) []int {
	r := rand.New(rand.NewPCG(seed, 1))
	var cuts []int
	for pos := 0; pos < n; {
		pos += 1 + r.IntN(16)
		if pos < n {
			cuts = append(cuts, pos)
		}
	}
	return cuts
}
