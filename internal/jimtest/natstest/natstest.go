// Package natstest runs an embedded NATS server for tests. It is apart from
// jimtest so that only the tests that need NATS link the server.
package natstest

import (
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options says what the server offers.
type Options struct {
	// JetStream enables JetStream, stored under the test's temporary
	// directory.
	JetStream bool
	// SyncAlways makes JetStream fsync every message, as jim requires in
	// production (sync_interval: always).
	SyncAlways bool
}

// Start runs a server on a free loopback port until the test ends and
// returns its client URL.
func Start(t testing.TB, o Options) string {
	t.Helper()
	opts := &server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: o.JetStream, SyncAlways: o.SyncAlways}
	if o.JetStream {
		opts.StoreDir = t.TempDir()
	}
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	t.Cleanup(s.Shutdown)
	return s.ClientURL()
}
