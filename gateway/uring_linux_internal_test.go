//go:build linux

package gateway

import (
	"bytes"
	"fmt"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// socketPairs returns n connected stream socket pairs, closed at cleanup.
func socketPairs(t *testing.T, n int) [][2]int {
	t.Helper()
	out := make([][2]int, n)
	for i := range out {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = [2]int{fds[0], fds[1]}
		t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	}
	return out
}

func testRing(t *testing.T, entries uint32) *ring {
	t.Helper()
	r, err := newRing(entries)
	if err != nil {
		t.Skipf("io_uring not available here (the server falls back to write calls): %v", err)
	}
	t.Cleanup(r.close)
	return r
}

// A batch larger than the ring goes out in chunks, every send with its own
// bytes and its result in its own slot.
func TestRingSendsEveryBuffer(t *testing.T) {
	r := testRing(t, 8)
	pairs := socketPairs(t, 50)
	fds := make([]int32, len(pairs))
	bufs := make([][]byte, len(pairs))
	for i, p := range pairs {
		fds[i] = int32(p[0])
		bufs[i] = fmt.Appendf(nil, "message %d %s", i, bytes.Repeat([]byte{'x'}, i*37))
	}
	for round := range 3 {
		res := make([]int32, len(fds))
		if err := r.send(fds, bufs, res); err != nil {
			t.Fatal(err)
		}
		for i, p := range pairs {
			if int(res[i]) != len(bufs[i]) {
				t.Fatalf("round %d, send %d: result %d, want %d", round, i, res[i], len(bufs[i]))
			}
			got := make([]byte, len(bufs[i])+1)
			n, err := unix.Read(p[1], got)
			if err != nil || !bytes.Equal(got[:n], bufs[i]) {
				t.Fatalf("round %d, socket %d read %q, %v; want %q", round, i, got[:n], err, bufs[i])
			}
		}
	}
}

// A full socket never blocks the loop: the send comes back short, then
// with -EAGAIN; a socket whose peer is gone reports -EPIPE; the sends
// beside them are unaffected.
func TestRingShortAndFailedSends(t *testing.T) {
	r := testRing(t, 16)
	pairs := socketPairs(t, 3)
	full, gone, fine := pairs[0], pairs[1], pairs[2]
	if err := unix.SetsockoptInt(full[0], unix.SOL_SOCKET, unix.SO_SNDBUF, 4096); err != nil {
		t.Fatal(err)
	}
	unix.Close(gone[1])
	big := bytes.Repeat([]byte{'b'}, 4<<20)
	small := []byte("fine")
	fds := []int32{int32(full[0]), int32(gone[0]), int32(fine[0])}
	res := make([]int32, 3)
	if err := r.send(fds, [][]byte{big, small, small}, res); err != nil {
		t.Fatal(err)
	}
	if res[0] <= 0 || int(res[0]) >= len(big) {
		t.Fatalf("send to a filling socket: %d, want a short count", res[0])
	}
	if res[1] != -int32(syscall.EPIPE) {
		t.Fatalf("send to a closed peer: %d, want -EPIPE", res[1])
	}
	if int(res[2]) != len(small) {
		t.Fatalf("send beside them: %d", res[2])
	}
	if err := r.send(fds[:1], [][]byte{big}, res[:1]); err != nil {
		t.Fatal(err)
	}
	if res[0] != -int32(syscall.EAGAIN) {
		t.Fatalf("send to a full socket: %d, want -EAGAIN", res[0])
	}
}
