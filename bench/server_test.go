package bench

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"jim/dispatch"
	"jim/gateway"
	"jim/internal/jimtest"
)

// startGateway runs a real jim server (gateway plus dispatcher, in-memory
// store) on a free loopback port and returns its address and metrics.
func startGateway(t *testing.T) (string, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := jimtest.StartServer(t, gateway.Options{Registry: reg}, dispatch.Options{})
	return s.Addr, reg
}

// counter reads one unlabelled counter from reg.
func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no counter %s", name)
	return 0
}

// TestChatAgainstGateway runs the chat scenario against the real server and
// checks that every connection stays up for the whole run: the server must
// accept exactly the connections dialled, every message must be acked as
// delivered (none "offline") and arrive once.
func TestChatAgainstGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("runs for several seconds")
	}
	for _, proto := range []string{"tcp", "ws"} {
		t.Run(proto, func(t *testing.T) {
			addr, reg := startGateway(t)
			const conns = 20
			res, err := Run(context.Background(), Config{Scenario: ScenarioChat, Proto: proto,
				Addrs: []string{addr}, Conns: conns, Rate: 400, Warmup: 500 * time.Millisecond,
				Duration: 2 * time.Second, ConnectTimeout: 10 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			accepted := counter(t, reg, "jim_connections_accepted_total")
			t.Logf("accepted %v sent %d acked %d offline %d delivered %d expected %d errors %d %v",
				accepted, res.Sent, res.Acked, res.Offline, res.Delivered, res.ExpectedDelivered, res.Errors, res.ErrorKinds)
			if res.ConnsEstablished != conns {
				t.Errorf("established %d of %d", res.ConnsEstablished, conns)
			}
			if accepted != conns {
				t.Errorf("server accepted %v connections, %d dialled", accepted, conns)
			}
			if res.Errors != 0 {
				t.Errorf("errors %d: %v", res.Errors, res.ErrorKinds)
			}
			if res.Offline != 0 {
				t.Errorf("%d offline acks", res.Offline)
			}
			if res.Sent < 400 || res.Acked != res.Sent || res.Delivered != res.Acked || res.ExpectedDelivered != res.Delivered {
				t.Errorf("sent %d acked %d delivered %d expected %d", res.Sent, res.Acked, res.Delivered, res.ExpectedDelivered)
			}
		})
	}
}

// TestLostConnectionIsCounted checks that a connection the server drops
// during the run is reported as a "disconnected" error and never redialled.
func TestLostConnectionIsCounted(t *testing.T) {
	s := startFake(t)
	const conns = 4
	var before int64
	cfg := Config{Scenario: ScenarioChat, Conns: conns, Rate: 200, Warmup: 200 * time.Millisecond,
		Duration: time.Second, ConnectTimeout: 10 * time.Second, UserPrefix: "lost-",
		Addrs: []string{s.ln.Addr().String()}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.afterLogin = func(int) {
		before = s.logins.Load()
		s.mu.Lock()
		fc := s.users["lost-1"] // a receiver
		s.mu.Unlock()
		if fc == nil {
			t.Error("receiver lost-1 not logged in")
			return
		}
		_ = fc.c.Close()
	}
	res, err := run(context.Background(), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if after := s.logins.Load(); before != conns || after != conns {
		t.Errorf("server saw %d logins before the drop and %d after, want %d: the client redialled", before, after, conns)
	}
	if res.ErrorKinds["disconnected"] != 1 {
		t.Errorf("error kinds %v, want one disconnected", res.ErrorKinds)
	}
}
