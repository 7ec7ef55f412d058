// Command jimd is the jim gateway: J-IM's TCP protocol, WebSocket and the HTTP
// API on one port.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
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
		tlsCert    = fs.String("tls-cert", "", "PEM certificate: TLS (TCP, WSS, HTTPS) on the same port; reloaded on SIGHUP")
		tlsKey     = fs.String("tls-key", "", "PEM private key of -tls-cert")
		maxConns   = fs.Int("max-conns", 0, "cap on open connections (0: the file limit)")
		maxPerIP   = fs.Int("max-conns-per-ip", 0, "cap on open connections per source address (0: none)")
		preAuth    = fs.Int("max-pre-auth-body", 16<<10, "largest frame or message accepted before login, in bytes")
		msgRate    = fs.Float64("msg-rate", 0, "inbound messages per second per connection (0: unlimited); over it gets status 10104")
		msgBurst   = fs.Int("msg-burst", 0, "burst of -msg-rate (0: two seconds' worth)")
		byteRate   = fs.Float64("byte-rate", 0, "inbound bytes per second per connection (0: unlimited); far over it disconnects")
		maxMembers = fs.Int("max-group-members", 0, "refuse joins beyond this many members per group (0: unlimited)")
		noticeMax  = fs.Int("notice-max-members", 500, "send join/leave notices only in groups with at most this many online members (-1: always)")
		lameDuck   = fs.Duration("lame-duck-window", 30*time.Second, "on SIGUSR2, spread disconnects over this window while /healthz reports draining")
		pprofAddr  = fs.String("pprof-addr", "", "serve /debug/pprof on this address (empty: off); keep it on loopback")
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

	gopts := gateway.Options{
		Addr:             *addr,
		NumEventLoop:     *loops,
		HeartbeatTimeout: disabledIsNegative(*hbTimeout),
		AuthTimeout:      disabledIsNegative(*auTimeout),
		MaxOutbound:      *maxOut,
		MaxTCPBody:       *maxBody,
		MaxWSMessage:     *maxWS,
		WSRequireMask:    *wsStrict,
		TLSCertFile:      *tlsCert,
		TLSKeyFile:       *tlsKey,
		MaxConns:         *maxConns,
		MaxConnsPerIP:    *maxPerIP,
		MaxPreAuthBody:   *preAuth,
		MsgRate:          *msgRate,
		MsgBurst:         *msgBurst,
		ByteRate:         *byteRate,
		Static:           web.FS(),
		Logger:           log,
		ShutdownGrace:    *drainGrace,
	}
	// A bad certificate fails here, before the data directory is touched.
	if err := gopts.Validate(); err != nil {
		return err
	}
	if *pprofAddr != "" {
		if err := servePprof(*pprofAddr, log); err != nil {
			return err
		}
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

		MaxGroupMembers:  *maxMembers,
		NoticeMaxMembers: *noticeMax,
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

	gopts.Registry = reg
	srv := gateway.New(gopts, d)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Started():
		log.Info("jimd listening", "addr", *addr)
	case err := <-errc:
		return fmt.Errorf("listen %s: %w", *addr, err)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR2)
wait:
	for {
		select {
		case s := <-sig:
			switch s {
			case syscall.SIGHUP:
				if !srv.TLSEnabled() {
					continue
				}
				if err := srv.ReloadTLS(); err != nil {
					log.Error("TLS certificate reload failed; keeping the current one", "err", err)
				} else {
					log.Info("TLS certificate reloaded")
				}
			case syscall.SIGUSR2:
				log.Info("lame duck: shedding connections", "window", lameDuck.String())
				srv.LameDuck(*lameDuck)
			default:
				log.Info("shutting down", "signal", s.String())
				break wait
			}
		case err := <-errc:
			return err
		}
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

// servePprof serves the runtime profiles on addr, on an ordinary net/http
// server apart from the gateway: it is for operators, not clients.
func servePprof(addr string, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("pprof listener: %w", err)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("pprof is reachable from other hosts", "addr", l.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	log.Info("pprof listening", "addr", l.Addr().String())
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
