// Command jimd is the jim gateway: J-IM's TCP protocol, WebSocket and the HTTP
// API on one port.
package main

import (
	"context"
	"crypto/subtle"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"jim/cluster"
	"jim/dispatch"
	"jim/gateway"
	"jim/internal/memtrim"
	"jim/internal/rlimit"
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
		maxOutAll  = fs.Int64("max-outbound-total", 1<<30, "bytes queued for all connections together, counting only connections over 64 KiB behind (negative: no bound); over it, the furthest behind are dropped as slow consumers")
		maxBody    = fs.Int("max-body", 1<<20, "largest J-IM TCP frame body in bytes")
		maxWS      = fs.Int("max-ws-message", 512<<10, "largest WebSocket message in bytes")
		loops      = fs.Int("event-loops", 0, "gnet event loops (0: one per CPU)")
		ioURing    = fs.Bool("io-uring", true, "batch each event loop's socket writes through io_uring where the kernel allows it (falls back to write calls by itself)")
		workers    = fs.Int("workers", 0, "dispatch worker goroutines (0: the dispatcher's default)")
		apiKey     = fs.String("api-key", "", "X-API-Key required by /api/*; empty allows loopback clients only")
		jwtSecret  = fs.String("jwt-secret", "", "require logins to carry an HS256 JWT signed with this secret (sub = userId)")
		defGroups  = fs.String("default-groups", "", "comma-separated groups every user joins at login (\"100\" for the J-IM demo page)")
		wsStrict   = fs.Bool("ws-require-mask", false, "refuse unmasked WebSocket client frames (RFC 6455); J-IM accepts them")
		logLevel   = fs.String("log-level", "info", "debug, info, warn or error")
		drainGrace = fs.Duration("shutdown-grace", 5*time.Second, "how long SIGTERM waits for queued writes before closing")
		dataDir    = fs.String("data", "./data", "data directory of the embedded (Badger) store")
		storeKind  = fs.String("store", "", "message store: badger (durable, under -data), memory (lost on exit) or jetstream (cluster, on -nats); empty: jetstream with -nats, else badger")
		retAge     = fs.Duration("retention-age", 0, "delete messages older than this (0 keeps them forever)")
		retMax     = fs.Int("retention-max-messages", 0, "keep at most this many messages per conversation (0 keeps all; badger store only)")
		offTTL     = fs.Duration("offline-ttl", 0, "drop an unread offline message from its user's queue this long after it was queued (0: as -retention-age)")
		offCap     = fs.Int("offline-cap", 10000, "offline messages kept per user, the oldest dropped first (negative: no cap)")
		memtable   = fs.Int("badger-memtable-mb", 0, "Badger memtable size in MiB (0: Badger's 64); smaller saves memory, costs some ack latency")
		tlsCert    = fs.String("tls-cert", "", "PEM certificate: TLS (TCP, WSS, HTTPS) on the same port; reloaded on SIGHUP")
		tlsKey     = fs.String("tls-key", "", "PEM private key of -tls-cert")
		tlsHSW     = fs.Int("tls-handshake-workers", 0, "goroutines that run TLS handshakes off the event loops (0: half the CPUs; negative: on the loops)")
		maxConns   = fs.Int("max-conns", 0, "cap on open connections (0: the file limit)")
		maxPerIP   = fs.Int("max-conns-per-ip", 0, "cap on open connections per source address (0: none)")
		preAuth    = fs.Int("max-pre-auth-body", 16<<10, "largest frame or message accepted before login, in bytes")
		inPending  = fs.Int64("max-inbound-pending", 256<<20, "bytes all connections together may hold in frames still arriving, counting only connections that hold over 16 KiB (negative: no bound); one that would pass it gets 10101 and is closed")
		msgRate    = fs.Float64("msg-rate", 0, "inbound messages per second per connection (0: unlimited); over it gets status 10104")
		msgBurst   = fs.Int("msg-burst", 0, "burst of -msg-rate (0: two seconds' worth)")
		byteRate   = fs.Float64("byte-rate", 0, "inbound bytes per second per connection (0: unlimited); far over it disconnects")
		maxMembers = fs.Int("max-group-members", 0, "refuse joins beyond this many members per group (0: unlimited)")
		maxGroups  = fs.Int("max-groups-per-user", 0, "refuse a user's joins beyond this many groups (0: unlimited)")
		wsEcho     = fs.String("ws-echo-path", "", "test only: a WebSocket echo endpoint at this path for conformance suites (empty: off)")
		noticeMax  = fs.Int("notice-max-members", 500, "send join/leave notices only in groups with at most this many online members (-1: always)")
		lameDuck   = fs.Duration("lame-duck-window", 30*time.Second, "on SIGUSR2, spread disconnects over this window while /healthz reports draining")
		memTrim    = fs.Bool("memory-trim", true, "keep GC headroom proportional to the heap beyond the store's buffers, and return the heap a burst of connections left behind to the OS once it settles")
		pprofAddr  = fs.String("pprof-addr", "", "serve /debug/pprof on this address (empty: off); keep it on loopback")
		adminAddr  = fs.String("admin-addr", "", "serve GET /backup, a full backup of the running Badger store, on this address (empty: off); keep it on loopback")
		restore    = fs.String("restore", "", "restore a backup made by GET /backup (a file, or - for standard input) into -data, which must be new or empty, then exit")
		natsURLs   = fs.String("nats", "", "NATS servers, comma-separated (nats://h1:4222,nats://h2:4222): run as a cluster node; empty: single node")
		nodeID     = fs.String("node-id", "", "this node's id in the cluster (empty: host name plus a random suffix)")
		jsReplicas = fs.Int("js-replicas", 1, "replicas of every JetStream stream and bucket jimd creates (1, 3 or 5; at most the NATS cluster size)")
		presTTL    = fs.Duration("presence-ttl", 0, "how long a dead node's users still look online to the cluster (0: the cluster default, 15s)")

		configFile  = fs.String("config", "", "YAML config file (keys are these flag names); also JIM_CONFIG")
		checkConfig = fs.Bool("check-config", false, "validate the configuration, print one line and exit 0 (valid) or 1")
		printCfg    = fs.Bool("print-config", false, "print the effective configuration as YAML and exit")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *configFile == "" {
		*configFile = os.Getenv("JIM_CONFIG")
	}
	if err := loadConfig(fs, *configFile, os.Environ()); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if *storeKind == "" {
		*storeKind = "badger"
		if *natsURLs != "" {
			*storeKind = "jetstream"
		}
	}
	if *printCfg {
		printConfig(os.Stdout, fs)
		return nil
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("config: bad log-level %q (debug, info, warn or error)", *logLevel)
	}
	switch *storeKind {
	case "badger", "memory":
	case "jetstream":
		if *natsURLs == "" {
			return errors.New("config: store jetstream needs nats (the NATS server URLs)")
		}
	default:
		return fmt.Errorf("config: bad store %q (badger, memory or jetstream)", *storeKind)
	}
	if *jsReplicas < 1 || *jsReplicas > 5 {
		return fmt.Errorf("config: js-replicas %d out of range 1..5", *jsReplicas)
	}
	for name, d := range map[string]time.Duration{"heartbeat-timeout": *hbTimeout, "auth-timeout": *auTimeout,
		"shutdown-grace": *drainGrace, "retention-age": *retAge, "offline-ttl": *offTTL, "lame-duck-window": *lameDuck, "presence-ttl": *presTTL} {
		if d < 0 {
			return fmt.Errorf("config: %s %v is negative", name, d)
		}
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("config: tls-cert and tls-key go together")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	slog.SetDefault(log)

	gopts := gateway.Options{
		Addr:                *addr,
		NumEventLoop:        *loops,
		NoIOURing:           !*ioURing,
		HeartbeatTimeout:    disabledIsNegative(*hbTimeout),
		AuthTimeout:         disabledIsNegative(*auTimeout),
		MaxOutbound:         *maxOut,
		MaxOutboundTotal:    *maxOutAll,
		MaxTCPBody:          *maxBody,
		MaxWSMessage:        *maxWS,
		WSRequireMask:       *wsStrict,
		WSEchoPath:          *wsEcho,
		TLSCertFile:         *tlsCert,
		TLSKeyFile:          *tlsKey,
		TLSHandshakeWorkers: *tlsHSW,
		MaxConns:            *maxConns,
		MaxConnsPerIP:       *maxPerIP,
		MaxPreAuthBody:      *preAuth,
		MaxInboundPending:   *inPending,
		MsgRate:             *msgRate,
		MsgBurst:            *msgBurst,
		ByteRate:            *byteRate,
		Static:              web.FS(),
		Logger:              log,
		ShutdownGrace:       *drainGrace,
	}
	// A bad certificate fails here, before the data directory is touched.
	if err := gopts.Validate(); err != nil {
		return fmt.Errorf("config: %s", strings.Join(strings.Fields(err.Error()), " "))
	}
	if *checkConfig {
		src := "defaults, environment and flags"
		if *configFile != "" {
			src = *configFile
		}
		fmt.Printf("jimd: configuration OK (%s; store %s)\n", src, *storeKind)
		return nil
	}
	if *restore != "" {
		return restoreBackup(*restore, *dataDir, int64(*memtable)<<20, log)
	}
	if n, err := rlimit.RaiseNoFile(); err != nil {
		log.Warn("could not raise the open-file limit", "err", err)
	} else {
		log.Info("open-file limit", "nofile", n)
	}

	if *pprofAddr != "" {
		if err := servePprof(*pprofAddr, log); err != nil {
			return err
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var node *cluster.Node
	if *natsURLs != "" {
		n, err := cluster.Connect(cluster.Options{
			URLs:        *natsURLs,
			NodeID:      *nodeID,
			Logger:      log,
			Registerer:  reg,
			PresenceTTL: *presTTL,
			Replicas:    *jsReplicas,
		})
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		node = n
		// Closed after the store and the dispatcher (defers run last in,
		// first out): both use its connection.
		defer node.Close()
		log.Info("cluster node", "id", node.ID(), "nats", *natsURLs)
	}

	var store storage.Store
	switch *storeKind {
	case "badger":
		b, err := storage.OpenBadger(*dataDir, storage.BadgerOptions{
			RetentionAge:         *retAge,
			RetentionMaxMessages: *retMax,
			OfflineTTL:           *offTTL,
			OfflineCap:           nonZero(*offCap),
			MemTableSize:         int64(*memtable) << 20,
			Logger:               log,
			// Within the watchdog's limit, so that a flush that keeps
			// failing ends in the store's own error, logged.
			CloseTimeout: 20 * time.Second,
		})
		if err != nil {
			return err
		}
		store = b
		log.Info("store opened", "kind", "badger", "dir", *dataDir)
		if *adminAddr != "" {
			if err := serveAdmin(*adminAddr, *apiKey, b, log); err != nil {
				return err
			}
		}
		if node != nil {
			log.Warn("cluster node with a local store: history and offline messages are not shared between nodes")
		}
	case "memory":
		store = storage.NewMemory()
		log.Warn("in-memory store: messages are lost when jimd exits")
	case "jetstream":
		j, err := storage.OpenJetStream(node.Conn(), storage.JetStreamOptions{
			Replicas:     *jsReplicas,
			RetentionAge: *retAge,
			OfflineTTL:   *offTTL,
			OfflineCap:   nonZero(*offCap),
			Logger:       log,
		})
		if err != nil {
			return err
		}
		store = j
		log.Info("store opened", "kind", "jetstream", "replicas", *jsReplicas)
	}
	// Closed last: after the gateway stopped and the dispatcher finished
	// the work it had accepted.
	defer func() {
		if err := store.Close(); err != nil {
			log.Warn("closing store", "err", err)
		}
	}()

	if *adminAddr != "" && *storeKind != "badger" {
		log.Warn("-admin-addr backs up the badger store only: not started", "store", *storeKind)
	}

	dopts := dispatch.Options{
		Store:      store,
		Workers:    *workers,
		Registerer: reg,
		Logger:     log,
		APIKey:     *apiKey,

		MaxGroupMembers:  *maxMembers,
		MaxGroupsPerUser: *maxGroups,
		NoticeMaxMembers: *noticeMax,
	}
	if *maxOut > 0 {
		// A history or offline reply must fit what a connection may have
		// queued, with room for the rest of its traffic.
		dopts.MaxReplyBytes = min(dispatch.DefaultMaxReplyBytes, *maxOut/2)
	}
	if node != nil {
		dopts.Cluster = node
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
	} else if !loopbackAddr(*addr) {
		log.Warn("logins are not authenticated: any client may log in as any user, as in J-IM; set -jwt-secret (docs/config.md, Facing the internet)", "addr", *addr)
	}
	d := dispatch.New(dopts)
	defer d.Close()

	gopts.Registry = reg
	if b, ok := store.(*storage.Badger); ok {
		// A failed store refuses every write until restarted: /healthz
		// says so, for whatever restarts jimd, and a gauge for alerts.
		gopts.Health = b.Err
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "jim_store_failed",
			Help: "1 once the store has failed a write; it then refuses every write until jimd restarts.",
		}, func() float64 {
			if b.Err() != nil {
				return 1
			}
			return 0
		}))
	}
	srv := gateway.New(gopts, d)

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve() }()
	select {
	case <-srv.Started():
		log.Info("jimd listening", "addr", *addr)
	case err := <-errc:
		return fmt.Errorf("listen %s: %w", *addr, err)
	}

	if *memTrim {
		trimCtx, stopTrim := context.WithCancel(context.Background())
		defer stopTrim()
		go memtrim.Run(trimCtx, memtrim.Defaults, srv.TrimStats, func() { log.Debug("returned idle heap to the OS after a connection burst") })
		// Badger's arena and caches are on the heap by now: the collector's
		// headroom follows what grows beyond them.
		go memtrim.TuneGC(trimCtx, 16<<20)
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
				// What closed connections so far, before the shutdown's own
				// closes: the only record left when a load run ends.
				log.Info("shutting down", "signal", s.String(), "disconnects", counterByLabel(reg, "jim_disconnects_total", "reason"))
				break wait
			}
		case err := <-errc:
			return err
		}
	}
	go shutdownWatchdog(log, sig, *drainGrace+shutdownLimit)
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

// counterByLabel sums the counter family name of g by the value of label,
// as "value=n" pairs in label order ("" when nothing was counted).
func counterByLabel(g prometheus.Gatherer, name, label string) string {
	mfs, err := g.Gather()
	if err != nil {
		return ""
	}
	sums := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					sums[lp.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(sums)) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%.0f", k, sums[k])
	}
	return b.String()
}

// loopbackAddr reports whether a listen address takes loopback clients
// only; an empty host listens on every interface.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
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

// serveAdmin serves GET /backup on addr, on an ordinary net/http server
// apart from the gateway (a backup is a long stream, which the gateway's
// per-connection outbound limit would cut). Like the HTTP API it answers
// loopback clients only, or, with -api-key, requests carrying the key.
func serveAdmin(addr, apiKey string, b *storage.Badger, log *slog.Logger) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() && apiKey == "" {
		log.Warn("admin listener reachable from other hosts; only loopback clients are answered without -api-key", "addr", l.Addr().String())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /backup", func(w http.ResponseWriter, r *http.Request) {
		if !adminAllowed(r, apiKey) {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		name := "jim-" + time.Now().UTC().Format("20060102T150405Z") + ".backup"
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		start := time.Now()
		cw := &countingWriter{w: w}
		if err := b.Backup(cw); err != nil {
			// The status is sent; the missing trailer makes a restore
			// refuse what arrived.
			log.Error("backup failed", "err", err, "bytes", cw.n)
			return
		}
		log.Info("backup written", "bytes", cw.n, "took", time.Since(start).Round(time.Millisecond).String())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	log.Info("admin listening", "addr", l.Addr().String())
	return nil
}

func adminAllowed(r *http.Request, apiKey string) bool {
	if apiKey != "" {
		return subtle.ConstantTimeCompare([]byte(r.Header.Get("X-API-Key")), []byte(apiKey)) == 1
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	ip := net.ParseIP(host)
	return err == nil && ip != nil && ip.IsLoopback()
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// restoreBackup fills dataDir from the backup in file ("-": standard input).
func restoreBackup(file, dataDir string, memtable int64, log *slog.Logger) error {
	var r io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		defer f.Close()
		r = f
	}
	start := time.Now()
	if err := storage.RestoreBadger(dataDir, r, storage.BadgerOptions{MemTableSize: memtable, Logger: log}); err != nil {
		return err
	}
	fmt.Printf("jimd: restored %s into %s in %v\n", file, dataDir, time.Since(start).Round(time.Millisecond))
	return nil
}

// nonZero maps a count flag's 0 to "none" (negative) for the stores, whose
// 0 means their default.
func nonZero(n int) int {
	if n == 0 {
		return -1
	}
	return n
}

// disabledIsNegative maps the flag convention (0 disables) to the gateway's
// (0 is the default, negative disables).
func disabledIsNegative(d time.Duration) time.Duration {
	if d <= 0 {
		return -1
	}
	return d
}

// shutdownLimit is how long a shutdown may take beyond -shutdown-grace
// before jimd gives up on it.
const shutdownLimit = 30 * time.Second

// shutdownWatchdog ends a shutdown that does not finish: a store whose
// disk went away retries its flushes for ever, and its Close with them. A
// second SIGINT or SIGTERM ends it at once. Exiting without closing the
// store loses nothing acknowledged (an ack follows the sync), just as a
// SIGKILL would not.
func shutdownWatchdog(log *slog.Logger, sig <-chan os.Signal, limit time.Duration) {
	t := time.NewTimer(limit)
	for {
		select {
		case s := <-sig:
			if s != syscall.SIGINT && s != syscall.SIGTERM {
				continue
			}
			log.Error("second signal during shutdown: exiting now", "signal", s.String())
		case <-t.C:
			log.Error("shutdown did not finish: exiting", "after", limit.String())
		}
		os.Exit(1)
	}
}
