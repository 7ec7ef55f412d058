// Command jimd is the jim gateway: J-IM's TCP protocol, WebSocket and the HTTP
// API on one port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"jim/dispatch"
	"jim/gateway"
	"jim/storage"
	"jim/web"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "jimd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("jimd", flag.ContinueOnError)
	var (
		addr       = fs.String("addr", ":8888", "listen address for TCP, WebSocket and HTTP")
		hbTimeout  = fs.Duration("heartbeat-timeout", 120*time.Second, "close connections silent this long (0 disables)")
		auTimeout  = fs.Duration("auth-timeout", 10*time.Second, "close connections not logged in this long after opening (0 disables)")
		maxOut     = fs.Int("max-outbound", 4<<20, "bytes queued per connection before it is dropped as a slow consumer")
		maxBody    = fs.Int("max-body", 1<<20, "largest J-IM TCP frame body in bytes")
		maxWS      = fs.Int("max-ws-message", 512<<10, "largest WebSocket message in bytes")
		loops      = fs.Int("event-loops", 0, "gnet event loops (0: one per CPU)")
		workers    = fs.Int("workers", 0, "dispatch worker goroutines (0: the dispatcher's default)")
		apiKey     = fs.String("api-key", "", "X-API-Key required by /api/*; empty allows loopback clients only")
		jwtSecret  = fs.String("jwt-secret", "", "require logins to carry an HS256 JWT signed with this secret (sub = userId)")
		defGroups  = fs.String("default-groups", "", "comma-separated groups every user joins at login (\"100\" for the J-IM demo page)")
		wsStrict   = fs.Bool("ws-require-mask", false, "refuse unmasked WebSocket client frames (RFC 6455); J-IM accepts them")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		drainGrace = fs.Duration("shutdown-grace", 5*time.Second, "how long SIGTERM waits for queued writes before closing")
		dataDir    = fs.String("data", "./data", "data directory of the embedded (Badger) store")
		storeKind  = fs.String("store", "badger", "message store: badger (durable, under -data) or memory (lost on exit)")
		retAge     = fs.Duration("retention-age", 0, "delete messages older than this (0 keeps them forever)")
		retMax     = fs.Int("retention-max-messages", 0, "keep at most this many messages per conversation (0 keeps all)")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("bad -log-level %q", *logLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)

	if n, err := raiseFileLimit(); err != nil {
		log.Warn("could not raise the open-file limit", "err", err)
	} else {
		log.Info("open-file limit", "nofile", n)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var store storage.Store
	switch *storeKind {
	case "badger":
		b, err := storage.OpenBadger(*dataDir, storage.BadgerOptions{
			RetentionAge:         *retAge,
			RetentionMaxMessages: *retMax,
			Logger:               log,
		})
		if err != nil {
			return err
		}
		store = b
		log.Info("store opened", "kind", "badger", "dir", *dataDir)
	case "memory":
		store = storage.NewMemory()
		log.Warn("in-memory store: messages are lost when jimd exits")
	default:
		return fmt.Errorf("bad -store %q (badger or memory)", *storeKind)
	}
	// Closed last: after the gateway stopped and the dispatcher finished
	// the work it had accepted.
	defer func() {
		if err := store.Close(); err != nil {
			log.Warn("closing store", "err", err)
		}
	}()

	dopts := dispatch.Options{
		Store:      store,
		Workers:    *workers,
		Registerer: reg,
		Logger:     log,
		APIKey:     *apiKey,
	}
	if *defGroups != "" {
		for _, g := range strings.Split(*defGroups, ",") {
			if g = strings.TrimSpace(g); g != "" {
				dopts.DefaultGroups = append(dopts.DefaultGroups, g)
			}
		}
	}
	if *jwtSecret != "" {
		dopts.Auth = dispatch.NewJWTAuth([]byte(*jwtSecret))
	}
	d := dispatch.New(dopts)
	defer d.Close()

	srv := gateway.New(gateway.Options{
		Addr:             *addr,
		NumEventLoop:     *loops,
		HeartbeatTimeout: disabledIsNegative(*hbTimeout),
		AuthTimeout:      disabledIsNegative(*auTimeout),
		MaxOutbound:      *maxOut,
		MaxTCPBody:       *maxBody,
		MaxWSMessage:     *maxWS,
		WSRequireMask:    *wsStrict,
		Static:           web.FS(),
		Registry:         reg,
		Logger:           log,
		ShutdownGrace:    *drainGrace,
	}, d)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Started():
		log.Info("jimd listening", "addr", *addr)
	case err := <-errc:
		return fmt.Errorf("listen %s: %w", *addr, err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	select {
	case s := <-sig:
		log.Info("shutting down", "signal", s.String())
	case err := <-errc:
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), *drainGrace+5*time.Second)
	defer cancel()
	if err := srv.Stop(ctx); err != nil {
		log.Warn("stop", "err", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, gateway.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// disabledIsNegative maps the flag convention (0 disables) to the gateway's
// (0 is the default, negative disables).
func disabledIsNegative(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// raiseFileLimit lifts the soft RLIMIT_NOFILE to the hard limit: every
// connection is a file, and the soft default (often 1024) caps a gateway far
// below what the box can hold.
func raiseFileLimit() (uint64, error) {
	var r syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
		return 0, err
	}
	if r.Cur < r.Max {
		r.Cur = r.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &r); err != nil {
			return 0, err
		}
	}
	return r.Cur, nil
}
