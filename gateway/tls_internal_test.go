package gateway

import "testing"

// The fields trimHandshake clears must all be found in the fork's Conn; if a
// new release renames one, this fails instead of memory silently growing.
func TestTLSTrimFields(t *testing.T) {
	if len(trimOffsets) != len(trimFieldNames) {
		t.Fatalf("found %d of the fields %v in the TLS engine's Conn", len(trimOffsets), trimFieldNames)
	}
}
