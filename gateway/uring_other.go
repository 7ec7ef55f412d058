//go:build !linux

package gateway

import "errors"

// ring batches socket sends through io_uring, which only Linux has; elsewhere
// every connection is written with its own write call.
type ring struct{}

const uringResultUnknown = int32(-1 << 31)

func newRing(uint32) (*ring, error) { return nil, errors.New("io_uring: not on this system") }

func (*ring) close() {}

func (*ring) send([]int32, [][]byte, []int32) error {
	return errors.New("io_uring: not on this system")
}
