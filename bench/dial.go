package bench

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/cloudwego/netpoll"
)

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h). With it,
// bind(src:0) defers the port choice to connect(), so the kernel may reuse a
// local port towards different destinations; without it every bound socket
// reserves its port for all destinations and a source address runs out after
// one ephemeral range however many servers there are.
const ipBindAddressNoPort = 24

// inlineHandlers makes netpoll call the read handlers on its poller goroutine
// instead of handing every readable event to a goroutine pool. The handlers
// only parse frame boundaries and never block, and at hundreds of thousands
// of deliveries a second the hand-off was jimbench's largest cost, enough to
// make it the bottleneck it must not be. With the handlers inline, a poller
// is one core at most, so there is one poller per CPU (netpoll's default is
// one per 20): with one, reading a 10,000-member fan-out took ~120 ms of a
// single goroutine per message and set the latency floor.
var inlineHandlers = sync.OnceValue(func() error {
	return netpoll.Configure(netpoll.Config{
		Runner:      func(_ context.Context, f func()) { f() },
		LoadBalance: netpoll.RoundRobin,
		PollerNum:   runtime.GOMAXPROCS(0),
	})
})

// dialConn opens a TCP connection from src (when valid) to dst and hands it
// to netpoll. netpoll's own dialer cannot bind a source address, so the
// standard dialer does the connect (its timeout rides on the runtime poller,
// with no thread parked per dial) and netpoll gets a duplicate of the
// descriptor; the original is then closed.
func dialConn(ctx context.Context, src netip.Addr, dst string, timeout time.Duration) (netpoll.Connection, error) {
	if err := inlineHandlers(); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	if src.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: src.AsSlice()}
		d.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	c, err := d.DialContext(ctx, "tcp", dst)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		// F_DUPFD_CLOEXEC, so worker processes forked later never inherit
		// client sockets.
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			derr = e
			return
		}
		nfd = int(r)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	if nfd < 0 {
		return nil, errors.New("dup failed")
	}
	// The standard dialer already set TCP_NODELAY on the shared socket;
	// netpoll only sets it for descriptors it dialled itself.
	conn, err := netpoll.NewFDConnection(nfd)
	if err != nil {
		syscall.Close(nfd)
		return nil, err
	}
	return conn, nil
}
