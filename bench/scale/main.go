// Command scale is the orchestrator behind `make bench-scale`: it holds a
// large number of logged-in idle connections (a million by default) on one
// machine whose processes may each open only 20,000 files.
//
// It starts a NATS server (this binary again, embedding nats-server), as
// many jimd processes as the connections need, all listening on the same
// address through SO_REUSEPORT and joined as one cluster over NATS, then
// `jimbench idle` with its worker processes spread over many loopback source
// addresses. While the connections are held it samples every process's RSS
// and CPU, the kernel's socket counters and the machine's memory; at the end
// of the hold it checks the cluster (presence lookups, a private chat between
// two probe users, a kick) with every connection still open. Everything it
// starts runs in its own process group and is killed when it exits, on
// success, failure, a signal or its overall deadline.
//
// The results go to -out: summary.json, summary.md, samples.csv, the
// jimbench JSON and every process's log.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"jim/client"
	"jim/codec"
)

type config struct {
	conns          int
	nodes          int
	perNode        int
	hold           time.Duration
	connectRate    int
	connectTimeout time.Duration
	loginTimeout   time.Duration
	heartbeat      time.Duration
	port           int
	natsPort       int
	srcIPs         string
	dsts           int
	benchProcs     string
	bin            string
	out            string
	eventLoops     int
	jimdGOGC       string
	jimdMemLimit   string
	sysctl         bool
	deadline       time.Duration
	sample         time.Duration
	jimdArgs       string
	presenceTTL    time.Duration
	pprofBase      int
	benchGOGC      string
	gomaxprocs     int
	minAvailable   int64
}

func main() {
	// Hidden mode: the NATS server of the run, in its own process so that
	// its memory and CPU are measured apart from everything else.
	if len(os.Args) > 1 && os.Args[1] == "-nats-serve" {
		os.Exit(serveNATS(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	var c config
	fs := flag.NewFlagSet("scale", flag.ContinueOnError)
	fs.IntVar(&c.conns, "conns", 1000000, "logged-in connections to reach and hold")
	fs.IntVar(&c.nodes, "nodes", 0, "jimd processes (0: enough for -per-node connections each)")
	fs.IntVar(&c.perNode, "per-node", 18000, "planned connections per jimd when -nodes is 0 (the file limit is 20,000 per process)")
	fs.DurationVar(&c.hold, "hold", 5*time.Minute, "how long the connections are held, with heartbeats")
	fs.IntVar(&c.connectRate, "connect-rate", 5000, "new connections per second, all jimbench workers together (jimbench also caps logins in flight, so the rate settles at what the servers sustain)")
	fs.DurationVar(&c.loginTimeout, "login-timeout", 4*time.Minute, "jimbench redials a user whose login is unanswered this long; well above the login latency of a saturated cluster (a minute and more), or the redials become a retry storm")
	fs.DurationVar(&c.connectTimeout, "connect-timeout", 0, "limit on jimbench's connect-and-login phase (0: conns/1000 seconds plus three minutes, 19m40s for a million)")
	fs.DurationVar(&c.heartbeat, "heartbeat", 5*time.Minute, "heartbeat interval per connection; jimd's -heartbeat-timeout is set to twice this plus a minute")
	fs.IntVar(&c.port, "port", 9600, "the port every jimd listens on")
	fs.IntVar(&c.natsPort, "nats-port", 4300, "the NATS server's port")
	fs.StringVar(&c.srcIPs, "src-ips", "", "jimbench source addresses (empty: 127.0.1.1 up, one per 10,000 connections and destination)")
	fs.IntVar(&c.dsts, "dsts", 1, "destination addresses: jimd i listens on 127.0.0.(1 + i mod dsts)")
	fs.StringVar(&c.benchProcs, "bench-procs", "auto", "jimbench worker processes (its -procs)")
	fs.StringVar(&c.bin, "bin", "./bin", "directory holding jimd and jimbench")
	fs.StringVar(&c.out, "out", "", "results directory (empty: $TMPDIR/jim-scale/<time>)")
	fs.IntVar(&c.eventLoops, "event-loops", 1, "gnet event loops per jimd (0: one per CPU)")
	fs.StringVar(&c.jimdGOGC, "jimd-gogc", "50", "GOGC for the jimd processes (empty: Go's default, 100); 50 keeps the collector's headroom on 56 heaps to about half")
	fs.StringVar(&c.jimdMemLimit, "jimd-memlimit", "", "GOMEMLIMIT for the jimd processes (empty: none)")
	fs.BoolVar(&c.sysctl, "sysctl", true, "try to apply the kernel settings the run needs (and restore them at the end)")
	fs.DurationVar(&c.deadline, "deadline", 0, "kill everything and fail after this long (0: derived from the plan)")
	fs.DurationVar(&c.sample, "sample", 5*time.Second, "sampling interval")
	fs.StringVar(&c.jimdArgs, "jimd-args", "", "extra jimd flags, space separated")
	// At the load average a million connections bring here (~200), a node's
	// presence heartbeats (every TTL/4) starve past jimd's 15 s default and
	// the nodes keep declaring each other gone: runs 13 and 14 in
	// docs/BENCHMARKS.md, against every run with 2 minutes passing.
	fs.DurationVar(&c.presenceTTL, "presence-ttl", 2*time.Minute, "jimd -presence-ttl (0: jimd's default, 15s, too short at a million connections on two cores)")
	fs.StringVar(&c.benchGOGC, "bench-gogc", "", "GOGC for jimbench and its workers (empty: Go's default)")
	fs.IntVar(&c.gomaxprocs, "gomaxprocs", 1, "GOMAXPROCS of every jimd and jimbench process (0: Go's default, one per CPU); with dozens of processes on a few cores, more than one makes their schedulers spin against each other")
	fs.Int64Var(&c.minAvailable, "min-available-mib", 1500, "stop the run when the machine's available memory falls below this (MiB), before the OOM killer picks a victim")
	fs.IntVar(&c.pprofBase, "pprof-base", 0, "when set, jimd i serves /debug/pprof on 127.0.0.1:(pprof-base + i)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	if c.conns <= 0 || c.perNode <= 0 || c.dsts < 1 || c.dsts > 200 || c.connectRate <= 0 {
		fmt.Fprintln(os.Stderr, "scale: bad flags")
		return 2
	}
	if c.nodes <= 0 {
		c.nodes = (c.conns + c.perNode - 1) / c.perNode
	}
	if c.connectTimeout <= 0 {
		// A million logins took 456 s to 851 s here from one day to the
		// next, the slowest just over the old conns/1500 + 2 min default
		// (run 15 in docs/BENCHMARKS.md); the passing runs set 20 minutes.
		c.connectTimeout = time.Duration(float64(c.conns)/1000*float64(time.Second)) + 3*time.Minute
	}
	if c.deadline <= 0 {
		// Above jimbench's own limit (see bench.RunParent).
		c.deadline = c.connectTimeout + c.hold + (c.connectTimeout+c.hold)/5 + 8*time.Minute
	}
	if c.srcIPs == "" {
		n := (c.conns/c.dsts + 9999) / 10000
		if n > 250 {
			fmt.Fprintln(os.Stderr, "scale: too many connections for 127.0.1.x; pass -src-ips or more -dsts")
			return 2
		}
		c.srcIPs = fmt.Sprintf("127.0.1.1-127.0.1.%d", n)
	}
	if c.out == "" {
		c.out = filepath.Join(os.TempDir(), "jim-scale", time.Now().UTC().Format("20060102-150405"))
	}
	if err := os.MkdirAll(c.out, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		return 1
	}
	s := &scaler{cfg: c, logf: newLogger(filepath.Join(c.out, "scale.log"))}
	ctx, cancel := context.WithTimeout(context.Background(), c.deadline)
	defer cancel()
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	err := s.run(ctx)
	s.shutdown()
	s.restoreSysctl()
	if err != nil {
		s.logf("FAILED: %v", err)
		s.sum.Error = err.Error()
	}
	s.writeSummary()
	if err != nil {
		return 1
	}
	return 0
}

// logger writes timestamped lines to stdout and a file.
func newLogger(path string) func(string, ...any) {
	f, _ := os.Create(path)
	var mu sync.Mutex
	return func(format string, a ...any) {
		line := time.Now().UTC().Format("15:04:05") + " " + fmt.Sprintf(format, a...) + "\n"
		mu.Lock()
		defer mu.Unlock()
		os.Stdout.WriteString(line)
		if f != nil {
			f.WriteString(line)
		}
	}
}

type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

type scaler struct {
	cfg  config
	logf func(string, ...any)

	mu     sync.Mutex
	procs  []*proc
	nats   *proc
	jimds  []*proc
	bench  *proc
	sysOld map[string]string

	sum summary
}

// start runs name with args in its own process group, its stdout and
// stderr into out/<name>.log (or to w when given), and remembers it for
// shutdown. The child gets SIGKILL if this process dies.
func (s *scaler) start(name string, env []string, w io.Writer, exe string, args ...string) (*proc, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if w == nil {
		f, err := os.Create(filepath.Join(s.cfg.out, name+".log"))
		if err != nil {
			return nil, err
		}
		w = f
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		if f, ok := w.(*os.File); ok {
			f.Close()
		}
		close(p.done)
	}()
	s.mu.Lock()
	s.procs = append(s.procs, p)
	s.mu.Unlock()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// shutdown ends every process started, newest first: SIGTERM to its
// group, then SIGKILL to whatever is left after a grace period.
func (s *scaler) shutdown() {
	s.mu.Lock()
	ps := append([]*proc(nil), s.procs...)
	s.mu.Unlock()
	if len(ps) == 0 {
		return
	}
	s.logf("stopping %d processes", len(ps))
	for i := len(ps) - 1; i >= 0; i-- {
		if !ps[i].exited() {
			_ = syscall.Kill(-ps[i].cmd.Process.Pid, syscall.SIGTERM)
		}
	}
	deadline := time.After(20 * time.Second)
	for _, p := range ps {
		select {
		case <-p.done:
		case <-deadline:
		}
	}
	killed := 0
	for _, p := range ps {
		// The group too: jimbench's workers share its process group.
		if syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL) == nil {
			killed++
		}
	}
	for _, p := range ps {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	s.logf("all processes stopped (%d groups needed SIGKILL or had leftovers)", killed)
}

func (s *scaler) run(ctx context.Context) error {
	c := s.cfg
	s.sum.Config = summaryConfig{Conns: c.conns, Nodes: c.nodes, Hold: c.hold.String(), ConnectRate: c.connectRate,
		SrcIPs: c.srcIPs, Dsts: c.dsts, EventLoops: c.eventLoops, Store: "memory", JimdGOGC: c.jimdGOGC, JimdMemLimit: c.jimdMemLimit,
		GOMAXPROCS: c.gomaxprocs, Heartbeat: c.heartbeat.String()}
	s.sum.Started = time.Now().UTC().Format(time.RFC3339)
	s.logf("plan: %d connections over %d jimd (%d each on average), sources %s, %d destination(s), hold %v, deadline %v",
		c.conns, c.nodes, c.conns/c.nodes, c.srcIPs, c.dsts, c.hold, c.deadline)
	jimd, jimbench := filepath.Join(c.bin, "jimd"), filepath.Join(c.bin, "jimbench")
	for _, b := range []string{jimd, jimbench} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("missing binary %s (make build)", b)
		}
	}
	// Another run (or any server) on these ports would join the jimd's
	// SO_REUSEPORT group or take NATS's port: refuse to start.
	for _, a := range []string{fmt.Sprintf("127.0.0.1:%d", c.natsPort), fmt.Sprintf("127.0.0.1:%d", c.port)} {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("%s is taken (another run?): %w", a, err)
		}
		l.Close()
	}
	s.checkLimits()
	if c.sysctl {
		s.applySysctl()
	}

	// NATS.
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	natsDir, err := os.MkdirTemp("", "jimscale-nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(natsDir)
	s.nats, err = s.start("nats", nil, nil, exe, "-nats-serve", strconv.Itoa(c.natsPort), natsDir)
	if err != nil {
		return err
	}
	natsAddr := fmt.Sprintf("127.0.0.1:%d", c.natsPort)
	if err := waitTCP(ctx, natsAddr, 20*time.Second, s.nats); err != nil {
		return fmt.Errorf("nats: %w", err)
	}
	s.logf("nats listening on %s", natsAddr)

	base := s.memSnapshot()
	s.sum.Before = base

	// jimd nodes, all on the same port(s).
	var env []string
	if c.gomaxprocs > 0 {
		env = append(env, "GOMAXPROCS="+strconv.Itoa(c.gomaxprocs))
	}
	if c.jimdGOGC != "" {
		env = append(env, "GOGC="+c.jimdGOGC)
	}
	if c.jimdMemLimit != "" {
		env = append(env, "GOMEMLIMIT="+c.jimdMemLimit)
	}
	addrs := map[string]bool{}
	var addrList []string
	t0 := time.Now()
	ready := make(chan int, c.nodes)
	for i := range c.nodes {
		addr := fmt.Sprintf("127.0.0.%d:%d", 1+i%c.dsts, c.port)
		if !addrs[addr] {
			addrs[addr] = true
			addrList = append(addrList, addr)
		}
		args := []string{"-addr", addr, "-store", "memory", "-nats", "nats://" + natsAddr,
			"-node-id", fmt.Sprintf("s%02d", i), "-event-loops", strconv.Itoa(c.eventLoops),
			"-heartbeat-timeout", (2*c.heartbeat + time.Minute).String(), "-log-level", "info",
			// Under the connect burst a login may wait its turn longer than
			// the default 10 s; that is load, not a client to drop.
			"-auth-timeout", "60s"}
		if c.presenceTTL > 0 {
			args = append(args, "-presence-ttl", c.presenceTTL.String())
		}
		if c.pprofBase > 0 {
			args = append(args, "-pprof-addr", fmt.Sprintf("127.0.0.1:%d", c.pprofBase+i))
		}
		args = append(args, strings.Fields(c.jimdArgs)...)
		lw := &readyWriter{needle: []byte(`msg="jimd listening"`), onReady: func() { ready <- i }}
		f, err := os.Create(filepath.Join(c.out, fmt.Sprintf("jimd-s%02d.log", i)))
		if err != nil {
			return err
		}
		lw.w = f
		p, err := s.start(fmt.Sprintf("jimd-s%02d", i), env, lw, jimd, args...)
		if err != nil {
			return err
		}
		s.jimds = append(s.jimds, p)
	}
	up := 0
	startLimit := time.After(2*time.Minute + time.Duration(c.nodes)*time.Second)
	for up < c.nodes {
		select {
		case <-ready:
			up++
		case <-startLimit:
			return fmt.Errorf("only %d of %d jimd listening in time", up, c.nodes)
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
			for _, p := range s.jimds {
				if p.exited() {
					return fmt.Errorf("%s exited at start: %v (see its log)", p.name, p.err)
				}
			}
		}
	}
	s.sum.NodesStartSeconds = time.Since(t0).Seconds()
	s.logf("%d jimd listening after %.1fs on %s", c.nodes, s.sum.NodesStartSeconds, strings.Join(addrList, ","))
	// Let the nodes see each other's heartbeats before clients arrive.
	sleepCtx(ctx, 3*time.Second)
	s.sum.NodesIdle = s.withPSS(s.memSnapshot())

	// jimbench.
	benchJSON := filepath.Join(c.out, "jimbench.json")
	args := []string{"idle", "-conns", strconv.Itoa(c.conns), "-src-ips", c.srcIPs,
		"-duration", c.hold.String(), "-warmup", "0s", "-connect-rate", strconv.Itoa(c.connectRate),
		"-connect-timeout", c.connectTimeout.String(), "-heartbeat", c.heartbeat.String(),
		"-login-timeout", c.loginTimeout.String(),
		"-procs", c.benchProcs, "-user-prefix", "u", "-json", benchJSON}
	for _, a := range addrList {
		args = append(args, "-addr", a)
	}
	for _, p := range s.jimds {
		args = append(args, "-server-pid", strconv.Itoa(p.cmd.Process.Pid))
	}
	bl, err := os.Create(filepath.Join(c.out, "jimbench.log"))
	if err != nil {
		return err
	}
	pw := &progressWriter{w: bl}
	var benv []string
	if c.gomaxprocs > 0 {
		benv = append(benv, "GOMAXPROCS="+strconv.Itoa(c.gomaxprocs))
	}
	if c.benchGOGC != "" {
		benv = append(benv, "GOGC="+c.benchGOGC)
	}
	s.bench, err = s.start("jimbench", benv, pw, jimbench, args...)
	if err != nil {
		return err
	}
	connectStart := time.Now()
	s.logf("jimbench started: %d connections at %d/s", c.conns, c.connectRate)

	samples, err := os.Create(filepath.Join(c.out, "samples.csv"))
	if err != nil {
		return err
	}
	defer samples.Close()
	fmt.Fprintln(samples, "t_s,phase,established,failed,errors,jimd_rss_sum,jimd_rss_max,jimd_cpu_s,bench_rss,bench_procs,nats_rss,nats_cpu_s,tcp_inuse,tcp_mem_pages,tcp_tw,tcp_orphan,sockets_used,mem_used,slab,slab_unreclaim,sock_slab,conntrack")

	var holdStart time.Time
	var lateDone, memDone, holdDone bool
	var peak memSnap
	tick := time.NewTicker(c.sample)
	defer tick.Stop()
	lastLog := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("stopped: %w", ctx.Err())
		case <-s.bench.done:
		case <-tick.C:
		}
		ph := pw.last()
		if s.bench.exited() {
			break
		}
		for _, p := range s.jimds {
			if p.exited() {
				return fmt.Errorf("%s exited during the run: %v", p.name, p.err)
			}
		}
		if s.nats.exited() {
			return fmt.Errorf("nats exited during the run: %v", s.nats.err)
		}
		m := s.memSnapshot()
		if m.total() > peak.total() {
			peak = m
		}
		if c.minAvailable > 0 && m.MemAvailable > 0 && m.MemAvailable < c.minAvailable<<20 {
			s.sum.Peak = m
			return fmt.Errorf("available memory down to %.0f MiB with %d connections logged in: stopped before the OOM killer acts",
				mib(m.MemAvailable), ph.established)
		}
		fmt.Fprintf(samples, "%.0f,%s,%d,%d,%d,%d,%d,%.1f,%d,%d,%d,%.1f,%d,%d,%d,%d,%d,%d,%d,%d,%d,%d\n",
			time.Since(connectStart).Seconds(), ph.phase, ph.established, ph.failed, ph.errors,
			m.JimdRSS, m.JimdRSSMax, m.JimdCPU, m.BenchRSS, m.BenchProcs, m.NATSRSS, m.NATSCPU,
			m.TCPInUse, m.TCPMemPages, m.TCPTW, m.TCPOrphan, m.SocketsUsed, m.MemUsed, m.Slab, m.SlabUnreclaim, m.SockSlab, m.Conntrack)
		if time.Since(lastLog) >= 15*time.Second {
			lastLog = time.Now()
			s.logf("%s: %d logged in, %d failed, %d errors; jimd RSS %.0f MiB (max %.0f), jimbench %.0f MiB, nats %.0f MiB, used %.0f MiB, slab %.0f MiB, tcp mem %d pages",
				ph.phase, ph.established, ph.failed, ph.errors, mib(m.JimdRSS), mib(m.JimdRSSMax), mib(m.BenchRSS), mib(m.NATSRSS),
				mib(m.MemUsed), mib(m.Slab), m.TCPMemPages)
		}
		if ph.phase == "run" && holdStart.IsZero() {
			holdStart = time.Now()
			s.sum.ConnectWallSeconds = holdStart.Sub(connectStart).Seconds()
			s.sum.AtHoldStart = s.withPSS(m)
			s.sum.EstablishedAtHoldStart = ph.established
			s.logf("hold started: %d connections logged in after %.0fs", ph.established, s.sum.ConnectWallSeconds)
		}
		if !holdStart.IsZero() && !lateDone && time.Since(holdStart) >= c.hold/6 {
			lateDone = true
			// Ends before the late-hold sample.
			s.checkCluster(ctx, addrList, c.hold/3)
		}
		// The memory sample reads every process's smaps and fd table,
		// which takes minutes at a million connections and stalls the
		// processes it reads: it runs well before the hold ends, so that
		// neither it nor they spill into the teardown.
		if !holdStart.IsZero() && !memDone && time.Since(holdStart) >= max(c.hold/2, c.hold-2*time.Minute-2*c.sample) {
			memDone = true
			s.sum.AtHoldEnd = s.withPSS(m)
			// Last: listing /proc/<pid>/fd fills the kernel's inode cache,
			// which would blur the memory figures taken before it.
			s.sum.NodeConnsEnd = s.nodeConns()
			s.logf("late-hold memory sample: %d connections, %d errors", ph.established, ph.errors)
		}
		if !holdStart.IsZero() && !holdDone && time.Since(holdStart) >= c.hold-2*c.sample-2*time.Second {
			holdDone = true
			s.sum.EstablishedAtHoldEnd = ph.established
			s.sum.ErrorsAtHoldEnd = ph.errors
			s.logf("hold end: %d connections, %d errors", ph.established, ph.errors)
		}
	}
	s.sum.Peak = peak
	if s.bench.err != nil {
		return fmt.Errorf("jimbench failed: %v (see jimbench.log)", s.bench.err)
	}
	b, err := os.ReadFile(benchJSON)
	if err != nil {
		return fmt.Errorf("jimbench result: %w", err)
	}
	var res map[string]any
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("jimbench result: %w", err)
	}
	s.sum.Bench = res
	est, _ := res["conns_established"].(float64)
	errs, _ := res["errors"].(float64)
	cs, _ := res["connect_s"].(float64)
	if cs > 0 {
		s.sum.LoginRate = est / cs
	}
	s.sum.Reached = int64(est)
	s.derive()
	live, _ := res["conns_live"].(float64)
	retries, _ := res["connect_retries"].(float64)
	s.logf("jimbench: %d/%d established, %d open at the end, %d errors %v, %d connect retries %v, connect %.0fs (%.0f logins/s)",
		int64(est), c.conns, int64(live), int64(errs), res["error_kinds"], int64(retries), res["retry_kinds"], cs, s.sum.LoginRate)
	switch {
	case int(est) < c.conns:
		return fmt.Errorf("reached %d of %d connections", int64(est), c.conns)
	case int(live) < c.conns:
		return fmt.Errorf("%d of %d connections still open at the end", int64(live), c.conns)
	case errs > 0:
		return fmt.Errorf("%d errors during the run (disconnects or failures)", int64(errs))
	case !holdDone:
		return errors.New("the hold did not run to its end")
	case s.sum.Cluster != nil && !s.sum.Cluster.OK:
		return errors.New("cluster check failed at scale")
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func waitTCP(ctx context.Context, addr string, limit time.Duration, p *proc) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("exited: %v", p.err)
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not listening after %v", addr, limit)
}

// readyWriter passes a log through and calls onReady once the needle shows.
type readyWriter struct {
	w       io.Writer
	needle  []byte
	mu      sync.Mutex
	seen    bool
	tail    []byte
	onReady func()
}

func (r *readyWriter) Write(b []byte) (int, error) {
	r.mu.Lock()
	if !r.seen {
		r.tail = append(r.tail, b...)
		if strings.Contains(string(r.tail), string(r.needle)) {
			r.seen = true
			r.tail = nil
			go r.onReady()
		} else if len(r.tail) > 4096 {
			r.tail = r.tail[len(r.tail)-512:]
		}
	}
	r.mu.Unlock()
	return r.w.Write(b)
}

func (r *readyWriter) Close() error {
	if c, ok := r.w.(io.Closer); ok {
		return c.Close()
	}
	return nil
}

// progressWriter keeps jimbench's log (its progress lines rewritten in
// place with \r become one line per second) and the latest progress.
type progressWriter struct {
	w    io.Writer
	mu   sync.Mutex
	buf  []byte
	cur  progress
	when time.Time // last progress line written to the log
}

type progress struct {
	phase                       string
	established, failed, errors int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexAny(string(p.buf), "\r\n")
		if i < 0 {
			break
		}
		line := strings.TrimSpace(strings.ReplaceAll(string(p.buf[:i]), "\033[K", ""))
		nl := p.buf[i] == '\n'
		p.buf = p.buf[i+1:]
		if line == "" {
			continue
		}
		isProg := p.parse(line)
		if !isProg || nl || time.Since(p.when) >= time.Second {
			p.when = time.Now()
			fmt.Fprintf(p.w, "%s %s\n", time.Now().UTC().Format("15:04:05"), line)
		}
	}
	if len(p.buf) > 1<<16 {
		p.buf = nil
	}
	return len(b), nil
}

// parse reads "connecting [...] 123/1000 logged in, 4 failed" and
// "run 10s/5m0s conns=123 sent=0 delivered=0 errors=0".
func (p *progressWriter) parse(line string) bool {
	if rest, ok := strings.CutPrefix(line, "connecting ["); ok {
		if j := strings.Index(rest, "] "); j >= 0 {
			var est, tgt, failed int64
			if n, _ := fmt.Sscanf(rest[j+2:], "%d/%d logged in, %d failed", &est, &tgt, &failed); n == 3 {
				p.cur = progress{phase: "connect", established: est, failed: failed}
				return true
			}
		}
		return false
	}
	f := strings.Fields(line)
	if len(f) >= 6 && strings.HasPrefix(f[2], "conns=") {
		cur := progress{phase: f[0]}
		for _, kv := range f[2:] {
			k, v, _ := strings.Cut(kv, "=")
			n, _ := strconv.ParseInt(v, 10, 64)
			switch k {
			case "conns":
				cur.established = n
			case "errors":
				cur.errors = n
			}
		}
		p.cur = cur
		return true
	}
	return false
}

func (p *progressWriter) last() progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cur
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// serveNATS runs an embedded NATS server with JetStream until a signal.
func serveNATS(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: scale -nats-serve PORT DIR")
		return 2
	}
	port, err := strconv.Atoi(args[0])
	if err != nil {
		return 2
	}
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: port, JetStream: true,
		StoreDir: args[1], SyncAlways: true, NoSigs: true, Logtime: true,
		// Generous buffers: 50+ nodes share this server, and during the
		// connect phase presence traffic is bursty.
		MaxPending: 512 << 20, WriteDeadline: 30 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats:", err)
		return 1
	}
	s.ConfigureLogger()
	go s.Start()
	if !s.ReadyForConnections(15 * time.Second) {
		fmt.Fprintln(os.Stderr, "nats: not ready")
		return 1
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	s.Shutdown()
	return 0
}

// ---- measurements ----

type memSnap struct {
	At            string  `json:"at"`
	JimdRSS       int64   `json:"jimd_rss_bytes"`
	JimdRSSMax    int64   `json:"jimd_rss_max_bytes"`
	JimdRSSMin    int64   `json:"jimd_rss_min_bytes"`
	JimdCPU       float64 `json:"jimd_cpu_s"`
	BenchRSS      int64   `json:"jimbench_rss_bytes"`
	BenchProcs    int     `json:"jimbench_procs"`
	BenchCPU      float64 `json:"jimbench_cpu_s"`
	NATSRSS       int64   `json:"nats_rss_bytes"`
	NATSCPU       float64 `json:"nats_cpu_s"`
	TCPInUse      int64   `json:"tcp_inuse"`
	TCPAlloc      int64   `json:"tcp_alloc"`
	TCPMemPages   int64   `json:"tcp_mem_pages"`
	TCPTW         int64   `json:"tcp_tw"`
	TCPOrphan     int64   `json:"tcp_orphan"`
	SocketsUsed   int64   `json:"sockets_used"`
	MemTotal      int64   `json:"mem_total_bytes"`
	MemAvailable  int64   `json:"mem_available_bytes"`
	MemUsed       int64   `json:"mem_used_bytes"` // total - free - buffers - cache - reclaimable slab, as free(1) shows "used"
	Slab          int64   `json:"slab_bytes"`
	SlabUnreclaim int64   `json:"slab_unreclaim_bytes"`
	Conntrack     int64   `json:"conntrack"`
	// SockSlab is the kernel's per-socket objects (slabinfo caches TCP,
	// sock_inode_cache, filp, dentry, eventpoll_epi/pwq): nearly all of it
	// is the sockets while a million connections are open.
	SockSlab int64 `json:"sock_slab_bytes"`
	// PSS sums, taken at the hold's start and end only: text pages shared
	// by the processes of one binary count once.
	JimdPSS  int64 `json:"jimd_pss_bytes,omitempty"`
	BenchPSS int64 `json:"jimbench_pss_bytes,omitempty"`
}

func (m memSnap) total() int64 { return m.JimdRSS + m.BenchRSS + m.NATSRSS }

func (s *scaler) memSnapshot() memSnap {
	m := memSnap{At: time.Now().UTC().Format(time.RFC3339)}
	m.JimdRSSMin = math.MaxInt64
	for _, p := range s.jimds {
		rss, cpu := procStat(p.cmd.Process.Pid)
		m.JimdRSS += rss
		m.JimdCPU += cpu
		m.JimdRSSMax = max(m.JimdRSSMax, rss)
		m.JimdRSSMin = min(m.JimdRSSMin, rss)
	}
	if len(s.jimds) == 0 {
		m.JimdRSSMin = 0
	}
	if s.nats != nil {
		m.NATSRSS, m.NATSCPU = procStat(s.nats.cmd.Process.Pid)
	}
	if s.bench != nil && !s.bench.exited() {
		for _, pid := range groupPIDs(s.bench.cmd.Process.Pid) {
			rss, cpu := procStat(pid)
			m.BenchRSS += rss
			m.BenchCPU += cpu
			m.BenchProcs++
		}
	}
	if b, err := os.ReadFile("/proc/net/sockstat"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 3 && f[0] == "sockets:":
				m.SocketsUsed, _ = strconv.ParseInt(f[2], 10, 64)
			case len(f) > 0 && f[0] == "TCP:":
				for i := 1; i+1 < len(f); i += 2 {
					v, _ := strconv.ParseInt(f[i+1], 10, 64)
					switch f[i] {
					case "inuse":
						m.TCPInUse = v
					case "alloc":
						m.TCPAlloc = v
					case "mem":
						m.TCPMemPages = v
					case "tw":
						m.TCPTW = v
					case "orphan":
						m.TCPOrphan = v
					}
				}
			}
		}
	}
	mi := meminfo()
	m.MemTotal, m.MemAvailable = mi["MemTotal"], mi["MemAvailable"]
	m.MemUsed = mi["MemTotal"] - mi["MemFree"] - mi["Buffers"] - mi["Cached"] - mi["SReclaimable"]
	m.Slab, m.SlabUnreclaim = mi["Slab"], mi["SUnreclaim"]
	m.SockSlab = sockSlab()
	if b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_count"); err == nil {
		m.Conntrack, _ = strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	}
	return m
}

// withPSS adds the PSS sums to m.
func (s *scaler) withPSS(m memSnap) memSnap {
	t0 := time.Now()
	defer func() {
		if d := time.Since(t0); d > time.Second {
			s.logf("reading PSS took %v", d)
		}
	}()
	for _, p := range s.jimds {
		m.JimdPSS += pss(p.cmd.Process.Pid)
	}
	if s.bench != nil && !s.bench.exited() {
		for _, pid := range groupPIDs(s.bench.cmd.Process.Pid) {
			m.BenchPSS += pss(pid)
		}
	}
	return m
}

func pss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	if i := strings.Index(string(b), "\nPss:"); i >= 0 {
		f := strings.Fields(string(b[i+5:]))
		if len(f) > 0 {
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

var sockCaches = map[string]bool{"TCP": true, "sock_inode_cache": true, "filp": true, "dentry": true,
	"eventpoll_epi": true, "eventpoll_pwq": true}

// sockSlab sums the slab caches that grow with every socket.
func sockSlab() int64 {
	b, err := os.ReadFile("/proc/slabinfo")
	if err != nil {
		return 0
	}
	var sum int64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 4 || !sockCaches[f[0]] {
			continue
		}
		n, _ := strconv.ParseInt(f[1], 10, 64)
		size, _ := strconv.ParseInt(f[3], 10, 64)
		sum += n * size
	}
	return sum
}

func meminfo() map[string]int64 {
	out := map[string]int64{}
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return out
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		out[k] = n
	}
	return out
}

// procStat returns a process's RSS in bytes and its user+system CPU seconds.
func procStat(pid int) (int64, float64) {
	var rss int64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		if i := strings.Index(string(b), "VmRSS:"); i >= 0 {
			f := strings.Fields(string(b[i+6:]))
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				rss = kb * 1024
			}
		}
	}
	var cpu float64
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 {
			f := strings.Fields(string(b[i+1:]))
			if len(f) > 13 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				cpu = (ut + st) / 100
			}
		}
	}
	return rss, cpu
}

// groupPIDs lists the processes in process group pgid.
func groupPIDs(pgid int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		// state, ppid, pgrp
		if len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			out = append(out, pid)
		}
	}
	return out
}

// nodeConns counts each jimd's open descriptors, nearly all connections.
func (s *scaler) nodeConns() []int {
	t0 := time.Now()
	defer func() {
		if d := time.Since(t0); d > time.Second {
			s.logf("counting descriptors took %v", d)
		}
	}()
	out := make([]int, len(s.jimds))
	for i, p := range s.jimds {
		d, err := os.Open(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
		if err != nil {
			continue
		}
		for {
			names, err := d.Readdirnames(4096)
			out[i] += len(names)
			if err != nil {
				break
			}
		}
		d.Close()
	}
	return out
}

func (s *scaler) checkLimits() {
	var r syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &r) == nil {
		s.sum.NoFileHard = int64(r.Max)
		s.logf("open-file limit per process: soft %d, hard %d", r.Cur, r.Max)
		if int(r.Max) < s.cfg.conns/s.cfg.nodes+1000 {
			s.logf("warning: %d connections per jimd on average is close to the hard limit %d", s.cfg.conns/s.cfg.nodes, r.Max)
		}
	}
}

// ---- kernel settings ----

// sysctls are the settings the run relies on, with the least value each
// needs; a setting already at or above it is left alone. The port range is
// not widened: the run spreads over enough source addresses instead, and a
// wider range on a shared machine could take ports other servers expect.
var sysctls = []struct {
	key, want string
	why       string
}{
	{"fs.file-max", "2200000", "2M sockets (both ends) plus every process's other files"},
	{"fs.nr_open", "1048576", "per-process ceiling for RLIMIT_NOFILE"},
	{"net.core.somaxconn", "65535", "accept queue per listener during the connect burst"},
	{"net.ipv4.tcp_max_syn_backlog", "65535", "SYN queue during the connect burst"},
	{"net.core.netdev_max_backlog", "65536", "loopback packets queued per CPU (the default 1000 drops SYNs in bursts)"},
	{"net.ipv4.tcp_mem", "1048576 1572864 2097152", "TCP buffer pages: min/pressure/max (4/6/8 GiB)"},
	{"net.netfilter.nf_conntrack_max", "2097152", "one entry per connection if conntrack tracks loopback"},
}

func sysctlPath(k string) string { return "/proc/sys/" + strings.ReplaceAll(k, ".", "/") }

func (s *scaler) applySysctl() {
	s.sysOld = map[string]string{}
	for _, sc := range sysctls {
		p := sysctlPath(sc.key)
		old, err := os.ReadFile(p)
		if err != nil {
			s.sum.Sysctl = append(s.sum.Sysctl, sysctlResult{Key: sc.key, Want: sc.want, Result: "absent"})
			continue
		}
		cur := strings.Join(strings.Fields(string(old)), " ")
		if atLeast(cur, sc.want) {
			s.sum.Sysctl = append(s.sum.Sysctl, sysctlResult{Key: sc.key, Want: sc.want, Was: cur, Result: "already enough"})
			continue
		}
		if err := os.WriteFile(p, []byte(sc.want), 0o644); err != nil {
			s.logf("sysctl %s = %s: cannot write (%v); going on with %s", sc.key, sc.want, err, cur)
			s.sum.Sysctl = append(s.sum.Sysctl, sysctlResult{Key: sc.key, Want: sc.want, Was: cur, Result: "not permitted: " + err.Error()})
			continue
		}
		s.sysOld[sc.key] = cur
		s.logf("sysctl %s: %s -> %s", sc.key, cur, sc.want)
		s.sum.Sysctl = append(s.sum.Sysctl, sysctlResult{Key: sc.key, Want: sc.want, Was: cur, Result: "applied"})
	}
}

// restoreSysctl puts back what applySysctl changed: the machine is shared.
func (s *scaler) restoreSysctl() {
	for k, v := range s.sysOld {
		if err := os.WriteFile(sysctlPath(k), []byte(v), 0o644); err != nil {
			s.logf("sysctl %s: restoring %s failed: %v", k, v, err)
		}
	}
	if len(s.sysOld) > 0 {
		s.logf("restored %d kernel settings", len(s.sysOld))
	}
}

// atLeast compares space-separated numeric vectors element by element.
func atLeast(cur, want string) bool {
	c, w := strings.Fields(cur), strings.Fields(want)
	if len(c) != len(w) {
		return false
	}
	for i := range w {
		a, err1 := strconv.ParseInt(c[i], 10, 64)
		b, err2 := strconv.ParseInt(w[i], 10, 64)
		if err1 != nil || err2 != nil || a < b {
			return false
		}
	}
	return true
}

// ---- cluster check at scale ----

type clusterCheck struct {
	OK              bool     `json:"ok"`
	OnlineAsked     int      `json:"online_asked"`
	OnlineSeen      int      `json:"online_seen"`
	AbsentAsked     int      `json:"absent_asked"`
	AbsentOffline   int      `json:"absent_offline"`
	ChatsSent       int      `json:"chats_sent"`
	ChatsDelivered  int      `json:"chats_delivered"`
	OfflineAck      bool     `json:"offline_ack"`
	KickClosed      bool     `json:"kick_closed"`
	LookupP50Ms     float64  `json:"lookup_p50_ms"`
	LookupMaxMs     float64  `json:"lookup_max_ms"`
	ChatMaxMs       float64  `json:"chat_max_ms"`
	Problems        []string `json:"problems,omitempty"`
	DurationSeconds float64  `json:"duration_s"`
}

// probeWait bounds one probe chat's ack, and then its delivery.
const probeWait = 30 * time.Second

// checkCluster runs while every connection is held: presence lookups of
// random benchmark users through random nodes (SO_REUSEPORT picks the node
// of each HTTP connection), private chats between probe users on random
// nodes, a chat to a user who is nowhere, and a kick through the API.
func (s *scaler) checkCluster(ctx context.Context, addrs []string, limit time.Duration) {
	t0 := time.Now()
	cc := &clusterCheck{}
	s.sum.Cluster = cc
	var pmu sync.Mutex // lookups report from their own goroutines
	problem := func(f string, a ...any) {
		pmu.Lock()
		cc.Problems = append(cc.Problems, fmt.Sprintf(f, a...))
		pmu.Unlock()
	}
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	online := func(uid string) (codec.Status, time.Duration, error) {
		st := time.Now()
		resp, err := hc.Get("http://" + addrs[rand.IntN(len(addrs))] + "/api/user/online?userid=" + uid)
		if err != nil {
			return 0, 0, err
		}
		defer resp.Body.Close()
		var r struct {
			Code codec.Status `json:"code"`
		}
		err = json.NewDecoder(resp.Body).Decode(&r)
		return r.Code, time.Since(st), err
	}
	// The whole check runs on the sampling loop: bound it, so that a
	// struggling cluster (10 s per lookup) cannot stall the measurements.
	budget := time.Now().Add(limit)
	late := func() bool {
		if ctx.Err() != nil || time.Now().After(budget) {
			problem("check cut short after %v", time.Since(t0).Round(time.Second))
			return true
		}
		return false
	}
	// A saturated cluster answers a lookup in hundreds of milliseconds; the
	// lookups run eight at a time so that the check still ends in its
	// budget. Right answers are what is checked; the latency is reported.
	hc.Timeout = 10 * time.Second
	var (
		lat []float64
		mu  sync.Mutex
		wg  sync.WaitGroup
		sem = make(chan struct{}, 8)
	)
	lookup := func(uid string, want codec.Status, seen *int) {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			code, d, err := online(uid)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				problem("online %s: %v", uid, err)
				return
			}
			lat = append(lat, float64(d.Microseconds())/1000)
			if code == want {
				*seen++
			} else {
				problem("%s reported %d, want %d", uid, code, want)
			}
		})
	}
	for range 100 {
		if late() {
			break
		}
		cc.OnlineAsked++
		lookup("u"+strconv.Itoa(rand.IntN(s.cfg.conns)), codec.StatusOnline, &cc.OnlineSeen)
	}
	for i := range 20 {
		if late() {
			break
		}
		cc.AbsentAsked++
		lookup(fmt.Sprintf("nobody%d", i), codec.StatusOffline, &cc.AbsentOffline)
	}
	wg.Wait()
	sort.Float64s(lat)
	if len(lat) > 0 {
		cc.LookupP50Ms, cc.LookupMaxMs = lat[len(lat)/2], lat[len(lat)-1]
	}

	// Probe users: each logs in through the shared port, so each lands on
	// a random node; with dozens of nodes nearly every pair is cross-node.
	dial := func(uid string) (*client.Client, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return client.Dial(cctx, addrs[rand.IntN(len(addrs))], client.WithUser(uid, "", ""), client.WithoutReconnect())
	}
	const pairs = 5
	var clients []*client.Client
	defer func() {
		for _, c := range clients {
			_ = c.Close()
		}
	}()
	for i := range pairs {
		if late() {
			break
		}
		a, err := dial(fmt.Sprintf("probe-a%d", i))
		if err != nil {
			problem("probe dial: %v", err)
			continue
		}
		b, err := dial(fmt.Sprintf("probe-b%d", i))
		if err != nil {
			_ = a.Close()
			problem("probe dial: %v", err)
			continue
		}
		clients = append(clients, a, b)
		// The receiver's login must reach the sender's node first.
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if code, _, err := online(b.UserID()); err == nil && code == codec.StatusOnline {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond)
		// Right after the connect phase a node can take seconds to answer
		// (run 7: three probe chats past 10 s while lookups took 1.3 s):
		// what is checked is that the chat arrives, its time is reported.
		st := time.Now()
		cctx, cancel := context.WithTimeout(ctx, probeWait)
		ack, err := a.Send(cctx, b.UserID(), "probe")
		cancel()
		cc.ChatsSent++
		if err != nil || ack.Code != codec.StatusOK {
			problem("probe chat %s -> %s: %+v %v", a.UserID(), b.UserID(), ack, err)
			continue
		}
		select {
		case m := <-b.Messages():
			if m.Kind == client.KindChat && m.Chat.Content == "probe" {
				cc.ChatsDelivered++
				cc.ChatMaxMs = max(cc.ChatMaxMs, float64(time.Since(st).Microseconds())/1000)
			} else {
				problem("probe %s got %+v", b.UserID(), m)
			}
		case <-time.After(probeWait):
			problem("probe chat to %s not delivered", b.UserID())
		}
	}
	if len(clients) > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ack, err := clients[0].Send(cctx, "nobody-at-all", "later")
		cancel()
		cc.OfflineAck = err == nil && ack.Offline
		if !cc.OfflineAck {
			problem("chat to an absent user: %+v %v", ack, err)
		}
		// Kick the last receiver through the API of a random node.
		victim := clients[len(clients)-1]
		resp, err := hc.Get("http://" + addrs[rand.IntN(len(addrs))] + "/api/user/close?userid=" + victim.UserID())
		if err == nil {
			resp.Body.Close()
			deadline := time.After(10 * time.Second)
		wait:
			for {
				select {
				case _, ok := <-victim.Messages():
					if !ok {
						cc.KickClosed = true
						break wait
					}
				case <-deadline:
					break wait
				}
			}
		}
		if !cc.KickClosed {
			problem("kick of %s through the API did not close it (%v)", victim.UserID(), err)
		}
	}
	cc.DurationSeconds = time.Since(t0).Seconds()
	cc.OK = len(cc.Problems) == 0 && cc.OnlineSeen == cc.OnlineAsked && cc.ChatsDelivered == pairs
	s.logf("cluster check: online %d/%d, absent offline %d/%d, chats %d/%d, offline ack %v, kick %v, lookup p50 %.1f ms max %.1f ms; %d problems",
		cc.OnlineSeen, cc.OnlineAsked, cc.AbsentOffline, cc.AbsentAsked, cc.ChatsDelivered, cc.ChatsSent, cc.OfflineAck, cc.KickClosed,
		cc.LookupP50Ms, cc.LookupMaxMs, len(cc.Problems))
	for _, p := range cc.Problems {
		s.logf("  %s", p)
	}
}

// ---- summary ----

type summaryConfig struct {
	Conns        int    `json:"conns"`
	Nodes        int    `json:"nodes"`
	Hold         string `json:"hold"`
	ConnectRate  int    `json:"connect_rate"`
	SrcIPs       string `json:"src_ips"`
	Dsts         int    `json:"dsts"`
	EventLoops   int    `json:"event_loops"`
	Store        string `json:"store"`
	JimdGOGC     string `json:"jimd_gogc,omitempty"`
	JimdMemLimit string `json:"jimd_memlimit,omitempty"`
	GOMAXPROCS   int    `json:"gomaxprocs"`
	Heartbeat    string `json:"heartbeat"`
}

type sysctlResult struct {
	Key    string `json:"key"`
	Want   string `json:"want"`
	Was    string `json:"was,omitempty"`
	Result string `json:"result"`
}

type summary struct {
	Config                 summaryConfig  `json:"config"`
	Started                string         `json:"started"`
	Finished               string         `json:"finished"`
	Error                  string         `json:"error,omitempty"`
	NoFileHard             int64          `json:"nofile_hard"`
	Sysctl                 []sysctlResult `json:"sysctl"`
	NodesStartSeconds      float64        `json:"nodes_start_s"`
	Reached                int64          `json:"reached"`
	EstablishedAtHoldStart int64          `json:"established_at_hold_start"`
	EstablishedAtHoldEnd   int64          `json:"established_at_hold_end"`
	ErrorsAtHoldEnd        int64          `json:"errors_at_hold_end"`
	ConnectWallSeconds     float64        `json:"connect_wall_s"`
	LoginRate              float64        `json:"login_rate"`
	NodeConnsEnd           []int          `json:"node_fds_at_hold_end,omitempty"`
	Before                 memSnap        `json:"before"`
	NodesIdle              memSnap        `json:"nodes_idle"`
	AtHoldStart            memSnap        `json:"at_hold_start"`
	AtHoldEnd              memSnap        `json:"at_hold_end"`
	Peak                   memSnap        `json:"peak"`
	Derived                map[string]any `json:"derived"`
	Cluster                *clusterCheck  `json:"cluster_check,omitempty"`
	Bench                  map[string]any `json:"jimbench"`
}

// derive computes the per-connection figures from the hold-end sample
// against the sample with the nodes started and no client yet.
func (s *scaler) derive() {
	e, i, b := s.sum.AtHoldEnd, s.sum.NodesIdle, s.sum.Before
	n := float64(s.sum.EstablishedAtHoldEnd)
	if n <= 0 || e.At == "" {
		return
	}
	d := map[string]any{}
	d["jimd_rss_total_mib"] = mib(e.JimdRSS)
	d["jimd_rss_avg_mib"] = mib(e.JimdRSS) / float64(len(s.jimds))
	d["jimd_rss_max_mib"] = mib(e.JimdRSSMax)
	d["jimd_rss_idle_total_mib"] = mib(i.JimdRSS)
	d["jimd_bytes_per_conn"] = float64(e.JimdRSS-i.JimdRSS) / n
	d["jimd_bytes_per_conn_incl_idle"] = float64(e.JimdRSS) / n
	d["jimbench_rss_mib"] = mib(e.BenchRSS)
	d["jimbench_bytes_per_conn"] = float64(e.BenchRSS) / n
	d["jimbench_procs"] = e.BenchProcs
	d["nats_rss_mib"] = mib(e.NATSRSS)
	d["tcp_mem_mib"] = mib(e.TCPMemPages * 4096)
	d["slab_delta_mib"] = mib(e.Slab - i.Slab)
	d["sock_slab_delta_mib"] = mib(e.SockSlab - i.SockSlab)
	d["kernel_sock_bytes_per_conn"] = float64(e.SockSlab-i.SockSlab) / n
	d["jimd_pss_total_mib"] = mib(e.JimdPSS)
	d["jimd_pss_idle_total_mib"] = mib(i.JimdPSS)
	d["jimd_pss_bytes_per_conn"] = float64(e.JimdPSS-i.JimdPSS) / n
	d["jimbench_pss_mib"] = mib(e.BenchPSS)
	d["jimbench_pss_bytes_per_conn"] = float64(e.BenchPSS) / n
	d["used_delta_mib"] = mib(e.MemUsed - b.MemUsed)
	d["used_bytes_per_conn"] = float64(e.MemUsed-b.MemUsed) / n
	d["mem_available_mib"] = mib(e.MemAvailable)
	procs := e.JimdRSS + e.BenchRSS + e.NATSRSS
	d["processes_rss_total_mib"] = mib(procs)
	d["jimd_cpu_s_total"] = e.JimdCPU - i.JimdCPU
	d["nats_cpu_s_total"] = e.NATSCPU - i.NATSCPU
	if h, hs := s.sum.AtHoldEnd, s.sum.AtHoldStart; h.At != "" && hs.At != "" {
		t1, _ := time.Parse(time.RFC3339, h.At)
		t0, _ := time.Parse(time.RFC3339, hs.At)
		if w := t1.Sub(t0).Seconds(); w > 0 {
			d["jimd_cpu_pct_during_hold"] = 100 * (h.JimdCPU - hs.JimdCPU) / w
			d["nats_cpu_pct_during_hold"] = 100 * (h.NATSCPU - hs.NATSCPU) / w
			d["jimbench_cpu_pct_during_hold"] = 100 * (h.BenchCPU - hs.BenchCPU) / w
		}
	}
	if len(s.sum.NodeConnsEnd) > 0 {
		mn, mx := math.MaxInt, 0
		for _, v := range s.sum.NodeConnsEnd {
			mn, mx = min(mn, v), max(mx, v)
		}
		d["node_fds_min"], d["node_fds_max"] = mn, mx
	}
	s.sum.Derived = d
}

func (s *scaler) writeSummary() {
	s.sum.Finished = time.Now().UTC().Format(time.RFC3339)
	if s.sum.Derived == nil {
		s.derive()
	}
	b, _ := json.MarshalIndent(&s.sum, "", "  ")
	_ = os.WriteFile(filepath.Join(s.cfg.out, "summary.json"), append(b, '\n'), 0o644)
	var w strings.Builder
	fmt.Fprintf(&w, "# bench-scale %s\n\n", s.sum.Started)
	c := s.sum.Config
	fmt.Fprintf(&w, "%d connections planned over %d jimd (store %s, %d event loop(s) each), sources %s, hold %s\n\n",
		c.Conns, c.Nodes, c.Store, c.EventLoops, c.SrcIPs, c.Hold)
	if s.sum.Error != "" {
		fmt.Fprintf(&w, "**FAILED**: %s\n\n", s.sum.Error)
	}
	fmt.Fprintf(&w, "| figure | value |\n|---|---|\n")
	row := func(k, f string, a ...any) { fmt.Fprintf(&w, "| %s | %s |\n", k, fmt.Sprintf(f, a...)) }
	row("connections reached", "%d", s.sum.Reached)
	row("at hold end", "%d, %d errors", s.sum.EstablishedAtHoldEnd, s.sum.ErrorsAtHoldEnd)
	row("connect time", "%.0f s", s.sum.ConnectWallSeconds)
	row("login rate", "%.0f /s", s.sum.LoginRate)
	keys := make([]string, 0, len(s.sum.Derived))
	for k := range s.sum.Derived {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch v := s.sum.Derived[k].(type) {
		case float64:
			row(k, "%.1f", v)
		default:
			row(k, "%v", v)
		}
	}
	for _, sc := range s.sum.Sysctl {
		row("sysctl "+sc.Key, "%s (was %q, want %q)", sc.Result, sc.Was, sc.Want)
	}
	if cc := s.sum.Cluster; cc != nil {
		row("cluster check", "ok=%v online %d/%d, absent %d/%d, chats %d/%d, offline ack %v, kick %v",
			cc.OK, cc.OnlineSeen, cc.OnlineAsked, cc.AbsentOffline, cc.AbsentAsked, cc.ChatsDelivered, cc.ChatsSent, cc.OfflineAck, cc.KickClosed)
	}
	_ = os.WriteFile(filepath.Join(s.cfg.out, "summary.md"), []byte(w.String()), 0o644)
	fmt.Print(w.String())
	fmt.Printf("\nresults in %s\n", s.cfg.out)
}
