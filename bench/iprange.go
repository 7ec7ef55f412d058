package bench

import (
	"fmt"
	"net/netip"
	"strings"
)

// maxIPRange bounds one range so that a typo such as 127.0.0.1-127.1.0.1
// fails fast instead of allocating millions of addresses.
const maxIPRange = 65536

// ParseIPRanges parses a comma-separated list of IPv4 addresses and
// inclusive ranges ("127.0.0.2-127.0.0.65" or the short form
// "127.0.0.2-65") into the individual addresses, in order. An empty string
// gives an empty list.
func ParseIPRanges(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(strings.TrimSpace(lo))
		if err != nil || !a.Is4() {
			return nil, fmt.Errorf("bad source address %q", part)
		}
		if !isRange {
			out = append(out, a)
			continue
		}
		hi = strings.TrimSpace(hi)
		if !strings.Contains(hi, ".") {
			// Short form: the last octet only.
			p := a.As4()
			hi = fmt.Sprintf("%d.%d.%d.%s", p[0], p[1], p[2], hi)
		}
		b, err := netip.ParseAddr(hi)
		if err != nil || !b.Is4() {
			return nil, fmt.Errorf("bad source address range %q", part)
		}
		if b.Less(a) {
			return nil, fmt.Errorf("source address range %q runs backwards", part)
		}
		for n := 0; ; n++ {
			if n >= maxIPRange {
				return nil, fmt.Errorf("source address range %q is larger than %d addresses", part, maxIPRange)
			}
			out = append(out, a)
			if a == b {
				break
			}
			a = a.Next()
		}
	}
	return out, nil
}
