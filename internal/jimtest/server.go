// Package jimtest holds helpers shared by the tests of several packages: an
// in-process server, free loopback ports, self-signed certificates, a jimd
// binary built once and run as a child process, and the open-file limit.
// Only tests import it.
package jimtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"jim/dispatch"
	"jim/gateway"
	"jim/internal/rlimit"
)

// Server is an in-process jim: a gateway and its dispatcher.
type Server struct {
	Addr string
	Srv  *gateway.Server
	D    *dispatch.Dispatcher

	errc chan error
	once sync.Once
}

// FreeAddr returns host:port with a port on host that was free a moment ago.
func FreeAddr(host string) (string, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// FreePort returns a loopback address whose port was free a moment ago.
func FreePort(t testing.TB) string {
	t.Helper()
	addr, err := FreeAddr("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// Start runs a gateway with gopts over a dispatcher with dopts and waits until
// it serves. An empty gopts.Addr gets a free loopback port. The caller stops
// it with Stop.
func Start(gopts gateway.Options, dopts dispatch.Options) (*Server, error) {
	if gopts.Addr == "" {
		addr, err := FreeAddr("127.0.0.1")
		if err != nil {
			return nil, err
		}
		gopts.Addr = addr
	}
	d := dispatch.New(dopts)
	srv := gateway.New(gopts, d)
	s := &Server{Addr: gopts.Addr, Srv: srv, D: d, errc: make(chan error, 1)}
	go func() { s.errc <- srv.Serve() }()
	select {
	case <-srv.Started():
		return s, nil
	case err := <-s.errc:
		d.Close()
		if err == nil {
			err = errors.New("server stopped before it started")
		}
		return nil, fmt.Errorf("serve %s: %w", gopts.Addr, err)
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("server on %s did not start: %w", gopts.Addr, context.DeadlineExceeded)
	}
}

// StartServer is Start for a test: it fails t when the server does not start
// and stops the server when the test ends.
func StartServer(t testing.TB, gopts gateway.Options, dopts dispatch.Options) *Server {
	t.Helper()
	s, err := Start(gopts, dopts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	return s
}

// Stop stops the server and closes its dispatcher. Later calls do nothing.
func (s *Server) Stop() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.Srv.Stop(ctx)
		<-s.errc
		s.D.Close()
	})
}

// RaiseFileLimit raises the soft limit on open files to the hard limit, for
// tests that hold thousands of connections. Call it from TestMain.
func RaiseFileLimit() {
	_, _ = rlimit.RaiseNoFile()
}
