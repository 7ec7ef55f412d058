//go:build linux

package gateway

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkPassWrites measures one fan-out pass's socket writes: 300 bytes
// to each of 2,000 loopback TCP connections whose readers wait in epoll, as
// gateway clients do, written with one write call each or handed to the
// kernel through io_uring in one call per ringEntries. ns/op is per pass.
//
//	go test -run '^$' -bench PassWrites -count 8 ./gateway
func BenchmarkPassWrites(b *testing.B) {
	const conns = 2000
	fds := loopbackConns(b, conns)
	buf := make([]byte, 300)
	b.Run("write", func(b *testing.B) {
		for b.Loop() {
			for _, fd := range fds {
				if n, err := unix.Write(int(fd), buf); n != len(buf) || err != nil {
					b.Fatalf("write: %d, %v", n, err)
				}
			}
			time.Sleep(time.Millisecond) // let the readers drain, as between passes
		}
	})
	b.Run("io_uring", func(b *testing.B) {
		r, err := newRing(ringEntries)
		if err != nil {
			b.Skipf("io_uring not available here: %v", err)
		}
		defer r.close()
		bufs := make([][]byte, conns)
		for i := range bufs {
			bufs[i] = buf
		}
		res := make([]int32, conns)
		for b.Loop() {
			if err := r.send(fds, bufs, res); err != nil {
				b.Fatal(err)
			}
			for _, n := range res {
				if int(n) != len(buf) {
					b.Fatalf("send: %d", n)
				}
			}
			time.Sleep(time.Millisecond)
		}
	})
}

// loopbackConns returns the non-blocking file descriptors of n accepted
// loopback connections whose client ends are read and discarded by
// goroutines until the benchmark ends.
func loopbackConns(b *testing.B, n int) []int32 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	fds := make([]int32, 0, n)
	for range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		s, err := ln.Accept()
		if err != nil {
			b.Fatal(err)
		}
		go io.Copy(io.Discard, c) //nolint:errcheck // ends when the benchmark closes s
		raw, err := s.(*net.TCPConn).SyscallConn()
		if err != nil {
			b.Fatal(err)
		}
		_ = raw.Control(func(fd uintptr) {
			// A dup outlives the runtime's poller registration of s and is
			// written directly, as gnet writes its sockets.
			d, err := syscall.Dup(int(fd))
			if err != nil {
				b.Fatal(err)
			}
			fds = append(fds, int32(d))
		})
		b.Cleanup(func() { s.Close(); c.Close() })
	}
	b.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(int(fd))
		}
	})
	return fds
}
